"""`nfldm eval-lidar`: the beam-by-beam comparison on an analytic flat ground (known answers), its masks, and the
command on a tiny capture collected with a LiDAR."""
from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from nfldm_sdk.fields.voxel_field import VoxelField
from nfldm_sdk.labels.classes import DEFAULT_CLASSES
from nfldm_sdk.models.semantic_head import SemanticHead
from nfldm_sdk.sensors.lidar_spec import LidarError, LidarSpec
from nfldm_training.evaluation.lidar import beam_masks, chamfer_halves, compare_scan

pytestmark = pytest.mark.usefixtures("one_thread_module")

MOUNT_Z = 1.8
ROAD = 1
#: 8 beams from +10° to −30° (−1.43° meets the ground beyond range, −7.14° at 13.4 m), 90 shots each, 20 m range.
SPEC = LidarSpec(channels=8, range_m=20.0, upper_fov_deg=10.0, lower_fov_deg=-30.0, rotation_frequency_hz=10.0,
                 points_per_second=8 * 10 * 90, name="test")


def ground_field(sigma: float = 1e5) -> tuple[VoxelField, float]:
    """A flat ground filling the box x, y ∈ [−32, 32], z ∈ [−2, 6] m below z = 0 (voxels 4 × 4 × 0.25 m) and the
    height its surface renders at: density ramps (trilinear) from the lowest empty voxel centre, z = 0.125 m, and a
    dense ground reaches the hit opacity a fraction of a millimetre below it."""
    Z, Y, X = 32, 16, 16
    z_centres = -2.0 + 0.25 * (torch.arange(Z) + 0.5)
    density = (z_centres < 0).float()[:, None, None].expand(Z, Y, X) * sigma
    bounds = torch.tensor([[-32.0, -32.0, -2.0], [32.0, 32.0, 6.0]])
    return VoxelField(density.contiguous(), torch.zeros(4, Z, Y, X), bounds), 0.125


def ground_scan(spec: LidarSpec, height: float) -> np.ndarray:
    """``[C, A]`` range image of a level sensor ``height`` m above an infinite flat ground: ``h / sin(−e)`` below the
    horizon, ``inf`` above it or beyond the range."""
    e = np.radians(spec.elevations_deg())
    r = np.where(e < 0, height / np.sin(np.maximum(-e, 1e-12)), np.inf)
    r = np.where(r <= spec.range_m, r, np.inf)
    return np.broadcast_to(r[:, None], (spec.channels, spec.points_per_channel)).astype(np.float32)


def sensor_pose(yaw_deg: float = 30.0, x: float = 3.0, y: float = -2.0) -> np.ndarray:
    """Sensor -> scene: turned by `yaw_deg` about z, at (x, y, MOUNT_Z)."""
    c, s = math.cos(math.radians(yaw_deg)), math.sin(math.radians(yaw_deg))
    m = np.eye(4)
    m[:2, :2] = [[c, -s], [s, c]]
    m[:3, 3] = (x, y, MOUNT_Z)
    return m


def road_head(channels: int = 4) -> SemanticHead:
    """A head that answers "road" everywhere (zero weights, the road logit's bias highest)."""
    head = SemanticHead(channels, DEFAULT_CLASSES)
    with torch.no_grad():
        head.linear.weight.zero_()
        head.linear.bias.fill_(-5.0)
        solid = [n for n in DEFAULT_CLASSES.names if n != "sky"]
        head.linear.bias[solid.index("road")] = 5.0
    return head


def test_flat_ground_matches_its_captured_scan():
    field, surface = ground_field()
    captured = ground_scan(SPEC, MOUNT_Z - surface)
    tags = np.where(np.isfinite(captured), ROAD, 0).astype(np.uint8)
    s = compare_scan(field, captured, sensor_pose(), SPEC, captured_tags=tags, head=road_head(), n_samples=2000)
    returns = int(np.isfinite(captured).sum())
    assert returns == 5 * 90                                 # the five beams below −1.43° meet the ground within 20 m
    assert s.beams == 8 * 90 and s.reach == s.beams          # the sensor is inside the box: every beam reaches it
    assert s.captured_returns == s.generated_returns == s.compared == returns
    assert s.agree == s.reach                                # drop agreement 1
    # ~0: the ground reaches the hit opacity a fraction of a millimetre below its onset, within the 1 cm steps
    assert s.abs_rel_sum / s.compared < 1e-3
    assert s.chamfer is not None and s.chamfer < 0.01        # metres
    np.testing.assert_array_equal(np.isfinite(s.generated), np.isfinite(captured))
    road = DEFAULT_CLASSES.names.index("road")
    assert s.confusion.sum() == returns and s.confusion[road, road] == returns   # label agreement 1
    assert s.march_seconds > 0


def test_a_ground_one_metre_higher_gives_the_analytic_abs_rel():
    # Captured ground at z = surface + 1: r_cap = (h − 1)/sin, r_gen = h/sin, so AbsRel = 1 / (h − 1) on every beam.
    field, surface = ground_field()
    h = MOUNT_Z - surface
    s = compare_scan(field, ground_scan(SPEC, h - 1.0), sensor_pose(), SPEC, n_samples=2000)
    assert s.compared > 0 and s.confusion is None            # no head: no label figures
    assert s.abs_rel_sum / s.compared == pytest.approx(1.0 / (h - 1.0), rel=3e-3)
    assert s.abs_err_sum / s.compared > 1.0                  # metres: the ranges differ by 1/sin(−e) ≥ 1 m


def test_masks_keep_only_in_box_captured_returns():
    bounds = np.array([[-10.0, -10.0, -2.0], [10.0, 10.0, 6.0]])
    d = np.array([[1.0, 0, 0]] * 4)
    cap = np.array([5.0, 15.0, np.inf, 5.0])                 # inside / beyond the box / none / (see origin below)
    gen = np.array([5.0, np.inf, 7.0, np.inf])
    m = beam_masks(cap, gen, np.zeros(3), d, bounds, 70.0)
    assert m["reach"].all()
    assert m["captured"].tolist() == [True, False, False, True]
    assert m["compared"].tolist() == [True, False, False, False]
    # From outside the box: a captured return before the box entry hides the box; a beam pointing away never reaches it.
    m = beam_masks(np.array([5.0, np.inf, np.inf]), np.full(3, np.inf), np.array([-20.0, 0, 0]),
                   np.array([[1.0, 0, 0], [1.0, 0, 0], [-1.0, 0, 0]]), bounds, 70.0)
    assert m["reach"].tolist() == [False, True, False]


def test_chamfer_halves_known_values_with_and_without_a_query_draw():
    a = np.stack([np.arange(50) * 10.0, np.zeros(50), np.zeros(50)], axis=1)   # points 10 m apart
    b = a[:20] + [0.0, 0.0, 1.0]                                             # 1 m above the first 20
    assert chamfer_halves(a, b) == pytest.approx((sum(1.0 if i < 20 else math.hypot(1, 10 * (i - 19))
                                                      for i in range(50)) / 50, 1.0))
    assert chamfer_halves(a[:20], b, queries=5) == pytest.approx((1.0, 1.0))  # every query is 1 m from its neighbour
    assert chamfer_halves(a, b[:0]) == (None, None)


def test_a_range_image_of_another_lidar_is_refused():
    field, _ = ground_field()
    with pytest.raises(LidarError, match="does not match LiDAR"):
        compare_scan(field, np.zeros((4, 90), np.float32), sensor_pose(), SPEC)


# ------------------------------------------------------------------------------------------------ the command
@pytest.fixture(scope="module")
def lidar_store(tmp_path_factory, capture_factory):
    return capture_factory(tmp_path_factory.mktemp("lidar") / "lidar.zarr", lidar="nuscenes32")


@pytest.fixture(scope="module")
def dense_bundle(tmp_path_factory, tiny_generator):
    """A tiny bundle whose untrained stage 1 starts at 0.05 /m, so about half the beams return (the tiny preset's
    default start, 1/59 /m, returns almost nothing), with a semantic head."""
    from nfldm_sdk.models.bundle import write_bundle
    from nfldm_sdk.models.scene_ae import SceneAutoEncoder

    g = tiny_generator
    torch.manual_seed(0)
    ae = SceneAutoEncoder(dataclasses.replace(g.scene_ae.config, initial_density=0.05))
    assert ae.semantic_head is not None
    return write_bundle(tmp_path_factory.mktemp("bundle") / "dense", scene_ae=ae, latent_ae=g.latent_ae,
                        denoisers=g.denoisers, latent_stats=g.latent_stats, noise_schedule=g.noise_schedule,
                        sampler_defaults=g.sampler_defaults, preset="tiny", training_data_hash="0" * 64)


def test_eval_lidar_command_writes_finite_figures(lidar_store, dense_bundle, tmp_path):
    from click.testing import CliRunner

    from nfldm_sdk.cli.main import main

    out = tmp_path / "o"
    r = CliRunner().invoke(main, ["eval-lidar", "--model", str(dense_bundle), "--data", lidar_store, "--windows", "1",
                                  "--samples", "48", "--device", "cpu", "--out", str(out)])
    assert r.exit_code == 0, r.output
    j = json.loads((out / "lidar_eval.json").read_text())
    assert (out / "lidar_eval.md").read_text().startswith("# nfldm eval-lidar")
    c = j["config"]
    assert (c["window"], c["val_fraction"], c["windows_evaluated"], c["samples_per_beam"]) == (2, 0.2, 1, 48)
    assert j["anchor"]["scans"] == 1 and j["window"]["scans"] == 2
    for key in ("anchor", "window"):
        f = j[key]
        assert f["beams"] == f["scans"] * 32 * 2171
        for name in ("abs_rel", "mean_abs_error_m", "chamfer_m", "drop_agreement", "captured_return_rate",
                     "generated_return_rate"):
            assert f[name] is not None and math.isfinite(f[name]), name
        for name in ("drop_agreement", "captured_return_rate", "generated_return_rate"):
            assert 0.0 <= f[name] <= 1.0
        assert f["chamfer_m"] == pytest.approx(f["chamfer_captured_to_generated_m"] + f["chamfer_generated_to_captured_m"])
        assert f["labels"] is not None and 0.0 <= f["labels"]["accuracy"] <= 1.0
        assert f["labels"]["returns"] == f["compared_returns"] > 0
    s = j["speed"]
    assert s["beams"] == 2 * 32 * 2171 and s["beams_per_s"] > 0 and s["points_per_s"] >= 0 and "cpu" in s["device"]
    assert "cores" in j["machine"] and j["labels_note"] == ""


def test_eval_lidar_refuses_a_store_without_lidar(capture_factory, tiny_bundle, tmp_path):
    from click.testing import CliRunner

    from nfldm_sdk.cli.main import main

    store = capture_factory(tmp_path / "plain.zarr", episodes=1, frames=1, width=32, height=32)
    out = tmp_path / "o"
    r = CliRunner().invoke(main, ["eval-lidar", "--model", str(tiny_bundle), "--data", store, "--out", str(out)])
    assert r.exit_code != 0 and "has no LiDAR" in r.output and "--lidar nuscenes32" in r.output
    assert not out.exists()                                  # refused before anything is written
