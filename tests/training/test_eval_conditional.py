"""`nfldm eval --conditional`: the layout IoU figures on known maps (a scene against its own bev is 1), the frustum test
of the views that look away from an edit, the whole evaluation on the tiny conditional generator and capture (figures
in range, counts, the editing's outside exactly unchanged), and the CLI (files written; an unconditional bundle is
refused before anything is written)."""
import json
import math

import numpy as np
import pytest
import torch

from nfldm_sdk.cameras.pinhole import Cameras, intrinsics_from_fov
from nfldm_sdk.labels.bev_map import LAYOUT_CLASSES
from nfldm_sdk.labels.classes import UNOBSERVED
from nfldm_training.evaluation.conditional import (ConditionalConfig, evaluate_conditional, layout_figures,
                                                   views_away_from_box)

pytestmark = pytest.mark.usefixtures("one_thread_module")

ROAD, SIDEWALK, BUILDING, VEGETATION = 1, 2, 3, 9
FAST = dict(num_maps=2, guidance_scales=(1.0, 2.0), steps=2, batch_size=2, num_edits=1, val_fraction=0.5)


def test_layout_figures_known_values():
    requested = np.full((4, 4), ROAD, np.uint8)
    generated = requested.copy()
    generated[:, 2:] = BUILDING
    generated[0, 0] = UNOBSERVED                              # not counted: IoU over cells observed in both
    f = layout_figures([generated], [requested])
    assert f.class_iou["road"] == pytest.approx(7 / 15) and f.class_iou["building"] == 0.0
    assert math.isnan(f.class_iou["sidewalk"]) and math.isnan(f.class_iou["vegetation"])
    assert f.miou == pytest.approx((7 / 15 + 0) / 2) and f.cells == 15 and f.coverage == pytest.approx(15 / 16)
    # pooled over maps: intersections and unions are summed, not the per-map IoUs averaged
    two = layout_figures([generated, requested], [requested, requested])
    assert two.class_iou["road"] == pytest.approx((7 + 16) / (15 + 16)) and two.num_maps == 2
    # a mask restricts the cells (an edit's region): the left half only is all road on both sides
    left = np.zeros((4, 4), bool)
    left[1:, :2] = True
    assert layout_figures([generated], [requested], [left]).miou == 1.0


def test_a_scene_against_its_own_bev_is_the_ceiling_of_one(tiny_conditional_generator):
    scene = tiny_conditional_generator.generate(1, seed=0, steps=2)[0]
    bev = scene.bev()
    f = layout_figures([scene.bev()], [bev])
    present = [n for n in LAYOUT_CLASSES if not math.isnan(f.class_iou[n])]
    assert present and all(f.class_iou[n] == 1.0 for n in present)
    assert f.miou == 1.0 and f.coverage == 1.0 and f.cells == int((bev != UNOBSERVED).sum())


def test_views_away_from_box_frustum_test():
    # cameras at the origin, 1.5 m up, 90° field of view, looking along +x, +y, -x (OpenCV axes: z forward)
    def cam(forward, right):
        m = torch.eye(4, dtype=torch.float64)
        down = torch.tensor([0.0, 0.0, -1.0], dtype=torch.float64)
        m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = torch.tensor(right), down, torch.tensor(forward), torch.tensor([0, 0, 1.5])
        return m
    poses = torch.stack([cam([1.0, 0, 0], [0, -1.0, 0]), cam([0, 1.0, 0], [1.0, 0, 0]), cam([-1.0, 0, 0], [0, 1.0, 0])])
    cams = Cameras(intrinsics_from_fov(90.0, 64, 64, dtype=torch.float64), poses, 64, 64)
    away = views_away_from_box(cams, (10.0, -8.0, -2.0), (24.0, 8.0, 6.0), near=1.0, far=60.0)
    assert away.tolist() == [False, True, True]   # +y sees up to 45° off its axis: the box is within 38.7° of +x
    # the box moved to the left (y > 0) and wider than the +y camera's half-angle: now +y sees it, +x still does
    away = views_away_from_box(cams, (2.0, 4.0, -2.0), (6.0, 10.0, 6.0), near=1.0, far=60.0)
    assert away.tolist() == [False, False, True]
    # beyond the far plane nothing sees it
    assert views_away_from_box(cams, (70.0, -1, 0), (80.0, 1, 1), near=1.0, far=60.0).all()


@pytest.fixture(scope="module")
def report(tiny_conditional_generator, tiny_capture):
    return evaluate_conditional(tiny_conditional_generator, [tiny_capture], ConditionalConfig(**FAST), progress=False,
                                log=lambda s: None)


def test_evaluate_conditional_figures(report, tmp_path):
    from nfldm_training.evaluation.conditional import write_conditional_report

    r = report
    assert [g.guidance_scale for g in r.conditional] == [1.0, 2.0] and r.unconditional.guidance_scale is None
    rows = [*(g.layout for g in r.conditional), r.unconditional.layout, r.ceiling, r.lae_ceiling]
    for f in rows:
        assert f.num_maps == 2 and 0 <= f.coverage <= 1
        assert all(0 <= v <= 1 for v in f.class_iou.values() if not math.isnan(v))
        assert math.isnan(f.miou) or 0 <= f.miou <= 1
    assert all(g.num_scenes == 2 and g.seconds_per_scene > 0 and g.layout.cells > 0 for g in (*r.conditional, r.unconditional))
    assert "2 of 7 held-out windows (1 episode(s)" in r.maps       # 1 of 2 episodes held out: 8 frames, window 2
    e = r.edit
    assert e.num_edits == 1 and e.region_cells == 8 * 8            # 16 m x 16 m in 2 m cells
    assert e.field_max_abs_diff_outside == 0.0 and e.field_mean_abs_diff_inside > 0
    # the 6-camera ring: at least the back camera looks away from a box 8-24 m ahead; its renders are unchanged
    assert e.total_views == 6 and 1 <= e.away_views < 6
    assert e.psnr_away_db == math.inf and e.rgb_max_abs_diff_away == 0     # rays that miss the region: same pixels
    for f in (e.inside_edited, e.inside_original):
        assert f.num_maps == 1 and all(0 <= v <= 1 for v in f.class_iou.values() if not math.isnan(v))
    assert 0 <= e.changed_cells <= 1
    j, m = write_conditional_report(r, tmp_path)                   # strict JSON: inf as "inf", nan as null
    data = json.loads(j.read_text(), parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))
    assert data["edit"]["psnr_away_db"] == "inf" and "PASS" in m.read_text()


def test_cli_writes_the_conditional_report(tiny_conditional_bundle, tiny_capture, tmp_path):
    from click.testing import CliRunner

    from nfldm_training.cli.eval import eval_command

    out = tmp_path / "o"
    r = CliRunner().invoke(eval_command, ["--conditional", "--model", str(tiny_conditional_bundle), "--data",
                                          tiny_capture, "--num-maps", "2", "--guidance-scales", "1,2.5", "--steps", "2",
                                          "--val-fraction", "0.5", "--no-edit", "--device", "cpu", "--out", str(out)])
    assert r.exit_code == 0, r.output + repr(r.exception)
    data = json.loads((out / "eval_conditional.json").read_text())
    assert [g["guidance_scale"] for g in data["conditional"]] == [1.0, 2.5] and data["edit"] is None
    assert data["bundle"] == str(tiny_conditional_bundle) and data["ceiling"]["num_maps"] == 2
    assert data["lae_ceiling"]["num_maps"] == 2 and data["lae_ceiling"]["cells"] > 0
    text = (out / "eval_conditional.md").read_text()
    assert "unconditional, same seeds (chance)" in text and "stage-1 fields of the windows (ceiling)" in text
    assert "the same fields through the LAE (what decoding keeps)" in text
    assert "Layout fidelity" in r.output and "s / scene" in r.output and "cores" in r.output   # the machine line


def test_cli_refuses_an_unconditional_bundle_before_writing(tiny_bundle, tiny_capture, tmp_path):
    from click.testing import CliRunner

    from nfldm_training.cli.eval import eval_command

    out = tmp_path / "o"
    r = CliRunner().invoke(eval_command, ["--conditional", "--model", str(tiny_bundle), "--data", tiny_capture,
                                          "--device", "cpu", "--out", str(out)])
    assert r.exit_code != 0 and "not BEV-conditioned" in r.output
    assert "`default` preset" in r.output and "bev_condition=True" in r.output and not out.exists()
    r = CliRunner().invoke(eval_command, ["--conditional", "--model", str(tiny_bundle), "--data", tiny_capture,
                                          "--guidance-scales", "1,x", "--out", str(out)])
    assert r.exit_code != 0 and "comma-separated" in r.output and not out.exists()
