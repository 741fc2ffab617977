"""Labelled point clouds as PLY files: Open3D reads them (points and colours), and the labels travel with them.

Open3D's legacy ``PointCloud`` has no label field, so `write_points_ply` writes the file itself: binary little-endian
PLY with one ``vertex`` element of ``double x, y, z`` (metres), ``uchar red, green, blue`` and, for labelled points,
``uchar label`` (the CARLA semantic tag, `nfldm_sdk.labels.classes`). Open3D skips properties it does not know, so
``open3d.io.read_point_cloud`` still reads points and colours; `read_points_ply` reads all three back.

    write_points_ply("points.ply", ScenePoints(points, colors, labels))
    pts = read_points_ply("points.ply")          # ScenePoints: points [P,3] float64, colors [P,3], labels [P] uint8
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from nfldm_sdk.viz.points import ScenePoints

__all__ = ["write_points_ply", "read_points_ply", "PLY_LABEL_PROPERTY"]

#: Name of the per-point label property (uchar, CARLA semantic tag).
PLY_LABEL_PROPERTY = "label"

#: PLY scalar type names -> numpy little-endian dtypes (both spellings of the PLY specification).
_PLY_TYPES = {"char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "<i2", "int16": "<i2",
              "ushort": "<u2", "uint16": "<u2", "int": "<i4", "int32": "<i4", "uint": "<u4", "uint32": "<u4",
              "float": "<f4", "float32": "<f4", "double": "<f8", "float64": "<f8"}


def write_points_ply(path: str | Path, pts: ScenePoints, comment: str = "") -> Path:
    """Write `pts` as a binary PLY (module docstring); the ``label`` property only when ``pts.labels`` is set.

    Args:
        path: the ``.ply`` file (its folder is created).
        pts: points ``[P, 3]`` metres, colours ``[P, 3]`` in [0, 1] (rounded to uint8), labels ``[P]`` uint8 or None.
        comment: an extra header comment line (e.g. the frame and units).
    Returns:
        the path written.
    """
    path = Path(path)
    if path.suffix.lower() != ".ply":
        raise ValueError(f"{path}: labelled point clouds are written as PLY: use a .ply path")
    P = len(pts.points)
    if pts.colors.shape != (P, 3) or (pts.labels is not None and pts.labels.shape != (P,)):
        raise ValueError(f"points {pts.points.shape}, colours {pts.colors.shape} and labels "
                         f"{None if pts.labels is None else pts.labels.shape} must be [P, 3], [P, 3] and [P]")
    fields = [("x", "<f8"), ("y", "<f8"), ("z", "<f8"), ("red", "u1"), ("green", "u1"), ("blue", "u1")]
    if pts.labels is not None:
        fields.append((PLY_LABEL_PROPERTY, "u1"))
    rows = np.empty(P, dtype=fields)
    for i, axis in enumerate("xyz"):
        rows[axis] = pts.points[:, i]
    rgb = np.clip(np.round(np.asarray(pts.colors, dtype=np.float64) * 255.0), 0, 255).astype(np.uint8)
    for i, channel in enumerate(("red", "green", "blue")):
        rows[channel] = rgb[:, i]
    if pts.labels is not None:
        rows[PLY_LABEL_PROPERTY] = pts.labels
    names = {"<f8": "double", "u1": "uchar"}
    header = ["ply", "format binary_little_endian 1.0", "comment written by nfldm"]
    header += [f"comment {line}" for line in comment.splitlines() if line.strip()]
    header += [f"element vertex {P}"] + [f"property {names[t]} {n}" for n, t in fields] + ["end_header"]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(("\n".join(header) + "\n").encode("ascii"))
        f.write(rows.tobytes())
    return path


def read_points_ply(path: str | Path) -> ScenePoints:
    """Read a binary little-endian PLY point cloud (`write_points_ply`'s, or Open3D's): its ``vertex`` element's
    x, y, z, the colours (uchar red/green/blue -> [0, 1]; zeros when absent) and the ``label`` property (None when
    absent). Faces and other elements after the vertices are ignored.

    Raises:
        ValueError: not a PLY file, not binary little-endian, or a vertex list property.
    """
    path = Path(path)
    data = path.read_bytes()
    end = data.find(b"end_header")
    if not data.startswith(b"ply") or end < 0:
        raise ValueError(f"{path} is not a PLY file (no 'ply' magic / 'end_header'): write it with write_points_ply")
    body = end + len(b"end_header")
    body += 2 if data[body:body + 2] == b"\r\n" else 1
    lines = data[:end].decode("ascii", errors="replace").splitlines()
    fmt = next((ln.split()[1] for ln in lines if ln.startswith("format")), "")
    if fmt != "binary_little_endian":
        raise ValueError(f"{path}: PLY format {fmt!r} is not read here: write binary_little_endian "
                         "(write_points_ply, or open3d.io.write_point_cloud(..., write_ascii=False))")
    elements = [ln.split() for ln in lines if ln.startswith("element")]
    if not elements or elements[0][1] != "vertex":
        raise ValueError(f"{path}: the first PLY element must be 'vertex' (a point cloud), got "
                         f"{elements[0][1] if elements else 'none'}")
    count, fields, in_vertex = int(elements[0][2]), [], False
    for ln in lines:
        words = ln.split()
        if words[:1] == ["element"]:
            if in_vertex:
                break                                      # elements after the vertices are not needed
            in_vertex = True
        elif words[:1] == ["property"] and in_vertex:
            if words[1] == "list":
                raise ValueError(f"{path}: the vertex element has a list property {words[-1]!r}: not a point cloud")
            fields.append((words[2], _PLY_TYPES[words[1]]))
    rows = np.frombuffer(data, dtype=fields, count=count, offset=body)
    names = rows.dtype.names or ()
    points = np.stack([rows[a].astype(np.float64) for a in "xyz"], -1)
    if all(c in names for c in ("red", "green", "blue")):
        colors = np.stack([rows[c].astype(np.float64) / 255.0 for c in ("red", "green", "blue")], -1)
    else:
        colors = np.zeros((count, 3))
    labels = rows[PLY_LABEL_PROPERTY].astype(np.uint8) if PLY_LABEL_PROPERTY in names else None
    return ScenePoints(points, colors, labels)
