"""`sim_bridge`'s own error types.

Every error `sim_bridge` raises on purpose (a malformed rig, an invalid store, an unreachable server) derives
from `SimBridgeError`, so the `sim_bridge` command line can print it as one line with a non-zero exit instead
of a traceback. Each concrete error also derives from the builtin it refines (``ValueError``,
``RuntimeError``), so callers that catch the builtin keep working. (`sim_bridge` and `nfldm_sdk` import
nothing of each other, so each package has its own base.)
"""
from __future__ import annotations


class SimBridgeError(Exception):
    """Base of `sim_bridge`'s own errors: the message names the problem and the fix."""


class MissingExtraError(SimBridgeError, ImportError):
    """A feature needs an optional extra that is not installed; the message names the ``pip install`` to run."""
