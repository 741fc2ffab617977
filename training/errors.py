"""`nfldm_training`'s own errors.

They derive from `nfldm_sdk.errors.NfldmError` (so every `nfldm` command prints them as one ``Error:`` line with
exit status 1, no traceback) and from the builtin they refine, so callers catching ``ValueError`` /
``FileNotFoundError`` keep working. Raised for bad input a user can fix — a capture, voxel or latent store, a run
folder, a preset file, benchmark options — with a message naming the file or option, the bad value and the fix;
internal shape checks (losses, metrics) stay plain ``ValueError``.
"""
from __future__ import annotations

from nfldm_sdk.errors import NfldmError

__all__ = ["TrainingError", "TrainingInputNotFound"]


class TrainingError(NfldmError, ValueError):
    """Training input that cannot be used as given (wrong kind of store, incomplete store, no windows, ...)."""


class TrainingInputNotFound(NfldmError, FileNotFoundError):
    """A store, run folder, preset file, image folder or weights file that does not exist where it was named."""
