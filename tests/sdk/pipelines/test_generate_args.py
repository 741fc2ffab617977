"""`SceneGenerator.generate` / `generate_iter` arguments, streaming in bounded memory, and the `nfldm generate` /
`nfldm render` argument and output checks."""
from __future__ import annotations

import gc
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from nfldm_sdk.errors import NfldmError
from nfldm_sdk.fields.voxel_field import VoxelField
from nfldm_sdk.pipelines.generate_args import GenerateArgumentError
from nfldm_sdk.pipelines.scene import NeuralScene

pytestmark = pytest.mark.usefixtures("one_thread_module")


# ============================================================================================ generate arguments
BAD_ARGS = [
    ({"steps": 0}, r"steps must be an integer >= 1, got 0; pass steps=None"),
    ({"steps": -5}, r"steps must be an integer >= 1, got -5"),
    ({"steps": 2.5}, r"steps must be an integer >= 1, got 2\.5 \(float\)"),
    ({"steps": True}, r"steps must be an integer >= 1, got True \(bool\)"),
    ({"batch_size": 0}, r"batch_size must be an integer >= 1, got 0; pass batch_size=None"),
    ({"batch_size": -1}, r"batch_size must be an integer >= 1, got -1"),
    ({"batch_size": 2.0}, r"batch_size must be an integer >= 1, got 2\.0 \(float\)"),
    ({"seed": 1.5}, r"seed must be an integer >= 0, got 1\.5 \(float\)"),
    ({"seed": True}, r"seed must be an integer >= 0, got True \(bool\)"),
    ({"seed": -1}, r"seed must be an integer >= 0, got -1"),
    ({"seed": 2**64}, r"seed must be an integer >= 0|exceeds the largest generator seed"),
    ({"num_scenes": 0}, r"num_scenes must be an integer >= 1, got 0"),
    ({"num_scenes": 2.0}, r"num_scenes must be an integer >= 1, got 2\.0 \(float\)"),
    ({"num_scenes": "3"}, r"num_scenes must be an integer >= 1, got '3' \(str\)"),
    ({"sampler": "euler"}, r"sampler must be one of ddpm, ddim, dpmsolver\+\+, got 'euler'"),
]


@pytest.mark.parametrize("kwargs,message", BAD_ARGS, ids=[f"{next(iter(k))}={next(iter(k.values()))!r}" for k, _ in BAD_ARGS])
def test_generate_rejects_bad_arguments_by_name(tiny_generator, kwargs, message):
    args = {"num_scenes": 2, "seed": 0, "steps": 1, **kwargs}
    with pytest.raises(GenerateArgumentError, match=message) as info:
        tiny_generator.generate(**args)
    assert isinstance(info.value, NfldmError) and isinstance(info.value, ValueError)
    with pytest.raises(GenerateArgumentError, match=message):
        tiny_generator.generate_iter(**args)          # raised by the call itself, before any scene is sampled


def test_generate_accepts_numpy_integers_and_gives_the_same_scenes(tiny_generator):
    a = tiny_generator.generate(np.int64(2), seed=np.int64(5), steps=np.int32(1), batch_size=np.int16(2))
    b = tiny_generator.generate(2, seed=5, steps=1, batch_size=2)
    assert [s.seed for s in a] == [5, 6] and all(type(s.seed) is int and s.steps == 1 for s in a)
    assert all(torch.equal(x.field.features, y.field.features) for x, y in zip(a, b))


def test_generate_iter_yields_generate_s_scenes_whatever_the_batch_size(tiny_generator):
    gen = tiny_generator
    listed = gen.generate(5, seed=3, steps=2, sampler="ddim", batch_size=2)
    streamed = list(gen.generate_iter(5, seed=3, steps=2, sampler="ddim", batch_size=2))
    assert [s.seed for s in streamed] == [3, 4, 5, 6, 7] == [s.seed for s in listed]
    for x, y in zip(listed, streamed):                                   # same batches: the same bytes
        assert torch.equal(x.field.density, y.field.density) and torch.equal(x.field.features, y.field.features)
    one_batch = gen.generate(5, seed=3, steps=2, sampler="ddim", batch_size=5)
    for x, y in zip(streamed, one_batch):     # other batches: the same scenes up to batched-kernel float rounding
        torch.testing.assert_close(x.field.features, y.field.features, atol=1e-4, rtol=0)
    assert (streamed[0].field.features - streamed[1].field.features).abs().mean() > 1e-3


def _live(cls) -> int:
    gc.collect()
    return sum(isinstance(o, cls) for o in gc.get_objects())


def test_generate_iter_holds_one_batch_at_a_time(tiny_generator):
    """Consuming the stream and dropping each scene keeps at most one batch of scenes (and fields) alive, where the
    list of `generate` holds all of them."""
    base_scenes, base_fields = _live(NeuralScene), _live(VoxelField)
    peak_scenes = peak_fields = 0
    seeds = []
    for scene in tiny_generator.generate_iter(7, seed=0, steps=1, batch_size=2):
        seeds.append(scene.seed)
        peak_scenes = max(peak_scenes, _live(NeuralScene) - base_scenes)
        peak_fields = max(peak_fields, _live(VoxelField) - base_fields)
        del scene
    assert seeds == list(range(7))
    assert 1 <= peak_scenes <= 2 and 1 <= peak_fields <= 2
    assert _live(NeuralScene) == base_scenes                               # nothing kept once the stream ends
    listed = tiny_generator.generate(7, seed=0, steps=1, batch_size=2)
    assert _live(NeuralScene) - base_scenes == 7 and len(listed) == 7       # the list: every scene at once


def test_generate_progress_bar_counts_scenes(tiny_generator, capsys):
    tiny_generator.generate(3, seed=0, steps=1, batch_size=2, progress=True)
    err = capsys.readouterr().err
    assert "3/3" in err and "scene" in err and "batch" not in err


# ============================================================================================ nfldm generate
@pytest.mark.parametrize("option,value", [("--num", "0"), ("--steps", "0"), ("--steps", "-5"), ("--batch-size", "0"),
                                          ("--batch-size", "-1"), ("--seed", "-1"), ("--seed", "1.5")])
def test_generate_cli_rejects_bad_numbers_before_writing(default_stats_bundle, tmp_path, option, value):
    from nfldm_sdk.cli.generate import generate

    out = tmp_path / "scenes"
    res = CliRunner().invoke(generate, ["--model", str(default_stats_bundle), "--out", str(out), "--device", "cpu",
                                        option, value])
    assert res.exit_code == 2 and f"Invalid value for '{option}'" in res.output and value in res.output
    assert not out.exists()


def test_generate_cli_writes_every_scene_of_several_batches(default_stats_bundle, tmp_path):
    from nfldm_sdk.cli.generate import generate

    out = tmp_path / "scenes"
    res = CliRunner().invoke(generate, ["--model", str(default_stats_bundle), "--num", "3", "--batch-size", "2", "--seed", "4",
                                        "--steps", "1", "--out", str(out), "--device", "cpu", "--no-preview"])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in out.iterdir()) == ["scene_000004", "scene_000005", "scene_000006"]
    assert "3 scene(s)" in res.output and "1 steps" in res.output


def _generate(bundle, out, *extra):
    from nfldm_sdk.cli.main import main

    return CliRunner().invoke(main, ["generate", "--model", str(bundle), "--num", "2", "--seed", "4", "--steps", "1",
                                     "--out", str(out), "--device", "cpu", "--no-preview", *extra])


def test_generate_refuses_scenes_it_would_replace_without_overwrite(default_stats_bundle, tmp_path):
    out = tmp_path / "scenes"
    assert _generate(default_stats_bundle, out).exit_code == 0
    first = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    (out / "scene_000005" / "notes.txt").write_text("mine")
    (out / "scene_000009").mkdir()                               # another seed: not in the way
    res = _generate(default_stats_bundle, out)                   # seeds 4 and 5 again, no --overwrite: refused
    assert res.exit_code == 1
    assert f"Error: --out {out / 'scene_000004'} exists: pass --overwrite to replace it" in res.output
    assert (out / "scene_000005" / "notes.txt").read_text() == "mine"
    res = _generate(default_stats_bundle, out, "--overwrite")    # replaced whole, with the same bytes
    assert res.exit_code == 0, res.output
    again = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert again == first and sorted(p.name for p in out.iterdir()) == ["scene_000004", "scene_000005", "scene_000009"]


def test_generate_overwrite_never_replaces_a_folder_that_is_not_a_scene(default_stats_bundle, tmp_path):
    out = tmp_path / "scenes"
    (out / "scene_000004").mkdir(parents=True)
    (out / "scene_000004" / "a.txt").write_text("mine")
    res = _generate(default_stats_bundle, out, "--overwrite")
    assert res.exit_code == 1 and "is not an output of this command (a folder with scene.json" in res.output
    assert (out / "scene_000004" / "a.txt").read_text() == "mine" and not (out / "scene_000005").exists()


# ============================================================================================ nfldm render
@pytest.fixture(scope="module")
def saved_scene(default_stats_bundle, tmp_path_factory):
    from nfldm_sdk.pipelines.generator import SceneGenerator

    scene = SceneGenerator.from_pretrained(default_stats_bundle).generate(1, seed=1, steps=1)[0]
    return scene.save(tmp_path_factory.mktemp("scene") / "scene_000001")


def _render(scene, bundle, out, *extra):
    from nfldm_sdk.cli.render import render

    return CliRunner().invoke(render, [str(scene), "--model", str(bundle), "--rig", "front", "--width", "32",
                                       "--height", "32", "--trajectory", "stationary", "--duration", "0.1",
                                       "--device", "cpu", "--out", str(out), *extra])


def test_render_refuses_an_existing_output_without_overwrite(saved_scene, default_stats_bundle, tmp_path):
    out = tmp_path / "frames"
    res = _render(saved_scene, default_stats_bundle, out)
    assert res.exit_code == 0, res.output
    assert (out / "frames.json").is_file() and not (tmp_path / "frames.partial").exists()
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    (out / "mine.txt").write_text("keep")
    res = _render(saved_scene, default_stats_bundle, out)                         # again, no --overwrite: refused
    assert res.exit_code == 1
    assert f"--out {out} exists: pass --overwrite to replace it, or choose another --out" in res.output
    assert (out / "mine.txt").read_text() == "keep" and not (tmp_path / "frames.partial").exists()
    res = _render(saved_scene, default_stats_bundle, out, "--overwrite")          # --overwrite: replaced as a whole
    assert res.exit_code == 0, res.output
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before and not (out / "mine.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames"]      # no staging folder left behind


def test_render_overwrite_never_replaces_what_it_did_not_write(saved_scene, default_stats_bundle, tmp_path):
    other = tmp_path / "notes"
    other.mkdir()
    (other / "a.txt").write_text("mine")
    res = _render(saved_scene, default_stats_bundle, other, "--overwrite")
    assert res.exit_code == 1 and "is not an output of this command" in res.output
    assert (other / "a.txt").read_text() == "mine"
    video = tmp_path / "drive.mp4"
    video.write_bytes(b"old video")
    res = _render(saved_scene, default_stats_bundle, video)
    assert res.exit_code == 1 and "exists: pass --overwrite" in res.output and video.read_bytes() == b"old video"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _render(saved_scene, default_stats_bundle, empty).exit_code == 0 and (empty / "frames.json").is_file()


@pytest.mark.parametrize("option", ["--width", "--height", "--batch-size"])
def test_render_rejects_zero_sizes(saved_scene, default_stats_bundle, tmp_path, option):
    from nfldm_sdk.cli.render import render

    res = CliRunner().invoke(render, [str(saved_scene), "--model", str(default_stats_bundle), "--out", str(tmp_path / "o"),
                                      "--device", "cpu", option, "0"])
    assert res.exit_code == 2 and f"Invalid value for '{option}'" in res.output
    assert not (tmp_path / "o").exists()


def test_render_writes_the_frames_it_reports(saved_scene, default_stats_bundle, tmp_path):
    out = tmp_path / "f"
    res = _render(saved_scene, default_stats_bundle, out)
    assert res.exit_code == 0, res.output
    meta = json.loads((out / "frames.json").read_text())
    assert f"-> {out}" in res.output and len(meta) >= 1 and (out / meta[0]["rgb"]).is_file()
