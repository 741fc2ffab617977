"""Cameras, camera rigs and ego trajectories: camera models (`projection`: pinhole, equidistant and OpenCV fisheye),
cameras and rays, `CameraRig`, `Trajectory`, and the standard camera sets (`builders`)."""
