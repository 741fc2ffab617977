"""On-disk stores that training writes and reads (voxel store)."""
