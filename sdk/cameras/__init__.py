"""Cameras, camera rigs and ego trajectories: pinhole cameras and rays, `CameraRig`, `Trajectory`, and the standard
camera sets (`builders`)."""
