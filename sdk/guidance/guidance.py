"""Image diffusion models that guide score distillation (docs/method.md, stage 4): the interface, the guidance
formulas, and two implementations.

The interface (`GuidanceModel`) is what `nfldm_sdk.guidance.sds` needs from a 2D diffusion model:

* ``encode(images)`` — renders ``[B, 3, H, W]`` in [0, 1] -> the model's clean sample ``x_0`` (a VAE latent for a
  latent diffusion model, the image in [-1, 1] for a pixel model); differentiable, since the SDS gradient flows
  back through it into the voxel field;
* ``predict_noise(x_t, t, cond)`` — the noise ``ε̂(x_t; t, cond)`` of the forward process
  ``x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε`` (v-prediction models convert: ``ε = √ᾱ_t v + √(1−ᾱ_t) x_t``);
* the conditions: ``dataset_condition`` y (looks like the captured data), ``artifact_condition`` y′ (looks like raw
  model samples, artifacts included) and ``null_condition`` ∅ (the unconditional model).

Negative guidance — what the formula realises, exactly
------------------------------------------------------
Classifier-free guidance with scale s, condition c and "unconditional" branch u computes

    ε̂ = ε(x_t | u) + s · (ε(x_t | c) − ε(x_t | u)) = s · ε(x_t | c) + (1 − s) · ε(x_t | u).

The noise prediction is a scaled score, ``ε(x_t | c) = −σ_t ∇ log p_t(x_t | c)`` with ``σ_t = √(1−ᾱ_t)``, and the
score of a product of powers of densities is the same combination of their scores, so

    ε̂ = −σ_t ∇ log [ p_t(x_t | c)^s · p_t(x_t | u)^(1−s) ] = −σ_t ∇ log [ p_t(x_t | c)^s / p_t(x_t | u)^(s−1) ].

`negative_guidance_eps` is this formula with c = y (dataset) and u = y′ (artifact), s = α: it realises the
target ``p(x|y)^α / p(x|y′)^(α−1)``, whose exponents sum to one (α + (1 − α) = 1). The paper writes
``p(x|y)^α / p(x|y′)`` but describes the operation as "classifier-free guidance with condition y and the
unconditional embedding replaced by y′" — the formula above. The literal ``p^α / p′`` (score ``α ∇log p_y − ∇log
p_y′``) has exponents summing to α − 1: at α = 1 it would cancel the data term altogether, and its ε̂ is not a
noise estimate of unit scale. We implement the operational description; α = 1 gives plain conditional SDS with y,
α > 1 moves away from y′. Plain CFG (`cfg_eps`, u = ∅) realises ``p(x|y)^s · p(x)^(1−s)`` — the comparison
baseline. ``tests/test_sds.py`` checks the formula against autograd scores of Gaussians.

Implementations
---------------
* `ClipImageLDMGuidance` — the paper's recipe: a latent diffusion image-variation model conditioned on CLIP image
  embeddings (the folder layout of ``lambdalabs/sd-image-variations-diffusers``). Nothing is ever downloaded: a
  missing or incomplete folder raises `GuidanceNotAvailable` naming the command that fetches it.
* `PriorGuidance` — our offline pixel-space prior: a small class-conditional diffusers ``UNet2DModel``
  (`PriorUNet`, classes 0 = null, 1 = dataset, 2 = artifact) trained by ``nfldm train prior``; saved as
  ``config.json`` + ``model.safetensors`` and optionally shipped in a model bundle as part ``prior/``
  (`add_prior_to_bundle`, `PriorGuidance.from_bundle`).
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, Sequence, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn

from nfldm_sdk.persistence import CONFIG_NAME, WEIGHTS_NAME, PretrainedMixin, class_path, resolve_model_dir
from nfldm_sdk.pipelines.sampling import NoiseSchedule, training_scheduler
from nfldm_sdk.errors import NfldmError

__all__ = ["GuidanceModel", "GuidanceNotAvailable", "negative_guidance_eps", "cfg_eps", "guided_noise",
           "eps_from_prediction", "expand_condition", "ClipImageLDMGuidance", "CLIP_LDM_LAYOUT", "CLIP_LDM_REPO",
           "PriorConfig", "PriorUNet", "PriorGuidance", "PRIOR_CLASSES", "PRIOR_PART", "add_prior_to_bundle",
           "bundle_has_prior", "load_conditions", "save_conditions"]

#: Class labels of `PriorUNet`.
PRIOR_CLASSES = {"null": 0, "dataset": 1, "artifact": 2}
#: The name (and folder) of the prior's part in a model bundle.
PRIOR_PART = "prior"
#: The Hugging Face repository whose layout `ClipImageLDMGuidance` reads.
CLIP_LDM_REPO = "lambdalabs/sd-image-variations-diffusers"
#: Sub-folder -> the config file that must be in it.
CLIP_LDM_LAYOUT = {"unet": "config.json", "vae": "config.json", "image_encoder": "config.json",
                   "feature_extractor": "preprocessor_config.json", "scheduler": "scheduler_config.json"}


class GuidanceNotAvailable(NfldmError, FileNotFoundError):
    """A guidance model's weights are not on this machine; the message names what to download and where."""


# ============================================================================================ interface
@runtime_checkable
class GuidanceModel(Protocol):
    """What score distillation needs from a 2D diffusion model (see the module docstring).

    Attributes:
        num_train_timesteps: T; timesteps are integers ``0 … T−1``.
        alphas_cumprod: ``[T]`` float, ``ᾱ_t`` of the model's forward process.
        image_size: ``(H, W)`` pixels the model works at; renders are resized to it by `encode`.
        dataset_condition: y, an unbatched condition (``[D]`` embedding, or a 0-d class index).
        artifact_condition: y′, same kind as y.
        null_condition: ∅, same kind as y.
    """

    num_train_timesteps: int
    alphas_cumprod: torch.Tensor
    image_size: tuple[int, int]
    dataset_condition: torch.Tensor
    artifact_condition: torch.Tensor
    null_condition: torch.Tensor

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` RGB in [0, 1] (any size) -> clean samples ``x_0 [B, c, h, w]``; differentiable."""
        ...

    def predict_noise(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """``x_t [B, c, h, w]``, ``t [B]`` int64, ``cond [B, ...]`` (batched conditions) -> ``ε̂ [B, c, h, w]``."""
        ...


def negative_guidance_eps(eps_y: torch.Tensor, eps_yprime: torch.Tensor, alpha: float) -> torch.Tensor:
    """Negative guidance: ``ε̂ = ε(x|y′) + α (ε(x|y) − ε(x|y′))``.

    It is the noise estimate of ``p(x|y)^α / p(x|y′)^(α−1)`` (module docstring: the score of a product of powers is
    the weighted sum of scores, ``ε = −σ_t · score``): α = 1 is plain conditional guidance with y, α > 1 pushes
    away from y′.

    Args:
        eps_y: ``[B, ...]`` ε̂ with the dataset condition y.
        eps_yprime: ``[B, ...]`` ε̂ with the artifact condition y′.
        alpha: α ≥ 0.
    """
    return cfg_eps(eps_y, eps_yprime, alpha)


def cfg_eps(eps_cond: torch.Tensor, eps_uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance: ``ε̂ = ε_u + s (ε_c − ε_u)``, the noise estimate of ``p(x|c)^s · p(x|u)^(1−s)``.

    Args:
        eps_cond, eps_uncond: ``[B, ...]`` ε̂ with the condition and with the unconditional (null) branch.
        scale: s (1 = conditional only, 0 = unconditional only).
    """
    return eps_uncond + float(scale) * (eps_cond - eps_uncond)


def expand_condition(cond: torch.Tensor, batch: int) -> torch.Tensor:
    """An unbatched condition (``[D]`` embedding or 0-d class index) repeated for a batch: ``[batch, D]`` / ``[batch]``."""
    return cond.unsqueeze(0).expand(batch, *cond.shape)


@torch.no_grad()
def guided_noise(model: GuidanceModel, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor,
                 negative: torch.Tensor | None, scale: float) -> torch.Tensor:
    """``ε̂`` with guidance: `cfg_eps` of the model's predictions with `cond` and with `negative` (one batched call).

    Args:
        model: a `GuidanceModel`.
        x_t: ``[B, c, h, w]`` noisy samples; t: ``[B]`` int64 timesteps.
        cond: unbatched condition (e.g. ``model.dataset_condition``).
        negative: unbatched condition of the other branch (``model.artifact_condition`` for negative guidance,
            ``model.null_condition`` for plain CFG); ignored when ``scale == 1`` (the branch has weight 0).
        scale: α (or s).
    Returns:
        ``[B, c, h, w]`` ε̂.
    """
    B = x_t.shape[0]
    if negative is None or float(scale) == 1.0:
        return model.predict_noise(x_t, t, expand_condition(cond, B))
    conds = torch.cat([expand_condition(cond, B), expand_condition(negative.to(cond), B)])
    eps = model.predict_noise(torch.cat([x_t, x_t]), torch.cat([t, t]), conds)
    return cfg_eps(eps[:B], eps[B:], scale)


def eps_from_prediction(prediction: torch.Tensor, x_t: torch.Tensor, alpha_bar: torch.Tensor,
                        prediction_type: str) -> torch.Tensor:
    """Convert a model output to ε.

    Args:
        prediction: ``[B, ...]`` what the model predicts.
        x_t: ``[B, ...]`` its input.
        alpha_bar: ``[B]`` ᾱ_t of each sample.
        prediction_type: ``"epsilon"`` (returned as is), ``"v_prediction"`` (``ε = √ᾱ v + √(1−ᾱ) x_t``, from
            ``v = √ᾱ ε − √(1−ᾱ) x_0`` and ``x_t = √ᾱ x_0 + √(1−ᾱ) ε``) or ``"sample"`` (``ε = (x_t − √ᾱ x̂_0) / √(1−ᾱ)``).
    """
    a = alpha_bar.to(prediction.dtype).reshape(-1, *[1] * (prediction.dim() - 1))
    if prediction_type == "epsilon":
        return prediction
    if prediction_type == "v_prediction":
        return a.sqrt() * prediction + (1.0 - a).sqrt() * x_t
    if prediction_type == "sample":
        return (x_t - a.sqrt() * prediction) / (1.0 - a).sqrt()
    raise ValueError(f"unknown prediction_type {prediction_type!r}: epsilon, v_prediction or sample")


def _resize(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``[B, 3, H, W]`` -> ``[B, 3, *size]`` (bilinear, antialiased when shrinking; differentiable)."""
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    shrink = images.shape[-2] > size[0] or images.shape[-1] > size[1]
    return F.interpolate(images, size=tuple(size), mode="bilinear", align_corners=False, antialias=shrink)


def _check_images(images: torch.Tensor) -> None:
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be [B, 3, H, W] RGB in [0, 1], got {tuple(images.shape)}")


# ============================================================================================ conditions on disk
def save_conditions(path: str | Path, dataset: torch.Tensor, artifact: torch.Tensor) -> Path:
    """Write y (``dataset``) and y′ (``artifact``) embeddings ``[D]`` to one ``.safetensors`` file."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"dataset": dataset.detach().float().cpu().contiguous(), "artifact": artifact.detach().float().cpu().contiguous()},
              str(path), metadata={"format": "nfldm.guidance_conditions"})
    return path


def load_conditions(path: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Read ``(dataset, artifact)`` embeddings written by `save_conditions`."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"guidance conditions {path} not found (written by save_conditions / `nfldm refine "
                                "--save-conditions`)")
    t = load_file(str(path))
    missing = {"dataset", "artifact"} - set(t)
    if missing:
        raise ValueError(f"{path} lacks {sorted(missing)}: not a guidance-conditions file")
    return t["dataset"], t["artifact"]


# ============================================================================================ CLIP-image LDM
def _size_hw(size) -> tuple[int, int]:
    """(height, width) of a transformers size dict / SizeDict."""
    get = (lambda k: size.get(k)) if isinstance(size, dict) else (lambda k: getattr(size, k, None))
    h, w = get("height"), get("width")
    if h is None or w is None:
        edge = get("shortest_edge")
        if edge is None:
            raise ValueError(f"cannot read an image size from {size!r}")
        h = w = edge
    return int(h), int(w)


class ClipImageLDMGuidance(nn.Module):
    """The paper's guidance: a latent diffusion image-variation model conditioned on CLIP image embeddings.

    Reads the layout of ``lambdalabs/sd-image-variations-diffusers`` (`from_pretrained`): ``unet/``
    (``UNet2DConditionModel``, the CLIP embedding ``[B, 1, D]`` as ``encoder_hidden_states``), ``vae/``
    (``AutoencoderKL``), ``image_encoder/`` (transformers ``CLIPVisionModelWithProjection``), ``feature_extractor/``
    (``CLIPImageProcessor``: its crop size, mean and std) and ``scheduler/`` (the training noise schedule).

    * ``encode``: renders resized (bilinear) to ``image_size`` = U-Net sample size × VAE factor, mapped to [-1, 1],
      VAE-encoded to the **mean** of the latent distribution (deterministic and lower-variance than a sample; ours)
      and scaled by ``vae.config.scaling_factor``.
    * Conditions: y and y′ are mean CLIP image embeddings (`compute_condition`) of dataset images and of renders of
      raw model samples; they must be set (`set_conditions`) before use. The null condition is the zero embedding,
      as in the diffusers image-variation pipeline's classifier-free guidance.

    Weights are only ever read from the local folder (``local_files_only=True``; ``HF_HUB_OFFLINE`` is honoured).
    """

    guidance_name = "clip-ldm"
    """The ``nfldm refine --guidance`` name of this model (recorded in a refined scene's ``scene.json``)."""

    def __init__(self, unet: nn.Module, vae: nn.Module, image_encoder: nn.Module, feature_extractor,
                 alphas_cumprod: torch.Tensor, prediction_type: str = "epsilon"):
        super().__init__()
        self.unet, self.vae, self.image_encoder = unet.eval(), vae.eval(), image_encoder.eval()
        for m in (self.unet, self.vae, self.image_encoder):
            m.requires_grad_(False)
        self.feature_extractor = feature_extractor
        self.prediction_type = prediction_type
        self.register_buffer("alphas_cumprod", alphas_cumprod.float(), persistent=False)
        self.num_train_timesteps = int(alphas_cumprod.numel())
        vae_factor = 2 ** (len(vae.config.block_out_channels) - 1)
        s = unet.config.sample_size
        h, w = (s, s) if isinstance(s, int) else tuple(s)
        self.image_size = (int(h) * vae_factor, int(w) * vae_factor)
        self.clip_size = _size_hw(feature_extractor.crop_size)
        dim = int(image_encoder.config.projection_dim)
        # Buffers (not saved), so that .to(device) moves the conditions with the model.
        self.register_buffer("_null", torch.zeros(dim), persistent=False)
        self.register_buffer("_dataset", None, persistent=False)
        self.register_buffer("_artifact", None, persistent=False)

    # ------------------------------------------------------------------ loading
    @staticmethod
    def missing_parts(folder: str | Path) -> list[str]:
        """The sub-folders/files of the layout that `folder` lacks (empty when complete)."""
        folder = Path(folder)
        missing = []
        for sub, cfg in CLIP_LDM_LAYOUT.items():
            if not (folder / sub / cfg).is_file():
                missing.append(f"{sub}/{cfg}")
            elif sub in ("unet", "vae", "image_encoder") and not any(
                    p.suffix in (".safetensors", ".bin") for p in (folder / sub).iterdir()):
                missing.append(f"{sub}/ weights (*.safetensors)")
        return missing

    @classmethod
    def from_pretrained(cls, folder: str | Path, device: str | torch.device = "cpu",
                        dtype: torch.dtype = torch.float32) -> "ClipImageLDMGuidance":
        """Load the model from a local folder in the sd-image-variations layout (never from the network).

        Raises:
            GuidanceNotAvailable: the folder is missing or incomplete; the message names the download command.
        """
        folder = Path(folder)
        missing = cls.missing_parts(folder) if folder.is_dir() else ["the whole folder"]
        if missing:
            raise GuidanceNotAvailable(
                f"CLIP-image LDM guidance needs the {CLIP_LDM_REPO} checkpoint in {folder}, which lacks "
                f"{', '.join(missing)}. nfldm never downloads weights: on a machine with internet run\n"
                f"    huggingface-cli download {CLIP_LDM_REPO} --local-dir {folder}\n"
                f"(folders {', '.join(CLIP_LDM_LAYOUT)}; about 5 GB) and pass --guidance-path {folder}; or use the "
                "offline prior instead: `nfldm train prior ...` then --guidance prior.")
        from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
        from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

        kw = dict(local_files_only=True)
        unet = UNet2DConditionModel.from_pretrained(folder / "unet", torch_dtype=dtype, **kw)
        vae = AutoencoderKL.from_pretrained(folder / "vae", torch_dtype=dtype, **kw)
        image_encoder = CLIPVisionModelWithProjection.from_pretrained(folder / "image_encoder", dtype=dtype, **kw)
        processor = CLIPImageProcessor.from_pretrained(folder / "feature_extractor", **kw)
        # The checkpoint ships a PNDM scheduler; only its forward process (betas) matters here, which DDPM shares.
        sched_cfg = json.loads((folder / "scheduler" / CLIP_LDM_LAYOUT["scheduler"]).read_text())
        known = {"num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas", "prediction_type"}
        sched = DDPMScheduler(**{k: v for k, v in sched_cfg.items() if k in known})
        model = cls(unet, vae, image_encoder, processor, sched.alphas_cumprod.clone(),
                    prediction_type=sched.config.prediction_type)
        return model.to(device)

    # ------------------------------------------------------------------ conditions
    @torch.no_grad()
    def embed_images(self, images: torch.Tensor, batch_size: int = 16) -> torch.Tensor:
        """CLIP image embeddings ``[N, D]`` of ``images [N, 3, H, W]`` in [0, 1].

        Pre-processing in torch with the feature extractor's numbers: resize to its crop size (bicubic, the whole
        image, no crop — the way the image-variation model was fine-tuned), normalise with its mean and std."""
        _check_images(images)
        mean = torch.tensor(self.feature_extractor.image_mean, device=self._null.device).reshape(1, 3, 1, 1)
        std = torch.tensor(self.feature_extractor.image_std, device=self._null.device).reshape(1, 3, 1, 1)
        dtype = next(self.image_encoder.parameters()).dtype
        out = []
        for chunk in images.split(max(1, int(batch_size))):
            x = chunk.to(self._null.device, torch.float32)
            x = F.interpolate(x, size=self.clip_size, mode="bicubic", align_corners=False).clamp(0.0, 1.0)
            out.append(self.image_encoder(pixel_values=((x - mean) / std).to(dtype)).image_embeds.float())
        return torch.cat(out)

    def compute_condition(self, images: torch.Tensor | Sequence[torch.Tensor], batch_size: int = 16) -> torch.Tensor:
        """The condition of a set of images: their mean CLIP image embedding ``[D]``, rescaled to the images' mean
        embedding norm (averaging shrinks the norm, and the U-Net only saw single-image norms; ours).

        Args:
            images: ``[N, 3, H, W]`` in [0, 1], or a sequence of ``[3, H, W]`` / ``[n, 3, H, W]`` of any sizes.
        """
        if isinstance(images, torch.Tensor):
            e = self.embed_images(images, batch_size)                              # [N, D]
        else:
            e = torch.cat([self.embed_images(x if x.dim() == 4 else x[None], batch_size) for x in images])
        if e.shape[0] == 0:
            raise ValueError("compute_condition needs at least one image")
        m = e.mean(0)
        return m * (e.norm(dim=-1).mean() / m.norm().clamp_min(1e-12))

    def set_conditions(self, dataset: torch.Tensor | None = None, artifact: torch.Tensor | None = None) -> None:
        """Set y (`dataset`) and/or y′ (`artifact`), each ``[D]``."""
        for name, v in (("dataset", dataset), ("artifact", artifact)):
            if v is None:
                continue
            if v.shape != self._null.shape:
                raise ValueError(f"{name} condition must be a [{self._null.numel()}] CLIP embedding, got {tuple(v.shape)}")
            setattr(self, f"_{name}", v.detach().to(self._null))

    @property
    def dataset_condition(self) -> torch.Tensor:
        if self._dataset is None:
            raise ValueError("the dataset condition y is not set: compute it from captured images with "
                             "compute_condition(images) and set_conditions(dataset=...) "
                             "(CLI: --dataset-images DIR or --conditions FILE)")
        return self._dataset

    @property
    def artifact_condition(self) -> torch.Tensor:
        if self._artifact is None:
            raise ValueError("the artifact condition y′ is not set: compute it from renders of raw samples with "
                             "compute_condition(renders) and set_conditions(artifact=...)")
        return self._artifact

    @property
    def null_condition(self) -> torch.Tensor:
        return self._null

    # ------------------------------------------------------------------ the model
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Renders ``[B, 3, H, W]`` in [0, 1] -> VAE latents ``[B, 4, h, w]`` × scaling factor (differentiable)."""
        _check_images(images)
        dtype = next(self.vae.parameters()).dtype
        x = _resize(images, self.image_size) * 2.0 - 1.0
        latents = self.vae.encode(x.to(dtype)).latent_dist.mean
        return latents * float(self.vae.config.scaling_factor)

    def predict_noise(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """ε̂ of the U-Net with CLIP embeddings ``cond [B, D]`` (used as a one-token ``encoder_hidden_states``)."""
        dtype = next(self.unet.parameters()).dtype
        pred = self.unet(x_t.to(dtype), t, encoder_hidden_states=cond[:, None, :].to(dtype)).sample
        return eps_from_prediction(pred.to(x_t.dtype), x_t, self.alphas_cumprod[t], self.prediction_type)


# ============================================================================================ our prior
@dataclass
class PriorConfig:
    """Configuration of `PriorUNet` (sizes by preset in ``nfldm_training.configs.presets``)."""

    image_size: tuple[int, int] = (32, 32)
    """``(H, W)`` the prior models; images are resized to it. Divisible by ``2^(len(block_out_channels)−1)``."""
    block_out_channels: tuple[int, ...] = (32, 64, 64)
    """Channels of the U-Net's resolution levels (diffusers ``UNet2DModel``)."""
    down_block_types: tuple[str, ...] = ("DownBlock2D", "DownBlock2D", "AttnDownBlock2D")
    """diffusers down blocks, one per level (``"AttnDownBlock2D"`` adds self-attention)."""
    up_block_types: tuple[str, ...] = ("AttnUpBlock2D", "UpBlock2D", "UpBlock2D")
    """diffusers up blocks, one per level, mirroring `down_block_types`."""
    layers_per_block: int = 1
    """ResNet layers per block."""
    attention_head_dim: int = 16
    """Channels per attention head."""
    norm_num_groups: int = 8
    """GroupNorm groups (divides every entry of `block_out_channels`)."""
    schedule: NoiseSchedule = field(default_factory=NoiseSchedule)
    """The forward process the prior is trained with (default: T = 1000, cosine, **v-prediction**, like stage 3;
    `PriorGuidance` converts its v to ε)."""

    def __post_init__(self):
        n = len(self.block_out_channels)
        if len(self.down_block_types) != n or len(self.up_block_types) != n:
            raise ValueError(f"need one down and one up block type per entry of block_out_channels ({n}), got "
                             f"{len(self.down_block_types)} and {len(self.up_block_types)}")
        f = 2 ** (n - 1)
        if self.image_size[0] % f or self.image_size[1] % f:
            raise ValueError(f"image_size {self.image_size} must be divisible by {f} (2^(levels-1))")
        if any(c % self.norm_num_groups for c in self.block_out_channels):
            raise ValueError(f"norm_num_groups {self.norm_num_groups} must divide every entry of block_out_channels "
                             f"{self.block_out_channels}")


class PriorUNet(nn.Module, PretrainedMixin):
    """Class-conditional pixel-space diffusion U-Net: ``(x_t [B,3,H,W] in [-1,1] units, t [B], class [B]) ->``
    prediction ``[B,3,H,W]`` of the config's ``schedule.prediction_type``.

    Classes (`PRIOR_CLASSES`): 0 = null (condition dropout), 1 = dataset (captured images), 2 = artifact (renders of
    generated scenes). A thin wrapper around diffusers' ``UNet2DModel`` (class embedding added to the time
    embedding, ``num_class_embeds = 3``) so that it saves as ``config.json`` + ``model.safetensors`` like every
    nfldm network and can be a bundle part.
    """

    config_class = PriorConfig

    def __init__(self, config: PriorConfig):
        super().__init__()
        from diffusers import UNet2DModel

        self.config = config
        self.unet = UNet2DModel(
            sample_size=tuple(config.image_size), in_channels=3, out_channels=3,
            block_out_channels=tuple(config.block_out_channels), down_block_types=tuple(config.down_block_types),
            up_block_types=tuple(config.up_block_types), layers_per_block=config.layers_per_block,
            attention_head_dim=config.attention_head_dim, norm_num_groups=config.norm_num_groups,
            num_class_embeds=len(PRIOR_CLASSES))

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, class_labels: torch.Tensor) -> torch.Tensor:
        return self.unet(x_t, t, class_labels=class_labels.long()).sample


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
        return cls(_load_prior_part(bundle, verify=verify).to(device)).to(device)

    @property
    def dataset_condition(self) -> torch.Tensor:
        return self._dataset

    @property
    def artifact_condition(self) -> torch.Tensor:
        return self._artifact

    @property
    def null_condition(self) -> torch.Tensor:
        return self._null

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Renders ``[B, 3, H, W]`` in [0, 1] -> ``[B, 3, *image_size]`` in [-1, 1] (bilinear; differentiable)."""
        _check_images(images)
        return _resize(images, self.image_size) * 2.0 - 1.0

    def predict_noise(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """ε̂ for classes ``cond [B]``."""
        pred = self.prior(x_t, t, cond)
        return eps_from_prediction(pred, x_t, self.alphas_cumprod[t], self.prediction_type)


# ============================================================================================ bundles
def bundle_has_prior(bundle: str | Path) -> bool:
    """Whether the bundle's manifest lists a ``prior`` part."""
    from nfldm_sdk.pipelines.generator import read_manifest

    return PRIOR_PART in read_manifest(bundle).parts


def _load_prior_part(bundle: str | Path, verify: bool = True) -> PriorUNet:
    from nfldm_sdk.pipelines.bundle import load_part, read_manifest

    manifest = read_manifest(bundle)
    fix = "add one with `nfldm train prior ... --bundle BUNDLE --add-to-bundle` (or add_prior_to_bundle(BUNDLE, RUN/model))"
    if PRIOR_PART not in manifest.parts:
        raise GuidanceNotAvailable(f"bundle {bundle} has no {PRIOR_PART!r} part; {fix}, or pass --guidance-path RUN")
    return load_part(bundle, PRIOR_PART, manifest, verify=verify, cls=PriorUNet, fix=fix)  # type: ignore[return-value]


def add_prior_to_bundle(bundle: str | Path, prior_dir: str | Path) -> Path:
    """Copy a trained prior (``RUN/model`` or a folder with ``config.json`` + ``model.safetensors``) into
    ``BUNDLE/prior/`` and list it in the manifest (class, path, sha256); returns the part folder.

    An existing prior part is replaced. The prior is verified by its own sha256; the ``bundle_hash`` (the identity
    of the generative model) does not change, so scenes generated earlier still load with this bundle. The part is copied to a temporary
    folder first and the manifest is replaced atomically last.
    """
    from nfldm_sdk.pipelines.generator import MANIFEST_NAME, part_hash, read_manifest

    bundle = Path(bundle)
    manifest = read_manifest(bundle)
    src = resolve_model_dir(prior_dir)
    PriorUNet.load_config(src)                      # raises when it is not a saved PriorUNet
    if not (src / WEIGHTS_NAME).is_file():
        raise FileNotFoundError(f"{src} has no {WEIGHTS_NAME}: save the prior with save_pretrained")
    dst, tmp = bundle / PRIOR_PART, bundle / (PRIOR_PART + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        shutil.copy2(src / name, tmp / name)
    if dst.exists():
        shutil.rmtree(dst)
    tmp.rename(dst)
    manifest.parts[PRIOR_PART] = {"class": class_path(PriorUNet), "path": PRIOR_PART, "sha256": part_hash(dst)}
    manifest.bundle_hash = manifest.compute_hash()
    tmp_manifest = bundle / (MANIFEST_NAME + ".partial")
    tmp_manifest.write_text(json.dumps(dataclasses.asdict(manifest), indent=2) + "\n")
    os.replace(tmp_manifest, bundle / MANIFEST_NAME)
    return dst
