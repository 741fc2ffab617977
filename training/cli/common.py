"""Click pieces shared by the `nfldm train ...` commands: the preset-override and Lightning options, and their parsers.

The stage commands (training/cli/train.py, cli_latent.py, cli_ldm.py, cli_prior.py) stack these decorators, so each
shared option (name, default, help text) is declared once. This module imports
only click, so any command module can use it at import time without an import cycle through training/cli/train.py.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click


def _stack(*decorators: Callable) -> Callable:
    """One decorator applying `decorators` so that their options appear in the given order in ``--help``."""
    def apply(f: Callable) -> Callable:
        for d in reversed(decorators):  # click lists the option applied last (outermost) first
            f = d(f)
        return f
    return apply


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


def collect_overrides(settings: tuple[str, ...], section: str, **values: Any) -> dict:
    """The ``--set`` pairs of `settings`, plus ``section.key = value`` for each of `values` that is not None
    (the shortcut options: max_steps, batch_size, seed, num_workers)."""
    overrides = parse_set(settings)
    for key, value in values.items():
        if value is not None:
            overrides[f"{section}.{key}"] = value
    return overrides


def resumed_run_config(ctx: click.Context, run: Path, preset: str, resume: bool,
                       load: Callable[[Path], tuple[str, Any]]) -> tuple[str, Any] | None:
    """The saved config of a run that resumes: ``load(RUN/config.json) -> (preset name, config)``, when `resume`
    and the run has a ``last.ckpt`` (or a ``last-v*.ckpt`` of older runs) and a ``config.json``; None for a fresh
    run (the caller then resolves ``--preset``).

    Every stage resumes with its saved config: ``--preset`` may only repeat the run's preset, and the shortcut and
    ``--set`` overrides are applied on top of the saved config by the caller.

    Raises:
        click.UsageError: ``--preset`` names another preset than the resumed run's.
    """
    ckpts = run / "checkpoints"
    has_last = ckpts.is_dir() and any(p.is_file() for p in [ckpts / "last.ckpt", *ckpts.glob("last-v*.ckpt")])
    if not (resume and has_last and (run / "config.json").is_file()):
        return None
    name, config = load(run / "config.json")
    explicit = ctx.get_parameter_source("preset") == click.core.ParameterSource.COMMANDLINE
    if explicit and preset != name:
        raise click.UsageError(f"{run} is a {name!r} run; resume it without --preset (or --preset {name}), or start "
                               "over with --no-resume")
    return name, config


def resolve_run_preset(ctx: click.Context, run: Path, preset: str, overrides: dict, resume: bool, *,
                       load: Callable[[Path], Any], get: Callable[[str, dict], Any]) -> Any:
    """The preset of a run: the run's saved ``config.json`` (via `load`, with `overrides` applied) when it resumes
    (`resumed_run_config`), else ``get(preset, overrides)``.

    Raises `click.UsageError` when ``--preset`` names another preset than the resumed run's, or an override is bad.
    """
    from nfldm_training.configs.presets import apply_overrides

    try:
        saved = resumed_run_config(ctx, run, preset, resume, lambda path: ((p := load(path)).name, p))
        if saved is not None:
            return apply_overrides(saved[1], overrides)
        return get(preset, overrides)
    except (KeyError, ValueError, TypeError) as e:
        raise click.UsageError(str(e.args[0] if isinstance(e, KeyError) and e.args else e))
