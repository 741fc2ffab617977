"""Click pieces shared by the training commands: their common options, the parsers of those options, and the
resolution of a run's preset and model folder.

The commands (training/cli/train.py, latent.py, ldm.py, prior.py, eval.py, train_all.py) stack these decorators,
so each shared option (name, default, help text) is declared once. This module imports only click and the preset
names, so every command module can use it at import time (``--help`` imports no torch, see
tests/project/test_cli_startup.py) without an import cycle through training/cli/train.py.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from nfldm_training.configs.names import PRESET_NAMES  # the names only: the preset tables import torch (start-up time)


def _stack(*decorators: Callable) -> Callable:
    """One decorator applying `decorators` so that their options appear in the given order in ``--help``."""
    def apply(f: Callable) -> Callable:
        for d in reversed(decorators):  # click lists the option applied last (outermost) first
            f = d(f)
        return f
    return apply


def store_options(what: str) -> Callable:
    """``--data STORE`` (repeatable) and the stores listed after it (parameters ``data, more_stores``; join them
    with `capture_stores`).

    Args:
        what: the stores' role, the start of ``--data``'s help (e.g. "Capture store(s) to encode").
    """
    return _stack(
        click.option("--data", "data", multiple=True, metavar="STORE [STORE...]",
                     help=f"{what}; repeat the option or list stores after it."),
        click.argument("more_stores", nargs=-1, metavar="[STORE...]"),
    )


def capture_stores(data: tuple[str, ...], more: tuple[str, ...], *, required: bool = True) -> list[str] | None:
    """The capture stores of ``--data`` plus any listed after it (`store_options`); local paths must exist.

    Args:
        required: without stores, raise `click.UsageError` (True) or return None (False).
    Raises:
        click.UsageError: no store given and `required`.
        click.BadParameter: a local store path does not exist.
    """
    stores = [*data, *more]
    if not stores:
        if not required:
            return None
        raise click.UsageError("no capture store given: pass --data STORE [STORE ...]")
    for s in stores:
        if "://" not in s and not Path(s).exists():
            raise click.BadParameter(f"capture store {s} does not exist: collect one with `sim_bridge collect --out {s}`",
                                     param_hint="--data")
    return stores


def preset_option(help: str) -> Callable:
    """``--preset`` (parameter ``preset``): one of the preset names, default ``small``."""
    return click.option("--preset", type=click.Choice(list(PRESET_NAMES)), default="small", show_default=True, help=help)


def run_dir_option(help: str = "Run directory.") -> Callable:
    """``--out`` (parameter ``out``, required): the folder a command writes its run into."""
    return click.option("--out", "out", required=True, type=click.Path(file_okay=False), help=help)


def progress_option(help: str = "Show the progress bar.") -> Callable:
    """``--progress/--no-progress`` (parameter ``progress``, default on)."""
    return click.option("--progress/--no-progress", default=True, help=help)


def override_options(batch_help: str, set_help: str | None = None) -> Callable:
    """``--max-steps --batch-size --seed --workers`` (each None unless given: overrides of the preset's value),
    then ``--set KEY=VALUE`` (parameter ``settings``) when `set_help` is given.

    Args:
        batch_help: ``--batch-size`` help, naming the stage's batch item (e.g. "Override the preset's scenes per
            step (per device).").
        set_help: ``--set`` help with the stage's example keys; None: the command has no ``--set``.
    """
    options = [
        click.option("--max-steps", type=int, default=None,
                     help="Override the preset's optimisation steps (total, across resumes)."),
        click.option("--batch-size", type=int, default=None, help=batch_help),
        click.option("--seed", type=int, default=None, help="Override the preset's seed."),
        click.option("--workers", type=int, default=None, help="DataLoader worker processes (default: the preset's)."),
    ]
    if set_help is not None:
        options.append(click.option("--set", "settings", multiple=True, metavar="KEY=VALUE", help=set_help))
    return _stack(*options)


RESUME_HELP = "Continue from OUT/checkpoints/last.ckpt when it exists (with the run's saved config)."


def lightning_options(strategy_help: str = "Lightning strategy: auto, ddp, fsdp, ...",
                      resume_help: str = RESUME_HELP) -> Callable:
    """``--accelerator --devices --strategy --num-nodes --resume/--no-resume`` (parameters ``accelerator, devices,
    strategy, num_nodes, resume``); pass ``devices`` through `parse_devices` before handing it to Lightning.

    Args:
        strategy_help: ``--strategy`` help (the stages that cannot shard say "auto, ddp, ...").
        resume_help: ``--resume`` help.
    """
    return _stack(
        click.option("--accelerator", default="auto", show_default=True, help="Lightning accelerator: auto, cpu, gpu, ..."),
        click.option("--devices", default="auto", show_default=True, help="Lightning devices: auto, a count, or indices 0,1."),
        click.option("--strategy", default="auto", show_default=True, help=strategy_help),
        click.option("--num-nodes", type=int, default=1, show_default=True, help="Machines (Lightning num_nodes)."),
        click.option("--resume/--no-resume", default=True, show_default=True, help=resume_help),
    )


def stage_options(preset_help: str, batch_help: str, *, set_help: str | None = None,
                  strategy_help: str = "Lightning strategy: auto, ddp, fsdp, ...", extra: tuple[Callable, ...] = (),
                  progress_help: str = "Show the progress bar.") -> Callable:
    """The options every ``nfldm train <stage>`` command ends with, in this order: `preset_option`,
    `run_dir_option`, `override_options`, `lightning_options`, the `extra` options, `progress_option`.

    Args:
        preset_help: ``--preset`` help (what the preset sizes).
        batch_help, set_help: as in `override_options`.
        strategy_help: as in `lightning_options`.
        extra: the stage's own option decorators, listed before ``--progress``.
        progress_help: ``--progress`` help.
    """
    return _stack(preset_option(preset_help), run_dir_option(), override_options(batch_help, set_help),
                  lightning_options(strategy_help), *extra, progress_option(progress_help))


def parse_devices(value: str):
    """``--devices``: "auto", a count ("2") or a list ("0,1")."""
    if value == "auto":
        return value
    if "," in value:
        return [int(v) for v in value.split(",") if v.strip()]
    try:
        return int(value)
    except ValueError:
        raise click.BadParameter(f"{value!r}: use auto, a device count (2) or a list of indices (0,1)", param_hint="--devices")


def parse_set(items: tuple[str, ...]) -> dict:
    """``--set key=value`` pairs; values parsed as JSON when they can be (numbers, lists, null), else strings."""
    out = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r}: use --set section.field=value, e.g. scene_ae_train.lr=5e-4", param_hint="--set")
        try:
            out[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            out[key.strip()] = raw
    return out


def given(**values: Any) -> dict:
    """The `values` that are not None: the shortcut options (``max_steps, batch_size, seed, num_workers``) a
    command was given, as overrides of the preset's training section."""
    return {key: value for key, value in values.items() if value is not None}


def collect_overrides(settings: tuple[str, ...], section: str, **values: Any) -> dict:
    """The ``--set`` pairs of `settings`, plus ``section.key = value`` for each of `values` that is not None
    (the shortcut options: max_steps, batch_size, seed, num_workers)."""
    overrides = parse_set(settings)
    overrides.update({f"{section}.{key}": value for key, value in given(**values).items()})
    return overrides


def resumed_run_config(ctx: click.Context, run: Path, preset: str, resume: bool, stage: str) -> Any | None:
    """The saved config of a run of `stage` that resumes, when `resume` and the run has a ``last.ckpt`` (or a
    ``last-v*.ckpt`` of older runs) and a ``config.json``: its `nfldm_training.configs.run_config.RunConfig`
    ``(preset name, section, extra)``; None for a fresh run (the caller then resolves ``--preset``).

    Every stage resumes with its saved config: ``--preset`` may only repeat the run's preset, and the shortcut and
    ``--set`` overrides are applied on top of the saved config by the caller.

    Raises:
        click.UsageError: ``--preset`` names another preset than the resumed run's.
        nfldm_training.errors.TrainingError: the run's ``config.json`` is another stage's, or unreadable.
    """
    # start-up time: the run-config reader imports the section types, which import torch
    from nfldm_training.configs.run_config import RUN_CONFIG_NAME, load_run_config

    ckpts = run / "checkpoints"
    has_last = ckpts.is_dir() and any(p.is_file() for p in [ckpts / "last.ckpt", *ckpts.glob("last-v*.ckpt")])
    if not (resume and has_last and (run / RUN_CONFIG_NAME).is_file()):
        return None
    saved = load_run_config(run / RUN_CONFIG_NAME, stage)
    explicit = ctx.get_parameter_source("preset") == click.core.ParameterSource.COMMANDLINE
    if explicit and preset != saved.preset:
        raise click.UsageError(f"{run} is a {saved.preset!r} run; resume it without --preset (or --preset "
                               f"{saved.preset}), or start over with --no-resume")
    return saved


def resolve_run_preset(ctx: click.Context, run: Path, preset: str, overrides: dict, resume: bool, *, stage: str,
                       get: Callable[[str, dict], Any]) -> Any:
    """The preset section of a run of `stage`: the run's saved ``config.json`` with `overrides` applied when it
    resumes (`resumed_run_config`), else ``get(preset, overrides)``.

    Raises `click.UsageError` when ``--preset`` names another preset than the resumed run's, or an override is bad;
    `nfldm_training.errors.TrainingError` when the run's ``config.json`` is another stage's or unreadable.
    """
    from nfldm_training.configs.presets import apply_overrides  # start-up time: the preset table imports torch

    saved = resumed_run_config(ctx, run, preset, resume, stage)
    try:
        if saved is not None:
            return apply_overrides(saved.section, overrides)
        return get(preset, overrides)
    except (KeyError, ValueError, TypeError) as e:
        raise click.UsageError(str(e.args[0] if isinstance(e, KeyError) and e.args else e))


def run_model_dir(path: str | Path, what: str, option: str | None = None) -> Path:
    """The model folder of a `nfldm train <what>` run: `nfldm_sdk.persistence.resolve_model_dir` (a run
    directory's ``RUN/model``, or that folder itself), its error as a click error naming the option.

    Args:
        path: the run directory or its model folder.
        what: the ``nfldm train`` command that writes such runs (``scene-ae``, ``ldm-g``), named in the error.
        option: the option that gave `path` (default: ``--<what>``).
    Raises:
        click.BadParameter: `path` holds no model.
    """
    from nfldm_sdk.persistence import resolve_model_dir  # start-up time: nfldm_sdk.persistence imports torch

    try:
        return resolve_model_dir(path)
    except FileNotFoundError as e:
        raise click.BadParameter(f"{e} (`nfldm train {what}`)", param_hint=f"--{option or what}") from e
