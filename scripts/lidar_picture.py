"""The README's picture of generated LiDAR: one ``nuscenes32`` scan of a generated scene drawn over the scene's
front-camera render (points projected with the camera's K and pose, coloured by range) beside a bird's-eye view of
the scan over the field's density (grey: opacity of the densest voxel of each column).

    python scripts/lidar_picture.py docs/images/lidar_over_render.png [--seed 0] [--model BUNDLE]
"""
import argparse

import imageio.v3 as iio
import numpy as np
import torch

from nfldm_sdk import CameraRig, SceneGenerator, Trajectory

#: Colour ramp of the range, near (yellow) to far (purple), as RGB rows.
RAMP = np.array([[253, 231, 37], [94, 201, 98], [33, 145, 140], [59, 82, 139], [68, 1, 84]], dtype=np.float64)


def range_colours(r: np.ndarray, far: float) -> np.ndarray:
    """``[N, 3]`` uint8 colours of ranges `r` (metres) on `RAMP` over ``[0, far]``."""
    x = np.clip(r / far, 0.0, 1.0) * (len(RAMP) - 1)
    i = np.minimum(x.astype(int), len(RAMP) - 2)
    f = (x - i)[:, None]
    return ((1 - f) * RAMP[i] + f * RAMP[i + 1]).astype(np.uint8)


def dots(img: np.ndarray, u: np.ndarray, v: np.ndarray, colours: np.ndarray, radius: int = 1) -> None:
    """Draw square dots of side ``2·radius + 1`` px at pixel columns `u`, rows `v` (in place; far ones first)."""
    h, w = img.shape[:2]
    for du in range(-radius, radius + 1):
        for dv in range(-radius, radius + 1):
            uu, vv = u + du, v + dv
            ok = (uu >= 0) & (uu < w) & (vv >= 0) & (vv < h)
            img[vv[ok], uu[ok]] = colours[ok]


def main() -> None:
    """Generate the scene, scan it, render the front camera and write the side-by-side picture to ``out``."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", default=None, help="model bundle (default: the shipped default model)")
    args = ap.parse_args()

    scene = SceneGenerator.from_pretrained(args.model).generate(seed=args.seed)[0]
    trajectory = Trajectory.stationary(duration_s=0.0, rate_hz=10)
    scan = next(iter(scene.render_lidar(trajectory, "nuscenes32")))
    far = 40.0

    # Front camera at twice the decoder's training size (the largest supported), scaled 2x for the picture.
    size = tuple(2 * int(s) for s in scene.decoder.config.image_size)      # (H, W)
    rig = CameraRig.preset("capture", width=size[1], height=size[0])
    front = rig.cameras(trajectory.ego_to_world[:1])[0, rig.names.index("front")]
    rgb = scene.render(front.reshape(1)).rgb[0].cpu().numpy()               # [H, W, 3] uint8
    k = 2
    big = np.kron(rgb, np.ones((k, k, 1), dtype=np.uint8))
    pts = torch.from_numpy(scan.points_world()).float()
    uv, z = front.reshape(1).world_to_pixels(pts[None])
    uv, z = uv[0].numpy() * k, z[0].numpy()
    rng = np.linalg.norm(scan.points[:, :3], axis=1)
    keep = z > 0.1
    order = np.argsort(-rng[keep])                                          # far first, near drawn on top
    u = uv[keep][order, 0].astype(int)
    v = uv[keep][order, 1].astype(int)
    dots(big, u, v, range_colours(rng[keep][order], far))

    # Bird's-eye view of the scan over the field's density, x (forward) to the right, y (left) up.
    f = scene.field
    lo, hi = f.bounds[0].cpu().numpy(), f.bounds[1].cpu().numpy()
    px = big.shape[0] / (hi[1] - lo[1])                                    # pixels per metre, same height
    width = int(round((hi[0] - lo[0]) * px))
    grid = f.density.max(dim=0).values.cpu().numpy()                       # [Y, X]
    opacity = 1.0 - np.exp(-grid * float(f.voxel_size.min()))
    ys = np.clip(((hi[1] - (np.arange(big.shape[0]) + 0.5) / px - lo[1]) / (hi[1] - lo[1]) * grid.shape[0]).astype(int), 0, grid.shape[0] - 1)
    xs = np.clip((((np.arange(width) + 0.5) / px) / (hi[0] - lo[0]) * grid.shape[1]).astype(int), 0, grid.shape[1] - 1)
    bev = np.repeat((opacity[ys][:, xs] * 140 + 20).astype(np.uint8)[..., None], 3, axis=-1)
    p = scan.points_world()
    dots(bev, ((p[:, 0] - lo[0]) * px).astype(int), ((hi[1] - p[:, 1]) * px).astype(int),
         range_colours(rng, far), radius=0)
    o = scan.sensor_to_world[:3, 3]
    dots(bev, np.array([int((o[0] - lo[0]) * px)]), np.array([int((hi[1] - o[1]) * px)]),
         np.array([[255, 0, 0]], dtype=np.uint8), radius=3)
    gap = np.full((big.shape[0], 8, 3), 255, dtype=np.uint8)
    iio.imwrite(args.out, np.concatenate([big, gap, bev], axis=1))
    print(f"{args.out}: {scan}; {int(keep.sum())} points in front of the front camera")


if __name__ == "__main__":
    main()
