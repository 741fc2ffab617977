"""The controllable-generation picture of the README: a painted map → the scene generated under it → a drive.

    python scripts/conditional_figure.py --model assets/models/default --out docs/images/painted_map_scene.png

The map is painted in code the way a person paints one (`BEVMap.from_class_ids`): a straight two-lane road along the
ego's x axis with sidewalks, buildings on the left, trees on the right and a side street crossing at x ≈ 28 m. The
scene is generated under it with classifier-free guidance (``--guidance-scale``, default 2) and driven 20 m straight
ahead by the front camera. The picture: the painted map | the generated scene's own labels (`scene.bev()`) | front
camera frames of the drive (RGB over labels). Prints the layout mIoU of the scene against the map, the unconditional
scene's (same seed) and the sampling time.
"""
from __future__ import annotations

import argparse
import time

import numpy as np


def painted_map(classes, grid_yx=(64, 64), bounds=((-16.0, -32.0), (48.0, 32.0))):
    """The painted junction (module docstring) as a `BEVMap` of the default box."""
    from nfldm_sdk.labels.bev_map import BEVMap

    Y, X = grid_yx
    (x0, y0), (x1, y1) = bounds
    xs = x0 + (np.arange(X) + 0.5) * (x1 - x0) / X
    ys = y0 + (np.arange(Y) + 0.5) * (y1 - y0) / Y
    gx, gy = np.meshgrid(xs, ys)
    ids = np.full(grid_yx, classes.names.index("vegetation"), dtype=np.int64)
    ids[gy > 9.0] = classes.names.index("building")                                   # building fronts on the left
    side = (np.abs(gy) < 9.0) | (np.abs(gx - 28.0) < 9.0)                        # the road corridor and the side street
    ids[side] = classes.names.index("sidewalk")
    ids[(np.abs(gy) < 6.0) | (np.abs(gx - 28.0) < 6.0)] = classes.names.index("road")
    return BEVMap.from_class_ids(ids, classes, bounds, name="painted junction")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="assets/models/default")
    ap.add_argument("--out", default="docs/images/painted_map_scene.png")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--guidance-scale", type=float, default=2.0)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()

    import imageio.v3 as iio

    from nfldm_sdk import CameraRig, SceneGenerator, Trajectory
    from nfldm_sdk.labels.bev_map import BEVMap
    from nfldm_sdk.labels.classes import DEFAULT_CLASSES
    from nfldm_sdk.viz.export import tile_frames
    from nfldm_training.benchmarks.bench import machine_line

    gen = SceneGenerator.from_pretrained(a.model, device=a.device)
    m = painted_map(DEFAULT_CLASSES, gen.bev_grid_yx or (64, 64))
    t0 = time.perf_counter()
    scene = gen.generate(1, seed=a.seed, bev=m, guidance_scale=a.guidance_scale)[0]
    dt = time.perf_counter() - t0
    plain = gen.generate(1, seed=a.seed)[0]
    got, base = BEVMap.from_scene(scene), BEVMap.from_scene(plain)
    print(f"layout mIoU vs the painted map: conditional {got.miou(m):.3f}, unconditional {base.miou(m):.3f}; "
          f"{dt:.1f} s per conditional scene ({machine_line(a.device)})")
    h, w = gen.scene_ae.config.image_size
    rig = CameraRig.preset("front", w, h)
    ticks = list(scene.render_trajectory(Trajectory.straight(20.0, 10.0, 2.0), rig))          # 0, 5, 10, 15, 20 m
    drive = tile_frames([t[0] for t in ticks], columns=len(ticks), with_semantic=scene.has_semantics)
    size = drive.shape[0]
    maps = [np.asarray(x)[:, :, :3] for x in (m.show(), got.show())]           # the legend strips included

    def fit(img: np.ndarray) -> np.ndarray:                                     # nearest resize to the strip's height
        r = size / img.shape[0]
        yy = (np.arange(size) / r).astype(int).clip(0, img.shape[0] - 1)
        xx = (np.arange(int(img.shape[1] * r)) / r).astype(int).clip(0, img.shape[1] - 1)
        return img[yy][:, xx]

    gap = np.full((size, 8, 3), 255, np.uint8)
    sheet = np.concatenate([fit(maps[0]), gap, fit(maps[1]), gap, drive[:, :, :3]], axis=1)
    iio.imwrite(a.out, sheet)
    print(f"wrote {a.out} ({sheet.shape[1]}x{sheet.shape[0]})")


if __name__ == "__main__":
    main()
