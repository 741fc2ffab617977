"""The fused Triton kernel's speed and accuracy targets, checked against a run of
`nfldm_sdk.benchmarks.render.run_triton_bench` (``python -m nfldm_sdk.benchmarks.render --device cuda --check-targets``).

The targets hold at the issue's size only: 256x256 output, 128 samples per ray, a 128x128x32 grid with 1 + 32
channels, 32 images per forward call. A run at another size answers none of them (status ``"N/A"``).

* forward: at least 20,000 images/s on the sparse driving-like scene with empty-space skipping on (the
  configuration ``implementation="auto"`` uses);
* backward: the fused backward at least 20x faster than autograd through `render_field_reference`;
* error: the largest relative error of features, depth and alpha against the float32 reference, over both bench
  scenes, at most 2e-3.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["TRITON_TARGETS", "TARGET_SIZE", "TargetCheck", "check_triton_targets", "format_targets"]

#: name -> (the figure of the run it reads, comparison, threshold); see the module docstring.
TRITON_TARGETS = {"forward": ("sparse scene, skipping on: images/s", ">=", 20_000.0),
                  "backward": ("backward speed-up over autograd through the reference", ">=", 20.0),
                  "error": ("largest relative error (features, depth, alpha; both scenes)", "<=", 2e-3)}
#: The size the targets are stated at: image side (px), samples per ray, grid (Z, Y, X), feature channels, batch.
TARGET_SIZE = (256, 128, (32, 128, 128), 32, 32)


@dataclass(frozen=True)
class TargetCheck:
    """One target of `TRITON_TARGETS` against a run: ``status`` is ``"PASS"``, ``"FAIL"`` or ``"N/A"`` (the run was
    not at the target's size, so the figure does not answer it)."""

    name: str
    what: str
    value: float
    op: str
    target: float
    status: str


def check_triton_targets(r: Any) -> list[TargetCheck]:
    """A `nfldm_sdk.benchmarks.render.TritonBenchResult` against `TRITON_TARGETS`: one `TargetCheck` per target, in
    the table's order (``value`` in the target's unit: images/s, a ratio, a relative error)."""
    values = {"forward": next(t.images_per_s for t in r.forward if t.scene == "sparse" and t.skip),
              "backward": r.backward_speedup,
              "error": max(max(e.values()) for e in r.rel_error.values())}
    at_size = (r.size, r.n_samples, tuple(r.grid), r.channels, r.batch) == TARGET_SIZE
    checks = []
    for name, (what, op, target) in TRITON_TARGETS.items():
        ok = values[name] >= target if op == ">=" else values[name] <= target
        checks.append(TargetCheck(name, what, float(values[name]), op, target,
                                  ("PASS" if ok else "FAIL") if at_size else "N/A"))
    return checks


def _fmt(v: float) -> str:
    return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.4g}"


def format_targets(checks: list[TargetCheck]) -> str:
    """One line per target: ``PASS forward: 23,100 >= 20,000 (what)``."""
    return "\n".join(f"  {c.status:4s} {c.name}: {_fmt(c.value)} {c.op} {_fmt(c.target)} ({c.what})" for c in checks)
