"""Exports of captures to other dataset formats.

* `sim_bridge.export.nuscenes_tables` — the nuScenes conventions: deterministic tokens, rotation matrices as
  ``[w, x, y, z]`` quaternions, channel names, the fixed tables (the 32 nuScenes-lidarseg categories, CARLA tag ->
  category, visibility levels);
* `sim_bridge.export.nuscenes` — `NuScenesWriter`: plain numpy samples (camera images, depth, semantics, LiDAR
  points) -> a nuScenes-format dataset folder the nuScenes devkit loads;
* `sim_bridge.export.capture` — `export_capture`: the episodes of a capture store through the writer (what
  ``sim_bridge export-nuscenes`` runs).

The writer knows nothing of capture stores or of generated scenes: ``nfldm export-nuscenes``
(`nfldm_training.cli.nuscenes`) feeds it the frames and LiDAR scans of a generated drive.
"""
