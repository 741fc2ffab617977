"""summary.md and summary.json of a `scripts/gpu_recipe.sh` run: every figure its steps wrote, and the card's name.

    python scripts/gpu_summary.py OUT_DIR

Reads what the recipe left in OUT_DIR (each file is optional: a step that failed or was skipped leaves none, and
the summary says so): ``steps.tsv`` (one line per step: name, status, exit code, seconds, time cap), ``gpu.txt``
(``nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader``), ``setup.txt``, the pytest
reports ``tests_*.xml`` (JUnit XML), ``render_bench.json`` (``python -m nfldm_sdk.benchmarks.render --json``),
``bench.json`` (``nfldm bench --out``) and ``train.json`` (``python -m nfldm_training.benchmarks.train_steps --json``).
Only the standard library: it runs wherever the recipe's Python does, even when the project's imports fail.
"""
from __future__ import annotations

import json
import math
import sys
import xml.etree.ElementTree as ET
from pathlib import Path


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _num(v, digits: int = 4) -> str:
    if v is None:
        return "—"
    if isinstance(v, float) and not math.isfinite(v):
        return "n/a"
    if not isinstance(v, (int, float)):
        return str(v)
    return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.{digits}g}"


def read_steps(out: Path) -> list[dict]:
    """``steps.tsv`` as dicts (name, status, rc, seconds, cap)."""
    rows = []
    if (out / "steps.tsv").is_file():
        for line in (out / "steps.tsv").read_text().splitlines():
            parts = line.split("\t")
            if len(parts) == 5:
                rows.append(dict(zip(("name", "status", "rc", "seconds", "cap"), parts)))
    return rows


def read_tests(out: Path) -> dict[str, dict]:
    """Per JUnit file ``tests_NAME.xml``: counts of tests, failures, errors, skipped, and the failed test names."""
    result = {}
    for f in sorted(out.glob("tests_*.xml")):
        try:
            root = ET.parse(f).getroot()
        except ET.ParseError:
            result[f.stem[6:]] = {"error": "unreadable report"}
            continue
        suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
        counts = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
        failed = [f"{c.get('classname')}::{c.get('name')}" for s in suites for c in s.iter("testcase")
                  if c.find("failure") is not None or c.find("error") is not None]
        result[f.stem[6:]] = {**counts, "passed": counts["tests"] - counts["failures"] - counts["errors"]
                              - counts["skipped"], "failed": failed}
    return result


def card_name(out: Path) -> str:
    """The card's name from ``gpu.txt`` (first field of its first line), else from the render benchmark."""
    if (out / "gpu.txt").is_file():
        first = (out / "gpu.txt").read_text().strip().splitlines()
        if first and "," in first[0]:
            return first[0].split(",")[0].strip()
    rb = _read_json(out / "render_bench.json") or {}
    return (rb.get("triton") or {}).get("device") or (rb.get("render") or {}).get("device") or "unknown (no GPU seen)"


def build_summary(out: Path) -> tuple[str, dict]:
    """(markdown, the same figures as a dict) of the recipe's output folder `out`."""
    steps, tests = read_steps(out), read_tests(out)
    render = _read_json(out / "render_bench.json")
    bench = _read_json(out / "bench.json")
    train = _read_json(out / "train.json")
    card = card_name(out)
    gpu_line = (out / "gpu.txt").read_text().strip() if (out / "gpu.txt").is_file() else ""
    setup = (out / "setup.txt").read_text().strip() if (out / "setup.txt").is_file() else ""
    dry = (out / "DRY_RUN").is_file()
    md = [f"# GPU recipe{' (dry run: no CUDA step ran)' if dry else ''}", "", f"Card: **{card}**"
          + (f" ({gpu_line})" if gpu_line else ""), ""]
    if setup:
        md += ["Setup: " + setup.replace("\n", "; "), ""]
    md += ["## Steps", "", "| step | status | exit | seconds | cap s |", "|---|---|---|---|---|"]
    md += [f"| {s['name']} | {s['status']} | {s['rc']} | {s['seconds']} | {s['cap']} |" for s in steps]
    md += ["", "## CUDA tests", ""]
    if tests:
        md += ["| run | passed | failed | errors | skipped |", "|---|---|---|---|---|"]
        for name, t in tests.items():
            if "error" in t:
                md.append(f"| {name} | {t['error']} | | | |")
            else:
                md.append(f"| {name} | {t['passed']} | {t['failures']} | {t['errors']} | {t['skipped']} |")
        failed = [n for t in tests.values() for n in t.get("failed", [])]
        md += [f"- failed: `{n}`" for n in failed]
    else:
        md.append("no test report")
    md += ["", "## Fused renderer (python -m nfldm_sdk.benchmarks.render)", ""]
    if render:
        r = render.get("render") or {}
        md.append(f"- render_field ({r.get('implementation')}) {r.get('size')} px, {r.get('n_samples')} samples, batch "
                  f"{r.get('batch')}: **{_num(r.get('fast_images_per_s'))} images/s**, naive loop "
                  f"{_num(r.get('naive_images_per_s'))} ({_num(r.get('speedup'), 3)}x), max |diff| "
                  f"{_num(r.get('max_abs_diff'), 2)}")
        t = render.get("triton")
        if t:
            md.append(f"- triton, batch {t['batch']}, {t['grid_dtype']} features; card DRAM {_num(t['dram_gb_per_s'])} "
                      f"GB/s, L2 {_num(t['l2_gb_per_s'])} GB/s")
            for f in t["forward"]:
                md.append(f"  - forward {f['scene']} skip={'on' if f['skip'] else 'off'}: **{_num(f['images_per_s'])} "
                          f"images/s**, {_num(f['samples_per_s'] / 1e9)} G samples/s")
            md.append("  - naive PyTorch: " + ", ".join(f"{k} {_num(v)} images/s" for k, v in
                                                          t["naive_images_per_s"].items()))
            md.append(f"  - backward (batch {t['backward_batch']}): {_num(t['backward_images_per_s'])} images/s vs "
                      f"{_num(t['naive_backward_images_per_s'])} through the reference: "
                      f"**{_num(t['backward_speedup'], 3)}x**")
            md.append("  - relative errors: " + "; ".join(
                f"{k}: " + ", ".join(f"{n} {_num(v, 2)}" for n, v in e.items()) for k, e in t["rel_error"].items()))
        else:
            md.append(f"- triton: {render.get('triton_note')}")
        if render.get("targets"):
            md += ["", "| target | status | value | threshold |", "|---|---|---|---|"]
            md += [f"| {c['name']} ({c['what']}) | **{c['status']}** | {_num(c['value'])} | {c['op']} {_num(c['target'])} |"
                   for c in render["targets"]]
    else:
        md.append("no render_bench.json")
    md += ["", "## nfldm bench --device cuda", ""]
    if bench:
        md += [f"{bench.get('machine')}", "", "| benchmark | setting | figure | baseline | ratio | s |", "|---|---|---|---|---|---|"]
        for row in bench.get("rows", []):
            fig = f"error: {row['error']}" if row.get("error") else f"**{_num(row['value'])} {row['unit']}**"
            base = f"{_num(row['baseline'])} {row['baseline_name']}" if row.get("baseline") is not None else "—"
            md.append(f"| {row['name']} | {row['setting']} | {fig} | {base} | {_num(row.get('ratio'), 3)} | "
                      f"{_num(row.get('seconds'), 3)} |")
    else:
        md.append("no bench.json")
    md += ["", "## Training steps", ""]
    if train:
        H, W = train["image_size"]
        md.append(f"- {train['stage']}, preset {train['preset']}, {train['device']}, {train['precision']}: batch "
                  f"{train['batch_size']} x {train['views']} views at {W}x{H}: **{_num(train['steps_per_s'])} steps/s** "
                  f"({_num(train['images_per_s'])} images/s) over {train['steps']} steps ({train['warmup']} warm-up) in "
                  f"{_num(train['train_seconds'])} s; loss {_num(train['first_loss'])} -> {_num(train['last_loss'])}"
                  + (f"; peak CUDA memory {_num(train['peak_cuda_mb'])} MiB" if train.get("peak_cuda_mb") else ""))
    else:
        md.append("no train.json")
    data = {"card": card, "gpu": gpu_line, "dry_run": dry, "steps": steps, "tests": tests, "render_bench": render,
            "bench": bench, "train": train}
    return "\n".join(md) + "\n", data


def main(argv: list[str] | None = None) -> int:
    """Write OUT_DIR/summary.md and OUT_DIR/summary.json; print the markdown."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or not Path(args[0]).is_dir():
        print("usage: python scripts/gpu_summary.py OUT_DIR (the folder gpu_recipe.sh wrote)", file=sys.stderr)
        return 2
    out = Path(args[0])
    md, data = build_summary(out)
    (out / "summary.md").write_text(md)
    (out / "summary.json").write_text(json.dumps(data, indent=2, default=str) + "\n")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
