"""`init_state_dict`: the weights a fine-tune starts from (``--init-from``), checked against the run's architecture.

Every stage that can start from a trained network (stage 1, the LAE) loads it here, so the error messages and the
architecture check are one implementation.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable

import torch

from nfldm_sdk.persistence import resolve_model_dir
from nfldm_training.errors import TrainingError

__all__ = ["init_state_dict"]


def init_state_dict(cls: Any, init_from: str | Path, config: Any, *, what: str, folder_hint: str,
                    comparable: Callable[[Any], Any] = lambda c: c) -> dict[str, torch.Tensor]:
    """The float32 state dict of the saved `cls` network at `init_from`, whose config must equal `config`.

    Args:
        cls: the network class (a `nfldm_sdk.persistence.PretrainedMixin`, with ``from_pretrained``).
        init_from: a run directory or a model folder (`resolve_model_dir`).
        config: the run's architecture (a config dataclass).
        what: the network in words, for the error message ("scene auto-encoder").
        folder_hint: what to pass instead, for the error message ("a scene-ae run directory, ...").
        comparable: maps a config to the part of it that must match (e.g. without recorded statistics).
    Raises:
        `TrainingError` naming the problem and the fix when nothing is saved there or the architecture differs
        (the differing fields listed).
    """
    try:
        source = cls.from_pretrained(resolve_model_dir(init_from))
    except FileNotFoundError as e:
        raise TrainingError(f"--init-from {init_from}: no saved {what} there ({e}); pass {folder_hint}") from None
    theirs, ours = comparable(source.config), comparable(config)
    if theirs != ours:
        diff = [f.name for f in dataclasses.fields(ours) if getattr(theirs, f.name) != getattr(ours, f.name)]
        raise TrainingError(f"--init-from {init_from}: its architecture differs from this run's in {diff}: fine-tune "
                            "with the preset it was trained with")
    return {k: v.float() if v.is_floating_point() else v for k, v in source.state_dict().items()}
