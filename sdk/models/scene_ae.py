"""Stage 1 of NF-LDM: the scene auto-encoder, posed images -> voxel neural field -> images.

``encode`` (docs/method.md, stage 1, steps 1-3):

1. a 2D CNN runs on every input image separately and outputs ``[D + C, H/f, W/f]``;
2. lift: the first D channels become per-bin densities ``σ = softplus(·) ≥ 0`` and the last C the feature
   ``φ``; each pixel's frustum entry at bin d is ``[O(d) · φ, σ(d)]`` with the occupancy weight
   ``O(d) = exp(-Σ_{j<d} σ_j δ_j) · (1 - exp(-σ_d δ_d))`` (`nfldm_sdk.fields.lift_splat.lift`). δ_d is the ray length
   through bin d (planar bin width / z_per_t), so σ is the same extinction per metre of ray that the renderer
   integrates: a field encoded from a view renders back with that view's occupancy;
3. splat: the frustum points of all views go to the scene frame with the cameras' ``cam_to_world`` (here:
   camera -> scene) and are **mean**-pooled into one grid: ``V_density`` ``[Z,Y,X]`` and ``V_feat``
   ``[C,Z,Y,X]`` (`nfldm_sdk.fields.lift_splat.splat`).

``decode`` — the renderer ``î = r(V, κ)`` used by every later stage and by the sensors (steps 4):
volume-render the field at the feature-map resolution ``(H/f, W/f)`` (`nfldm_sdk.rendering.api.render_field`),
then a 2D CNN decoder upsamples the rendered feature map by ``f`` to the image. Depth and alpha are
rendered at the feature-map resolution and bilinearly upsampled to the image size; so are the semantic head's class
probabilities, which an optional label decoder (`LabelDecoder`) then corrects at the image resolution. `SceneAutoEncoder.decode_rendered`
is the part after the render (CNN decode, upsampling, semantic probabilities), for renderers that composite several
fields.

The scene frame is the ego frame at the scene's anchor time (x forward, y left, z up, metres); the voxel
box `SceneAEConfig.bounds` is given in it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from nfldm_sdk.cameras.pinhole import Cameras
from nfldm_sdk.fields.voxel_field import VoxelField
from nfldm_sdk.fields.lift_splat import DepthBins, depth_bins, lift_splat
from nfldm_sdk.labels.classes import SemanticClasses
from nfldm_sdk.labels.semantic_field import refined_probabilities
from nfldm_sdk.models.blocks import Downsample, ResBlock, group_norm, upsampling_layers
from nfldm_sdk.models.semantic_head import SemanticHead
from nfldm_sdk.persistence import PretrainedMixin
from nfldm_sdk.rendering.api import RenderOutput, render_field

#: The hit threshold `SceneAutoEncoder.decode` uses by default, i.e. in training and evaluation: a rendered depth
#: wherever a ray meets any density, so the depth loss also reaches surfaces that are still faint early in
#: training (with the user-facing `nfldm_sdk.rendering.api.HIT_ALPHA` = 0.5 a ray below half opacity would have depth
#: ``inf`` and get no depth gradient), and the model card's depth figures keep their meaning. The SDK's renders
#: (`NeuralScene.render`, the sensors) pass ``min_hit_alpha=HIT_ALPHA``.
TRAINING_MIN_HIT_ALPHA = 1e-4


@dataclass
class SceneAEConfig:
    """Configuration of `SceneAutoEncoder` (sizes of the paper's model are in ``nfldm_training.configs.presets``)."""

    image_size: tuple[int, int] = (64, 64)
    """Image ``(height, width)`` in pixels of encoder inputs and training targets; both divisible by `downsample`."""
    downsample: int = 4
    """Feature downsample factor f (a power of 2): the encoder's output and the render are at ``(H/f, W/f)``."""
    depth_bins: int = 16
    """D, the number of depth bins of each pixel's frustum."""
    near: float = 1.0
    """Depth of the first bin's near edge and the render's near plane, metres (planar z-depth)."""
    far: float = 60.0
    """Depth of the last bin's far edge and the render's far plane, metres."""
    bin_spacing: str = "linear"
    """Spacing of the depth bins between `near` and `far`: ``"linear"`` or ``"log"`` (finer near the camera; see
    `nfldm_sdk.fields.lift_splat.depth_bins`)."""
    feature_channels: int = 8
    """C, the feature channels of the voxel grid V_feat (the density grid has one channel more, separately)."""
    grid_shape: tuple[int, int, int] = (8, 32, 32)
    """Voxel grid size ``(Z, Y, X)``: Z is vertical. The paper's grid is 128×128×32 = (32, 128, 128)."""
    bounds: tuple[tuple[float, float, float], tuple[float, float, float]] = ((-16.0, -32.0, -2.0), (48.0, 32.0, 6.0))
    """The voxel box ``((xmin, ymin, zmin), (xmax, ymax, zmax))`` in metres in the scene frame (x forward,
    y left, z up; origin on the ground below the ego vehicle at the anchor time)."""
    render_samples: int = 32
    """Samples per ray between `near` and `far` when rendering (trilinear interpolation at each)."""
    encoder_widths: tuple[int, ...] = (16, 32, 64)
    """Channels of the image encoder's stages: the first at full resolution, each further one after a 2× downsample,
    so ``len = log2(downsample) + 1``."""
    decoder_widths: tuple[int, ...] = (64, 32, 16)
    """Channels of the image decoder's stages: the first at the feature-map resolution, each further one after a
    2× upsample, so ``len = log2(downsample) + 1``."""
    blocks_per_stage: int = 1
    """Residual blocks per encoder/decoder stage."""
    semantic_classes: tuple[tuple[str, tuple[int, ...]], ...] = ()
    """The semantic head's class set as ``((name, CARLA tags), ...)`` (`nfldm_sdk.labels.classes.SemanticClasses.
    to_config`; the training presets use `DEFAULT_CLASSES`); empty: no semantic head (models trained before it
    existed load this way and render RGB and depth only)."""
    label_decoder_widths: tuple[int, ...] = ()
    """Channels of the label decoder's stages (`LabelDecoder`, as `decoder_widths`: ``len = log2(downsample) + 1``),
    which corrects the field's rendered labels at the image resolution; empty: no label decoder (camera labels are
    the field's, upsampled). Needs `semantic_classes`."""
    initial_density: float = 0.0
    """Density (1/m) every bin starts at (bias of the density head). 0 picks ``1 / (far - near)``: an optical
    depth of 1 over the frustum, so untrained occupancy is spread over all bins instead of stuck in the first."""

    def __post_init__(self):
        f = self.downsample
        if f < 1 or f & (f - 1):
            raise ValueError(f"downsample must be a power of 2, got {f}")
        levels = int(math.log2(f)) + 1
        for name in ("encoder_widths", "decoder_widths"):
            if len(getattr(self, name)) != levels:
                raise ValueError(f"{name} needs log2(downsample)+1 = {levels} entries for downsample {f}, got {getattr(self, name)}")
        h, w = self.image_size
        if h % f or w % f:
            raise ValueError(f"image_size {self.image_size} must be divisible by downsample {f}")
        if not (0.0 < self.near < self.far):
            raise ValueError(f"need 0 < near < far, got near={self.near}, far={self.far}")
        lo, hi = self.bounds
        if len(lo) != 3 or len(hi) != 3 or any(a >= b for a, b in zip(lo, hi)):
            raise ValueError(f"bounds must be ((xmin, ymin, zmin), (xmax, ymax, zmax)) with min < max, got {self.bounds}")
        if len(self.grid_shape) != 3 or min(self.grid_shape) < 1:
            raise ValueError(f"grid_shape must be (Z, Y, X) positive, got {self.grid_shape}")
        if self.semantic_classes:
            SemanticClasses.from_config(self.semantic_classes)  # validates the class set
        if self.label_decoder_widths:
            if not self.semantic_classes:
                raise ValueError("label_decoder_widths needs semantic_classes: the label decoder corrects the semantic "
                                 "head's rendered labels")
            if len(self.label_decoder_widths) != levels:
                raise ValueError(f"label_decoder_widths needs log2(downsample)+1 = {levels} entries for downsample {f}, "
                                 f"got {self.label_decoder_widths}")

    @property
    def classes(self) -> SemanticClasses | None:
        """The semantic head's `SemanticClasses`, or None without a head."""
        return SemanticClasses.from_config(self.semantic_classes) if self.semantic_classes else None

    @property
    def feature_size(self) -> tuple[int, int]:
        """``(H/f, W/f)``: resolution of the encoder's output and of the render."""
        return self.image_size[0] // self.downsample, self.image_size[1] // self.downsample

    def bounds_tensor(self, device=None, dtype=torch.float32) -> torch.Tensor:
        """`bounds` as ``[2, 3]`` (row 0 min, row 1 max), metres."""
        return torch.tensor(self.bounds, device=device, dtype=dtype)


@dataclass
class SceneRender:
    """What `SceneAutoEncoder.decode` returns (R target cameras per scene).

    Attributes:
        rgb: ``[B, R, 3, H, W]`` in [0, 1].
        depth: ``[B, R, H, W]`` expected planar depth (``Σ w z / alpha``), metres, rendered at ``(H/f, W/f)`` and
            bilinearly upsampled; ``inf`` where the ray met (essentially) nothing, the project's no-hit convention.
        alpha: ``[B, R, H, W]`` accumulated opacity in [0, 1], upsampled likewise.
        features: ``[B, R, C, H/f, W/f]`` the rendered feature map the decoder consumed.
        semantic: ``[B, R, K, H, W]`` class probabilities (`nfldm_sdk.labels.semantic_field`, the classes of
            ``config.classes``), rendered at ``(H/f, W/f)``, bilinearly upsampled and, with a label decoder,
            corrected at ``H×W`` (`SceneAutoEncoder.label_probabilities`); None without a semantic head.
    """

    rgb: torch.Tensor
    depth: torch.Tensor
    alpha: torch.Tensor
    features: torch.Tensor
    semantic: torch.Tensor | None = None


@dataclass
class SceneAEOutput:
    """What `SceneAutoEncoder.forward` returns: the encoded field, its render at the target cameras, and the input
    views' frustum occupancy.

    Attributes:
        field: the encoded `VoxelField` (batched ``[B]``).
        render: `SceneRender` at the target cameras.
        occupancy: ``[B, V, D, h, w]`` per-bin occupancy O(d) of every input view's frustum at the feature-map
            resolution (`nfldm_sdk.fields.lift_splat.lift`); ``1 − Σ_d O(d)`` is the chance its ray sees nothing.
    """

    field: VoxelField
    render: SceneRender
    occupancy: torch.Tensor | None = None


def _like_weights(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """`x` ``[N, C, H, W]`` in the memory layout of a convolution's weight (channels-last when the module was
    converted with ``.to(memory_format=torch.channels_last)``, which runs faster on CPU)."""
    if weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous():
        return x.contiguous(memory_format=torch.channels_last)
    return x


class ImageEncoder(nn.Module):
    """2D CNN: ``[N, 3, H, W]`` in [0, 1] -> ``[N, D + C, H/f, W/f]`` raw (pre-activation) channels."""

    def __init__(self, config: SceneAEConfig):
        super().__init__()
        widths = config.encoder_widths
        self.stem = nn.Conv2d(3, widths[0], 3, padding=1)
        layers: list[nn.Module] = []
        for i, w in enumerate(widths):
            if i > 0:
                layers.append(Downsample(widths[i - 1], w))
            layers.extend(ResBlock(w, w) for _ in range(config.blocks_per_stage))
        self.body = nn.Sequential(*layers)
        self.head = nn.Sequential(group_norm(widths[-1]), nn.SiLU(), nn.Conv2d(widths[-1], config.depth_bins + config.feature_channels, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(self.stem(_like_weights(images * 2.0 - 1.0, self.stem.weight))))


class FeatureDecoder(nn.Module):
    """2D CNN: rendered features ``[N, C, h, w]`` -> image ``[N, 3, h·f, w·f]`` in [0, 1] (sigmoid)."""

    def __init__(self, config: SceneAEConfig):
        super().__init__()
        self.body = nn.Sequential(*upsampling_layers(config.feature_channels, config.decoder_widths,
                                                     config.blocks_per_stage, 3))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.body(_like_weights(features, self.body[0].weight))).contiguous()


class LabelDecoder(nn.Module):
    """2D CNN: rendered features and opacity ``[N, C + 1, h, w]`` -> logit corrections ``[N, K−1, h·f, w·f]`` of the
    solid classes (`nfldm_sdk.labels.semantic_field.refined_probabilities`). Its last convolution starts at zero, so
    an untrained label decoder renders exactly the field's labels."""

    def __init__(self, config: SceneAEConfig):
        super().__init__()
        classes = config.classes
        self.body = nn.Sequential(*upsampling_layers(config.feature_channels + 1, config.label_decoder_widths,
                                                     config.blocks_per_stage, classes.num_classes - 1))
        nn.init.zeros_(self.body[-1].weight)
        nn.init.zeros_(self.body[-1].bias)

    def forward(self, features: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        """features ``[N, C, h, w]`` (``F = Σ w_i f_i``), alpha ``[N, h, w]`` -> ``[N, K−1, h·f, w·f]``."""
        x = torch.cat([features, alpha.unsqueeze(1).to(features.dtype)], dim=1)
        return self.body(_like_weights(x, self.body[0].weight)).contiguous()


def _inverse_softplus(y: float) -> float:
    """x with softplus(x) = y (y > 0)."""
    return y + math.log(-math.expm1(-y))


class SceneAutoEncoder(nn.Module, PretrainedMixin):
    """Posed images -> `VoxelField` (`encode`) -> images, depth at any cameras (`decode`). See the module docstring.

    Example::

        ae = SceneAutoEncoder(SceneAEConfig())
        field = ae.encode(images, cameras)            # images [B,V,3,H,W] in [0,1], cameras [B,V] at H×W
        out = ae.decode(field, target_cameras)        # out.rgb [B,R,3,H,W], out.depth [B,R,H,W]
    """

    config_class = SceneAEConfig

    def __init__(self, config: SceneAEConfig):
        super().__init__()
        self.config = config
        self.encoder = ImageEncoder(config)
        self.decoder = FeatureDecoder(config)
        classes = config.classes
        self.semantic_head = SemanticHead(config.feature_channels, classes) if classes is not None else None
        self.label_decoder = LabelDecoder(config) if config.label_decoder_widths else None
        sigma0 = config.initial_density or 1.0 / (config.far - config.near)
        with torch.no_grad():
            self.encoder.head[-1].bias[: config.depth_bins].fill_(_inverse_softplus(sigma0))
        bins = depth_bins(config.near, config.far, config.depth_bins, config.bin_spacing)
        # Constants, not parameters (and not saved: they follow from the config).
        self.register_buffer("bin_centres", bins.centres, persistent=False)   # [D] planar depth, metres
        self.register_buffer("bin_deltas", bins.deltas, persistent=False)     # [D] bin widths, metres
        self.register_buffer("bounds", config.bounds_tensor(), persistent=False)

    # ---------------------------------------------------------------------------------------------- encode
    def encode(self, images: torch.Tensor, cameras: Cameras) -> VoxelField:
        """Encode posed images of B scenes into B voxel fields (`encode_with_occupancy` without the occupancy)."""
        return self.encode_with_occupancy(images, cameras)[0]

    def encode_with_occupancy(self, images: torch.Tensor, cameras: Cameras) -> tuple[VoxelField, torch.Tensor]:
        """Encode posed images of B scenes into B voxel fields, and return every view's frustum occupancy.

        Args:
            images: ``[B, V, 3, H, W]`` float in [0, 1], ``(H, W)`` divisible by ``config.downsample``
                (normally ``config.image_size``).
            cameras: `Cameras` of batch shape ``[B, V]`` at the image resolution ``H×W``; ``cam_to_world``
                maps camera coordinates to the scene frame.
        Returns:
            ``(field, occupancy)``: `VoxelField` with density ``[B, Z, Y, X]`` (1/m), features ``[B, C, Z, Y, X]``
            and bounds ``[B, 2, 3]``; occupancy ``[B, V, D, H/f, W/f]``, the per-bin O(d) of every view's frustum.
        """
        cfg = self.config
        if images.dim() != 5 or images.shape[2] != 3:
            raise ValueError(f"images must be [B, V, 3, H, W], got {tuple(images.shape)}")
        B, V, _, H, W = images.shape
        f = cfg.downsample
        if H % f or W % f:
            raise ValueError(f"image size {H}x{W} must be divisible by downsample {f}")
        if tuple(cameras.batch_shape) != (B, V):
            raise ValueError(f"cameras must have batch shape [B, V] = [{B}, {V}], got {list(cameras.batch_shape)}")
        if (int(cameras.width), int(cameras.height)) != (W, H):
            raise ValueError(f"cameras are {cameras.width}x{cameras.height} but images are {W}x{H}: pass cameras at the image resolution")
        D = cfg.depth_bins
        raw = self.encoder(images.flatten(0, 1)).unflatten(0, (B, V))               # [B, V, D+C, H/f, W/f]
        raw = raw.float()  # geometry in float32 even under bf16 autocast: frustum points at 50 m need < 0.1 m precision
        sigma = F.softplus(raw[:, :, :D])                                             # [B, V, D, h, w] densities, 1/m
        phi = raw[:, :, D:]                                                           # [B, V, C, h, w]
        # lift (occupancy from σ, with δ = ray length through each bin so σ means what the renderer integrates),
        # frustum points in the scene frame, mean-splat per scene.
        return lift_splat(cameras, sigma, phi, DepthBins(self.bin_centres, self.bin_deltas), self.bounds,
                          cfg.grid_shape, ray_length_deltas=True, return_occupancy=True)

    # ---------------------------------------------------------------------------------------------- decode
    def decode(self, field: VoxelField, cameras: Cameras, *, min_hit_alpha: float = TRAINING_MIN_HIT_ALPHA
               ) -> SceneRender:
        """Render B voxel fields at R cameras each: ``î = r(V, κ)``.

        Args:
            field: batched `VoxelField` (density ``[B, Z, Y, X]``, features ``[B, C, Z, Y, X]``), or one unbatched
                scene (``[Z, Y, X]``), in which case the cameras are ``[R]`` and the outputs lose the ``B`` axis.
            cameras: `Cameras` of batch shape ``[B, R]`` at the output resolution ``H×W`` (divisible by
                ``config.downsample``; any size works, the decoder is fully convolutional); ``cam_to_world``
                is camera -> scene frame.
            min_hit_alpha: rays with a rendered opacity below it get depth ``inf``; the default
                `TRAINING_MIN_HIT_ALPHA` is the training one (why: its comment), pass
                `nfldm_sdk.rendering.api.HIT_ALPHA` for the SDK's user-facing convention.
        Returns:
            `SceneRender` (rgb ``[B, R, 3, H, W]``, depth/alpha ``[B, R, H, W]``, features ``[B, R, C, H/f, W/f]``).
            Alpha is upsampled bilinearly and depth is ``inf`` exactly where it stays below `min_hit_alpha`.
        """
        if not field.is_batched:
            if len(cameras.batch_shape) != 1:
                raise ValueError(f"an unbatched field takes cameras [R], got batch shape {list(cameras.batch_shape)}")
            out = self.decode(VoxelField.stack([field]), cameras.reshape(1, -1), min_hit_alpha=min_hit_alpha)
            return SceneRender(rgb=out.rgb[0], depth=out.depth[0], alpha=out.alpha[0], features=out.features[0],
                               semantic=None if out.semantic is None else out.semantic[0])
        out = self.render_features(field, cameras, min_hit_alpha=min_hit_alpha)
        return self.decode_rendered(out, int(cameras.height), int(cameras.width), min_hit_alpha=min_hit_alpha)

    def render_features(self, field: VoxelField, cameras: Cameras, *,
                        min_hit_alpha: float = TRAINING_MIN_HIT_ALPHA) -> RenderOutput:
        """The volume render of `decode`, before the CNN decoder: B batched fields at cameras ``[B, R]`` of the
        output size ``H×W`` (divisible by ``config.downsample``), rendered at the feature-map resolution
        ``(H/f, W/f)``. Returns the `RenderOutput` (features ``[B, R, C, H/f, W/f]``, depth and alpha
        ``[B, R, H/f, W/f]``) that `decode_rendered` turns into images."""
        cfg = self.config
        f = cfg.downsample
        H, W = int(cameras.height), int(cameras.width)
        if H % f or W % f:
            raise ValueError(f"camera size {W}x{H} must be divisible by downsample {f}")
        if len(cameras.batch_shape) != 2:
            raise ValueError(f"cameras must have batch shape [B, R], got {list(cameras.batch_shape)}")
        return render_field(field, cameras.resized(W // f, H // f), n_samples=cfg.render_samples, near=cfg.near,
                            far=cfg.far, min_hit_alpha=min_hit_alpha)

    def decode_rendered(self, out: RenderOutput, height: int, width: int, *,
                        min_hit_alpha: float = TRAINING_MIN_HIT_ALPHA) -> SceneRender:
        """The part of `decode` after the volume render: CNN-decode a rendered feature image to RGB, upsample alpha
        and depth, and (with a semantic head) the class probabilities. `decode` is ``render_field`` at ``(H/f,
        W/f)`` followed by this; a renderer that composites several fields (`nfldm_sdk.routes.composite`) calls it on
        its own `RenderOutput`.

        Args:
            out: `RenderOutput` of any leading shape ``[...]``: features ``[..., C, h, w]``, depth and alpha
                ``[..., h, w]`` at the feature-map resolution ``(h, w) = (height/f, width/f)``. A pixel *hits* where
                its depth is finite and ``alpha >= min_hit_alpha`` (``render_field``'s output already has depth
                ``inf`` exactly where alpha is below the threshold it was given).
            height, width: output image size in pixels (``h·f``, ``w·f``).
            min_hit_alpha: the hit threshold applied to the upsampled alpha (as in `decode`).
        Returns:
            `SceneRender` with the leading shape ``[...]`` of `out`: rgb ``[..., 3, H, W]``, depth/alpha
            ``[..., H, W]``, features = ``out.features``, semantic ``[..., K, H, W]`` or None.
        """
        f = self.config.downsample
        H, W = int(height), int(width)
        feats = out.features
        lead, (C, h, w) = feats.shape[:-3], feats.shape[-3:]
        if (h * f, w * f) != (H, W):
            raise ValueError(f"a {w}x{h} render decodes to {w * f}x{h * f} (downsample {f}), not {W}x{H}")
        flat = feats.reshape(-1, C, h, w)                                             # [N, C, h, w]
        depth_lo, alpha_lo = out.depth.reshape(-1, h, w), out.alpha.reshape(-1, h, w)  # [N, h, w]
        rgb = self.decoder(flat)                                                      # [N, 3, H, W]
        # Upsample alpha bilinearly and decide "hit" on the upsampled alpha, so the output keeps the render's rule
        # exactly: depth is finite iff alpha >= min_hit_alpha. Depth is the bilinear mix of the neighbouring hit
        # pixels only (normalised by their weight: inf cannot be mixed, and a far-plane stand-in would bleed into
        # silhouettes). A pixel whose upsampled alpha reaches the threshold has a hit neighbour with positive weight
        # (alpha_up is a convex mix of the neighbours' alphas), so the normalisation never divides by zero there.
        hit = torch.isfinite(depth_lo) & (alpha_lo >= min_hit_alpha)                  # [N, h, w]
        depth = torch.where(hit, depth_lo, torch.zeros_like(depth_lo))
        up = F.interpolate(torch.stack([depth, hit.to(depth.dtype), alpha_lo], 1),
                           size=(H, W), mode="bilinear", align_corners=False)         # [N, 3, H, W]
        depth_sum, hit_weight, alpha_up = up.unbind(1)                                # [N, H, W] each
        hit_up = (alpha_up >= min_hit_alpha) & (hit_weight > 0)
        depth_up = torch.where(hit_up, depth_sum / hit_weight.clamp_min(1e-12), torch.full_like(depth_sum, math.inf))
        semantic = self.label_probabilities(flat, alpha_lo, H, W)
        if semantic is not None:
            semantic = semantic.reshape(*lead, *semantic.shape[1:])
        return SceneRender(rgb=rgb.reshape(*lead, 3, H, W), depth=depth_up.reshape(*lead, H, W),
                           alpha=alpha_up.reshape(*lead, H, W), features=feats, semantic=semantic)

    def label_probabilities(self, features: torch.Tensor, alpha: torch.Tensor, height: int, width: int
                            ) -> torch.Tensor | None:
        """The class probabilities of `decode_rendered`: the semantic head's distribution of the rendered features,
        bilinearly upsampled to the image, then corrected by the label decoder when there is one.

        Args:
            features: ``[N, C, h, w]`` rendered features; alpha: ``[N, h, w]`` rendered opacity (feature-map size).
            height, width: the image size ``(h·f, w·f)``.
        Returns:
            ``[N, K, H, W]`` (sum 1 over K, ``p_sky = 1 − alpha_up``), or None without a semantic head.
        """
        if self.semantic_head is None:
            return None
        # upsampled after the softmax: a bilinear mix of distributions stays a distribution, and p_sky = 1 − α
        # upsamples to exactly 1 − alpha_up
        probs = self.semantic_head.probabilities(features.float(), alpha.float())
        probs = F.interpolate(probs, size=(int(height), int(width)), mode="bilinear", align_corners=False)
        if self.label_decoder is None:
            return probs
        correction = self.label_decoder(features, alpha).float()                       # [N, K-1, H, W]
        return refined_probabilities(probs, correction, self.semantic_head.classes.sky_index)

    def forward(self, images: torch.Tensor, cameras: Cameras, target_cameras: Cameras | None = None) -> SceneAEOutput:
        """`encode_with_occupancy` the images, then `decode` at `target_cameras` (the input cameras when None)."""
        field, occupancy = self.encode_with_occupancy(images, cameras)
        return SceneAEOutput(field=field, render=self.decode(field, cameras if target_cameras is None else target_cameras),
                             occupancy=occupancy)
