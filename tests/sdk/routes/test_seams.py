"""Seam measures of a route (`nfldm_sdk.routes.seams`): scenes that agree over their overlap score better at the seam
than scenes that do not, against the one-metre baseline of a single field; the seam strip picture."""
from __future__ import annotations

import json
import math

import imageio.v3 as iio
import numpy as np
import pytest

from nfldm_sdk.cameras.rig import CameraRig
from nfldm_sdk.routes.placement import RouteError
from nfldm_sdk.routes.seams import seam_consistency, seam_pose, seam_strip
from route_scenes import SCENE_TO_WORLD, SEAM_NORMALS, SEAM_POINTS, SIZE, route_decoder, two_scene_route

pytestmark = pytest.mark.usefixtures("one_thread_module")


@pytest.fixture(scope="module")
def decoder():
    return route_decoder()


def test_seam_pose_faces_along_the_route():
    m = seam_pose([32.0, 1.0, 0.0], [0.0, 2.0, 0.5])                # a normal with a vertical part: levelled
    np.testing.assert_allclose(m[:3, 0], [0, 1, 0], atol=1e-12)
    np.testing.assert_allclose(m[:3, 2], [0, 0, 1], atol=1e-12)
    np.testing.assert_allclose(m[:3, 1], [-1, 0, 0], atol=1e-12)    # y left of x, z up: right-handed
    back = seam_pose([32.0, 1.0, 0.0], [0.0, 2.0, 0.5], backward=True, shift_m=1.0)
    np.testing.assert_allclose(back[:3, 0], [0, -1, 0], atol=1e-12)
    np.testing.assert_allclose(back[:3, 3], [32.0, 0.0, 0.0], atol=1e-12)
    with pytest.raises(RouteError, match="horizontal"):
        seam_pose([0, 0, 0], [0, 0, 1])


def test_agreeing_scenes_are_consistent_at_the_seam_and_disagreeing_ones_are_not(decoder):
    rig = CameraRig.preset("capture", SIZE, SIZE)
    good = seam_consistency([(f, decoder) for f in two_scene_route()], SCENE_TO_WORLD, SEAM_POINTS, SEAM_NORMALS, rig)
    bad = seam_consistency([(f, decoder) for f in two_scene_route(mirrored=True)], SCENE_TO_WORLD, SEAM_POINTS,
                           SEAM_NORMALS, rig)
    assert len(good.seams) == 1 and good.views == 12 and good.shift_m == 1.0
    g, b = good.mean, bad.mean
    # over the space both boxes hold, agreeing scenes show the same world: closer than a metre of driving changes
    # the view; disagreeing ones far further
    assert g.psnr_db > 30.0 and g.depth_absrel < 0.01 and g.label_agreement > 0.95
    assert b.psnr_db < g.psnr_db - 5.0 and b.depth_absrel > 2 * g.depth_absrel
    assert b.label_agreement < g.label_agreement - 0.2
    # the baseline is one field's: identical for both routes (scene 0 is the same), finite, a metre of motion
    assert g.baseline_psnr_db == b.baseline_psnr_db and math.isfinite(g.baseline_psnr_db)
    assert 0.0 < g.baseline_depth_absrel < 0.1
    assert g.psnr_db > g.baseline_psnr_db and b.psnr_db < g.baseline_psnr_db - 5.0
    # crossing the seam in the composited route changes the view like a metre of driving inside a cell does: the
    # composite shows every point from the scene whose cell holds it, wherever the camera is
    for m in (g, b):
        assert math.isfinite(m.crossing_psnr_db) and abs(m.crossing_psnr_db - m.drive_psnr_db) < 4.0
    d = json.loads(json.dumps(good.to_dict()))
    assert set(d) == {"seams", "mean", "shift_m", "views"} and d["seams"][0]["psnr_db"] == g.psnr_db


def test_a_route_of_one_scene_has_no_seams(decoder):
    f = two_scene_route()[0]
    with pytest.raises(RouteError, match="no seams"):
        seam_consistency([(f, decoder)], SCENE_TO_WORLD[:1], np.zeros((0, 3)), np.zeros((0, 3)),
                         CameraRig.preset("front", SIZE, SIZE))


def test_seam_strip_writes_the_drive_across_a_seam(tmp_path, decoder):
    scenes = [(f, decoder) for f in two_scene_route(mirrored=True)]
    path = seam_strip(scenes, SCENE_TO_WORLD, SEAM_POINTS, SEAM_NORMALS, tmp_path / "strips" / "seam0.png",
                      modes=("composite", "nearest"))
    img = iio.imread(path)
    # 2 bands (composite, nearest) × 3 rows (RGB, inverse depth, labels) of 32 px; 8 frames of 32 px side by side
    assert img.shape == (2 * 3 * SIZE, 8 * SIZE, 3) and img.dtype == np.uint8
    top, bottom = img[:SIZE], img[3 * SIZE:4 * SIZE]
    assert not np.array_equal(top, bottom)                                          # the baseline differs
    with pytest.raises(RouteError, match="seam 3"):
        seam_strip(scenes, SCENE_TO_WORLD, SEAM_POINTS, SEAM_NORMALS, tmp_path / "x.png", seam=3)


def test_the_neighbours_figure_ends_at_the_reach(decoder):
    """Scene 0 empty beyond x = 40 m of its box (as a model's scenes thin out far ahead): over the whole shared box
    the neighbours disagree there; ended at a 40 m reach, they agree as scenes cut from one world do."""
    from nfldm_sdk.fields.voxel_field import VoxelField

    rig = CameraRig.preset("capture", SIZE, SIZE)
    s0, s1 = two_scene_route()
    d = s0.density.clone()
    d[..., 28:] = 0.0                                              # 2 m columns: x >= 40 m of scene 0's box
    thin = VoxelField(d, s0.features, s0.bounds)
    route = ([(thin, decoder), (s1, decoder)], SCENE_TO_WORLD, SEAM_POINTS, SEAM_NORMALS, rig)
    whole = seam_consistency(*route).mean
    ended = seam_consistency(*route, reach_m=40.0).mean
    assert ended.psnr_db > 30.0 and ended.psnr_db > whole.psnr_db + 5.0
