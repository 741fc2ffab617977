"""Writing an evaluation report: a strict-JSON file (NaN and ±inf have no JSON spelling) beside its markdown."""
from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path

__all__ = ["strict_json", "write_report_files"]


def strict_json(obj):
    """A JSON-ready copy of `obj` (dicts, lists, tuples, scalars): NaN → None, ±inf → ``"inf"`` / ``"-inf"``."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, dict):
        return {k: strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(v) for v in obj]
    return obj


def write_report_files(report, out: str | Path, stem: str, markdown: str) -> tuple[Path, Path]:
    """Write ``OUT/<stem>.json`` (the dataclass `report`, `strict_json`) and ``OUT/<stem>.md`` (`markdown`)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    j, m = out / f"{stem}.json", out / f"{stem}.md"
    j.write_text(json.dumps(strict_json(asdict(report)), indent=2, allow_nan=False) + "\n")
    m.write_text(markdown)
    return j, m
