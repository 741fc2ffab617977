"""CLIP embeddings of images and of text prompts with ``open_clip`` (`OpenClipEncoder`): the conditions y / y′ of
the CLIP-image LDM guidance (`nfldm_sdk.guidance.clip_ldm`).

Weights are read from a local ``.safetensors`` checkpoint only, never downloaded: a model is an open_clip model
name (a built-in config such as ``ViT-L-14-quickgelu``, or the path of a model-config ``.json``) plus the
checkpoint file (or a folder holding one, `find_clip_checkpoint`). A missing checkpoint raises
`nfldm_sdk.guidance.base.GuidanceNotAvailable` naming the file, where to get it and how to pass it.

The default is the CLIP ViT-L/14 of OpenAI (`DEFAULT_CLIP_MODEL`, `CLIP_CHECKPOINT_REPO`): the encoder that
``lambdalabs/sd-image-variations-diffusers`` was fine-tuned on (its ``image_encoder/`` is the same network in
the transformers layout, which open_clip does not read). The OpenAI weights use QuickGELU activations, hence the
``-quickgelu`` config: the plain ``ViT-L-14`` config loads them without complaint and gives other embeddings.

Image and text embeddings are the projected, un-normalised CLIP embeddings ``[N, D]``
(``encode_image`` / ``encode_text``), the vectors the image-variation U-Net reads (diffusers' ``image_embeds``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from nfldm_sdk.guidance.base import GuidanceNotAvailable, check_images

__all__ = ["OpenClipEncoder", "find_clip_checkpoint", "DEFAULT_CLIP_MODEL", "CLIP_CHECKPOINT_REPO",
           "CLIP_CHECKPOINT_FILE", "PREFERRED_CHECKPOINTS"]

#: The open_clip model config of OpenAI's CLIP ViT-L/14 (the sd-image-variations encoder; QuickGELU activations).
DEFAULT_CLIP_MODEL = "ViT-L-14-quickgelu"
#: The Hugging Face repository holding OpenAI's ViT-L/14 weights in open_clip's layout.
CLIP_CHECKPOINT_REPO = "timm/vit_large_patch14_clip_224.openai"
#: open_clip's name for a safetensors checkpoint (``open_clip.constants.HF_SAFE_WEIGHTS_NAME``).
CLIP_CHECKPOINT_FILE = "open_clip_model.safetensors"
#: File names `find_clip_checkpoint` takes from a folder, in this order (then a folder's only ``*.safetensors``).
PREFERRED_CHECKPOINTS = (CLIP_CHECKPOINT_FILE, "open_clip_pytorch_model.safetensors")


def _download_hint(where: Path | str) -> str:
    return (f"nfldm never downloads weights: on a machine with internet run\n"
            f"    huggingface-cli download {CLIP_CHECKPOINT_REPO} {CLIP_CHECKPOINT_FILE} --local-dir {where}\n"
            f"(OpenAI's CLIP ViT-L/14 for open_clip model {DEFAULT_CLIP_MODEL!r}, about 1.7 GB) and pass the file or its "
            "folder as --clip-checkpoint (clip_checkpoint=... in Python)")


def find_clip_checkpoint(path: str | Path) -> Path:
    """The ``.safetensors`` open_clip checkpoint at `path`: the file itself, or in a folder the first of
    `PREFERRED_CHECKPOINTS` present, else its only ``*.safetensors`` file.

    Raises:
        `GuidanceNotAvailable`: nothing there, a pickle checkpoint only (``.bin``/``.pt``/``.pth``: refused, nfldm
            loads safetensors only), or several candidate ``.safetensors`` files; the message names the file
            needed and where to pass it.
    """
    path = Path(path)
    if path.is_file():
        if path.suffix != ".safetensors":
            raise GuidanceNotAvailable(f"CLIP checkpoint {path} is not a .safetensors file: nfldm loads weights from "
                                       f"safetensors only (never pickle). Get {CLIP_CHECKPOINT_FILE} instead; "
                                       + _download_hint(path.parent))
        return path
    if path.is_dir():
        for name in PREFERRED_CHECKPOINTS:
            if (path / name).is_file():
                return path / name
        found = sorted(path.glob("*.safetensors"))
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise GuidanceNotAvailable(f"{path} holds several .safetensors files ({', '.join(p.name for p in found)}) "
                                       f"and none is named {CLIP_CHECKPOINT_FILE}: pass the open_clip checkpoint file "
                                       "itself as --clip-checkpoint")
        pickles = sorted(p.name for p in path.iterdir() if p.suffix in (".bin", ".pt", ".pth"))
        extra = (f" (it holds {', '.join(pickles)}: pickle checkpoints are refused, nfldm loads safetensors only)"
                 if pickles else "")
        raise GuidanceNotAvailable(f"no open_clip checkpoint in {path}: it needs {CLIP_CHECKPOINT_FILE}{extra}. "
                                   + _download_hint(path))
    raise GuidanceNotAvailable(f"the CLIP-image LDM guidance needs an open_clip CLIP checkpoint, and {path} does not "
                               f"exist: it needs {CLIP_CHECKPOINT_FILE} there. " + _download_hint(path))


def _model_name(model: str) -> str:
    """An open_clip model name; a path to a model-config ``.json`` is registered with open_clip under its stem."""
    import open_clip  # start-up time: open_clip imports timm

    if model.endswith(".json"):
        p = Path(model)
        if not p.is_file():
            raise ValueError(f"open_clip model config {p} not found: pass a built-in model name (e.g. "
                             f"{DEFAULT_CLIP_MODEL!r}) or the path of an open_clip model-config .json")
        open_clip.add_model_config(p)
        model = p.stem
    if model not in open_clip.list_models():
        raise ValueError(f"unknown open_clip model {model!r}: pass one of open_clip.list_models() (the default is "
                         f"{DEFAULT_CLIP_MODEL!r}, OpenAI's ViT-L/14) or the path of an open_clip model-config .json")
    return model


def _embed_dim(model: nn.Module, image_size: tuple[int, int]) -> int:
    """D of an open_clip model: its image tower's ``output_dim`` (ViT towers), else measured on one black image."""
    dim = getattr(model.visual, "output_dim", None)
    if isinstance(dim, int):
        return dim
    p = next(model.parameters())
    with torch.no_grad():
        return int(model.encode_image(torch.zeros(1, 3, *image_size, device=p.device, dtype=p.dtype)).shape[-1])


class OpenClipEncoder(nn.Module):
    """An open_clip CLIP model (frozen, eval mode) as the encoder of guidance conditions.

    Args:
        model: an open_clip ``CLIP`` (``encode_image``, ``encode_text``, ``visual.preprocess_cfg``).
        tokenizer: its open_clip tokenizer (``tokenizer(list_of_str) -> [N, context_length]`` int64).
        model_name: the open_clip model name (reported in messages).

    Attributes:
        embed_dim: D, the size of the embeddings.
        image_size: ``(H, W)`` pixels the image tower takes; `embed_images` resizes to it.
    """

    def __init__(self, model: nn.Module, tokenizer, model_name: str = "custom"):
        super().__init__()
        self.model = model.eval()
        self.model.requires_grad_(False)
        self.tokenizer = tokenizer
        self.model_name = model_name
        cfg = dict(getattr(model.visual, "preprocess_cfg", {}) or {})
        size = cfg.get("size", model.visual.image_size)
        self.image_size = (int(size), int(size)) if isinstance(size, int) else tuple(int(v) for v in size)
        self.embed_dim = _embed_dim(model, self.image_size)
        from open_clip import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD  # start-up time: open_clip imports timm

        self.register_buffer("mean", torch.tensor(cfg.get("mean", OPENAI_DATASET_MEAN)).reshape(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(cfg.get("std", OPENAI_DATASET_STD)).reshape(1, 3, 1, 1), persistent=False)

    @classmethod
    def from_checkpoint(cls, model_name: str = DEFAULT_CLIP_MODEL, checkpoint: str | Path | None = None,
                        device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> "OpenClipEncoder":
        """Build open_clip model `model_name` and load the local safetensors `checkpoint` into it (no network).

        Args:
            model_name: a built-in open_clip config name or the path of a model-config ``.json``.
            checkpoint: the ``.safetensors`` file or a folder holding one (`find_clip_checkpoint`).
            device, dtype: where and in which precision the model runs (embeddings are returned as float32).
        Raises:
            `GuidanceNotAvailable`: no checkpoint (the message names the file and the download command).
            ``ValueError``: an unknown model name, or a checkpoint that does not fit the model (another architecture).
        """
        if checkpoint is None:
            raise GuidanceNotAvailable("the CLIP-image LDM guidance needs an open_clip CLIP checkpoint "
                                       f"({CLIP_CHECKPOINT_FILE}) and none was given. " + _download_hint("DIR"))
        file = find_clip_checkpoint(checkpoint)
        name = _model_name(str(model_name))
        import open_clip  # start-up time: open_clip imports timm

        try:
            model = open_clip.create_model(name, pretrained=str(file), device=device)
        except (RuntimeError, AssertionError, KeyError, ValueError) as e:
            detail = " ".join(str(e).split())[:300]                  # one line: the CLI prints errors as one
            raise ValueError(f"the CLIP checkpoint {file} does not fit open_clip model {name!r} ({detail}): pass "
                             "the model name the checkpoint belongs to as --clip-model (OpenAI's ViT-L/14: "
                             f"{DEFAULT_CLIP_MODEL!r})") from e
        return cls(model.to(dtype), open_clip.get_tokenizer(name), name).to(device)

    @property
    def device(self) -> torch.device:
        return self.mean.device

    @torch.no_grad()
    def embed_images(self, images: torch.Tensor, batch_size: int = 16) -> torch.Tensor:
        """CLIP image embeddings ``[N, D]`` float32 of ``images [N, 3, H, W]`` in [0, 1].

        Pre-processing in torch with the model's numbers: the whole image resized to `image_size` (bicubic, no
        crop: the way the image-variation model was fine-tuned), clamped to [0, 1], normalised with its mean and std.
        """
        check_images(images)
        dtype = next(self.model.parameters()).dtype
        out = []
        for chunk in images.split(max(1, int(batch_size))):
            x = chunk.to(self.device, torch.float32)
            x = F.interpolate(x, size=self.image_size, mode="bicubic", align_corners=False).clamp(0.0, 1.0)
            out.append(self.model.encode_image(((x - self.mean) / self.std).to(dtype)).float())
        return torch.cat(out)

    @torch.no_grad()
    def embed_texts(self, prompts: Sequence[str]) -> torch.Tensor:
        """CLIP text embeddings ``[N, D]`` float32 of `prompts` (N strings; longer ones are truncated to the
        model's context length by its tokenizer)."""
        if isinstance(prompts, str):
            prompts = [prompts]
        prompts = list(prompts)
        if not prompts or not all(isinstance(p, str) and p.strip() for p in prompts):
            raise ValueError(f"prompts must be one or more non-empty strings, got {prompts!r}")
        tokens = self.tokenizer(prompts).to(self.device)
        return self.model.encode_text(tokens).float()
