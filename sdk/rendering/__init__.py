"""Volume rendering of voxel fields: the API and dispatch (`api`), the PyTorch paths and the fused Triton kernel."""
