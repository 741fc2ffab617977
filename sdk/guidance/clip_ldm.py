"""The paper's SDS guidance (docs/method.md, stage 4): a latent diffusion image-variation model conditioned on CLIP
image embeddings, `ClipImageLDMGuidance`, a `nfldm_sdk.guidance.base.GuidanceModel`.

The diffusion model (U-Net, VAE, noise schedule) is read from a folder in the layout of
``lambdalabs/sd-image-variations-diffusers`` (`CLIP_LDM_REPO`, `CLIP_LDM_LAYOUT`); the CLIP embeddings y / y′
come from ``open_clip`` (`nfldm_sdk.guidance.open_clip_encoder.OpenClipEncoder`): an open_clip model name plus a
local ``.safetensors`` checkpoint, by default ``FOLDER/open_clip/`` (`CLIP_CHECKPOINT_SUBDIR`) with OpenAI's
ViT-L/14, the encoder the image-variation model was fine-tuned on. y and y′ are mean image embeddings of images
(`compute_condition`: captured frames for y, renders of raw samples for y′) or text embeddings of prompts
(`compute_text_condition`: a prompt and a negative prompt).

Nothing is ever downloaded: a missing or incomplete folder or checkpoint raises
`nfldm_sdk.guidance.base.GuidanceNotAvailable` naming what is missing, the command that fetches it and where to
pass it.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from nfldm_sdk.guidance.base import GuidanceNotAvailable, eps_from_prediction, images_to_model_range
from nfldm_sdk.guidance.open_clip_encoder import DEFAULT_CLIP_MODEL, OpenClipEncoder, find_clip_checkpoint

__all__ = ["ClipImageLDMGuidance", "CLIP_LDM_LAYOUT", "CLIP_LDM_REPO", "CLIP_CHECKPOINT_SUBDIR"]

#: The Hugging Face repository whose layout `ClipImageLDMGuidance` reads.
CLIP_LDM_REPO = "lambdalabs/sd-image-variations-diffusers"
#: Sub-folder -> the config file that must be in it (the repository's ``image_encoder/`` and
#: ``feature_extractor/`` are not read: CLIP comes from open_clip).
CLIP_LDM_LAYOUT = {"unet": "config.json", "vae": "config.json", "scheduler": "scheduler_config.json"}
#: Where `ClipImageLDMGuidance.from_pretrained` looks for the open_clip checkpoint without ``clip_checkpoint``.
CLIP_CHECKPOINT_SUBDIR = "open_clip"


class ClipImageLDMGuidance(nn.Module):
    """The paper's guidance: a latent diffusion image-variation model conditioned on CLIP image embeddings.

    Parts: ``unet`` (diffusers ``UNet2DConditionModel``, the CLIP embedding ``[B, 1, D]`` as
    ``encoder_hidden_states``), ``vae`` (``AutoencoderKL``), ``clip`` (an `OpenClipEncoder`; its D must be the
    U-Net's ``cross_attention_dim``) and the forward process ``alphas_cumprod [T]``.

    * ``encode``: renders resized (bilinear) to ``image_size`` = U-Net sample size × VAE factor, mapped to [-1, 1],
      VAE-encoded to the **mean** of the latent distribution (deterministic and lower-variance than a sample; ours)
      and scaled by ``vae.config.scaling_factor``.
    * Conditions: y and y′ are mean CLIP embeddings of images (`compute_condition`) or of prompts
      (`compute_text_condition`); they must be set (`set_conditions`) before use. The null condition is the zero
      embedding, as in the diffusers image-variation pipeline's classifier-free guidance.

    Weights are only ever read from local files (diffusers ``local_files_only=True``; open_clip from a
    ``.safetensors`` path).
    """

    guidance_name = "clip-ldm"
    """The ``nfldm refine --guidance`` name of this model (recorded in a refined scene's ``scene.json``)."""

    def __init__(self, unet: nn.Module, vae: nn.Module, clip: OpenClipEncoder, alphas_cumprod: torch.Tensor,
                 prediction_type: str = "epsilon"):
        super().__init__()
        self.unet, self.vae, self.clip = unet.eval(), vae.eval(), clip.eval()
        for m in (self.unet, self.vae, self.clip):
            m.requires_grad_(False)
        cross = getattr(unet.config, "cross_attention_dim", None)
        if isinstance(cross, int) and cross != clip.embed_dim:
            raise ValueError(f"the CLIP model {clip.model_name!r} makes {clip.embed_dim}-d embeddings but the U-Net "
                             f"reads {cross}-d ones (cross_attention_dim): pass the CLIP model the image-variation "
                             f"model was trained with (sd-image-variations: {DEFAULT_CLIP_MODEL!r}, 768-d)")
        self.prediction_type = prediction_type
        self.register_buffer("alphas_cumprod", alphas_cumprod.float(), persistent=False)
        self.num_train_timesteps = int(alphas_cumprod.numel())
        vae_factor = 2 ** (len(vae.config.block_out_channels) - 1)
        s = unet.config.sample_size
        h, w = (s, s) if isinstance(s, int) else tuple(s)
        self.image_size = (int(h) * vae_factor, int(w) * vae_factor)
        self.clip_size = tuple(clip.image_size)
        # Buffers (not saved), so that .to(device) moves the conditions with the model.
        self.register_buffer("_null", torch.zeros(clip.embed_dim), persistent=False)
        self.register_buffer("_dataset", None, persistent=False)
        self.register_buffer("_artifact", None, persistent=False)

    # ------------------------------------------------------------------ loading
    @staticmethod
    def missing_parts(folder: str | Path) -> list[str]:
        """The sub-folders/files of the layout (`CLIP_LDM_LAYOUT`) that `folder` lacks (empty when complete)."""
        folder = Path(folder)
        missing = []
        for sub, cfg in CLIP_LDM_LAYOUT.items():
            if not (folder / sub / cfg).is_file():
                missing.append(f"{sub}/{cfg}")
            elif sub in ("unet", "vae") and not any(p.suffix in (".safetensors", ".bin") for p in (folder / sub).iterdir()):
                missing.append(f"{sub}/ weights (*.safetensors)")
        return missing

    @classmethod
    def from_pretrained(cls, folder: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                        *, clip_model: str = DEFAULT_CLIP_MODEL,
                        clip_checkpoint: str | Path | None = None) -> "ClipImageLDMGuidance":
        """Load the model from local files only (never from the network).

        Args:
            folder: the sd-image-variations folder (``unet/``, ``vae/``, ``scheduler/``).
            device, dtype: where and in which precision the networks run.
            clip_model: the open_clip model name of the CLIP encoder (or the path of an open_clip model-config
                ``.json``); default OpenAI's ViT-L/14 (`DEFAULT_CLIP_MODEL`).
            clip_checkpoint: its ``.safetensors`` checkpoint, or a folder holding one; default
                ``folder/open_clip/`` (`CLIP_CHECKPOINT_SUBDIR`).
        Raises:
            GuidanceNotAvailable: the folder or the CLIP checkpoint is missing or incomplete; the message names
                what is missing and the download command.
            ValueError: an unknown CLIP model, a checkpoint of another model, or a CLIP whose embedding size is not
                the U-Net's.
        """
        folder = Path(folder)
        ckpt = Path(clip_checkpoint) if clip_checkpoint is not None else folder / CLIP_CHECKPOINT_SUBDIR
        missing = cls.missing_parts(folder) if folder.is_dir() else ["the whole folder"]
        try:
            find_clip_checkpoint(ckpt)
            clip_problem = ""
        except GuidanceNotAvailable as e:
            clip_problem = str(e)
        if missing:
            also = f"\nThe CLIP encoder is missing too: {clip_problem}" if clip_problem else ""
            raise GuidanceNotAvailable(
                f"CLIP-image LDM guidance needs the {CLIP_LDM_REPO} checkpoint in {folder}, which lacks "
                f"{', '.join(missing)}. nfldm never downloads weights: on a machine with internet run\n"
                f"    huggingface-cli download {CLIP_LDM_REPO} --local-dir {folder}\n"
                f"(folders {', '.join(CLIP_LDM_LAYOUT)} are read) and pass --guidance-path {folder}; or use the "
                f"offline prior instead: `nfldm train prior ...` then --guidance prior.{also}")
        if clip_problem:
            raise GuidanceNotAvailable(clip_problem)
        # start-up time: diffusers loads only when this model is loaded
        from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

        kw = dict(local_files_only=True)
        unet = UNet2DConditionModel.from_pretrained(folder / "unet", torch_dtype=dtype, **kw)
        vae = AutoencoderKL.from_pretrained(folder / "vae", torch_dtype=dtype, **kw)
        clip = OpenClipEncoder.from_checkpoint(clip_model, ckpt, device=device, dtype=dtype)
        # The checkpoint ships a PNDM scheduler; only its forward process (betas) matters here, which DDPM shares.
        sched_cfg = json.loads((folder / "scheduler" / CLIP_LDM_LAYOUT["scheduler"]).read_text())
        known = {"num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas", "prediction_type"}
        sched = DDPMScheduler(**{k: v for k, v in sched_cfg.items() if k in known})
        model = cls(unet, vae, clip, sched.alphas_cumprod.clone(), prediction_type=sched.config.prediction_type)
        return model.to(device)

    # ------------------------------------------------------------------ conditions
    def embed_images(self, images: torch.Tensor, batch_size: int = 16) -> torch.Tensor:
        """CLIP image embeddings ``[N, D]`` float32 of ``images [N, 3, H, W]`` in [0, 1]
        (`OpenClipEncoder.embed_images`: the whole image resized to the CLIP size, bicubic, no crop; normalised)."""
        return self.clip.embed_images(images, batch_size)

    def embed_texts(self, prompts: Sequence[str]) -> torch.Tensor:
        """CLIP text embeddings ``[N, D]`` float32 of N prompts (`OpenClipEncoder.embed_texts`)."""
        return self.clip.embed_texts(prompts)

    @staticmethod
    def _mean_embedding(e: torch.Tensor, norm: float | torch.Tensor | None) -> torch.Tensor:
        """The mean of embeddings ``[N, D]`` rescaled to `norm` (default: their mean norm) -> ``[D]``."""
        m = e.mean(0)
        target = e.norm(dim=-1).mean() if norm is None else torch.as_tensor(norm, dtype=m.dtype, device=m.device)
        return m * (target / m.norm().clamp_min(1e-12))

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
        return self._mean_embedding(e, None)

    def compute_text_condition(self, prompts: str | Sequence[str], norm: float | torch.Tensor | None = None) -> torch.Tensor:
        """The condition of one or more prompts: their mean CLIP text embedding ``[D]``.

        CLIP's text and image embeddings share one space but not one scale, and the U-Net was trained on image
        embeddings: pass `norm` (e.g. ``compute_condition(renders).norm()``) to rescale the text embedding to the
        norm of image embeddings (ours; without it the prompts' mean norm is kept).

        Args:
            prompts: a string or a sequence of strings (e.g. ``"a photo of a city street"``).
            norm: the norm of the returned embedding, or None.
        """
        return self._mean_embedding(self.embed_texts([prompts] if isinstance(prompts, str) else prompts), norm)

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
        """y, ``[D]``: set by `set_conditions` (the mean embedding of dataset images or of the prompt)."""
        if self._dataset is None:
            raise ValueError("the dataset condition y is not set: compute it from captured images with "
                             "compute_condition(images) (or from a prompt with compute_text_condition(prompt)) and "
                             "set_conditions(dataset=...) (CLI: --dataset-images DIR, --prompt TEXT or --conditions FILE)")
        return self._dataset

    @property
    def artifact_condition(self) -> torch.Tensor:
        """y′, ``[D]``: set by `set_conditions` (the mean embedding of raw renders or of the negative prompt)."""
        if self._artifact is None:
            raise ValueError("the artifact condition y′ is not set: compute it from renders of raw samples with "
                             "compute_condition(renders) (or from a negative prompt with compute_text_condition) and "
                             "set_conditions(artifact=...)")
        return self._artifact

    @property
    def null_condition(self) -> torch.Tensor:
        """∅, ``[D]``: the zero embedding."""
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
