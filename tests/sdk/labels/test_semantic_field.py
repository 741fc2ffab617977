"""The semantic field's functional core: the class set, rendered labels of analytic fields, voxel labels, BEV maps of
fields and of labelled points, and the capture-window BEV."""
import numpy as np
import pytest
import torch

from nfldm_sdk.cameras.pinhole import Cameras
from nfldm_sdk.fields.voxel_field import VoxelField
from nfldm_sdk.labels.classes import CARLA_PALETTE, CARLA_TAG_NAMES, DEFAULT_CLASSES, UNOBSERVED, SemanticClasses, colorize_tags
from nfldm_sdk.labels.semantic_field import (field_bev, labels_from_probabilities, points_bev, refined_probabilities,
                                             semantic_probabilities, voxel_labels)
from nfldm_sdk.models.scene_ae import SceneAEConfig, SceneAutoEncoder
from nfldm_sdk.persistence import config_from_dict, config_to_dict
from nfldm_sdk.rendering.api import render_field
from nfldm_training.data.capture_bev import window_bev
from nfldm_training.data.capture_windows import SceneWindow

C = DEFAULT_CLASSES
ROAD, BUILDING, SKY_TAG, SIDEWALK = 1, 3, 11, 2


# ------------------------------------------------------------------------------------------------ the class set
def test_every_carla_tag_has_a_class_and_representatives_map_to_themselves():
    lut = C.tag_to_class
    for tag in CARLA_TAG_NAMES:
        assert lut[tag] >= 0, CARLA_TAG_NAMES[tag]
    reps = C.representative_tags
    assert (C.from_tags(reps) == np.arange(C.num_classes)).all()
    assert C.names[C.from_tags(np.array([25]))[0]] == "road"          # Ground joins road
    assert C.names[C.from_tags(np.array([15]))[0]] == "vehicle"       # Truck
    assert C.names[C.from_tags(np.array([200]))[0]] == "other"        # unknown id
    assert C.from_tags(np.array([UNOBSERVED]))[0] == -1
    assert C.to_tags(np.array([-1, C.sky_index]))[0] == UNOBSERVED and C.to_tags(np.array([C.sky_index]))[0] == SKY_TAG
    assert C.normalise_tags(np.array([5, 28, 4])).tolist() == [4, 4, 4]


def test_class_set_survives_the_config_round_trip():
    cfg = SceneAEConfig(semantic_classes=C.to_config())
    back = config_from_dict(SceneAEConfig, config_to_dict(cfg))
    assert back.classes == C and back.semantic_classes == cfg.semantic_classes
    assert SceneAEConfig().classes is None


@pytest.mark.parametrize("names,tags,problem", [
    (("road", "building"), ((1,), (3,)), "sky"),
    (("road", "sky", "road2"), ((1,), (11,), (1,)), "two classes"),
    (("road", "sky"), ((1,), (300,)), "not a CARLA tag"),
])
def test_bad_class_sets_are_refused(names, tags, problem):
    with pytest.raises(ValueError, match=problem):
        SemanticClasses(names, tags)


def test_palette_is_carlas_cityscapes_palette():
    assert CARLA_PALETTE[1].tolist() == [128, 64, 128] and CARLA_PALETTE[11].tolist() == [70, 130, 180]
    assert CARLA_PALETTE[14].tolist() == [0, 0, 142] and CARLA_PALETTE[UNOBSERVED].tolist() == [255, 255, 255]
    assert colorize_tags(np.array([[1, 9]], np.uint8)).shape == (1, 2, 3)


# ------------------------------------------------------------------------------------------------ helpers
def _head(feature_channels: int, rules: dict[int, int], scale: float = 100.0):
    """Head weights ``[K-1, C]``, ``[K-1]``: feature channel ``c`` votes for the class whose tag is ``rules[c]``."""
    K = C.num_classes
    W, b = torch.zeros(K - 1, feature_channels), torch.zeros(K - 1)
    solid = [k for k in range(K) if k != C.sky_index]
    for ch, tag in rules.items():
        W[solid.index(int(C.from_tags(np.array([tag]))[0])), ch] = scale
    return W, b


def _slab_field() -> VoxelField:
    """x, y in [-8, 8], z in [0, 4] m, 1 m voxels: a 1 m ground slab over the whole box with feature channel 0 on
    x < 0 (road) and channel 1 on x >= 0 (building); air above."""
    Z, Y, X = 4, 16, 16
    density = torch.zeros(Z, Y, X)
    density[0] = 50.0
    feats = torch.zeros(2, Z, Y, X)
    feats[0, 0, :, :8] = 1.0
    feats[1, 0, :, 8:] = 1.0
    return VoxelField(density, feats, torch.tensor([[-8.0, -8.0, 0.0], [8.0, 8.0, 4.0]]))


def _down_camera(height: float, hfov: float, size: int) -> Cameras:
    """A camera at (0, 0, height) looking straight down (OpenCV: +z forward = world -z, +x right = world +x)."""
    c2w = torch.eye(4)
    c2w[:3, :3] = torch.tensor([[1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, -1.0]])
    c2w[:3, 3] = torch.tensor([0.0, 0.0, height])
    return Cameras.from_fov(hfov, size, size, c2w[None])


# ------------------------------------------------------------------------------------------------ rendered labels
def test_two_labelled_slabs_render_their_classes_with_the_boundary_at_x0_and_sky_outside_the_box():
    field = _slab_field()
    W, b = _head(2, {0: ROAD, 1: BUILDING})
    size = 32
    cams = _down_camera(20.0, 90.0, size)       # ground at 19 m below: half-width 19 m > the box's 8 m
    out = render_field(field, cams, n_samples=256, implementation="reference")
    probs = semantic_probabilities(out.features, out.alpha, W, b, C.sky_index)
    assert torch.allclose(probs.sum(-3), torch.ones(1, size, size), atol=1e-5)
    tags, conf = labels_from_probabilities(probs, torch.isfinite(out.depth), C)
    tags = tags[0].numpy()
    # pixel u sees ground x = (u + 0.5 - 16) / 16 * 19 m (tan 45° = 1): inside the box for |x| < 8
    x = (np.arange(size) + 0.5 - size / 2) / (size / 2) * 19.0
    row = size // 2
    for u in range(size):
        if abs(x[u]) > 8.7:                      # clear of the box edge (half a pixel is 0.6 m)
            assert tags[row, u] == SKY_TAG, u
        elif -7.4 < x[u] < -0.5:               # voxel centres at ±0.5 m: no mixing beyond them
            assert tags[row, u] == ROAD, u
        elif 0.5 < x[u] < 7.4:
            assert tags[row, u] == BUILDING, u
    hit = torch.isfinite(out.depth[0])
    assert ((torch.from_numpy(tags) == SKY_TAG) == ~hit).all()      # labels follow the depth's hit rule
    assert float(conf[0][10:22, 10:22].min()) > 0.9                  # |x|, |y| < 7.2 m: well inside the slab


def test_sky_probability_is_one_minus_alpha_and_an_empty_field_renders_sky():
    field = _slab_field()
    field = VoxelField(torch.zeros_like(field.density), field.features, field.bounds)
    W, b = _head(2, {0: ROAD})
    out = render_field(field, _down_camera(20.0, 60.0, 8), n_samples=32, implementation="reference")
    probs = semantic_probabilities(out.features, out.alpha, W, b, C.sky_index)
    assert torch.allclose(probs[:, C.sky_index], torch.ones(1, 8, 8))
    tags, conf = labels_from_probabilities(probs, torch.isfinite(out.depth), C)
    assert (tags == SKY_TAG).all() and torch.allclose(conf, torch.ones_like(conf))


def test_semantic_head_probabilities_match_the_functional_maths_and_reach_the_encoder():
    cfg = SceneAEConfig(image_size=(16, 16), downsample=4, depth_bins=4, far=12.0, feature_channels=4, grid_shape=(4, 8, 8),
                        bounds=((-4.0, -4.0, -1.0), (12.0, 4.0, 3.0)), render_samples=8, encoder_widths=(8, 8, 8),
                        decoder_widths=(8, 8, 8), semantic_classes=C.to_config())
    torch.manual_seed(0)
    ae = SceneAutoEncoder(cfg)
    forward = torch.eye(4)
    forward[:3, :3] = torch.tensor([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])   # OpenCV z = world x
    forward[2, 3] = 1.0
    cams = Cameras.from_fov(90.0, 16, 16, forward[None, None].expand(1, 2, 4, 4).clone())
    images = torch.rand(1, 2, 3, 16, 16)
    out = ae(images, cams)
    sem = out.render.semantic
    assert sem.shape == (1, 2, C.num_classes, 16, 16)
    assert torch.allclose(sem.sum(2), torch.ones(1, 2, 16, 16), atol=1e-5)
    ref = semantic_probabilities(out.render.features, _low_res_alpha(ae, out.field, cams),
                                 ae.semantic_head.linear.weight, ae.semantic_head.linear.bias, C.sky_index)
    up = torch.nn.functional.interpolate(ref.flatten(0, 1), size=(16, 16), mode="bilinear",
                                         align_corners=False).unflatten(0, (1, 2))
    assert torch.allclose(sem, up, atol=1e-5)
    sem[:, :, 0].sum().backward()
    assert ae.encoder.stem.weight.grad is not None and ae.encoder.stem.weight.grad.abs().sum() > 0


def _low_res_alpha(ae: SceneAutoEncoder, field: VoxelField, cams: Cameras) -> torch.Tensor:
    cfg = ae.config
    return render_field(field, cams.resized(4, 4), n_samples=cfg.render_samples, near=cfg.near, far=cfg.far).alpha


# ------------------------------------------------------------------------------------------------ the label decoder
def _slab_probabilities(size: int = 32):
    field = _slab_field()
    W, b = _head(2, {0: ROAD, 1: BUILDING})
    out = render_field(field, _down_camera(20.0, 90.0, size), n_samples=256, implementation="reference")
    return semantic_probabilities(out.features, out.alpha, W, b, C.sky_index), out


def test_a_zero_correction_gives_the_fields_labels_and_a_large_one_relabels_hits_only():
    probs, out = _slab_probabilities()
    K = C.num_classes
    zero = torch.zeros(1, K - 1, 32, 32)
    same = refined_probabilities(probs, zero, C.sky_index)
    hit = out.alpha[0] > 1e-3
    assert torch.allclose(same[0][:, hit], probs[0][:, hit], atol=1e-6)
    # +30 on the logit of "vegetation": every hit pixel turns vegetation, the sky entry (1 − α) is untouched
    veg = int(C.from_tags(np.array([9]))[0])
    delta = zero.clone()
    delta[:, veg - (veg > C.sky_index)] = 30.0
    refined = refined_probabilities(probs, delta, C.sky_index)
    assert torch.allclose(refined.sum(-3), torch.ones(1, 32, 32), atol=1e-5)
    assert torch.equal(refined[:, C.sky_index], probs[:, C.sky_index])
    tags, _ = labels_from_probabilities(refined, torch.isfinite(out.depth), C)
    finite = torch.isfinite(out.depth)
    assert (tags[finite] == 9).all() and (tags[~finite] == SKY_TAG).all() and bool(finite.any() and (~finite).any())
    # the class ratio is exp(Δ) times the field's: p_veg / p_road = exp(30) · q_veg / q_road at a road pixel
    road = C.from_tags(np.array([ROAD]))[0]
    u = 10                                                             # ground x = -6.5 m: road, inside the box
    row = 16
    assert tags[0, row, u] == 9
    ratio = refined[0, veg, row, u] / refined[0, road, row, u]
    expected = np.exp(30.0) * probs[0, veg, row, u] / probs[0, road, row, u]
    assert float(ratio / expected) == pytest.approx(1.0, rel=1e-3)
    with pytest.raises(ValueError, match="solid classes"):
        refined_probabilities(probs, torch.zeros(1, K, 32, 32), C.sky_index)


def _label_decoder_config(**kw) -> SceneAEConfig:
    return SceneAEConfig(image_size=(16, 16), downsample=4, depth_bins=4, far=12.0, feature_channels=4,
                         grid_shape=(4, 8, 8), bounds=((-4.0, -4.0, -1.0), (12.0, 4.0, 3.0)), render_samples=8,
                         encoder_widths=(8, 8, 8), decoder_widths=(8, 8, 8), semantic_classes=C.to_config(), **kw)


def test_an_untrained_label_decoder_renders_the_fields_labels_and_a_trained_one_learns_a_class(tmp_path):
    torch.manual_seed(0)
    plain = SceneAutoEncoder(_label_decoder_config())
    with_ld = SceneAutoEncoder(_label_decoder_config(label_decoder_widths=(8, 8, 8)))
    missing, unexpected = with_ld.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith("label_decoder.") for k in missing)
    forward = torch.eye(4)
    forward[:3, :3] = torch.tensor([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
    forward[2, 3] = 1.0
    cams = Cameras.from_fov(90.0, 16, 16, forward[None, None].expand(1, 2, 4, 4).clone())
    images = torch.rand(1, 2, 3, 16, 16)
    field = plain.encode(images, cams)
    a, b = plain.decode(field, cams), with_ld.decode(field, cams)
    assert torch.equal(a.rgb, b.rgb) and torch.equal(a.depth, b.depth)
    solid = a.semantic.narrow(2, 0, C.sky_index).sum(2) > 1e-3
    assert torch.allclose(a.semantic.permute(0, 1, 3, 4, 2)[solid], b.semantic.permute(0, 1, 3, 4, 2)[solid], atol=1e-5)
    # the label decoder alone learns to call every hit pixel "vegetation"
    veg = int(C.from_tags(np.array([9]))[0])
    opt = torch.optim.Adam(with_ld.label_decoder.parameters(), lr=0.05)
    for _ in range(30):
        probs = with_ld.decode(field.detach(), cams).semantic
        loss = -torch.log(probs[:, :, veg][solid].clamp_min(1e-6)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = with_ld.decode(field, cams).semantic
    assert float(after[:, :, veg][solid].mean()) > 2 * float(a.semantic[:, :, veg][solid].mean())
    assert torch.allclose(after[:, :, C.sky_index], a.semantic[:, :, C.sky_index], atol=1e-6)   # sky = 1 − α
    with_ld.save_pretrained(tmp_path / "m")
    back = SceneAutoEncoder.from_pretrained(tmp_path / "m")
    assert back.config.label_decoder_widths == (8, 8, 8)
    assert torch.equal(back.decode(field, cams).semantic, after)


def test_label_decoder_configs_are_validated():
    with pytest.raises(ValueError, match="needs semantic_classes"):
        SceneAEConfig(label_decoder_widths=(8, 8, 8))
    with pytest.raises(ValueError, match=r"label_decoder_widths needs log2\(downsample\)\+1 = 3"):
        _label_decoder_config(label_decoder_widths=(8, 8))


# ------------------------------------------------------------------------------------------------ 3D and BEV labels
def _layout_field() -> VoxelField:
    """16×16 cells of 1 m over x, y in [-8, 8], z in [0, 8]: a road slab everywhere (channel 0) except the cells
    x in [2, 6), y in [-4, 0) where a building block (channel 1) stands 6 m tall, and a column x in [-8, -7) that
    is empty (no ground)."""
    Z, Y, X = 8, 16, 16
    density = torch.zeros(Z, Y, X)
    feats = torch.zeros(2, Z, Y, X)
    density[0] = 40.0
    feats[0, 0] = 1.0
    density[:6, 4:8, 10:14] = 40.0
    feats[:, :6, 4:8, 10:14] = torch.tensor([0.0, 1.0])[:, None, None, None]
    density[:, :, 0] = 0.0
    return VoxelField(density, feats, torch.tensor([[-8.0, -8.0, 0.0], [8.0, 8.0, 8.0]]))


def test_bev_of_a_known_road_and_building_layout():
    field = _layout_field()
    W, b = _head(2, {0: ROAD, 1: BUILDING})
    bev = field_bev(field, W, b, C).numpy()
    assert bev.shape == (16, 16)
    expected = np.full((16, 16), ROAD, np.uint8)
    expected[4:8, 10:14] = BUILDING
    expected[:, 0] = UNOBSERVED
    np.testing.assert_array_equal(bev, expected)
    batched = field_bev(VoxelField.stack([field, field]), W, b, C)
    assert batched.shape == (2, 16, 16) and (batched[1].numpy() == expected).all()


def test_voxel_labels_mark_empty_voxels_unobserved():
    field = _layout_field()
    W, b = _head(2, {0: ROAD, 1: BUILDING})
    vox = voxel_labels(field, W, b, C).numpy()
    assert vox.shape == (8, 16, 16)
    assert vox[0, 0, 5] == ROAD and vox[3, 5, 11] == BUILDING and vox[7, 5, 11] == UNOBSERVED
    assert (vox[:, :, 0] == UNOBSERVED).all()


def test_points_bev_keeps_the_highest_point_per_cell():
    bounds = torch.tensor([[0.0, 0.0, -1.0], [4.0, 4.0, 5.0]])
    pts = torch.tensor([[0.5, 0.5, 0.0], [0.6, 0.4, 2.0], [3.5, 0.5, 0.0], [9.0, 0.5, 0.0], [1.5, 2.5, 1.0],
                        [1.5, 2.5, 3.0]])
    tags = torch.tensor([ROAD, BUILDING, SIDEWALK, ROAD, 9, SKY_TAG], dtype=torch.uint8)
    bev = points_bev(pts, tags, bounds, (4, 4), C).numpy()
    assert bev[0, 0] == BUILDING           # the higher of two points
    assert bev[0, 3] == SIDEWALK
    assert bev[2, 1] == 9                  # the sky point is ignored, not the higher one
    assert (bev == UNOBSERVED).sum() == 13


def test_window_bev_of_a_downward_camera_over_labelled_ground():
    """A camera 10 m up looking down at flat ground: its left image half is road, the right half sidewalk, so the
    BEV is road for x < 0 and sidewalk for x > 0 inside the footprint, unobserved outside it."""
    size = 64
    cams = _down_camera(10.0, 90.0, size)               # footprint x, y in [-10, 10]
    depth = torch.full((1, size, size), 10.0)
    sem = torch.full((1, size, size), ROAD, dtype=torch.uint8)
    sem[:, :, size // 2:] = SIDEWALK
    window = SceneWindow(images=torch.zeros(1, 3, size, size), depth=depth, valid=torch.isfinite(depth), semantic=sem,
                         K=cams.K, cam_to_scene=cams.cam_to_world, frame_index=torch.zeros(1, dtype=torch.long),
                         camera_index=torch.zeros(1, dtype=torch.long), store_index=0, episode=0, anchor=0)
    bounds = torch.tensor([[-16.0, -16.0, -2.0], [16.0, 16.0, 6.0]])
    bev = window_bev(window, bounds, (16, 16), C).numpy()   # 2 m cells
    assert (bev[3:13, 3:8] == ROAD).all() and (bev[3:13, 8:13] == SIDEWALK).all()
    assert (bev[:, :3] == UNOBSERVED).all() and (bev[:, 13:] == UNOBSERVED).all()
