"""The SDK's own error types.

Every error the SDK (and `nfldm_training`) raises on purpose — bad input, a broken bundle, a malformed rig —
derives from `NfldmError`, so the `nfldm` command line can print it as one line with a non-zero exit instead of
a traceback. Each concrete error also derives from the builtin it refines (``ValueError``,
``FileNotFoundError``, ``RuntimeError``), so callers that catch the builtin keep working.
"""
from __future__ import annotations


class NfldmError(Exception):
    """Base of the project's own errors: the message names the problem and the fix, in one line where it can."""


class MissingExtraError(NfldmError, ImportError):
    """A feature needs an optional extra that is not installed; the message names the ``pip install`` to run."""
