"""Score-distillation (SDS) refinement and the guidance models it uses (CLIP image LDM, the trained prior)."""
