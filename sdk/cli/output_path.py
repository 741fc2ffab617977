"""Output folders and files of the commands that render: never replaced without ``--overwrite``, and only ever
replaced whole.

`check_output` runs before anything is computed or written: an existing output is refused without
``overwrite`` (as ``sim_bridge collect`` refuses an existing store), and with it only something the command
itself writes is replaced (a frame folder with ``frames.json``, a video file), never an unrelated folder.
`staged_output` then has the command write into a sibling ``<name>.partial`` path that takes the output's place
only once it is complete, so an interrupted or failed render leaves the previous output untouched and no
half-written one under the output's name.

    check_output(out, overwrite, marker="frames.json", file_suffixes=(".mp4",))
    with staged_output(out) as tmp:
        write_frames(frames, tmp)
"""
from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Iterator, Sequence

from nfldm_sdk.errors import NfldmError

__all__ = ["OutputExistsError", "check_output", "staged_output", "partial_path"]


class OutputExistsError(NfldmError, FileExistsError):
    """The output path exists and ``--overwrite`` was not given, or it holds something the command did not write."""


def check_output(path: str | Path, overwrite: bool, *, marker: str, file_suffixes: Sequence[str],
                 option: str = "--out") -> None:
    """Refuse an existing output `path` unless `overwrite` is set and `path` is one the command writes.

    Args:
        path: the output folder or file.
        overwrite: the ``--overwrite`` flag.
        marker: the file every output folder of the command holds (e.g. ``frames.json``); with `overwrite`, a
            folder without it (and not empty) is refused.
        file_suffixes: the suffixes of output files (e.g. videos); with `overwrite`, another file is refused.
        option: the option that names `path`, for the message.
    Raises:
        `OutputExistsError` naming `path` and the fix. An empty folder is accepted (nothing would be lost).
    """
    path = Path(path)
    if not (path.exists() or path.is_symlink()):
        return
    if path.is_dir() and not path.is_symlink() and not any(path.iterdir()):
        return
    if not overwrite:
        raise OutputExistsError(f"{option} {path} exists: pass --overwrite to replace it, or choose another {option}")
    ours = ((path.is_dir() and not path.is_symlink() and (path / marker).is_file())
            or (path.is_file() and path.suffix.lower() in tuple(s.lower() for s in file_suffixes)))
    if not ours:
        raise OutputExistsError(f"{option} {path} exists and is not an output of this command (a folder with {marker} "
                                f"or a {'/'.join(file_suffixes)} file): refusing to replace it with --overwrite; "
                                f"choose another {option} or remove it yourself")


def partial_path(path: str | Path) -> Path:
    """The sibling path `staged_output` writes into: ``name.partial`` for folders, ``stem.partial.suffix`` for
    files with a suffix (the writer picks its format by the suffix, e.g. ``.mp4``)."""
    path = Path(path)
    return path.with_name(f"{path.stem}.partial{path.suffix}" if path.suffix else f"{path.name}.partial")


@contextlib.contextmanager
def staged_output(path: str | Path) -> Iterator[Path]:
    """Yield `partial_path` of `path` (emptied first) to write the output into; on success it replaces `path`
    (whatever was there, which `check_output` has vetted), on an exception it is removed and `path` kept."""
    path = Path(path)
    tmp = partial_path(path)
    _remove(tmp)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        yield tmp
    except BaseException:
        _remove(tmp)
        raise
    if tmp.is_dir() and (path.exists() or path.is_symlink()):
        old = path.with_name(f"{path.name}.replaced")        # a folder cannot be renamed over a non-empty one
        _remove(old)
        os.replace(path, old)
        os.replace(tmp, path)
        _remove(old)
    elif tmp.exists():
        os.replace(tmp, path)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
