"""`nfldm bench`: the runner on tiny sizes, the table (names the machine), ratios, failures, the CLI."""
from __future__ import annotations

import json
import math

import pytest
import torch

from nfldm_training.benchmarks.bench import BENCH_SIZES, BenchReport, BenchRow, format_bench, machine_line, run_bench

TINY = {
    "capture": dict(town="Town01", width=32, height=32, frames=1, baseline_repeats=1),
    "render": dict(size=32, n_samples=8, grid=(4, 16, 16), channels=4, batch=1, rounds=1),
    "sampling": dict(bundle_or_preset="tiny", samplers=("ddim",), steps=(2,), batch=1),
    "sensors": dict(size=32, ticks=1, batch_size=6, rounds=1,
                    decoder=dict(preset="tiny", feature_channels=4, render_samples=8, decoder_widths=(16, 16, 16),
                                 grid_shape=(4, 16, 16))),
    "lidar": dict(spec="nuscenes32", ticks=1, size=32, batch_size=6, rounds=1, n_samples=16,
                  decoder=dict(preset="tiny", feature_channels=4, render_samples=8, decoder_widths=(16, 16, 16),
                               grid_shape=(4, 16, 16))),
    "refine": dict(size="tiny", steps=1, views=1),
    "route": dict(bundle_or_preset="tiny", length_m=40.0, steps=1),
    "startup": dict(repeats=1),
}


def test_machine_line_names_cpu_cores_threads():
    line = machine_line("cpu")
    assert f"{torch.get_num_threads()} threads" in line and "cores" in line
    assert "GPU" not in line


def test_quick_sizes_cover_every_benchmark():
    assert set(BENCH_SIZES["quick"]) == set(BENCH_SIZES["full"]) == set(TINY)



def test_refine_and_sensor_benchmarks_take_their_sizes_from_the_preset_table():
    from nfldm_training.benchmarks.refine import refine_sizes
    from nfldm_training.benchmarks.sensors import bench_decoder
    from nfldm_training.configs.presets import PRESETS

    for name in ("tiny", "small"):
        assert refine_sizes(name) == (PRESETS[name].scene_ae, PRESETS[name].prior.prior)
    assert bench_decoder("tiny").config == PRESETS["tiny"].scene_ae
    assert bench_decoder("tiny", decoder_widths=(16, 16, 16)).config.encoder_widths == (16, 16, 16)
    assert [BENCH_SIZES[m]["sensors"]["decoder"] for m in ("quick", "full")] == [{"preset": "tiny"}, {"preset": "small"}]
    assert [BENCH_SIZES[m]["refine"]["size"] for m in ("quick", "full")] == ["tiny", "small"]

def test_run_bench_tiny(tmp_path):
    report = run_bench(quick=True, device="cpu", sizes=TINY, log=lambda s: None)
    rows = {r.name: r for r in report.rows}
    assert list(rows) == ["capture", "render", "sampling", "sensors", "lidar", "refine", "route", "startup"]
    for name in rows:                                        # refine included: a broken bench_refine is an error row
        assert not rows[name].error, f"{name}: {rows[name].error}"
        assert rows[name].value > 0 and math.isfinite(rows[name].value)
    f = rows["refine"]
    assert f.unit == "s/step" and f.setting == "SDS refine_scene, tiny sizes, 1 views/step, 1 steps"
    assert f.baseline is None and f.ratio is None
    # same-run baselines and their ratios
    r = rows["render"]
    assert r.baseline > 0 and r.ratio == pytest.approx(r.value / r.baseline, rel=1e-6)
    assert rows["sampling"].unit == "s/scene" and "ddim 2 steps/level" in rows["sampling"].setting
    assert 0 < rows["capture"].ratio <= 1.5                  # pipeline rays/s cannot much exceed the raycaster alone
    assert rows["sensors"].baseline is None and rows["sensors"].ratio is None
    li = rows["lidar"]                                       # beams/s against the camera pixels/s of the same scene
    assert li.unit == "M beams/s" and "nuscenes32" in li.setting and "16 samples/beam" in li.setting
    assert li.baseline > 0 and li.ratio == pytest.approx(li.value / li.baseline, rel=1e-6)
    ro = rows["route"]                                       # metres per minute; the same scenes made independently
    assert ro.unit == "m/min" and "over 40 m" in ro.setting and ro.baseline > 0 and ro.ratio > 0
    s = rows["startup"]                                      # the slowest nfldm start-up, sim_bridge as baseline
    assert s.unit == "s" and s.baseline > 0 and s.ratio == pytest.approx(s.baseline / s.value, rel=1e-6)
    assert "nfldm --help" in s.setting and "nfldm generate --no-such-option" in s.setting
    text = format_bench(report)
    assert text.splitlines()[0].startswith("nfldm bench (quick, device cpu) on ") and "threads" in text.splitlines()[0]
    for name in rows:
        assert any(line.startswith(name) for line in text.splitlines())
    d = json.loads(json.dumps(report.to_dict()))
    assert d["rows"][1]["name"] == "render"


def test_failures_become_rows_and_only_filters():
    report = run_bench(quick=True, only=("render",), sizes={**TINY, "render": dict(size=-1)}, log=lambda s: None)
    assert [r.name for r in report.rows] == ["render"]
    assert report.rows[0].error and math.isnan(report.rows[0].value)
    assert "n/a" in format_bench(report)
    with pytest.raises(ValueError, match="unknown benchmark"):
        run_bench(only=("nope",), log=lambda s: None)


def test_format_table_columns():
    rep = BenchReport(machine="CPU X, 2 cores, torch 2 with 2 threads", device="cpu", quick=False,
                      rows=[BenchRow("render", "64px", 12.5, "images/s", baseline=2.5, baseline_name="naive", ratio=5.0),
                            BenchRow("sensors", "rig", 3.0, "images/s")])
    text = format_bench(rep)
    assert "CPU X, 2 cores" in text.splitlines()[0] and "full" in text.splitlines()[0]
    render = next(line for line in text.splitlines() if line.startswith("render"))
    assert "12.5 images/s" in render and "2.5 naive" in render and "5.00x" in render


@pytest.mark.skipif(not hasattr(torch, "cuda") or torch.cuda.is_available(), reason="checks the no-GPU error")
def test_cuda_without_gpu_is_a_clear_error():
    from click.testing import CliRunner

    from nfldm_training.cli.bench import bench

    r = CliRunner().invoke(bench, ["--quick", "--device", "cuda"])
    assert r.exit_code != 0 and "torch.cuda.is_available() is False" in r.output
