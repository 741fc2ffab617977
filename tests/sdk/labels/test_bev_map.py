"""`nfldm_sdk.labels.bev_map.BEVMap`: validation, immutability, constructors (tags, class ids, points, views,
episodes, scenes), the PNG/NPY files with their sidecar, layout IoU on known values, regions, resizing, pictures."""
from __future__ import annotations

import dataclasses
import json

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from nfldm_sdk.labels.bev_map import (DRIVING_BOX_XY, KNOWN_TAGS, BEVMap, BEVMapError, bev_class_iou)
from nfldm_sdk.labels.classes import CARLA_PALETTE, DEFAULT_CLASSES, UNOBSERVED

ROAD, SIDEWALK, BUILDING, VEGETATION, GROUND = 1, 2, 3, 9, 25


def _map(fill=ROAD, shape=(64, 64)) -> np.ndarray:
    return np.full(shape, fill, np.uint8)


# ------------------------------------------------------------------------------------------------ validation
def test_from_tags_keeps_tags_and_bounds_and_is_immutable():
    a = _map()
    a[3, 5] = BUILDING
    m = BEVMap.from_tags(a, name="x")
    a[3, 5] = SIDEWALK                                   # the map holds its own copy
    assert m.tags[3, 5] == BUILDING and m.tags.dtype == np.uint8 and m.bounds == DRIVING_BOX_XY
    assert m.grid_yx == (64, 64) and m.cell_size == (1.0, 1.0)
    assert not m.tags.flags.writeable
    with pytest.raises(ValueError):
        m.tags[0, 0] = 2
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.bounds = ((0, 0), (1, 1))
    # any integer dtype (and whole floats, torch tensors) that holds tags is accepted
    assert BEVMap.from_tags(torch.full((2, 3), 9, dtype=torch.int32)) == BEVMap.from_tags(np.full((2, 3), 9.0))


@pytest.mark.parametrize("bad, words", [
    (np.array([1, 2, 3]), ["2-D [Y, X]", "(3,)"]),
    (np.array([[1, 30], [200, 30]]), ["not CARLA tags", "30 (2 cells)", "200 (1 cells)", "row 0, column 1",
                                      "from_class_ids"]),
    (np.array([[1.5, 1.0]]), ["not whole numbers", "1.5"]),
    (np.array([[-1, 1]]), ["-1 (1 cells)"]),
    (np.zeros((2, 2), bool), ["integers", "bool"]),
])
def test_from_tags_refuses_what_is_not_a_tag_map(bad, words):
    with pytest.raises(BEVMapError) as e:
        BEVMap.from_tags(bad)
    for w in words:
        assert w in str(e.value)


def test_bad_bounds_are_refused():
    with pytest.raises(BEVMapError, match="xmin < xmax"):
        BEVMap.from_tags(_map(), ((0, 0), (0, 5)))
    with pytest.raises(BEVMapError, match="shape"):
        BEVMap.from_tags(_map(), (0, 0, 1, 1))
    # a [2, 3] voxel box keeps its x/y
    assert BEVMap.from_tags(_map(), torch.tensor([[-8.0, -8, -1], [24, 8, 5]])).bounds == ((-8, -8), (24, 8))


def test_from_class_ids_writes_representative_tags():
    ids = np.array([[0, 2], [-1, 3], [1, 10]])             # road, sidewalk, none, building, road_line, vehicle
    m = BEVMap.from_class_ids(ids)
    np.testing.assert_array_equal(m.tags, [[1, 2], [255, 3], [24, 14]])
    np.testing.assert_array_equal(m.class_ids(), ids)
    with pytest.raises(BEVMapError, match=r"class ids \[13\].*13 classes"):
        BEVMap.from_class_ids(np.array([[13, 0]]))


def test_normalised_groups_tags_into_their_class():
    m = BEVMap.from_tags(np.array([[GROUND, 7], [26, UNOBSERVED]]))
    np.testing.assert_array_equal(m.normalised().tags, [[ROAD, 8], [BUILDING, UNOBSERVED]])


# ------------------------------------------------------------------------------------------------ files
def test_png_round_trip_with_sidecar_and_orientation(tmp_path):
    a = _map(ROAD, (4, 6))
    a[0, 0] = BUILDING                                   # y = ymin (rightmost), x = xmin (rearmost)
    a[3, 5] = UNOBSERVED
    m = BEVMap.from_tags(a, ((-2.0, -1.0), (4.0, 3.0)), name="toy", source="hand")
    path = m.save(tmp_path / "maps" / "toy.png")
    side = json.loads((tmp_path / "maps" / "toy.json").read_text())
    assert side["bounds"] == [[-2.0, -1.0], [4.0, 3.0]] and side["grid_yx"] == [4, 6]
    assert side["format"] == "nfldm.bev_map" and side["format_version"] == 1 and side["unobserved_rgb"] == [255] * 3
    rgb = iio.imread(path)
    assert rgb.shape == (4, 6, 3)                         # one pixel per cell, drawn x right / y up
    assert tuple(rgb[3, 0]) == tuple(CARLA_PALETTE[BUILDING])   # cell (0, 0): bottom-left pixel
    assert tuple(rgb[0, 5]) == (255, 255, 255)            # cell (3, 5): top-right pixel
    back = BEVMap.load(path)
    assert back == m and back.name == "toy" and back.source == "hand"


def test_npy_round_trip(tmp_path):
    m = BEVMap.from_tags(np.arange(29, dtype=np.uint8).reshape(1, 29), ((0, 0), (29, 1)))
    m.save(tmp_path / "all.npy")
    np.testing.assert_array_equal(np.load(tmp_path / "all.npy"), m.tags)   # the array itself, not flipped
    assert BEVMap.load(tmp_path / "all.npy") == m


def test_every_known_tag_has_its_own_palette_colour(tmp_path):
    colours = {tuple(CARLA_PALETTE[t]) for t in KNOWN_TAGS}
    assert len(colours) == len(KNOWN_TAGS) == 30
    m = BEVMap.from_tags(np.array([list(KNOWN_TAGS)], np.uint8), ((0, 0), (30, 1)))
    assert BEVMap.load(m.save(tmp_path / "all.png")) == m


def test_load_refuses_colours_outside_the_palette_and_says_where(tmp_path):
    rgb = CARLA_PALETTE[_map(ROAD, (4, 8))].copy()
    rgb[2, 5] = (12, 200, 3)
    rgb[3, 1] = (12, 200, 3)
    rgb[0, 0] = (128, 64, 129)                           # one off the road colour: antialiasing, a lossy save
    iio.imwrite(tmp_path / "painted.png", rgb)
    with pytest.raises(BEVMapError) as e:
        BEVMap.load(tmp_path / "painted.png", bounds=((0, 0), (8, 4)))
    msg = str(e.value)
    assert "3 pixel(s)" in msg and "rgb(12, 200, 3) x2 first at row 2, column 5" in msg
    assert "rgb(128, 64, 129) x1 first at row 0, column 0" in msg and "CARLA_PALETTE" in msg


def test_load_needs_bounds_without_a_sidecar(tmp_path):
    iio.imwrite(tmp_path / "drawn.png", CARLA_PALETTE[_map(SIDEWALK, (2, 3))])
    with pytest.raises(BEVMapError, match="no sidecar drawn.json.*pass bounds"):
        BEVMap.load(tmp_path / "drawn.png")
    m = BEVMap.load(tmp_path / "drawn.png", bounds=((0, 0), (3, 2)))
    assert (m.tags == SIDEWALK).all() and m.bounds == ((0, 0), (3, 2))
    with pytest.raises(BEVMapError, match="not found"):
        BEVMap.load(tmp_path / "missing.png")
    BEVMap.from_tags(_map(ROAD, (2, 3)), ((0, 0), (3, 2))).save(tmp_path / "m.png")
    with pytest.raises(BEVMapError, match="disagree"):
        BEVMap.load(tmp_path / "m.png", bounds=((0, 0), (6, 4)))
    (tmp_path / "m.json").write_text(json.dumps({**json.loads((tmp_path / "m.json").read_text()), "grid_yx": [3, 3]}))
    with pytest.raises(BEVMapError, match="do not belong together"):
        BEVMap.load(tmp_path / "m.png")


# ------------------------------------------------------------------------------------------------ fidelity
def test_class_iou_on_known_values():
    a = np.array([[GROUND, ROAD, SIDEWALK], [BUILDING, UNOBSERVED, SIDEWALK]], np.uint8)   # 25 Ground is road
    b = np.array([[ROAD, SIDEWALK, SIDEWALK], [BUILDING, BUILDING, UNOBSERVED]], np.uint8)
    # cells observed in both: (0,0) road/road, (0,1) road/sidewalk, (0,2) sidewalk/sidewalk, (1,0) building/building
    iou = BEVMap.from_tags(a).class_iou(BEVMap.from_tags(b))
    assert iou["road"] == 0.5 and iou["sidewalk"] == 0.5 and iou["building"] == 1.0
    assert np.isnan(iou["vegetation"]) and set(iou) == set(DEFAULT_CLASSES.names)
    assert BEVMap.from_tags(a).miou(BEVMap.from_tags(b)) == pytest.approx(2 / 3)   # vegetation in neither: skipped
    np.testing.assert_array_equal(bev_class_iou(a, b), bev_class_iou(b, a))        # symmetric
    assert BEVMap.from_tags(a).miou(BEVMap.from_tags(a)) == 1.0
    assert np.isnan(BEVMap.from_tags(a).miou(BEVMap.from_tags(b), names=("vegetation",)))   # nothing to score
    with pytest.raises(BEVMapError, match="not in the class set"):
        BEVMap.from_tags(a).miou(BEVMap.from_tags(b), names=("roads",))


def test_maps_on_different_grids_are_not_compared():
    a, b = BEVMap.from_tags(_map()), BEVMap.from_tags(_map(ROAD, (32, 32)))
    with pytest.raises(BEVMapError, match="resized, crop"):
        a.class_iou(b)
    with pytest.raises(BEVMapError, match="different cells"):
        a.miou(BEVMap.from_tags(_map(), ((0, 0), (64, 64))))
    assert a.miou(b.resized((64, 64))) == 1.0


# ------------------------------------------------------------------------------------------------ regions
def test_region_mask_crop_and_paint_by_metres():
    m = BEVMap.from_tags(_map())                         # 1 m cells, x from -16, y from -32
    mask = m.region_mask((0.0, 0.0, 2.0, 3.0))           # centres x 0.5, 1.5; y 0.5, 1.5, 2.5
    assert mask.shape == (64, 64) and mask.sum() == 6 and mask[32:35, 16:18].all()
    crop = m.painted(mask, BUILDING).crop((0.0, 0.0, 2.0, 3.0))
    assert crop.grid_yx == (3, 2) and crop.bounds == ((0.0, 0.0), (2.0, 3.0)) and (crop.tags == BUILDING).all()
    painted = m.painted((0.0, 0.0, 2.0, 3.0), BUILDING)
    assert (painted.tags == BUILDING).sum() == 6 and (m.tags == ROAD).all()    # a new map; the old one is unchanged
    xs, ys = m.cell_centres()
    assert xs[0] == -15.5 and ys[-1] == 31.5
    with pytest.raises(BEVMapError, match="no cell centre"):
        m.crop((100, 100, 101, 101))
    with pytest.raises(BEVMapError, match="x0 < x1"):
        m.region_mask((2, 0, 1, 1))
    with pytest.raises(BEVMapError, match="not CARLA tags"):
        m.painted(mask, 77)


def test_resized_takes_the_nearest_cell():
    m = BEVMap.from_tags(np.array([[1, 2], [3, 9]], np.uint8))
    up = m.resized((4, 4))
    np.testing.assert_array_equal(up.tags, np.repeat(np.repeat(m.tags, 2, 0), 2, 1))
    assert up.bounds == m.bounds and up.resized((2, 2)) == m
    big = BEVMap.from_tags(np.arange(16, dtype=np.uint8).reshape(4, 4))
    np.testing.assert_array_equal(big.resized((2, 2)).tags, big.tags[1::2, 1::2])   # the cell under each centre
    with pytest.raises(BEVMapError, match="grid_yx"):
        m.resized((0, 4))


# ------------------------------------------------------------------------------------------------ constructors
def test_from_points_puts_rows_along_y_and_columns_along_x():
    pts = np.array([[10.5, 4.5, 0.0], [10.5, 4.5, 3.0], [-15.9, -31.9, 0.0], [0.0, 0.0, 7.0], [47.9, 31.9, 0.1]])
    tags = np.array([ROAD, BUILDING, SIDEWALK, BUILDING, VEGETATION], np.uint8)
    m = BEVMap.from_points(pts, tags)
    assert m.tags[36, 26] == BUILDING                    # y = 4.5 -> row 36, x = 10.5 -> column 26; the higher point
    assert m.tags[0, 0] == SIDEWALK and m.tags[63, 63] == VEGETATION
    assert m.tags[32, 16] == UNOBSERVED                  # the point at z = 7 m is above the box
    assert (m.tags != UNOBSERVED).sum() == 3


def _down_camera(height: float, size: int):
    """A 90° camera `height` m above the scene origin looking straight down; image right = the ego's right (−y),
    image down = backwards (−x)."""
    K = np.array([[size / 2, 0, size / 2], [0, size / 2, size / 2], [0, 0, 1.0]])
    c2s = np.eye(4)
    c2s[:3, :3] = np.array([[0, -1, 0], [-1, 0, 0], [0, 0, -1.0]]).T    # columns: camera x, y, z in the scene
    c2s[:3, 3] = (0, 0, height)
    return K, c2s


def test_from_views_of_a_downward_camera_over_labelled_ground():
    K, c2s = _down_camera(10.0, 64)                      # footprint x, y in [-10, 10]
    depth = np.full((1, 64, 64), 10.0, np.float32)
    depth[0, :2] = np.inf                                # sky pixels label nothing
    sem = np.full((1, 64, 64), ROAD, np.uint8)
    sem[:, :, 32:] = SIDEWALK                            # the image's right half: the ego's right, y < 0
    m = BEVMap.from_views(depth, sem, K, c2s[None])
    assert (m.tags[33:41, 7:25] == ROAD).all() and (m.tags[23:31, 7:25] == SIDEWALK).all()
    assert (m.tags[:, :5] == UNOBSERVED).all() and (m.tags[:20] == UNOBSERVED).all()
    assert (m.tags[:, 26:] == UNOBSERVED).all()           # x > 9.4 m is the image's top rows: sky
    with pytest.raises(BEVMapError, match=r"\[V, H, W\]"):
        BEVMap.from_views(depth[0], sem[0], K, c2s)


def test_from_episode_agrees_with_the_training_window_bev(tiny_capture):
    import sim_bridge
    from nfldm_training.data.capture_bev import window_bev
    from nfldm_training.data.capture_windows import SceneWindowDataset

    store = sim_bridge.open_store(tiny_capture)
    ds = SceneWindowDataset([tiny_capture], window=8, image_size=(64, 64), split="all")
    w = ds[0]
    ep = store.episode(w.episode)
    expected = window_bev(w, torch.tensor([[-16.0, -32, -2], [48, 32, 6]]), (64, 64), DEFAULT_CLASSES).numpy()
    m = BEVMap.from_episode(ep, w.anchor, rig=store.rig, frames=range(w.anchor - 3, w.anchor + 5))
    assert m.grid_yx == (64, 64) and m.observed.mean() > 0.3
    # the same points, back-projected with float64 poses (the window's are float32): a few cells' highest point differs
    assert (m.tags == expected).mean() > 0.97
    one = BEVMap.from_episode(ep, w.anchor, rig=store.rig.K())            # plain intrinsics, the anchor's views only
    assert 0.05 < one.observed.mean() < m.observed.mean()
    with pytest.raises(BEVMapError, match="out of range: the episode has 8 frames"):
        BEVMap.from_episode(ep, 8, rig=store.rig)


def test_from_scene_is_the_scene_bev_over_its_bounds():
    from nfldm_sdk.pipelines.scene import NeuralScene
    from semantic_scenes import layout_bev, layout_field, semantic_decoder

    scene = NeuralScene(field=layout_field(), seed=3, bundle_hash="layout", decoder=semantic_decoder())
    m = BEVMap.from_scene(scene)
    np.testing.assert_array_equal(m.tags, layout_bev())
    assert m.bounds == ((-8.0, -8.0), (24.0, 8.0)) and m.cell_size == (1.0, 1.0) and m.name == "scene_3"
    assert m.tags[int(4.0 + 8), int(10.0 + 8)] == BUILDING   # the block at x ∈ [8, 12), y ∈ [2, 6)


# ------------------------------------------------------------------------------------------------ picture
def test_show_draws_the_map_y_up_with_a_legend(tmp_path):
    a = _map(ROAD, (16, 16))
    a[0, 15] = BUILDING                                  # rightmost (y min), frontmost (x max): bottom-right
    a[:, 0] = UNOBSERVED
    m = BEVMap.from_tags(a, ((-4.0, -8.0), (12.0, 8.0)))
    img = m.show(tmp_path / "pic.png", scale=8)
    assert img.dtype == np.uint8 and img.shape[0] >= 128 and img.shape[1] > 128
    assert tuple(img[127, 127]) == tuple(CARLA_PALETTE[BUILDING]) and tuple(img[0, 0]) == (255, 255, 255)
    assert tuple(img[64, 4 * 8 - 4]) == (0, 0, 0)         # the ego at (0, 0): column 4, row 8 from the top
    legend = img[:, 128:]
    for t in (ROAD, BUILDING):
        assert (legend == CARLA_PALETTE[t]).all(-1).any()
    np.testing.assert_array_equal(iio.imread(tmp_path / "pic.png"), img)
