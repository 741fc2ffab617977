"""The voxel neural field (`VoxelField`), lift/splat of images into it, and synthetic fields for tests, benchmarks and
demos (`synthetic`)."""
