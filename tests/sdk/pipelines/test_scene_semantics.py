"""`NeuralScene` semantics: `has_semantics`, `semantic_voxels`, `bev` on a known layout (axes and orientation),
labelled renders, and head-less scenes (a bundle written without the head loads and renders, labels raise the one
clear error). Scenes and the hand-set head: tests/semantic_scenes.py."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from nfldm_sdk.cameras.builders import preview_cameras
from nfldm_sdk.fields.voxel_field import VoxelField
from nfldm_sdk.labels.classes import UNOBSERVED
from nfldm_sdk.models.bundle import read_manifest
from nfldm_sdk.models.semantic_head import SEMANTICS_UNAVAILABLE, SemanticsUnavailableError
from nfldm_sdk.pipelines.scene import NeuralScene
from nfldm_sdk.viz.previews import preview_image
from semantic_scenes import (BOUNDS, BUILDING, GRID, ROAD, SKY_TAG, headless_decoder, layout_bev, layout_field,
                             semantic_decoder)


@pytest.fixture(scope="module")
def scene() -> NeuralScene:
    return NeuralScene(field=layout_field(), seed=1, bundle_hash="layout", decoder=semantic_decoder())


def test_bev_of_a_known_layout_has_rows_y_and_columns_x(scene):
    assert scene.has_semantics
    bev = scene.bev()
    assert bev.shape == GRID[1:] and bev.dtype == np.uint8                   # [Y, X] = the field's (and f's) grid
    np.testing.assert_array_equal(bev, layout_bev())
    # orientation, read off the docstring's rule: cell (j, k) covers x = xmin + k, y = ymin + j (1 m cells)
    (xmin, ymin, _), _ = BOUNDS
    cell = lambda x, y: bev[int(np.floor(y - ymin)), int(np.floor(x - xmin))]  # noqa: E731
    assert cell(10.0, 4.0) == BUILDING and cell(10.0, -4.0) == ROAD         # the block is left of the ego (y > 0)
    assert cell(-7.5, 0.0) == UNOBSERVED and cell(0.0, 0.0) == ROAD


def test_semantic_voxels_label_solid_voxels_and_leave_empty_ones_unobserved(scene):
    vox = scene.semantic_voxels()
    assert vox.shape == GRID and vox.dtype == np.uint8                        # [Z, Y, X]
    expected = np.full(GRID, UNOBSERVED, np.uint8)
    expected[0] = ROAD
    expected[1:4, 10:14, 16:20] = BUILDING
    expected[:, :, 0] = UNOBSERVED
    np.testing.assert_array_equal(vox, expected)


def test_scene_render_carries_labels_and_the_preview_can_show_them(scene):
    images = scene.render(preview_cameras(32, 32))                            # front, left, back, right at 1.6 m
    assert images.semantic.shape == (4, 32, 32) and images.semantic.dtype == torch.uint8
    assert torch.equal(images.semantic == SKY_TAG, ~torch.isfinite(images.depth))
    assert (images.semantic[0, -4:] == ROAD).all()                            # the ground below the front view
    # the block (x ∈ [8, 12], y ∈ [2, 6]) lies 9–37° left of straight ahead: in the front view's left half only
    building = (images.semantic == BUILDING).numpy()
    assert building[0, :, :16].sum() > 10 and not building[0, :, 16:].any() and not building[1:].any()
    img = preview_image(scene, 32, 32, with_semantic=True)
    assert img.shape == (3 * 32, 4 * 32, 3)
    assert preview_image(scene, 32, 32).shape == (2 * 32, 4 * 32, 3)


def test_headless_scene_renders_and_raises_the_clear_error_for_labels():
    scene = NeuralScene(field=layout_field(), seed=1, bundle_hash="layout", decoder=headless_decoder())
    images = scene.render(preview_cameras(32, 32))
    assert images.semantic is None and images.semantic_confidence is None and torch.isfinite(images.depth).any()
    assert not scene.has_semantics
    for ask in (scene.bev, scene.semantic_voxels, lambda: preview_image(scene, 32, 32, with_semantic=True)):
        with pytest.raises(SemanticsUnavailableError) as e:
            ask()
        assert str(e.value) == SEMANTICS_UNAVAILABLE
    bare = NeuralScene(field=layout_field(), seed=1, bundle_hash="layout")
    assert not bare.has_semantics
    with pytest.raises(ValueError, match="no decoder"):
        bare.bev()


def test_bundle_without_head_loads_headless_and_with_head_keeps_it(tiny_generator, write_tiny_bundle, tmp_path):
    gen = tiny_generator
    cfg = gen.scene_ae.config
    assert gen.scene_ae.semantic_head is not None                              # the tiny preset trains a head
    Z, Y, X = cfg.grid_shape
    density = torch.zeros(Z, Y, X)
    density[: Z // 4] = 20.0                                                   # a ground slab: something to hit
    field = VoxelField(density, torch.randn(cfg.feature_channels, Z, Y, X, generator=torch.Generator().manual_seed(0)),
                       torch.tensor(cfg.bounds))
    for semantic in (True, False):
        bundle = write_tiny_bundle(tmp_path / f"bundle_{semantic}", gen, semantic=semantic)
        scene = NeuralScene(field=field, seed=0, bundle_hash=read_manifest(bundle).bundle_hash)
        folder = scene.save(tmp_path / f"scene_{semantic}")
        loaded = NeuralScene.load(folder, decoder=bundle)
        assert loaded.has_semantics is semantic
        images = loaded.render(preview_cameras(64, 64)[:1])
        assert (images.semantic is not None) is semantic and images.rgb.shape == (1, 64, 64, 3)
        if semantic:
            assert loaded.bev().shape == tuple(gen.scene_ae.config.grid_shape[1:])
        else:
            with pytest.raises(SemanticsUnavailableError):
                loaded.bev()
