"""A rich table summarising a capture store (what `sim_bridge info` prints)."""
from __future__ import annotations

import numpy as np
from rich.table import Table

from sim_bridge.store.reader import CaptureStore, Episode

__all__ = ["store_summary", "episode_duration_s", "episode_distance_m", "format_bytes"]


def episode_duration_s(ep: Episode) -> float:
    """Simulated time spanned by the committed frames, seconds (last timestamp - first; 0 for < 2 frames)."""
    return float(ep.timestamp[-1] - ep.timestamp[0]) if ep.num_frames >= 2 else 0.0


def episode_distance_m(ep: Episode) -> float:
    """Distance driven by the ego over the committed frames, metres (polyline length of the ego positions)."""
    if ep.num_frames < 2:
        return 0.0
    positions = ep.ego_to_world[:, :3, 3]
    return float(np.linalg.norm(np.diff(positions, axis=0), axis=1).sum())


def format_bytes(n: int | None) -> str:
    """`n` bytes as a short human-readable string ("12.3 MB"); "?" when unknown."""
    if n is None:
        return "?"
    size = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"  # pragma: no cover


def store_summary(store: CaptureStore) -> Table:
    """One row per episode (frames committed/planned, complete, cameras, H×W, duration s, distance driven m)
    under a header with backend, town, weather, seed, fps, format version, size on disk and the LiDAR (if any)."""
    lines = [str(store.path),
             f"backend {store.backend} · town {store.town} · weather {store.weather} · seed {store.seed}",
             f"{store.fps:g} fps · format {store.format_version} · {format_bytes(store.size_on_disk())} on disk"]
    if store.lidar is not None:
        s = store.lidar
        lines.append(f"lidar {s.name} · {s.channels} × {s.points_per_channel} beams · {s.upper_fov_deg:+g}..."
                     f"{s.lower_fov_deg:+g}° · {s.range_m:g} m")
    # min_width keeps the header lines unwrapped above a narrow table
    table = Table(title="\n".join(lines), title_justify="left", min_width=max(len(line) for line in lines))
    for name, justify in (("episode", "left"), ("frames", "right"), ("complete", "center"), ("cams", "right"),
                          ("H×W", "right"), ("duration", "right"), ("distance", "right")):
        table.add_column(name, justify=justify, no_wrap=True)
    for ep in store:
        table.add_row(ep.name, f"{ep.num_frames}/{ep.planned_frames}", "yes" if ep.complete else "no",
                      str(ep.num_cameras), f"{ep.height}×{ep.width}", f"{episode_duration_s(ep):.1f} s",
                      f"{episode_distance_m(ep):.1f} m")
    total = store.num_frames
    table.caption = f"{len(store)} episode(s), {total} frame(s) × {len(store.rig)} camera(s) ({', '.join(store.rig.names)})"
    return table
