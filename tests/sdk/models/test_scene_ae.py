"""Stage-1 scene auto-encoder: shapes, persistence (round trip, clear errors), determinism, gradient flow."""
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from nfldm_sdk.cameras.pinhole import Cameras
from nfldm_sdk.fields.voxel_field import VoxelField
from nfldm_sdk.models.scene_ae import SceneAEConfig, SceneAEOutput, SceneAutoEncoder, SceneRender
from nfldm_sdk.persistence import config_from_dict, config_to_dict, load_pretrained
from sim_bridge.rig import capture_rig

pytestmark = pytest.mark.usefixtures("one_thread_module")


def tiny_config(**kw) -> SceneAEConfig:
    base = dict(image_size=(32, 32), downsample=4, depth_bins=8, near=1.0, far=40.0, feature_channels=4,
                grid_shape=(4, 16, 16), bounds=((-16.0, -16.0, -2.0), (16.0, 16.0, 6.0)), render_samples=16,
                encoder_widths=(8, 8, 8), decoder_widths=(8, 8, 8))
    return SceneAEConfig(**{**base, **kw})


def ring_cameras(batch: int, size=(32, 32), shift: float = 0.0) -> Cameras:
    """The 6-camera ring rig (ego frame = scene frame) for `batch` scenes, scene b moved `shift * b` m forward."""
    rig = capture_rig(size[1], size[0])
    K = torch.tensor(rig.K(), dtype=torch.float32)                           # [6, 3, 3]
    c2e = torch.tensor(rig.cam_to_ego(), dtype=torch.float32)                # [6, 4, 4]
    c2s = c2e[None].repeat(batch, 1, 1, 1)                                   # [B, 6, 4, 4]
    c2s[:, :, 0, 3] += shift * torch.arange(batch, dtype=torch.float32)[:, None]
    return Cameras(K[None].expand(batch, -1, -1, -1), c2s, size[1], size[0])


def images(batch: int, views: int = 6, size=(32, 32), seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, views, 3, *size, generator=g)


def make(seed: int = 0, **kw) -> SceneAutoEncoder:
    torch.manual_seed(seed)
    return SceneAutoEncoder(tiny_config(**kw)).eval()


def test_encode_decode_shapes_and_ranges():
    model = make()
    cfg = model.config
    cams = ring_cameras(2)
    with torch.no_grad():
        out = model(images(2), cams)
    assert isinstance(out, SceneAEOutput) and isinstance(out.render, SceneRender)
    f = out.field
    Z, Y, X = cfg.grid_shape
    assert isinstance(f, VoxelField)
    assert f.density.shape == (2, Z, Y, X) and f.features.shape == (2, cfg.feature_channels, Z, Y, X)
    assert torch.allclose(f.bounds, torch.tensor(cfg.bounds).expand(2, 2, 3))
    assert (f.density >= 0).all() and f.density.sum() > 0          # softplus densities, and the frusta hit the box
    r = out.render
    assert r.rgb.shape == (2, 6, 3, 32, 32) and r.depth.shape == (2, 6, 32, 32) and r.alpha.shape == (2, 6, 32, 32)
    assert r.features.shape == (2, 6, cfg.feature_channels, 8, 8)
    assert r.rgb.min() >= 0 and r.rgb.max() <= 1
    assert (r.alpha >= 0).all() and (r.alpha <= 1).all()
    finite = torch.isfinite(r.depth)
    assert finite.any() and (r.depth[finite] >= cfg.near - 1e-4).all() and (r.depth[finite] <= cfg.far + 1e-4).all()


def test_decode_other_cameras_and_sizes():
    model = make()
    with torch.no_grad():
        field = model.encode(images(1), ring_cameras(1))
        out = model.decode(field, ring_cameras(1, size=(16, 48))[:, :2])  # 2 cameras, 48 wide × 16 high
    assert out.rgb.shape == (1, 2, 3, 16, 48) and out.depth.shape == (1, 2, 16, 48)
    with pytest.raises(ValueError, match="divisible"):
        model.decode(field, ring_cameras(1, size=(30, 32)))
    # one unbatched scene with cameras [R] renders the same as a batch of one
    with torch.no_grad():
        single = model.decode(field[0], ring_cameras(1)[0])
        batch = model.decode(field, ring_cameras(1))
    assert single.rgb.shape == (6, 3, 32, 32) and torch.allclose(single.rgb, batch.rgb[0])


def test_encode_rejects_wrong_inputs():
    model = make()
    with pytest.raises(ValueError, match="batch shape"):
        model.encode(images(2), ring_cameras(1))
    with pytest.raises(ValueError, match="image resolution"):
        model.encode(images(1), ring_cameras(1, size=(64, 64)))


def test_scenes_in_a_batch_are_independent():
    # Scene 1 encoded alongside scene 0 equals scene 1 encoded alone (GroupNorm, per-scene splat).
    model = make()
    cams = ring_cameras(2, shift=3.0)
    imgs = images(2)
    with torch.no_grad():
        both = model.encode(imgs, cams)
        alone = model.encode(imgs[1:], cams[1:])
    assert torch.allclose(both.density[1], alone.density[0], atol=1e-5)
    assert torch.allclose(both.features[1], alone.features[0], atol=1e-5)
    assert not torch.allclose(both.density[0], both.density[1])      # different poses, different fields


def test_save_load_round_trip_gives_identical_outputs(tmp_path):
    model = make(seed=3)
    cams, imgs = ring_cameras(1), images(1)
    with torch.no_grad():
        ref = model(imgs, cams)
    folder = model.save_pretrained(tmp_path / "ae")
    stored = json.loads((folder / "config.json").read_text())
    assert stored["_class"] == "nfldm_sdk.models.scene_ae.SceneAutoEncoder" and "_nfldm_version" in stored
    assert stored["grid_shape"] == [4, 16, 16]
    loaded = SceneAutoEncoder.from_pretrained(folder)
    assert loaded.config == model.config                               # tuples restored from JSON lists
    assert not loaded.training
    with torch.no_grad():
        out = loaded(imgs, cams)
    assert torch.equal(out.render.rgb, ref.render.rgb)
    assert torch.equal(out.field.density, ref.field.density) and torch.equal(out.field.features, ref.field.features)
    assert torch.equal(out.render.depth, ref.render.depth)
    assert isinstance(load_pretrained(folder), SceneAutoEncoder)        # generic loader via `_class`


def test_same_seed_same_model_and_outputs():
    a, b, c = make(seed=5), make(seed=5), make(seed=6)
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k
    assert any(not torch.equal(v, c.state_dict()[k]) for k, v in a.state_dict().items())
    cams, imgs = ring_cameras(1), images(1)
    with torch.no_grad():
        ya, yb, ya2 = a(imgs, cams).render.rgb, b(imgs, cams).render.rgb, a(imgs, cams).render.rgb
    assert torch.equal(ya, yb) and torch.equal(ya, ya2)


def test_from_pretrained_missing_unexpected_and_mismatched_weights(tmp_path):
    folder = make().save_pretrained(tmp_path / "ae")
    weights = folder / "model.safetensors"
    state = load_file(str(weights))
    key = "encoder.stem.weight"
    # missing key + unexpected key
    broken = {k: v for k, v in state.items() if k != key}
    broken["encoder.extra.weight"] = torch.zeros(2)
    save_file(broken, str(weights))
    with pytest.raises(ValueError) as e:
        SceneAutoEncoder.from_pretrained(folder)
    msg = str(e.value)
    assert str(folder) in msg and "missing keys (1): encoder.stem.weight" in msg and "unexpected keys (1): encoder.extra.weight" in msg
    # shape mismatch: the config promises more feature channels than the weights have
    save_file(state, str(weights))
    cfg = json.loads((folder / "config.json").read_text())
    cfg["feature_channels"] = 6
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError) as e:
        SceneAutoEncoder.from_pretrained(folder)
    assert "shape mismatches" in str(e.value) and "encoder.head.2.weight: file (12, 8, 1, 1) vs model (14, 8, 1, 1)" in str(e.value)
    # unknown config key, missing folder
    cfg["feature_channels"] = 4
    cfg["colour"] = "red"
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="no field.*colour"):
        SceneAutoEncoder.from_pretrained(folder)
    with pytest.raises(FileNotFoundError, match="save_pretrained"):
        SceneAutoEncoder.from_pretrained(tmp_path / "nowhere")


def test_gradients_reach_the_encoder_through_splat_and_render():
    model = make().train()
    cams, imgs = ring_cameras(1), images(1)
    field = model.encode(imgs, cams)
    out = model.decode(field, cams)
    # Only rendered quantities (not the decoder): the gradient must pass render -> splat -> lift -> encoder.
    finite = torch.isfinite(out.depth)
    loss = out.features.square().mean() + out.alpha.mean() + out.depth[finite].mean() / 10
    loss.backward()
    head = model.encoder.head[-1].weight.grad                            # [D+C, w, 1, 1]
    D = model.config.depth_bins
    assert torch.isfinite(head).all()
    assert head[:D].abs().sum() > 0, "no gradient reached the density channels (through occupancy and splat)"
    assert head[D:].abs().sum() > 0, "no gradient reached the feature channels"
    assert model.encoder.stem.weight.grad.abs().sum() > 0
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())


def test_config_validation_and_json_round_trip():
    with pytest.raises(ValueError, match="encoder_widths"):
        tiny_config(encoder_widths=(8, 8))
    with pytest.raises(ValueError, match="divisible"):
        tiny_config(image_size=(30, 32))
    with pytest.raises(ValueError, match="bounds"):
        tiny_config(bounds=((0.0, 0.0, 0.0), (0.0, 1.0, 1.0)))
    cfg = tiny_config()
    assert config_from_dict(SceneAEConfig, json.loads(json.dumps(config_to_dict(cfg)))) == cfg
    assert SceneAEConfig(near=2.0, far=50.0).initial_density == 0.0
    # untrained density starts at 1/(far-near): an optical depth of 1 over the frustum
    m = make()
    b = m.encoder.head[-1].bias[: m.config.depth_bins]
    assert torch.allclose(torch.nn.functional.softplus(b), torch.full_like(b, 1 / (40.0 - 1.0)))


@pytest.mark.parametrize("threshold", [0.5, 1e-4])
def test_decoded_depth_is_inf_exactly_where_the_output_alpha_stays_below_the_threshold(threshold):
    """At the output resolution (the render upsampled by `downsample`), depth is finite iff alpha reaches the hit
    threshold, and a hit pixel's depth lies between the depths of the low-resolution hits it mixes."""
    model = make()
    Z, Y, X = model.config.grid_shape
    density = torch.zeros(1, Z, Y, X)
    density[..., : X // 2] = 3.0               # a dense block on one side of the ring, nothing on the other:
    density[..., X // 2:, : Y // 3] = 0.02     # plus a faint patch whose opacity straddles the threshold
    field = VoxelField(density, torch.rand(1, model.config.feature_channels, Z, Y, X),
                       torch.tensor(model.config.bounds).expand(1, 2, 3))
    with torch.no_grad():
        out = model.decode(field, ring_cameras(1), min_hit_alpha=threshold)
    finite = torch.isfinite(out.depth)
    assert torch.equal(finite, out.alpha >= threshold)
    assert finite.any() and (~finite).any()
    assert (out.depth[finite] >= model.config.near - 1e-4).all() and (out.depth[finite] <= model.config.far + 1e-4).all()
