"""The built-in procedural simulator: triangle-mesh towns rendered with Open3D's RaycastingScene.

Modules: `layout` (road graphs per CARLA town name), `roads` (junction and lane geometry), `placement`
(buildings, trees, props, parked cars), `meshes` (triangles + per-triangle attributes), `materials`,
`driving` (the ego and traffic on the road network), `shading` (sun, sky, fog, shadows, surface detail),
`render` (ray casting), `simulator` (`ProceduralBackend`).
"""
from sim_bridge.backends.procedural.simulator import ProceduralBackend

__all__ = ["ProceduralBackend"]
