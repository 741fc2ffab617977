"""Score-distillation (SDS) refinement and the guidance models it uses: `base` (the `GuidanceModel` interface, the
guidance formulas), `clip_ldm` (the paper's CLIP-image LDM), `open_clip_encoder` (its CLIP embeddings of images and
prompts, with open_clip), `prior` (our trained prior, a bundle part) and `sds` (the refinement loop)."""
