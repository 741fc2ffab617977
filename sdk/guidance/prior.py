"""Our offline SDS guidance (docs/method.md, stage 4): `PriorGuidance`, the `nfldm_sdk.guidance.base.GuidanceModel`
of a trained `nfldm_sdk.models.prior_unet.PriorUNet`, and the prior as a model bundle's optional ``prior/`` part.

The prior is a small class-conditional pixel-space diffusion U-Net (classes null / dataset / artifact,
`PRIOR_CLASSES`) trained by ``nfldm train prior``. It loads from its run (`PriorGuidance.from_pretrained`) or from a
bundle (`PriorGuidance.from_bundle`), into which `add_prior_to_bundle` copies it; the part is read and checked by
the bundle's one part loader, `nfldm_sdk.models.bundle.load_part`.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from nfldm_sdk.guidance.base import GuidanceNotAvailable, eps_from_prediction, images_to_model_range
from nfldm_sdk.models.prior_unet import PRIOR_CLASSES, PriorUNet
from nfldm_sdk.persistence import resolve_model_dir
from nfldm_sdk.models.bundle import add_part, load_part, read_manifest
from nfldm_sdk.models.noise_schedule import training_scheduler

__all__ = ["PriorGuidance", "PRIOR_PART", "ADD_PRIOR_FIX", "add_prior_to_bundle", "bundle_has_prior", "load_prior_part"]

#: The name (and folder) of the prior's part in a model bundle.
PRIOR_PART = "prior"
#: How to add a prior to a bundle, ending the messages about a missing or broken part.
ADD_PRIOR_FIX = ("train one with `nfldm train prior --data STORE --bundle BUNDLE --preset PRESET --out RUN "
                 "--add-to-bundle`, or add a trained RUN with `nfldm export-bundle ... --prior RUN --out BUNDLE` "
                 "(or add_prior_to_bundle(BUNDLE, RUN))")


class PriorGuidance(nn.Module):
    """`GuidanceModel` of a trained `PriorUNet`: pixel space (``x_0 = 2·image − 1`` at the prior's image size),
    conditions are the class indices (y = dataset, y′ = artifact, ∅ = null); v-predictions are converted to ε."""

    guidance_name = "prior"
    """The ``nfldm refine --guidance`` name of this model (recorded in a refined scene's ``scene.json``)."""

    def __init__(self, prior: PriorUNet):
        super().__init__()
        self.prior = prior.eval()
        self.prior.requires_grad_(False)
        sched = training_scheduler(prior.config.schedule)
        self.register_buffer("alphas_cumprod", sched.alphas_cumprod.clone().float(), persistent=False)
        self.num_train_timesteps = int(prior.config.schedule.num_train_timesteps)
        self.prediction_type = prior.config.schedule.prediction_type
        self.image_size = tuple(int(v) for v in prior.config.image_size)
        for name, index in PRIOR_CLASSES.items():
            self.register_buffer(f"_{name}", torch.tensor(index, dtype=torch.long), persistent=False)

    @classmethod
    def from_pretrained(cls, folder: str | Path, device: str | torch.device = "cpu") -> "PriorGuidance":
        """Load a prior saved by ``nfldm train prior``: the run directory ``RUN`` or its ``RUN/model`` folder
        (`nfldm_sdk.persistence.resolve_model_dir`).

        Raises:
            `GuidanceNotAvailable`: neither holds a saved network.
            ``ValueError`` (a `nfldm_sdk.persistence.ModelFileError` where a file is unreadable) naming the folder
            when it holds another network or a config that does not fit.
        """
        try:
            folder = resolve_model_dir(folder)
        except FileNotFoundError as e:
            raise GuidanceNotAvailable(f"no prior in {folder}: {e}. Train one with `nfldm train prior --data STORE "
                                       "--bundle BUNDLE --out RUN` and pass RUN") from e
        return cls(PriorUNet.from_pretrained(folder, device=device)).to(device)

    @classmethod
    def from_bundle(cls, bundle: str | Path, device: str | torch.device = "cpu", verify: bool = True) -> "PriorGuidance":
        """Load the ``prior/`` part of a model bundle (see `add_prior_to_bundle`); checks class and sha256."""
        return cls(load_prior_part(bundle, verify=verify).to(device)).to(device)

    @property
    def dataset_condition(self) -> torch.Tensor:
        """y: the 0-d class index of "dataset"."""
        return self._dataset

    @property
    def artifact_condition(self) -> torch.Tensor:
        """y′: the 0-d class index of "artifact"."""
        return self._artifact

    @property
    def null_condition(self) -> torch.Tensor:
        """∅: the 0-d class index of "null" (the condition dropped in training)."""
        return self._null

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Renders ``[B, 3, H, W]`` in [0, 1] -> ``[B, 3, *image_size]`` in [-1, 1] (bilinear; differentiable)."""
        return images_to_model_range(images, self.image_size)

    def predict_noise(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """ε̂ ``[B, 3, h, w]`` of ``x_t [B, 3, h, w]`` at timesteps ``t [B]`` for classes ``cond [B]``."""
        pred = self.prior(x_t, t, cond)
        return eps_from_prediction(pred, x_t, self.alphas_cumprod[t], self.prediction_type)


# ============================================================================================ bundles
def bundle_has_prior(bundle: str | Path) -> bool:
    """Whether the bundle's manifest lists a ``prior`` part."""
    return PRIOR_PART in read_manifest(bundle).parts


def load_prior_part(bundle: str | Path, device: str | torch.device = "cpu", verify: bool = True) -> PriorUNet:
    """The `PriorUNet` of a bundle's ``prior/`` part, loaded and checked (class, sha256 when `verify`) by
    `nfldm_sdk.models.bundle.load_part`.

    Raises:
        `GuidanceNotAvailable`: the manifest lists no prior part.
        `nfldm_sdk.models.bundle.BundleError`: the part is missing, of another class, changed or unreadable.
    """
    manifest = read_manifest(bundle)
    if PRIOR_PART not in manifest.parts:
        raise GuidanceNotAvailable(f"bundle {bundle} has no {PRIOR_PART!r} part (the SDS guidance prior); "
                                   f"{ADD_PRIOR_FIX}; or pass the prior's run explicitly (--guidance-path RUN, "
                                   "PriorGuidance.from_pretrained(RUN))")
    return load_part(bundle, PRIOR_PART, manifest, device=device, verify=verify, cls=PriorUNet,  # type: ignore[return-value]
                     fix=ADD_PRIOR_FIX)


def add_prior_to_bundle(bundle: str | Path, prior_dir: str | Path, *, half: bool = False) -> Path:
    """Copy a trained prior (the ``nfldm train prior`` run ``RUN``, its ``RUN/model``, or a folder with
    ``config.json`` + ``model.safetensors``) into ``BUNDLE/prior/`` and list it in the manifest (class, path,
    sha256); returns the part folder.

    An existing prior part is replaced. The prior is verified by its own sha256; the ``bundle_hash`` (the identity
    of the generative model) does not change, so scenes generated earlier still load with this bundle. The part is
    copied to a temporary folder first and the manifest is replaced atomically last
    (`nfldm_sdk.models.bundle.add_part`).

    Args:
        bundle: the bundle folder.
        prior_dir: the prior's run or model folder.
        half: store its weights as float16 (``nfldm export-bundle --half``; loaded back as float32).
    Raises:
        `nfldm_sdk.persistence.ModelNotFoundError`: `prior_dir` holds no saved network.
        ``ValueError``: it holds another network than a `PriorUNet`.
        `nfldm_sdk.models.bundle.BundleError`: `bundle` is not a model bundle.
    """
    manifest = read_manifest(bundle)
    src = resolve_model_dir(prior_dir)
    PriorUNet.load_config(src)                      # raises when it is not a saved PriorUNet
    return add_part(bundle, PRIOR_PART, src, PriorUNet, manifest, half=half)
