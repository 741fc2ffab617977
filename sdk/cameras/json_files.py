"""The JSON files of the cameras package (rig files, trajectory files): one reader and one writer, so that every such
file fails the same way — a missing file is a `FileNotFoundError` naming how to make one, a file that is not JSON is
the caller's error type naming the file — and is written the same way (parent folders created, UTF-8 text).

Example::

    data = read_json_file("rig.json", "rig", "write one with CameraRig.save", RigError)
    write_json_file("rig.json", data, indent=2)
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["read_json_file", "write_json_file"]


def read_json_file(path: str | Path, kind: str, hint: str, error: type[Exception]) -> Any:
    """The parsed content of the JSON file at ``path``.

    Args:
        path: the file.
        kind: what the file holds, for messages (``"rig"``: "rig file PATH not found: ...").
        hint: how to get a valid file, appended to the not-found message.
        error: the exception type raised for a file that is not valid JSON.
    Raises:
        FileNotFoundError: no file at ``path``.
        error: the file is not valid JSON.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{kind} file {p} not found: {hint}")
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise error(f"{kind} file {p} is not valid JSON ({e})") from e


def write_json_file(path: str | Path, data: Any, indent: int | None = None) -> Path:
    """Write ``data`` as JSON (``indent`` spaces per level, None for one line) to ``path``, creating its parent
    folders; returns the path. Python floats are written with ``repr`` precision, so float64 values round-trip."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(data, indent=indent))
    return p
