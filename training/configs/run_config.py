"""``RUN/config.json``: the one schema in which every training stage records the resolved preset of its run.

Written at the start of a run (`nfldm_training.runs.trainer.start_run`, on the writing rank) and read back when the
run resumes (`nfldm_training.cli.common.resumed_run_config`) or when a later step needs the run's settings
(``nfldm encode-voxels`` takes its window from a stage-1 run, ``nfldm export-bundle`` checks the level of a stage-3
run)::

    {
      "format": "nfldm.run_config",     # what the file is (a model folder's config.json has "_class" instead)
      "version": 1,                     # of this schema
      "stage": "ldm",                   # scene-ae | latent-ae | ldm | prior | critic
      "preset": "small",                # the preset the run started from (tiny, small, paper or custom)
      "config": {...},                  # the stage's resolved section (table below), overrides applied
      "level": "c",                     # further keys of the stage: ldm only, the denoiser level
      "_nfldm_version": "0.1.0"         # the nfldm that wrote it
    }

=========  ============================  ==========================
stage      ``config`` holds              command
=========  ============================  ==========================
scene-ae   `Preset` (all sections)       ``nfldm train scene-ae``
latent-ae  `LatentPreset`                ``nfldm train latent-ae``
ldm        `LDMPreset`                   ``nfldm train ldm --level``
prior      `PriorPreset`                 ``nfldm train prior``
critic     `CriticPreset`                ``nfldm train critic``
=========  ============================  ==========================

Runs written before this schema hold the bare section instead (no ``"format"`` key): a whole `Preset` (stage 1),
a `LatentPreset` (stage 2), an `LDMPreset` with ``"level"`` and ``"preset"`` beside its fields (stage 3), or
``{"preset", "prior", "train"}`` (stage 4). `load_run_config` recognises those shapes and reads them the same way,
so such runs still resume.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

from nfldm_sdk.persistence import config_from_dict, config_to_dict, nfldm_version
from nfldm_training.configs.sections import LEVELS, CriticPreset, LatentPreset, LDMPreset, Preset, PriorPreset
from nfldm_training.errors import TrainingError, TrainingInputNotFound

__all__ = ["RUN_CONFIG_NAME", "RUN_CONFIG_FORMAT", "RUN_CONFIG_VERSION", "STAGE_SECTIONS", "RunConfig",
           "stage_command", "run_config_to_dict", "save_run_config", "load_run_config"]

#: File name of a run's config inside its run directory.
RUN_CONFIG_NAME = "config.json"
#: Value of the ``"format"`` key.
RUN_CONFIG_FORMAT = "nfldm.run_config"
#: Schema version written (and the newest read).
RUN_CONFIG_VERSION = 1
#: The section type each stage records under ``"config"``.
STAGE_SECTIONS: dict[str, type] = {"scene-ae": Preset, "latent-ae": LatentPreset, "ldm": LDMPreset, "prior": PriorPreset,
                                   "critic": CriticPreset}
#: The keys beside ``"config"`` a stage must record.
STAGE_EXTRAS: dict[str, tuple[str, ...]] = {"scene-ae": (), "latent-ae": (), "ldm": ("level",), "prior": (),
                                            "critic": ()}
_RESERVED = frozenset({"format", "version", "stage", "preset", "config", "_nfldm_version"})


class RunConfig(NamedTuple):
    """A run's ``config.json`` as read by `load_run_config`."""

    preset: str
    """The preset name the run started from (``tiny``, ``small``, ``paper`` or ``custom``)."""
    section: Any
    """The stage's resolved section (`STAGE_SECTIONS`)."""
    extra: dict
    """The stage's further keys (``{"level": "c"}`` for ldm, else empty)."""


def stage_command(stage: str, extra: dict | None = None) -> str:
    """The command that trains `stage` (``nfldm train ldm --level c`` when `extra` names the level)."""
    cmd = f"nfldm train {stage}"
    if stage == "ldm":
        cmd += f" --level {(extra or {}).get('level', 'LEVEL')}"
    return cmd


def _check_stage(stage: str) -> None:
    if stage not in STAGE_SECTIONS:
        raise ValueError(f"unknown training stage {stage!r}: choose one of {', '.join(STAGE_SECTIONS)}")


def run_config_to_dict(stage: str, preset_name: str, section: Any, **extra: Any) -> dict:
    """The JSON-ready ``config.json`` of a run of `stage` (module docstring).

    Args:
        stage: ``scene-ae``, ``latent-ae``, ``ldm``, ``prior`` or ``critic``.
        preset_name: the preset the run started from.
        section: the stage's resolved section, an instance of ``STAGE_SECTIONS[stage]``.
        **extra: the stage's further keys (`STAGE_EXTRAS`: ``level="c"`` for ldm).
    Raises:
        TypeError: `section` is not the stage's section type, or `extra` misses or reuses a key.
        ValueError: unknown `stage`, or an ldm ``level`` other than g, c, f.
    """
    _check_stage(stage)
    if not isinstance(section, STAGE_SECTIONS[stage]):
        raise TypeError(f"a {stage} run records a {STAGE_SECTIONS[stage].__name__}, got {type(section).__name__}")
    missing = [k for k in STAGE_EXTRAS[stage] if k not in extra]
    clash = sorted(_RESERVED & set(extra))
    if missing or clash:
        raise TypeError(f"a {stage} run config needs the keys {list(STAGE_EXTRAS[stage])} beside its section "
                        f"(missing {missing}; reserved keys {clash} cannot be extra)")
    if stage == "ldm" and extra["level"] not in LEVELS:
        raise ValueError(f"unknown level {extra['level']!r}: choose g, c or f")
    return {"format": RUN_CONFIG_FORMAT, "version": RUN_CONFIG_VERSION, "stage": stage, "preset": str(preset_name),
            "config": config_to_dict(section), **extra, "_nfldm_version": nfldm_version()}


def save_run_config(path: str | Path, stage: str, preset_name: str, section: Any, **extra: Any) -> Path:
    """Write the ``config.json`` of a run of `stage` (`run_config_to_dict`) to `path` (parents created); returns it."""
    data = run_config_to_dict(stage, preset_name, section, **extra)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def _legacy_stage(data: dict) -> str | None:
    """The stage of a config.json written before the schema (the bare section), or None if it is none of them."""
    if "level" in data:
        return "ldm"
    if "train" in data and "prior" in data:
        return "prior"
    if "scene_ae" in data or "scene_ae_train" in data:
        return "scene-ae"
    if "latent_ae" in data or "latent_ae_train" in data:
        return "latent-ae"
    return None


def _from_legacy(stage: str, data: dict) -> tuple[str, dict, dict]:
    """``(preset name, section dict, extra)`` of a config.json of `stage` written before the schema."""
    data = {k: v for k, v in data.items() if not k.startswith("_")}
    if stage == "ldm":
        extra = {"level": str(data.pop("level"))}
        return str(data.pop("preset", "custom")), data, extra
    if stage == "prior":
        return str(data.pop("preset", "custom")), data, {}
    return str(data.get("name", "custom")), data, {}


def load_run_config(path: str | Path, stage: str) -> RunConfig:
    """Read the ``config.json`` of a run of `stage` (this schema, or the shape of a run written before it).

    Returns:
        ``(preset name, section, extra)`` (`RunConfig`); the section is an instance of ``STAGE_SECTIONS[stage]``.
    Raises:
        TrainingInputNotFound: no file at `path`.
        TrainingError: the file is not JSON, not a run config, of a newer schema, of another stage (the message
            names the stage it holds and the command that resumes it), or its section has fields this nfldm
            does not know.
    """
    _check_stage(stage)
    path = Path(path)
    if not path.is_file():
        raise TrainingInputNotFound(f"{path} not found: expected the run config that `{stage_command(stage)}` writes "
                                    "at the start of a run")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise TrainingError(f"{path} is not valid JSON ({e}): expected the run config of `{stage_command(stage)}`") from e
    if not isinstance(data, dict):
        raise TrainingError(f"{path} holds a JSON {type(data).__name__}, not a run config (`{stage_command(stage)}`)")
    if "format" in data:
        if data["format"] != RUN_CONFIG_FORMAT:
            raise TrainingError(f"{path} is a {data['format']!r} file, not a run config ({RUN_CONFIG_FORMAT!r})")
        if int(data.get("version", 0)) > RUN_CONFIG_VERSION:
            raise TrainingError(f"{path} is a run config of version {data['version']}, written by a newer nfldm "
                                f"({data.get('_nfldm_version', '?')}); this one reads version {RUN_CONFIG_VERSION}: "
                                "upgrade nfldm")
        held = data.get("stage")
        preset, section = str(data.get("preset", "custom")), data.get("config", {})
        extra = {k: v for k, v in data.items() if k not in _RESERVED}
    else:
        held = _legacy_stage(data)
        if held is None:
            raise TrainingError(f"{path} is not a run config: none of the keys {sorted(data)[:8]} is a training "
                                f"stage's (expected the config.json that `{stage_command(stage)}` writes)")
        preset, section, extra = _from_legacy(held, data)
    if held != stage:
        if held not in STAGE_SECTIONS:
            raise TrainingError(f"{path} is a run config of an unknown stage {held!r}")
        raise TrainingError(f"{path} is the config of a {held} run, not of a {stage} run: resume that run with "
                            f"`{stage_command(held, extra)}`, or give `{stage_command(stage)}` another --out")
    try:
        return RunConfig(preset, config_from_dict(STAGE_SECTIONS[stage], section), extra)
    except (ValueError, TypeError) as e:
        raise TrainingError(f"{path}: {e}") from e
