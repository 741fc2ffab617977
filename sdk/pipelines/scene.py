"""`NeuralScene`: one generated scene — its voxel field, provenance and decoder — that you can render, drive sensors
through, view and save; and the scene folder format.

A scene folder (`NeuralScene.save` / `NeuralScene.load`) holds ``field.safetensors`` (`VoxelField.save`) and
``scene.json``: ``format`` (`SCENE_FORMAT`), ``format_version`` (`SCENE_FORMAT_VERSION`), ``seed``, ``bundle_hash``,
``sampler``, ``steps``, ``refinements`` (one record per SDS refinement, oldest first), ``field`` (the field file's
name), ``nfldm_version`` and, for a bundle whose ψ_g samples the ego trajectory (``trajectory_in_g``),
``trajectory`` (``[K, 3]`` poses ``(x, y, yaw)`` in the scene frame, metres and radians; absent otherwise). The decoder is not copied: it is the ``scene_ae`` part of the model bundle that
generated the scene (``NeuralScene.load(path, decoder=BUNDLE)`` loads it and checks the bundle hash).

Rendering goes through the one decode-and-quantise step, `nfldm_sdk.sensors.views.decode_views`, so
`NeuralScene.render` and the sensors (`nfldm_sdk.sensors`) produce the same pixels — and, when the decoder has a
semantic head (`NeuralScene.has_semantics`), the same labels. The semantic field also labels the scene in 3D
(`NeuralScene.semantic_voxels`) and from above (`NeuralScene.bev`); a head-less bundle renders RGB and depth and
raises `SemanticsUnavailableError` for labels.

Example::

    scene = NeuralScene.load("out/scene_000000", decoder="assets/models/default")
    images = scene.render(cameras)               # SceneImages: rgb [N,H,W,3] uint8, depth/alpha [N,H,W], semantic
    bev = scene.bev()                            # [Y, X] uint8 CARLA tags, 255 = nothing there
    scene.save("out/scene_copy")
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import nfldm_sdk.sensors.lidar as lidar_sensor
import nfldm_sdk.sensors.trajectory_render as trajectory_render
import nfldm_sdk.sensors.world as sensor_world
from nfldm_sdk.cameras.pinhole import Cameras
from nfldm_sdk.errors import NfldmError
from nfldm_sdk.fields.voxel_field import VoxelField
from nfldm_sdk.models.scene_ae import SceneAutoEncoder
from nfldm_sdk.models.semantic_head import SemanticHead, SemanticsUnavailableError, require_semantic_head
from nfldm_sdk.persistence import ModelFileError, nfldm_version, read_config
from nfldm_sdk.models.bundle import BundleError, load_part, read_manifest
from nfldm_sdk.rendering.api import HIT_ALPHA
from nfldm_sdk.rendering.sizes import warn_if_unsupported_size
from nfldm_sdk.sensors.renderer import DEFAULT_BATCH_SIZE
from nfldm_sdk.sensors.views import SceneImages, decode_views
from nfldm_sdk.viz.mesh import field_to_mesh
from nfldm_sdk.viz.points import scene_to_point_cloud
from nfldm_sdk.viz.viewer import show_scene

__all__ = ["NeuralScene", "SceneImages", "SceneNotFoundError", "SceneFormatError", "SemanticsUnavailableError",
           "SCENE_FORMAT", "SCENE_FORMAT_VERSION"]

#: ``scene.json``'s ``format`` and ``format_version``: what `NeuralScene.load` accepts.
SCENE_FORMAT = "nfldm.neural_scene"
SCENE_FORMAT_VERSION = 1


class SceneNotFoundError(NfldmError, FileNotFoundError):
    """A path given as a scene folder holds no ``scene.json``."""


class SceneFormatError(NfldmError, ValueError):
    """A scene folder's ``scene.json`` is unreadable or of another format version; the message names the file."""


@dataclass(eq=False)
class NeuralScene:
    """One generated scene: its voxel field, its provenance and the stage-1 decoder that renders it.

    Attributes:
        field: unbatched `VoxelField` (density ``[Z, Y, X]``, features ``[C, Z, Y, X]``, bounds ``[2, 3]``) in the
            scene frame (x forward, y left, z up, metres; origin on the ground below the ego vehicle).
        seed: the seed of this scene's generator (``generate(1, seed=seed)`` with the same bundle, sampler and steps
            regenerates it).
        bundle_hash: the `BundleManifest.bundle_hash` of the bundle that generated it.
        decoder: the stage-1 `SceneAutoEncoder` that renders the field (None after `load` without a decoder:
            `render` then asks for one).
        sampler, steps: how it was sampled.
        refinements: one record per SDS refinement applied since sampling, oldest first (empty: the raw sample);
            each is `nfldm_sdk.pipelines.refine.refinement_record`'s dict (steps, guidance, alpha, negative, lr, views, seed).
        trajectory: ``[K, 3]`` float32 ego poses ``(x, y, yaw)`` in the scene frame (metres, radians) sampled with
            the scene by a ``trajectory_in_g`` bundle (the window's frames, oldest first); None otherwise.
    """

    field: VoxelField
    seed: int
    bundle_hash: str
    decoder: SceneAutoEncoder | None = None
    sampler: str = ""
    steps: int = 0
    refinements: tuple[dict, ...] = ()
    trajectory: np.ndarray | None = None

    @torch.no_grad()
    def render(self, cameras: Cameras, views_per_call: int = 8) -> SceneImages:
        """Render the scene from `cameras` through the stage-1 decoder (no gradients; for differentiable renders
        call ``decoder.decode`` on ``VoxelField.stack([scene.field])``).

        Args:
            cameras: `Cameras` of any batch shape (flattened to N views), OpenCV axes, ``cam_to_world`` into the
                scene frame; ``width`` and ``height`` divisible by the decoder's downsample factor. Supported sizes:
                each side within 2× of the decoder's training size (``decoder.config.image_size``, recorded in the
                bundle's ``scene_ae/config.json``); beyond it a `RenderSizeWarning` is shown once per decoder
                (`nfldm_sdk.rendering.sizes`).
            views_per_call: views rendered per decoder call (bounds memory; depth and alpha do not depend on it,
                rgb may move by one level).
        Returns:
            `SceneImages` (rgb uint8 ``[N, H, W, 3]``, depth/alpha float32 ``[N, H, W]``; with a semantic head
            semantic ``[N, H, W]`` uint8 CARLA tags and semantic_confidence float32, else None) on the decoder's
            device; depth is ``inf`` where alpha stayed below `nfldm_sdk.rendering.api.HIT_ALPHA` (0.5), and
            exactly there the label is sky (11).
        """
        dec = self._require_decoder()
        device = next(dec.parameters()).device
        field = VoxelField.stack([self.field.to(device=device, dtype=torch.float32)])   # [1, ...]
        cams = cameras.flatten().to(device=device, dtype=torch.float32)                  # [N]
        warn_if_unsupported_size(dec, cams.width, cams.height, stacklevel=4)   # 4: past torch.no_grad's wrapper
        step = max(1, int(views_per_call))
        return SceneImages.cat([decode_views(dec, field, cams[start:start + step])
                                for start in range(0, len(cams), step)])

    def _require_decoder(self) -> SceneAutoEncoder:
        if self.decoder is None:
            raise ValueError("this NeuralScene has no decoder: load it with NeuralScene.load(path, decoder=BUNDLE) "
                             "(the bundle that generated it) or pass decoder=SceneAutoEncoder")
        return self.decoder

    # ---------------------------------------------------------------- semantics (nfldm_sdk.labels)
    @property
    def has_semantics(self) -> bool:
        """Whether the scene can be labelled: it has a decoder and the decoder has a semantic head."""
        return self.decoder is not None and getattr(self.decoder, "semantic_head", None) is not None

    def _semantic_inputs(self) -> tuple[SemanticHead, VoxelField]:
        """The decoder's semantic head and the field on its device as float32 (`SemanticsUnavailableError` without
        a head)."""
        head = require_semantic_head(getattr(self._require_decoder(), "semantic_head", None))
        device = next(head.parameters()).device
        return head, self.field.to(device=device, dtype=torch.float32)

    @torch.no_grad()
    def semantic_voxels(self) -> np.ndarray:
        """Per-voxel labels of the field: ``[Z, Y, X]`` uint8 CARLA tags (representative tag of each class),
        `nfldm_sdk.labels.classes.UNOBSERVED` (255) where a voxel is empty.

        Indexed like the field (``[z, y, x]``, voxel ``(i, j, k)`` centred at ``bounds[0] + ((k, j, i) + 0.5) ·
        voxel_size`` metres in the scene frame: x forward, y left, z up). A voxel is solid where its own opacity
        across one voxel, ``1 − exp(−σ · mean voxel edge)``, reaches `HIT_ALPHA`; its tag is the argmax of the
        head's logits on its features (`nfldm_sdk.labels.semantic_field.voxel_labels`).

        Raises:
            `SemanticsUnavailableError`: the decoder has no semantic head (ValueError: no decoder at all).
        """
        head, field = self._semantic_inputs()
        return head.voxel_labels(field).cpu().numpy()

    @torch.no_grad()
    def bev(self) -> np.ndarray:
        """Bird's-eye semantic map: ``[Y, X]`` uint8 CARLA tags at the grid's x/y resolution (the fine latent f's).

        Row ``j`` is the field's y index, column ``k`` its x index: cell ``(j, k)`` covers ``x ∈ xmin + [k, k+1) ·
        Δx``, ``y ∈ ymin + [j, j+1) · Δy`` metres in the scene frame (``bounds`` and ``voxel_size`` of `field`; x
        forward, y left — so row 0 is the rightmost strip, ``y = ymin``, and x grows along a row). Each cell holds
        the class of the surface a top-down ray through the column meets (volume-rendered, normalised head logits),
        `nfldm_sdk.labels.classes.UNOBSERVED` (255) where that ray's opacity stays below `HIT_ALPHA`
        (`nfldm_sdk.labels.semantic_field.field_bev`).

        Raises:
            `SemanticsUnavailableError`: the decoder has no semantic head (ValueError: no decoder at all).
        """
        head, field = self._semantic_inputs()
        return head.bev(field).cpu().numpy()

    def save(self, path: str | Path) -> Path:
        """Write the scene to folder `path`: ``field.safetensors`` (`VoxelField.save`) + ``scene.json`` (format,
        version, seed, bundle hash, sampler, steps, ``refinements`` (`refinements`: ``[]`` for a raw sample), nfldm
        version, and ``trajectory`` when the scene has one). The decoder is not copied (it is in the bundle)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.field.save(path / "field.safetensors")
        meta = {"format": SCENE_FORMAT, "format_version": SCENE_FORMAT_VERSION, "seed": int(self.seed),
                "bundle_hash": self.bundle_hash, "sampler": self.sampler, "steps": int(self.steps),
                "refinements": [dict(r) for r in self.refinements], "field": "field.safetensors",
                "nfldm_version": nfldm_version()}
        if self.trajectory is not None:
            meta["trajectory"] = np.asarray(self.trajectory, dtype=np.float64).round(6).tolist()
        (path / "scene.json").write_text(json.dumps(meta, indent=2) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path, decoder: SceneAutoEncoder | str | Path | None = None,
             device: str | torch.device | None = None) -> "NeuralScene":
        """Read a scene written by `save`.

        Args:
            path: the scene folder.
            decoder: None (the scene cannot `render` until given one), a `SceneAutoEncoder`, or the path of the
                model bundle that generated the scene (its ``scene_ae`` part is loaded; the bundle hash must match).
            device: where to put the field (and a decoder loaded from a bundle); default CPU.
        """
        path = Path(path)
        meta_path = path / "scene.json"
        if not meta_path.is_file():
            raise SceneNotFoundError(f"{meta_path} not found: {path} is not a scene folder written by NeuralScene.save "
                                     "(make one with `nfldm generate`)")
        try:
            meta = read_config(meta_path)
        except ModelFileError as e:
            raise SceneFormatError(f"{e}: restore it, or generate the scene again with `nfldm generate`") from e
        if meta.get("format") != SCENE_FORMAT or meta.get("format_version") != SCENE_FORMAT_VERSION:
            raise SceneFormatError(f"{meta_path}: format {meta.get('format')!r} version {meta.get('format_version')}, expected "
                             f"{SCENE_FORMAT!r} version {SCENE_FORMAT_VERSION}: save the scene again with this nfldm")
        field = VoxelField.load(path / meta.get("field", "field.safetensors"), device=device)
        if isinstance(decoder, (str, Path)):
            manifest = read_manifest(decoder)
            if manifest.bundle_hash != meta["bundle_hash"]:
                raise BundleError(f"scene {path} was generated by bundle {meta['bundle_hash'][:12]}…, but {decoder} is bundle "
                                  f"{manifest.bundle_hash[:12]}…: pass the bundle that generated the scene")
            decoder = load_part(decoder, "scene_ae", manifest, device=device or "cpu")  # type: ignore[assignment]
        elif decoder is not None and not isinstance(decoder, SceneAutoEncoder):
            raise TypeError(f"decoder must be None, a SceneAutoEncoder or a bundle path, got {type(decoder).__name__}")
        if decoder is not None:
            cfg = decoder.config  # type: ignore[union-attr]
            if (tuple(cfg.grid_shape), cfg.feature_channels) != (field.grid_shape, field.num_channels):
                raise ValueError(f"decoder expects grid {tuple(cfg.grid_shape)} with C={cfg.feature_channels}, the scene has "
                                 f"{field.grid_shape} with C={field.num_channels}: pass the bundle that generated the scene")
        return cls(field=field, seed=int(meta["seed"]), bundle_hash=str(meta["bundle_hash"]), decoder=decoder,  # type: ignore[arg-type]
                   sampler=str(meta.get("sampler", "")), steps=int(meta.get("steps", 0)),
                   refinements=tuple(meta.get("refinements", ())),
                   trajectory=None if meta.get("trajectory") is None else np.asarray(meta["trajectory"], np.float32))

    # ---------------------------------------------------------------- sensors (nfldm_sdk.sensors) and viewing (viz)
    def render_trajectory(self, trajectory, rig, *, batch_size: int = DEFAULT_BATCH_SIZE, with_range: bool = False,
                          device=None, check_overlap: bool = True, progress: bool = False):
        """Render `rig` (a `CameraRig`) along `trajectory` (a `Trajectory` in the scene frame): yields per tick a list
        of `nfldm_sdk.sensors.frames.Frame` (rgb uint8 [H,W,3], depth float32 [H,W] planar metres, inf where alpha <
        `HIT_ALPHA`, alpha, semantic uint8 [H,W] CARLA tags or None without a head, metadata). The rig's image size should stay within 2× of the decoder's training size per
        side (``decoder.config.image_size``; a `RenderSizeWarning` otherwise)."""
        return trajectory_render.render_trajectory(self, trajectory, rig, batch_size=batch_size, with_range=with_range,
                                                   device=device, check_overlap=check_overlap, progress=progress)

    def render_lidar(self, trajectory, spec, **kw):
        """Scan a LiDAR (a `LidarSpec`, a preset name such as ``"nuscenes32"`` or a LiDAR JSON file) along
        `trajectory` through this scene's density field: yields one `nfldm_sdk.sensors.lidar.LidarScan` per tick
        (points ``[N, 4]`` in the sensor frame, range image ``[channels, A]`` with ``inf`` = no return, ``tags`` ``[N]``
        uint8 CARLA tags when the decoder has a semantic head, else None). Keywords as
        `nfldm_sdk.sensors.lidar.render_lidar` (``n_samples``, ``hit_alpha``, ``device``); no decoder needed for the
        geometry."""
        return lidar_sensor.render_lidar(self, trajectory, spec, **kw)

    def world(self, trajectory, *, rate_hz=None, rig=None, batch_size: int = DEFAULT_BATCH_SIZE, device=None):
        """A CARLA-like `nfldm_sdk.sensors.world.SensorWorld` driving `trajectory` through this scene (default rig: the
        ``capture`` preset at the decoder's training image size)."""
        return sensor_world.SensorWorld(self, trajectory, rate_hz=rate_hz, rig=rig, batch_size=batch_size,
                                        device=device)

    def spawn_camera(self, spec, attach_to, transform=None, blueprint: str = sensor_world.RGBD_CAMERA):
        """Spawn a camera (a `CameraSpec` or a preset camera name) on `attach_to` (the ego of `scene.world(t)`);
        `blueprint` ``"sensor.camera.semantic_segmentation"`` spawns CARLA's semantic camera (needs a semantic head)."""
        return sensor_world.spawn_camera(self, spec, attach_to, transform, blueprint=blueprint)

    def to_mesh(self, level: float | None = None, *, colors: str = "auto", color_size: int | None = None, device=None):
        """Marching-cubes `open3d.geometry.TriangleMesh` of the density (scene metres), coloured by the decoded
        appearance; `level` is a density in 1/m (default ln2 / voxel size)."""
        return field_to_mesh(self, level, colors=colors, color_size=color_size, device=device)

    def to_point_cloud(self, cameras=None, *, min_alpha: float = HIT_ALPHA, stride: int = 1, voxel_size=None, device=None,
                       color_by: str = "rgb"):
        """Coloured `open3d.geometry.PointCloud` back-projected from rendered RGB-D at `cameras` (default: 11
        overview views), coloured by appearance or (``color_by="class"``) by semantic class. For the labels
        themselves use `nfldm_sdk.viz.points.scene_points` (``labels [P]`` uint8 CARLA tags)."""
        return scene_to_point_cloud(self, cameras, min_alpha=min_alpha, stride=stride, voxel_size=voxel_size,
                                    device=device, color_by=color_by)

    def show(self, trajectory=None, rig=None, *, screenshot=None, geometry: str = "mesh", level=None,
             width: int = 1280, height: int = 720, view: str = "above_behind", device=None, color_by: str = "rgb"):
        """Open the scene in Open3D (mesh or points, rig frusta along `trajectory`, the path as a line; coloured by
        appearance or, ``color_by="class"``, by semantic class), or with `screenshot=PATH` render the same view
        offscreen to a PNG and return its path."""
        return show_scene(self, trajectory, rig, geometry=geometry, level=level, screenshot=screenshot, width=width,
                          height=height, view=view, device=device, color_by=color_by)
