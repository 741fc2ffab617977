"""The built-in procedural simulator: triangle-mesh towns rendered with Open3D's RaycastingScene.

Modules, in the order a town is built and rendered:

* the town: `road_graph` (road styles, edges, drawing tools), `layout` (one road network and block style per
  CARLA town name), `roads` (junction and lane geometry), `placement` (buildings, trees, props, parked cars);
* its triangles: `meshes` (`MeshData`, builder, primitives), `materials`, `town_mesh` (the static town),
  `car_meshes` (car models, the moving fleet);
* traffic: `driving` (the ego and the other cars on the road network);
* rendering: `scenes` (Open3D scenes), `camera_rays`, `car_culling`, `render` (`Renderer`: ray casts, shadows,
  the two shaders);
* shading: `lighting` (sun, sky, fog from the weather; street lamps), `shading_tables` (noise, road markings,
  tone curve), `shading` (the numpy reference), `shade_kernel` (its numba twin) with `compiled_shading` (the
  kernels' host side), `shade_bench` (their parity and speed);
* `simulator` (`ProceduralBackend`).
"""
from sim_bridge.backends.procedural.simulator import ProceduralBackend

__all__ = ["ProceduralBackend"]
