"""Datasets and data modules of the training stages (capture windows, encoded scenes, latents, the prior's images)."""
