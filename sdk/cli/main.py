"""The `nfldm` command line.

Sub-commands of other installed packages (e.g. `nfldm train`, `nfldm encode-voxels` from `nfldm_training`)
are discovered through the ``nfldm.commands`` entry-point group, so the SDK imports nothing of the training
package (dependency direction: nfldm_training -> nfldm_sdk).

The project's own errors (`nfldm_sdk.errors.NfldmError` and everything derived from it, `nfldm_training`'s
included) end every command as ``Error: <message>`` and exit status 1; any other exception is a bug and keeps its
traceback. Command modules import only click (and other light modules) at import time, so that ``nfldm --help``,
``nfldm <command> --help`` and argument errors start in well under 2 s (`nfldm_training.benchmarks.startup`).
"""
from __future__ import annotations

from importlib import metadata

import click

from nfldm_sdk.errors import NfldmError


def error_message(error: BaseException) -> str:
    """`error` as the CLI shows it: its first line, then any further lines indented by two spaces."""
    first, *rest = (str(error) or type(error).__name__).splitlines()
    return "\n".join([first, *(f"  {line}" for line in rest)])


class _PluginGroup(click.Group):
    """A click group that adds commands registered under the ``nfldm.commands`` entry points on demand."""

    def _plugins(self) -> dict[str, metadata.EntryPoint]:
        return {ep.name: ep for ep in metadata.entry_points(group="nfldm.commands")}

    def list_commands(self, ctx):
        return sorted(set(super().list_commands(ctx)) | set(self._plugins()))

    def get_command(self, ctx, name):
        cmd = super().get_command(ctx, name)
        if cmd is not None:
            return cmd
        ep = self._plugins().get(name)
        if ep is None:
            return None
        try:
            return ep.load()
        except ImportError as e:  # a plugin whose dependencies are missing says so when used; `--help` still works
            message = f"command {name!r} could not be loaded ({e}); reinstall nfldm with `pip install -e .`"

            def unavailable():
                raise click.ClickException(message)

            return click.Command(name, callback=unavailable, help=f"(unavailable: {e})", short_help="(unavailable)")

    def invoke(self, ctx):
        """Run the command; a `NfldmError` becomes one ``Error:`` message and exit status 1 (no traceback)."""
        try:
            return super().invoke(ctx)
        except NfldmError as e:
            raise click.ClickException(error_message(e)) from e


@click.group(cls=_PluginGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="nfldm")
def main():
    """nfldm — NeuralField-LDM scene generation: train on captures, generate, render, view."""


if __name__ == "__main__":
    main()
