"""Looking at scenes and writing them out: Open3D geometry and viewing, previews, exports to files other tools read.

Modules, one job each (everything in the scene frame: right-handed, z up, metres):

* `nfldm_sdk.viz.mesh` — `field_to_mesh`: marching cubes on the density, coloured by the decoded appearance;
* `nfldm_sdk.viz.points` — coloured (and labelled) point clouds from rendered RGB-D (`scene_points`,
  `scene_to_point_cloud`) or a capture episode (`capture_to_point_cloud`); ``color_by="class"`` paints CARLA's palette;
* `nfldm_sdk.viz.ply` — labelled point clouds as PLY files (a ``uchar label`` per point; Open3D reads them);
* `nfldm_sdk.viz.lines` — line sets: camera frustums, ego trajectories, boxes;
* `nfldm_sdk.viz.viewer` — `show` / `show_scene`: an Open3D window, or an offscreen PNG (works headless);
* `nfldm_sdk.viz.previews` — the four-view RGB + inverse-depth preview PNG of a generated scene;
* `nfldm_sdk.viz.images` — reading a folder of png/jpg images;
* `nfldm_sdk.viz.export` — PLY meshes and point clouds, zarr voxels, frame folders and videos.
"""
