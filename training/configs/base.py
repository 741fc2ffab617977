"""`TrainConfig`: the training settings every stage has, with one meaning (the base of the four ``*TrainConfig``).

What `nfldm_training.runs.trainer` reads from a stage's training section — the optimiser (`adamw_with_warmup`:
``lr``, ``weight_decay``, ``warmup_steps``, ``lr_schedule``), the Trainer's schedule (`make_trainer`: ``max_steps``, ``val_interval``,
``log_every``, ``grad_clip``, ``precision``) — and what every stage's data and seeding read (``batch_size``,
``val_fraction``, ``num_workers``, ``seed``) is declared here once. A stage's section (`nfldm_training.configs.sections`)
derives from it, adds its own fields, and redeclares a shared field where its default differs or where the field
counts something of its own (``batch_size`` counts scene windows, scenes or images).

This module imports nothing of the project: the section dataclasses and the preset table import it.
"""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["TrainConfig"]


@dataclass
class TrainConfig:
    """Training settings shared by every stage (a stage's section adds its own; units: optimisation steps)."""

    batch_size: int = 2
    """Training items per optimisation step (per device); the stage's section says which items."""
    lr: float = 1e-3
    """AdamW learning rate (reached after a linear warm-up; then constant or decayed, `lr_schedule`)."""
    warmup_steps: int = 0
    """Linear learning-rate warm-up steps."""
    lr_schedule: str = "constant"
    """Learning rate after the warm-up: ``"constant"``, or ``"cosine"`` (half a cosine from `lr` down to
    ``min_lr_fraction · lr`` at ``max_steps``; a fine-tune settles instead of oscillating at a constant rate)."""
    min_lr_fraction: float = 0.05
    """With ``lr_schedule="cosine"``: the final learning rate as a fraction of `lr`."""
    weight_decay: float = 1e-4
    """AdamW weight decay."""
    max_steps: int = 1000
    """Optimisation steps (total, across resumes)."""
    grad_clip: float = 1.0
    """Gradient-norm clipping (0 disables)."""
    val_fraction: float = 0.2
    """Fraction of the data held out for validation (the stage's section says how it is split)."""
    val_interval: int = 100
    """Optimisation steps between validations (and checkpoints)."""
    num_workers: int = 0
    """DataLoader worker processes."""
    precision: str = "32-true"
    """Lightning precision (``"32-true"``, ``"bf16-mixed"``, ...)."""
    seed: int = 0
    """Seed of everything random in the run: weights, data order and the stage's own draws (its section says which)."""
    log_every: int = 10
    """Steps between training-loss log rows."""

    def __post_init__(self):
        if self.lr_schedule not in ("constant", "cosine"):
            raise ValueError(f"lr_schedule {self.lr_schedule!r}: use 'constant' or 'cosine'")
        if not (0.0 <= self.min_lr_fraction <= 1.0):
            raise ValueError(f"min_lr_fraction must be in [0, 1], got {self.min_lr_fraction}")
