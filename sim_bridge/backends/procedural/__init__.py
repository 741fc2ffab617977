"""The built-in procedural simulator: triangle-mesh towns rendered with Open3D's RaycastingScene."""
