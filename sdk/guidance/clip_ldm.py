"""The paper's SDS guidance (docs/method.md, stage 4): a latent diffusion image-variation model conditioned on CLIP
image embeddings, `ClipImageLDMGuidance`, a `nfldm_sdk.guidance.base.GuidanceModel`.

It reads the folder layout of ``lambdalabs/sd-image-variations-diffusers`` (`CLIP_LDM_REPO`, `CLIP_LDM_LAYOUT`).
Nothing is ever downloaded: a missing or incomplete folder raises
`nfldm_sdk.guidance.base.GuidanceNotAvailable` naming the command that fetches it.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from nfldm_sdk.guidance.base import GuidanceNotAvailable, check_images, eps_from_prediction, images_to_model_range

__all__ = ["ClipImageLDMGuidance", "CLIP_LDM_LAYOUT", "CLIP_LDM_REPO"]

#: The Hugging Face repository whose layout `ClipImageLDMGuidance` reads.
CLIP_LDM_REPO = "lambdalabs/sd-image-variations-diffusers"
#: Sub-folder -> the config file that must be in it.
CLIP_LDM_LAYOUT = {"unet": "config.json", "vae": "config.json", "image_encoder": "config.json",
                   "feature_extractor": "preprocessor_config.json", "scheduler": "scheduler_config.json"}


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
        # start-up time: the diffusers pipeline and transformers CLIP classes load only when this model is loaded
        from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel  # start-up time
        from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection  # start-up time

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
        check_images(images)
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
        dtype = next(self.vae.parameters()).dtype
        x = images_to_model_range(images, self.image_size)
        latents = self.vae.encode(x.to(dtype)).latent_dist.mean
        return latents * float(self.vae.config.scaling_factor)

    def predict_noise(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """ε̂ of the U-Net with CLIP embeddings ``cond [B, D]`` (used as a one-token ``encoder_hidden_states``)."""
        dtype = next(self.unet.parameters()).dtype
        pred = self.unet(x_t.to(dtype), t, encoder_hidden_states=cond[:, None, :].to(dtype)).sample
        return eps_from_prediction(pred.to(x_t.dtype), x_t, self.alphas_cumprod[t], self.prediction_type)
