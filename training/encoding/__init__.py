"""Jobs between training stages: encode capture windows into a voxel store, and voxel scenes into a latent store."""
