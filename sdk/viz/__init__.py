"""Open3D viewing and exports: meshes, point clouds, frames and video."""
