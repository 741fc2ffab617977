"""The CPU side of the GPU recipe (scripts/gpu_recipe.sh): its shell parses, its dry run prints the plan within the
budget and runs the training step and the summary on CPU, its test selection covers every test that skips without
CUDA, the fused renderer's targets are judged right, and the summary carries every figure and the card's name."""
import ast
import dataclasses
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "scripts" / "gpu_recipe.sh"
SCRIPTS = ("gpu_recipe.sh", "gpu_wheels.sh")


def _summary_module():
    import importlib.util  # scripts/ is no package: load the summary script by path

    spec = importlib.util.spec_from_file_location("gpu_summary", ROOT / "scripts" / "gpu_summary.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("script", SCRIPTS)
def test_scripts_parse(script):
    r = subprocess.run(["bash", "-n", str(ROOT / "scripts" / script)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_recipe_needs_an_out_dir():
    r = subprocess.run(["bash", str(RECIPE)], capture_output=True, text=True)
    assert r.returncode == 2 and "usage: bash scripts/gpu_recipe.sh OUT_DIR" in r.stderr


# ------------------------------------------------------------------------------------------------ test selection
def _recipe_list(name: str) -> list[str]:
    m = re.search(rf'^{name}="([^"]*)"', RECIPE.read_text(), re.M)
    assert m, f"{name}= not found in {RECIPE.name}"
    return m.group(1).split()


_SKIPS_WITHOUT_CUDA = re.compile(r"not\s+(CUDA|torch\.cuda\.is_available\(\))")


def _cuda_only_tests() -> list[tuple[str, str, bool]]:
    """(file, test function, marked gpu) of every test that skips without CUDA: a ``skipif(not CUDA ...)`` /
    ``skipif(not torch.cuda.is_available() ...)`` decorator, or a ``pytest.skip`` whose reason names CUDA."""
    found = []
    for path in sorted((ROOT / "tests").rglob("test_*.py")):
        text = path.read_text()
        if "cuda" not in text.lower() and "mark.gpu" not in text:
            continue
        rel = str(path.relative_to(ROOT))
        for node in ast.walk(ast.parse(text)):
            if not isinstance(node, ast.FunctionDef) or not node.name.startswith("test_"):
                continue
            decorators = [ast.get_source_segment(text, d) for d in node.decorator_list]
            marked = any(d.startswith("pytest.mark.gpu") for d in decorators)
            skips = any("skipif" in d and _SKIPS_WITHOUT_CUDA.search(d) for d in decorators)
            for call in ast.walk(node):
                if (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute) and call.func.attr == "skip"
                        and ast.get_source_segment(text, call.func) == "pytest.skip"
                        and "CUDA" in ast.get_source_segment(text, call)):
                    skips = True
            if skips or marked:
                found.append((rel, node.name, marked))
    return found


def test_recipe_runs_every_test_that_skips_without_cuda():
    files, nodes = _recipe_list("CUDA_TEST_FILES"), _recipe_list("CUDA_TEST_NODES")
    found = _cuda_only_tests()
    # the finder sees the known ones (a finder that sees nothing would pass everything)
    names = {(f, n) for f, n, _ in found}
    assert ("tests/sdk/rendering/test_render_triton.py", "test_cuda_backward_vs_dense_at_scale") in names
    assert ("tests/sdk/sensors/test_sensors.py", "test_cuda_render_matches_cpu") in names
    missed = [f"{f}::{n}" for f, n, marked in found if not marked and f not in files and f"{f}::{n}" not in nodes]
    assert not missed, (f"tests that skip without CUDA but that scripts/gpu_recipe.sh does not run: {missed}; mark "
                        "them @pytest.mark.gpu (the recipe runs `-m gpu` over every file that has the mark)")
    for entry in files + nodes:
        path, _, func = entry.partition("::")
        assert (ROOT / path).is_file(), f"gpu_recipe.sh runs {path}, which does not exist"
        if func:
            assert f"def {func}(" in (ROOT / path).read_text(), f"gpu_recipe.sh runs {entry}, which does not exist"


# ------------------------------------------------------------------------------------------------ render targets
def _triton_result(forward_sparse=25_000.0, speedup=30.0, error=1e-3, size=256, batch=32):
    from nfldm_sdk.benchmarks.render import TritonBenchResult, TritonTiming

    fwd = [TritonTiming("sparse", True, forward_sparse, forward_sparse * size * size * 128, 900.0),
           TritonTiming("sparse", False, 9_000.0, 9_000.0 * size * size * 128, 800.0),
           TritonTiming("soft", True, 5_000.0, 5_000.0 * size * size * 128, 700.0),
           TritonTiming("soft", False, 4_900.0, 4_900.0 * size * size * 128, 700.0)]
    return TritonBenchResult(device="NVIDIA H200", size=size, n_samples=128, grid=(32, 128, 128), channels=32, batch=batch,
                             grid_dtype="float16", forward=fwd, naive_images_per_s={"sparse": 40.0, "soft": 35.0},
                             backward_batch=4, backward_images_per_s=120.0, naive_backward_images_per_s=120.0 / speedup,
                             backward_speedup=speedup,
                             rel_error={"sparse": {"features": error / 2, "depth": 1e-4, "alpha": 1e-5},
                                        "soft": {"features": 2e-4, "depth": error, "alpha": 3e-5}},
                             skip_exact={"sparse": True, "soft": True}, dram_gb_per_s=4300.0, l2_gb_per_s=9000.0)


def test_render_targets_pass_fail_and_not_applicable():
    from nfldm_sdk.benchmarks.render_targets import check_triton_targets, format_targets

    ok = check_triton_targets(_triton_result())
    assert [(c.name, c.status) for c in ok] == [("forward", "PASS"), ("backward", "PASS"), ("error", "PASS")]
    assert [c.value for c in ok] == [25_000.0, 30.0, 1e-3]  # the skip-on sparse forward; the largest error
    bad = {c.name: c.status for c in check_triton_targets(_triton_result(19_999.0, 19.9, 2.1e-3))}
    assert bad == {"forward": "FAIL", "backward": "FAIL", "error": "FAIL"}
    edge = {c.name: c.status for c in check_triton_targets(_triton_result(20_000.0, 20.0, 2e-3))}
    assert edge == {"forward": "PASS", "backward": "PASS", "error": "PASS"}
    nan = {c.name: c.status for c in check_triton_targets(_triton_result(error=math.nan))}
    assert nan["error"] == "FAIL"
    other_size = check_triton_targets(_triton_result(size=128))
    assert {c.status for c in other_size} == {"N/A"}
    assert {c.status for c in check_triton_targets(_triton_result(batch=12))} == {"N/A"}
    assert "PASS forward: 25,000 >= 20,000 (sparse scene" in format_targets(ok)


def test_render_bench_check_targets_on_cpu_writes_no_targets(tmp_path):
    # On CPU the Triton section is skipped, so there is nothing to judge: the JSON says so and the exit is 0.
    from nfldm_sdk.benchmarks.render import main

    out = tmp_path / "render.json"
    main(["--device", "cpu", "--size", "16", "--samples", "8", "--grid", "4", "8", "8", "--channels", "3",
          "--batch", "1", "--rounds", "1", "--check-targets", "--json", str(out)])
    data = json.loads(out.read_text())
    assert data["targets"] is None and data["triton"] is None and "skipped" in data["triton_note"]
    assert data["render"]["size"] == 16 and data["render"]["fast_images_per_s"] > 0


# ------------------------------------------------------------------------------------------------ the summary
JUNIT = """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" errors="0" failures="1"
skipped="1" tests="5"><testcase classname="tests.sdk.rendering.test_render_triton" name="test_a"/><testcase
classname="tests.sdk.rendering.test_render_triton" name="test_b"><failure message="boom"/></testcase></testsuite>
</testsuites>"""


def test_summary_has_every_figure_and_the_card(tmp_path):
    from nfldm_sdk.benchmarks.render_targets import check_triton_targets
    from nfldm_training.benchmarks.bench import BenchReport, BenchRow, write_bench
    from nfldm_training.benchmarks.train_steps import TrainStepsResult

    out = tmp_path / "out"
    out.mkdir()
    (out / "gpu.txt").write_text("NVIDIA H200, 143771 MiB, 580.159.04\n")
    (out / "steps.tsv").write_text("setup\tok\t0\t12\t60\ncuda-tests\tfailed\t1\t95\t150\ntrain\ttimed out\t124\t300\t300\n")
    (out / "tests_render.xml").write_text(JUNIT)
    triton = _triton_result(19_000.0)
    (out / "render_bench.json").write_text(json.dumps({
        "render": {"implementation": "triton", "size": 256, "n_samples": 128, "batch": 12, "fast_images_per_s": 3210.4,
                   "naive_images_per_s": 12.5, "speedup": 256.8, "max_abs_diff": 1e-4},
        "triton": dataclasses.asdict(triton), "triton_note": None,
        "targets": [dataclasses.asdict(c) for c in check_triton_targets(triton)]}))
    report = BenchReport(machine="AMD EPYC, 16 cores, GPU NVIDIA H200", device="cuda", quick=False,
                         rows=[BenchRow("sampling", "small, ddim 25", 0.4321, "s/scene", seconds=3.0),
                               BenchRow("refine", "", float("nan"), "", error="RuntimeError: out of memory")])
    write_bench(report, out / "bench.json")
    train = TrainStepsResult(stage="scene-ae", preset="small", device="NVIDIA H200", precision="bf16-mixed",
                             batch_size=4, views=18, image_size=(128, 128), steps=812, warmup=3, steps_per_s=3.456,
                             images_per_s=248.8, train_seconds=235.0, total_seconds=270.0, first_loss=0.41,
                             last_loss=0.12, peak_cuda_mb=9876.0, run_dir="/tmp/run")
    (out / "train.json").write_text(json.dumps(dataclasses.asdict(train)))

    assert _summary_module().main([str(out)]) == 0
    md = (out / "summary.md").read_text()
    assert "Card: **NVIDIA H200**" in md and "dry run" not in md
    assert "| cuda-tests | failed | 1 | 95 | 150 |" in md and "| train | timed out | 124 | 300 | 300 |" in md
    assert "| render | 3 | 1 | 0 | 1 |" in md and "`tests.sdk.rendering.test_render_triton::test_b`" in md
    assert "**3,210 images/s**" in md and "forward sparse skip=on: **19,000 images/s**" in md
    assert "| forward (sparse scene, skipping on: images/s) | **FAIL** | 19,000 | >= 20,000 |" in md
    assert "| backward (backward speed-up over autograd through the reference) | **PASS** |" in md
    assert "**0.4321 s/scene**" in md and "error: RuntimeError: out of memory" in md
    assert "**3.456 steps/s**" in md and "812 steps" in md and "peak CUDA memory 9,876 MiB" in md
    data = json.loads((out / "summary.json").read_text())
    assert data["card"] == "NVIDIA H200" and data["tests"]["render"]["failures"] == 1 and data["train"]["steps"] == 812


def test_summary_of_an_empty_run_says_what_is_missing(tmp_path):
    md, data = _summary_module().build_summary(tmp_path)
    assert "unknown (no GPU seen)" in md and "no render_bench.json" in md and "no train.json" in md
    assert data["steps"] == [] and data["tests"] == {}


# ------------------------------------------------------------------------------------------------ the dry run
def test_dry_run_prints_the_plan_and_trains_on_cpu(tiny_capture, tmp_path):
    env = {**os.environ, "GPU_RECIPE_DRY_RUN": "1", "GPU_RECIPE_PRESET": "tiny", "GPU_RECIPE_CAPTURE": tiny_capture,
           "GPU_RECIPE_WORK": str(tmp_path / "work"), "GPU_RECIPE_MAX_STEPS": "2", "PYTHON": sys.executable}
    out = tmp_path / "out"
    r = subprocess.run(["bash", str(RECIPE), str(out)], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    plan = re.search(r"plan \(budget (\d+)s, (\d+)s kept for the summary\): (.*)", r.stdout)
    assert plan, r.stdout[:2000]
    caps = dict(step.split(":") for step in plan.group(3).split(" | "))
    assert list(caps) == ["setup", "nvidia-smi", "compile-report", "cuda-tests", "render-bench", "nfldm-bench", "train"]
    fixed = sum(int(v) for k, v in caps.items() if k != "train")
    assert caps["train"] == "rest" and int(plan.group(1)) - int(plan.group(2)) - fixed >= 60  # training's minimum
    assert int(plan.group(1)) <= 600
    steps = [line.split("\t") for line in (out / "steps.tsv").read_text().splitlines()]
    assert [(s[0], s[1]) for s in steps] == [("setup", "ok"), *[(n, "skipped (dry run)") for n in list(caps)[1:6]],
                                            ("train", "ok")]
    train = json.loads((out / "train.json").read_text())
    assert train["preset"] == "tiny" and train["steps"] == 2 and train["image_size"] == [64, 64]
    assert train["views"] == 2 * 6 and train["steps_per_s"] > 0 and math.isfinite(train["last_loss"])
    assert (tmp_path / "work" / "run_tiny" / "model" / "model.safetensors").is_file()
    md = (out / "summary.md").read_text()
    assert "(dry run: no CUDA step ran)" in md and "steps/s" in md and "no render_bench.json" in md


def test_step_timer_stops_at_the_budget_and_counts_after_the_warm_up():
    from types import SimpleNamespace

    import torch
    from nfldm_training.benchmarks.train_steps import StepTimer

    timer, trainer = StepTimer(seconds=3600.0), SimpleNamespace(should_stop=False)
    timer.on_train_start(trainer, None)
    timer.on_train_batch_end(trainer, None, {"loss": torch.tensor(0.5)}, None, 0)
    assert timer.losses == [0.5] and not trainer.should_stop
    timer.seconds = 0.0
    timer.on_train_batch_end(trainer, None, torch.tensor(0.25), None, 1)
    assert trainer.should_stop and timer.losses == [0.5, 0.25]
    # steps end at 1..6 s: after 3 warm-up steps, 2 steps in the 2 s from the end of step 4 to the end of step 6
    timer.start, timer.ends = 0.0, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    assert timer.steps_per_s(3) == 1.0 and timer.used_warmup(3) == 3
    timer.ends = [2.0, 4.0]  # too few steps for a warm-up: all of them, from the start
    assert timer.steps_per_s(3) == 0.5 and timer.used_warmup(3) == 0
