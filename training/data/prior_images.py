"""Training data of the offline SDS prior (`nfldm_training.modules.prior`): uint8 images of two classes.

* class "dataset": `CaptureImageDataset`, single captured images of capture stores (every ``frame_stride``-th
  frame of every camera of every episode, read lazily through `sim_bridge.store.reader.open_store`);
* class "artifact": `render_artifact_images`, renders of raw generated scenes from the SDS camera distribution
  (`nfldm_sdk.cameras.builders.sample_sds_cameras`, the views refinement will show the prior), and
  `read_image_folder`, the image files of a folder (read by `nfldm_sdk.viz.images.read_rgb_images`).

Every image is ``uint8 [3, H, W]`` at the prior's size: resized bilinearly with antialiasing (`resize_images`)
and rounded (`to_uint8`). `LabelledImages` pairs them with their class for the loaders; `interleaved_split` is
their train/val split.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
from sim_bridge.store.reader import open_store

from nfldm_sdk.cameras.builders import sample_sds_cameras
from nfldm_sdk.pipelines.generator import SceneGenerator
from nfldm_sdk.viz.images import read_rgb_images
from nfldm_training.data.capture_windows import resize_images

__all__ = ["CaptureImageDataset", "render_artifact_images", "read_image_folder", "LabelledImages",
           "interleaved_split", "to_uint8"]


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Float images in [0, 1] (any shape) -> uint8, rounded to the nearest level (values outside are clamped)."""
    return (x.clamp(0, 1) * 255.0 + 0.5).to(torch.uint8)


class CaptureImageDataset(torch.utils.data.Dataset):
    """Single captured images of capture stores: item ``i`` -> ``uint8 [3, H, W]`` at ``image_size``.

    Args:
        stores: capture store paths/URLs.
        image_size: ``(H, W)`` output size.
        frame_stride: every k-th committed frame of each episode.
    Items are ordered store, episode, frame, camera. Stores are opened lazily per process (picklable for workers).
    """

    def __init__(self, stores: Sequence[str], image_size: tuple[int, int], frame_stride: int = 1):
        self.stores, self.image_size = [str(s) for s in stores], tuple(int(v) for v in image_size)
        self.index: list[tuple[int, str, int, int]] = []
        for si, path in enumerate(self.stores):
            store = open_store(path)
            for ep in store:
                for t in range(0, ep.num_frames, max(1, int(frame_stride))):
                    self.index.extend((si, ep.name, t, n) for n in range(ep.num_cameras))
        self._open: dict[int, Any] = {}

    def __getstate__(self):
        return {**self.__dict__, "_open": {}}

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> torch.Tensor:
        si, name, t, n = self.index[i]
        if si not in self._open:
            self._open[si] = open_store(self.stores[si])
        rgb = self._open[si].episode(name).rgb[t, n]                                  # [H, W, 3] uint8
        return to_uint8(resize_images(rgb[None], self.image_size))[0]                # [3, h, w]


def read_image_folder(folder: str | Path, image_size: tuple[int, int]) -> torch.Tensor:
    """All png/jpg files of `folder` (sorted by name; `nfldm_sdk.viz.images.read_rgb_images`: grey images repeated
    to RGB, an alpha channel dropped) as ``uint8 [M, 3, H, W]`` at ``image_size``.

    Raises:
        `nfldm_sdk.viz.images.NoImagesError` (a `FileNotFoundError`): `folder` holds no image.
    """
    return torch.stack([to_uint8(resize_images(img[None], image_size))[0] for img in read_rgb_images(folder)])


def render_artifact_images(bundle: str | Path, num_scenes: int, views: int, image_size: tuple[int, int], *,
                           steps: int = 25, seed: int = 0, device: str | torch.device = "cpu",
                           progress: bool = False) -> torch.Tensor:
    """Renders of raw generated scenes: ``uint8 [num_scenes · views, 3, H, W]`` at ``image_size``.

    Scene i is generated with seed ``seed + i`` and rendered at the decoder's image size from `views` cameras of
    the SDS distribution (`sample_sds_cameras`, CPU generator seeded ``seed + i``), then resized.
    """
    gen = SceneGenerator.from_pretrained(bundle, device=device)
    h, w = gen.scene_ae.config.image_size
    out = []
    for scene in gen.generate(int(num_scenes), seed=int(seed), steps=int(steps), progress=progress):
        cams = sample_sds_cameras((int(views),), w, h, torch.Generator().manual_seed(scene.seed))
        rgb = scene.render(cams).rgb.cpu().numpy()                                   # [V, h, w, 3] uint8
        out.append(to_uint8(resize_images(rgb, image_size)))
    return torch.cat(out)


class LabelledImages(torch.utils.data.Dataset):
    """``(image uint8 [3, H, W], class)`` pairs of several image sets.

    Args:
        parts: ``(images, class, indices)`` triples: item ``i`` of `images` (anything indexable) for each ``i`` in
            `indices`, labelled `class`; items are ordered part by part.
    """

    def __init__(self, parts: Sequence[tuple[Any, int, Sequence[int]]]):
        self.items = [(d, c, i) for d, c, idx in parts for i in idx]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, k: int) -> tuple[torch.Tensor, int]:
        d, c, i = self.items[k]
        return d[i], c


def interleaved_split(n: int, val_fraction: float) -> tuple[list[int], list[int]]:
    """``(train, val)`` indices of `n` items: every k-th index (k = round(1 / val_fraction), at least 2) is
    validation; all are training when ``val_fraction <= 0`` or ``n < 2``."""
    if val_fraction <= 0 or n < 2:
        return list(range(n)), []
    k = max(2, int(round(1.0 / val_fraction)))
    val = list(range(k - 1, n, k))
    return [i for i in range(n) if i % k != k - 1], val
