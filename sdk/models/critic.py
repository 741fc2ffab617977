"""The perception critic: a small semantic-segmentation network that judges rendered images the way a perception
stack would, and a model bundle's optional ``critic/`` part.

`PerceptionCritic` maps images ``[N, 3, H, W]`` in [0, 1] to per-pixel logits ``[N, K, H, W]`` over the classes of
a `nfldm_sdk.labels.classes.SemanticClasses` set (sky included: in an image sky is a visible class). It is a
fully-convolutional U-Net: an encoder of ``len(widths)`` stages (each after the first halves the resolution with a
stride-2 convolution), a decoder that upsamples back stage by stage and concatenates the encoder's activations of
the same resolution (skip connections keep label edges sharp), and a 1×1 classifier. Every convolution is followed
by GroupNorm and SiLU (`nfldm_sdk.models.blocks.group_norm`): a pixel's prediction does not depend on the other
images of the batch.

It is trained on captured images and their CARLA tags (``nfldm train critic``, `nfldm_training.modules.critic`) and
used by ``nfldm eval``: its labels on rendered RGB against the semantic field's own labels ("label agreement"),
and `features` — the globally average-pooled bottleneck activations ``[N, widths[-1]]`` — for the critic Fréchet
distance (CFD) between captured and generated images.

Resolution: `forward` takes any size (each side a multiple of ``2 ** (len(widths) - 1)`` is exact; others are
handled by resizing the upsampled maps to the skip's size); `predict_classes`, `predict_tags` and `features`
first resize the images to the critic's training size ``config.image_size`` (bilinear, antialiased), so the
critic sees what it was trained on, and resize the logits back to the input size (bilinear) before the argmax.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from nfldm_sdk.errors import NfldmError
from nfldm_sdk.labels.classes import DEFAULT_CLASSES, SemanticClasses
from nfldm_sdk.models.blocks import group_norm
from nfldm_sdk.models.bundle import add_part, load_part, read_manifest
from nfldm_sdk.persistence import PretrainedMixin, resolve_model_dir

__all__ = ["CRITIC_PART", "CriticConfig", "CriticUnavailableError", "PerceptionCritic", "add_critic_to_bundle",
           "bundle_has_critic", "load_critic_part"]

#: The name (and folder) of the critic's part in a model bundle.
CRITIC_PART = "critic"
#: How to add a critic to a bundle, ending the messages about a missing or broken part.
ADD_CRITIC_FIX = ("train one and add it with `nfldm train critic STORE ... --preset PRESET --out RUN --bundle BUNDLE` "
                  "(or add_critic_to_bundle(BUNDLE, RUN/model))")


class CriticUnavailableError(NfldmError, LookupError):
    """A bundle has no ``critic/`` part; the message says how to add one."""


@dataclass
class CriticConfig:
    """Configuration of `PerceptionCritic` (the sizes of each preset are in ``nfldm_training.configs.presets``)."""

    image_size: tuple[int, int] = (64, 64)
    """``(height, width)`` in pixels the critic is trained at; `PerceptionCritic.predict_tags` and `features`
    resize their inputs to it."""
    widths: tuple[int, ...] = (16, 32, 32)
    """Channels of the encoder stages: the first at full resolution, each further one after a 2× downsample; the
    decoder mirrors them. ``widths[-1]`` is D, the size of `PerceptionCritic.features`."""
    blocks_per_stage: int = 1
    """Conv–GroupNorm–SiLU blocks per encoder stage (the decoder has one per stage)."""
    classes: tuple[tuple[str, tuple[int, ...]], ...] = DEFAULT_CLASSES.to_config()
    """The class set as ``((name, CARLA tags), ...)`` (`SemanticClasses.to_config`, the form
    ``SceneAEConfig.semantic_classes`` has); K = its length."""

    def __post_init__(self):
        if len(self.widths) < 1 or min(self.widths) < 1:
            raise ValueError(f"widths must be one or more positive channel counts, got {self.widths}")
        if self.blocks_per_stage < 1:
            raise ValueError(f"blocks_per_stage must be >= 1, got {self.blocks_per_stage}")
        if len(self.image_size) != 2 or min(self.image_size) < 1:
            raise ValueError(f"image_size must be (height, width) positive, got {self.image_size}")
        SemanticClasses.from_config(self.classes)  # validates the class set

    @property
    def semantic_classes(self) -> SemanticClasses:
        """The `SemanticClasses` of `classes`."""
        return SemanticClasses.from_config(self.classes)

    @property
    def feature_dim(self) -> int:
        """D, the length of a `PerceptionCritic.features` vector (``widths[-1]``)."""
        return int(self.widths[-1])


def _conv_block(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    """3×3 convolution (stride `stride`), GroupNorm, SiLU: ``[N, c_in, H, W] -> [N, c_out, H/stride, W/stride]``."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1), group_norm(c_out), nn.SiLU())


class PerceptionCritic(nn.Module, PretrainedMixin):
    """Images ``[N, 3, H, W]`` in [0, 1] -> logits ``[N, K, H, W]`` over ``config.classes`` (module docstring).

    Example::

        critic = PerceptionCritic.from_pretrained("runs/critic")
        tags = critic.predict_tags(images)        # [N, H, W] uint8 CARLA tags (representative tag per class)
        feats = critic.features(images)           # [N, D] float32, for the critic Fréchet distance
    """

    config_class = CriticConfig

    def __init__(self, config: CriticConfig):
        super().__init__()
        self.config = config
        self.classes = config.semantic_classes
        w = config.widths
        self.stem = _conv_block(3, w[0])
        self.down = nn.ModuleList()
        for i, c in enumerate(w):
            layers = [] if i == 0 else [_conv_block(w[i - 1], c, stride=2)]
            layers += [_conv_block(c, c) for _ in range(config.blocks_per_stage)]
            self.down.append(nn.Sequential(*layers))
        # decoder stage i (coarse to fine): upsampled stage-(i+1) output concatenated with the stage-i skip
        self.up = nn.ModuleList(_conv_block(w[i + 1] + w[i], w[i]) for i in range(len(w) - 1))
        self.head = nn.Conv2d(w[0], self.classes.num_classes, 1)
        self.register_buffer("representative_tags", torch.as_tensor(self.classes.representative_tags),
                             persistent=False)

    # ------------------------------------------------------------------------------------------ network
    def _check(self, images: torch.Tensor) -> None:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"the critic takes images [N, 3, H, W] in [0, 1], got shape {tuple(images.shape)}")

    def _encode(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The encoder stages' activations, finest first (the last is the bottleneck)."""
        x = self.stem(images.float() * 2.0 - 1.0)
        skips = []
        for stage in self.down:
            x = stage(x)
            skips.append(x)
        return skips

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``images [N, 3, H, W]`` in [0, 1] at any size -> logits ``[N, K, H, W]`` (float32)."""
        self._check(images)
        skips = self._encode(images)
        x = skips[-1]
        for i in reversed(range(len(self.up))):
            skip = skips[i]
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = self.up[i](torch.cat([x, skip], dim=1))
        return self.head(x)

    # ------------------------------------------------------------------------------------------ inference
    def _at_training_size(self, images: torch.Tensor) -> torch.Tensor:
        self._check(images)
        size = tuple(int(s) for s in self.config.image_size)
        if tuple(images.shape[-2:]) == size:
            return images.float()
        return F.interpolate(images.float(), size=size, mode="bilinear", align_corners=False, antialias=True)

    @torch.no_grad()
    def predict_classes(self, images: torch.Tensor) -> torch.Tensor:
        """``images [N, 3, H, W]`` in [0, 1] -> class indices ``[N, H, W]`` int64 (argmax over ``config.classes``),
        computed at the training size and brought back to ``H×W`` (module docstring)."""
        logits = self(self._at_training_size(images))
        if tuple(logits.shape[-2:]) != tuple(images.shape[-2:]):
            logits = F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=False)
        return logits.argmax(1)

    @torch.no_grad()
    def predict_tags(self, images: torch.Tensor) -> torch.Tensor:
        """``images [N, 3, H, W]`` in [0, 1] -> CARLA tags ``[N, H, W]`` uint8 (each class's representative tag)."""
        return self.representative_tags[self.predict_classes(images)]

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        """``images [N, 3, H, W]`` in [0, 1] -> ``[N, D]`` float32: the bottleneck activations averaged over the
        image (at the training size), the critic Fréchet distance's features."""
        return self._encode(self._at_training_size(images))[-1].mean(dim=(-2, -1))


# ============================================================================================ bundles
def bundle_has_critic(bundle: str | Path) -> bool:
    """Whether the bundle's manifest lists a ``critic`` part."""
    return CRITIC_PART in read_manifest(bundle).parts


def load_critic_part(bundle: str | Path, device: str | torch.device = "cpu", verify: bool = True) -> PerceptionCritic:
    """The `PerceptionCritic` of a bundle's ``critic/`` part, loaded and checked (class, sha256 when `verify`) by
    `nfldm_sdk.models.bundle.load_part`.

    Raises:
        `CriticUnavailableError`: the manifest lists no critic part.
        `nfldm_sdk.models.bundle.BundleError`: the part is missing, of another class, changed or unreadable.
    """
    manifest = read_manifest(bundle)
    if CRITIC_PART not in manifest.parts:
        raise CriticUnavailableError(f"bundle {bundle} has no {CRITIC_PART!r} part; {ADD_CRITIC_FIX}")
    return load_part(bundle, CRITIC_PART, manifest, device=device, verify=verify, cls=PerceptionCritic,  # type: ignore[return-value]
                     fix=ADD_CRITIC_FIX)


def add_critic_to_bundle(bundle: str | Path, critic_dir: str | Path) -> Path:
    """Copy a trained critic (``RUN``, ``RUN/model`` or a folder with ``config.json`` + ``model.safetensors``) into
    ``BUNDLE/critic/`` and list it in the manifest (class, path, sha256); returns the part folder.

    An existing critic part is replaced. Like every optional part it does not change the ``bundle_hash`` (the
    identity of the generative model). Copied to a temporary folder first, the manifest replaced atomically last
    (`nfldm_sdk.models.bundle.add_part`).

    Raises:
        `nfldm_sdk.persistence.ModelNotFoundError`: `critic_dir` holds no saved network.
        ``ValueError``: it holds another network than a `PerceptionCritic`.
    """
    manifest = read_manifest(bundle)
    src = resolve_model_dir(critic_dir)
    PerceptionCritic.load_config(src)               # raises when it is not a saved PerceptionCritic
    return add_part(bundle, CRITIC_PART, src, PerceptionCritic, manifest)
