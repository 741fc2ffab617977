"""On-disk stores that training writes between stages and reads back (the scene-store frame, voxel store, latent store)."""
