"""The voxel neural field (`VoxelField`) and lift/splat of images into it."""
