"""The `nfldm` command line.

Sub-commands of other installed packages (e.g. `nfldm train`, `nfldm encode-voxels` from `nfldm_training`)
are discovered through the ``nfldm.commands`` entry-point group, so the SDK imports nothing of the training
package (dependency direction: nfldm_training -> nfldm_sdk).
"""
from __future__ import annotations

from importlib import metadata

import click


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


@click.group(cls=_PluginGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="nfldm")
def main():
    """nfldm — NeuralField-LDM scene generation: train on captures, generate, render, view."""


if __name__ == "__main__":
    main()
