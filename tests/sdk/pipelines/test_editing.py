"""Editing through the latents: masked sampling keeps the known latent exactly where asked and is deterministic;
`SceneGenerator.edit` keeps every voxel column outside the region, changes the inside, follows its seed, takes a new
BEV map on a conditional bundle, and refuses bad regions before sampling."""
import pytest
import torch

from nfldm_sdk.labels.bev_map import BEVMap
from nfldm_sdk.pipelines.editing import region_from_box
from nfldm_sdk.pipelines.generate_args import GenerateArgumentError
from nfldm_sdk.pipelines.sampling import sample_level

pytestmark = pytest.mark.usefixtures("one_thread_module")


def test_masked_sampling_keeps_the_known_entries_exactly(tiny_generator):
    gen = tiny_generator
    den = gen.denoisers["c"]
    shape = (1, *den.latent_shape)
    g = torch.randn(1, gen.denoisers["g"].latent_shape[0])
    known = torch.randn(shape)
    keep = torch.zeros(shape[-2:], dtype=torch.bool)
    keep[:, : shape[-1] // 2] = True                                            # the left half is known
    run = lambda s: sample_level(den, shape, (g,), gen.noise_schedule.scheduler("ddim"), 4,  # noqa: E731
                                 [torch.Generator().manual_seed(s)], known=known, keep=keep)
    a, b, other = run(0), run(0), run(1)
    assert torch.equal(a[..., keep], known[..., keep])
    assert torch.equal(a, b)
    assert not torch.allclose(a[..., ~keep], other[..., ~keep])
    with pytest.raises(ValueError, match="both"):
        sample_level(den, shape, (g,), gen.noise_schedule.scheduler("ddim"), 2, None, known=known)


def test_region_from_box_selects_column_centres():
    bounds = ((-16.0, -32.0, -2.0), (48.0, 32.0, 6.0))
    m = region_from_box((0.0, -2.0, 4.0, 2.0), bounds, (64, 64))                # 1 m columns
    assert m.shape == (64, 64) and int(m.sum()) == 4 * 4
    ys, xs = torch.nonzero(m, as_tuple=True)
    assert xs.min() == 16 and xs.max() == 19 and ys.min() == 30 and ys.max() == 33


def test_edit_keeps_the_outside_and_changes_the_inside(tiny_generator):
    gen = tiny_generator
    scene = gen.generate(1, seed=3, steps=3)[0]
    box = (8.0, -8.0, 24.0, 8.0)
    Y, X = scene.field.density.shape[-2:]
    mask = region_from_box(box, gen.latent_ae.config.bounds, (Y, X))
    edited = gen.edit(scene, box, seed=5, steps=3)
    assert torch.equal(edited.field.density[:, ~mask], scene.field.density[:, ~mask])
    assert torch.equal(edited.field.features[:, :, ~mask], scene.field.features[:, :, ~mask])
    assert not torch.allclose(edited.field.density[:, mask], scene.field.density[:, mask])
    again = gen.edit(scene, mask, seed=5, steps=3)                               # the same region as a mask
    assert torch.equal(again.field.density, edited.field.density)
    with pytest.raises(GenerateArgumentError, match="covers no grid column"):
        gen.edit(scene, (100.0, 100.0, 120.0, 120.0), steps=2)
    with pytest.raises(GenerateArgumentError, match="bool mask"):
        gen.edit(scene, torch.ones(3, 3, dtype=torch.bool), steps=2)
    with pytest.raises(GenerateArgumentError, match="not BEV-conditioned"):
        gen.edit(scene, box, bev=torch.full((Y, X), 7, dtype=torch.uint8).numpy(), steps=2)


def test_edit_under_a_new_map_on_a_conditional_bundle(tiny_conditional_generator):
    gen = tiny_conditional_generator
    scene = gen.generate(1, seed=0, steps=2)[0]
    bounds = gen.latent_ae.config.bounds
    Y, X = gen.bev_grid_yx
    road = BEVMap.from_tags(torch.full((Y, X), 7, dtype=torch.uint8).numpy(),
                            bounds=((bounds[0][0], bounds[0][1]), (bounds[1][0], bounds[1][1])))
    box = (0.0, -16.0, 32.0, 16.0)
    mask = region_from_box(box, bounds, (Y, X))
    edited = gen.edit(scene, box, bev=road, guidance_scale=2.0, seed=1, steps=2)
    assert torch.equal(edited.field.density[:, ~mask], scene.field.density[:, ~mask])


def test_cli_edit_writes_the_edited_scene(tiny_bundle, tmp_path):
    from click.testing import CliRunner

    from nfldm_sdk.cli.main import main
    from nfldm_sdk.pipelines.generator import SceneGenerator
    from nfldm_sdk.pipelines.scene import NeuralScene

    gen = SceneGenerator.from_pretrained(tiny_bundle)
    gen.generate(1, seed=2, steps=2)[0].save(tmp_path / "scene")
    args = ["edit", str(tmp_path / "scene"), "--model", str(tiny_bundle), "--box", "8", "-8", "24", "8",
            "--steps", "2", "--seed", "4", "--out", str(tmp_path / "edited"), "--device", "cpu"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    edited = NeuralScene.load(tmp_path / "edited", decoder=gen.scene_ae)
    expected = gen.edit(NeuralScene.load(tmp_path / "scene", decoder=gen.scene_ae), (8, -8, 24, 8), seed=4, steps=2)
    assert torch.equal(edited.field.density, expected.field.density)
    assert (tmp_path / "edited" / "preview.png").is_file()
    r = CliRunner().invoke(main, args)                                           # refused: the output exists
    assert r.exit_code != 0 and "overwrite" in r.output.lower()
    r = CliRunner().invoke(main, [*args[:-4], "--box", "100", "100", "120", "120", "--out", str(tmp_path / "x")])
    assert r.exit_code != 0 and "covers no grid column" in r.output
