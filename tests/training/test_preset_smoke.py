"""CPU smoke tests of the `small` and `paper` presets at their real model sizes: the first optimisation steps of
stage 1 (scene auto-encoder), stage 2 (latent auto-encoder) and each denoiser level of stage 3. Stages 1 and 2 are
chained as training chains them: a procedural capture at the preset's image size -> stage 1 -> the field the trained
stage 1 encodes -> stage 2 (with the trained stage 1 as its frozen renderer). Stage 3 trains on normalised latents of
the shapes the stage-2 test checks its model encodes (standard normal draws: what normalised latents are).

Every step is a real Lightning step of the stage's module (its own `configure_optimizers`, warm-up included) on one
batch (batch size 1). Each test checks finite losses, that every trained parameter moved, and the output shapes the
preset promises (grid, channels, image size, latent shapes).

What is reduced, and why (model sizes are never touched):

* ``small``: the preset's own training settings (window 3 = 18 views at 128x128), batch 1, two steps.
* ``paper``: window 1 (6 views at 256x256), one rendered target view per step, one step. Measured on 2 CPU cores:
  the preset's window of 4 (24 views) was killed for memory at 21.6 GB in its first step; window 1 rendering all
  6 views took 110 s per step (8.4 GB). As run here, the paper stage-1 and stage-2 tests take 30-40 s each and are
  marked ``slow``; the whole module ~3 min on 2 busy cores, 5.6 GB at most.
"""
import dataclasses
import math

import pytest
import torch
from lightning.pytorch import Callback, Trainer

from nfldm_sdk.fields.voxel_field import VoxelField
from nfldm_training.configs.ldm import get_ldm_preset, with_latent_shapes
from nfldm_training.configs.presets import get_preset
from nfldm_training.data.capture_windows import SceneWindowDataset, collate_windows
from nfldm_training.data.latent_levels import LEVEL_CONDITIONS
from nfldm_training.data.latent_scenes import LatentItem, collate_latent
from nfldm_training.modules.latent_ae import LatentAELightningModule
from nfldm_training.modules.ldm import LDMLightningModule
from nfldm_training.modules.scene_ae import SceneAELightningModule

# Lightning's advice for real runs (more loader workers, a logger) does not apply to one in-memory batch.
pytestmark = pytest.mark.filterwarnings("ignore::lightning.fabric.utilities.warnings.PossibleUserWarning")

#: Training settings per preset (dotted overrides of the preset; the module docstring says why).
REDUCED = {
    "small": {},
    "paper": {"scene_ae_train.window": 1, "scene_ae_train.render_views": 1, "latent_ae_train.render_views": 1},
}
#: Optimisation steps per test: the paper preset's steps cost 15-40 s each here, so it takes one.
STEPS = {"small": 2, "paper": 1}
#: Tests that take over ~30 s on 2 cores (measured): the paper preset's 256x256 stages 1 and 2.
SLOW = {("paper", "scene_ae"), ("paper", "latent_ae")}


def _param(preset: str, stage: str):
    return pytest.param(preset, marks=pytest.mark.slow) if (preset, stage) in SLOW else preset


class _LossRecorder(Callback):
    """The loss of every optimisation step, as the module returned it."""

    def __init__(self):
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(float(outputs["loss"]))


def fit_steps(module, batch, steps: int, grad_clip: float = 0.0) -> tuple[list[float], list[str], list[str]]:
    """`steps` Lightning steps of `module` on `batch` (CPU, float32) -> (losses, moved, unmoved parameter names of
    ``module.model``)."""
    before = {n: p.detach().clone() for n, p in module.model.named_parameters() if p.requires_grad}
    rec = _LossRecorder()
    loader = torch.utils.data.DataLoader([batch], batch_size=None, collate_fn=lambda item: item)
    trainer = Trainer(accelerator="cpu", devices=1, max_steps=steps, max_epochs=-1, precision="32-true", logger=False,
                      enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                      num_sanity_val_steps=0, limit_val_batches=0, gradient_clip_val=float(grad_clip) or None,
                      callbacks=[rec])
    trainer.fit(module, train_dataloaders=loader)
    assert trainer.global_step == steps
    after = dict(module.model.named_parameters())
    moved = [n for n, p in before.items() if not torch.equal(p, after[n].detach())]
    return rec.losses, moved, sorted(set(before) - set(moved))


def check_steps(steps: int, losses, moved, unmoved) -> None:
    assert len(losses) == steps and all(math.isfinite(x) for x in losses), losses
    assert moved and not unmoved, f"parameters that did not move: {unmoved}"


# ------------------------------------------------------------------------------------------------ the chain
@pytest.fixture(scope="module")
def preset_data(request, capture_factory, tmp_path_factory):
    """``name -> (preset, window, batch)``: the resolved preset (with `REDUCED`), the one scene window of a capture
    made at the preset's image size (one episode of exactly one window) and that window as a batch of one."""
    cache = {}

    def get(name):
        if name not in cache:
            preset = get_preset(name, REDUCED[name])
            tc = dataclasses.replace(preset.scene_ae_train, batch_size=1)
            preset = dataclasses.replace(preset, scene_ae_train=tc)
            H, W = preset.scene_ae.image_size
            store = capture_factory(tmp_path_factory.mktemp(name) / "capture.zarr", episodes=1, frames=tc.window,
                                    width=W, height=H)
            data = SceneWindowDataset([store], tc.window, tc.cameras, (H, W), split="all", stride=tc.stride)
            assert len(data) == 1
            cache[name] = (preset, data[0], collate_windows([data[0]]))
        return cache[name]

    return get


@pytest.fixture(scope="module")
def stage1(preset_data):
    """``name -> (module, losses, moved, unmoved)`` after ``STEPS[name]`` stage-1 steps (memoised per preset)."""
    cache = {}

    def get(name):
        if name not in cache:
            preset, _, batch = preset_data(name)
            torch.manual_seed(0)
            module = SceneAELightningModule(preset.scene_ae, preset.scene_ae_train)
            cache[name] = (module, *fit_steps(module, batch, STEPS[name], preset.scene_ae_train.grad_clip))
        return cache[name]

    return get


@pytest.fixture(scope="module")
def encoded_field(preset_data, stage1):
    """``name -> VoxelField [1, ...]``: the window encoded by the trained stage-1 model (what encode-voxels stores)."""
    cache = {}

    def get(name):
        if name not in cache:
            _, _, batch = preset_data(name)
            model = stage1(name)[0].model.eval()
            with torch.no_grad():
                cache[name] = model.encode(batch.images, batch.cameras())
        return cache[name]

    return get


@pytest.fixture(scope="module")
def stage2(preset_data, stage1, encoded_field):
    """``name -> (module, latent batch, losses, moved, unmoved)`` after ``STEPS[name]`` stage-2 steps."""
    cache = {}

    def get(name):
        if name not in cache:
            preset, window, _ = preset_data(name)
            f = encoded_field(name)
            item = LatentItem(VoxelField(f.density[0], f.features[0], f.bounds[0]), window, scene=0)
            lbatch = collate_latent([item])
            tc = dataclasses.replace(preset.latent_ae_train, batch_size=1)
            torch.manual_seed(0)
            module = LatentAELightningModule(preset.latent_ae, tc, stage1(name)[0].model)
            cache[name] = (module, lbatch, *fit_steps(module, lbatch, STEPS[name], tc.grad_clip))
        return cache[name]

    return get


# ------------------------------------------------------------------------------------------------ tests
@pytest.mark.parametrize("name", [_param("small", "scene_ae"), _param("paper", "scene_ae")])
def test_stage1_first_steps(name, preset_data, stage1, encoded_field):
    preset, _, batch = preset_data(name)
    module, losses, moved, unmoved = stage1(name)
    check_steps(STEPS[name], losses, moved, unmoved)
    mc = preset.scene_ae
    H, W = mc.image_size
    assert batch.images.shape == (1, preset.scene_ae_train.window * 6, 3, H, W)
    field = encoded_field(name)
    assert field.density.shape == (1, *mc.grid_shape)
    assert field.features.shape == (1, mc.feature_channels, *mc.grid_shape)
    assert torch.isfinite(field.density).all() and (field.density >= 0).all()
    with torch.no_grad():
        out = module.model.decode(field, batch.cameras()[:, :1])
    assert out.rgb.shape == (1, 1, 3, H, W) and out.depth.shape == (1, 1, H, W)
    assert out.semantic.shape == (1, 1, mc.classes.num_classes, H, W)
    assert torch.isfinite(out.rgb).all() and ((out.rgb >= 0) & (out.rgb <= 1)).all()


@pytest.mark.parametrize("name", [_param("small", "latent_ae"), _param("paper", "latent_ae")])
def test_stage2_first_steps(name, preset_data, stage2, encoded_field):
    preset, _, _ = preset_data(name)
    module, lbatch, losses, moved, unmoved = stage2(name)
    check_steps(STEPS[name], losses, moved, unmoved)
    cfg = preset.latent_ae
    assert tuple(cfg.grid_shape) == tuple(preset.scene_ae.grid_shape)
    with torch.no_grad():
        lat = module.model.eval().encode(lbatch.field)
        decoded = module.model.decode(lat)
    assert lat.g.shape == (1, *cfg.g_shape) and lat.c.shape == (1, *cfg.c_shape) and lat.f.shape == (1, *cfg.f_shape)
    field = encoded_field(name)
    assert decoded.density.shape == field.density.shape and decoded.features.shape == field.features.shape
    assert torch.isfinite(decoded.features).all() and (decoded.density >= 0).all()


@pytest.mark.parametrize("level", ["g", "c", "f"])
@pytest.mark.parametrize("name", ["small", "paper"])
def test_stage3_first_steps(name, level):
    # The latents a stage-2 model of the preset encodes have the preset's shapes; stage 3 trains on normalised
    # latents (zero mean, unit variance per channel), which is what these draws are.
    preset = get_preset(name)
    cfg = preset.latent_ae
    ldm = with_latent_shapes(get_ldm_preset(name), cfg.g_dim, cfg.c_shape, cfg.f_shape)
    g = torch.Generator().manual_seed(1)
    batch = {k: torch.randn(1, *shape, generator=g) for k, shape in
             (("g", cfg.g_shape), ("c", cfg.c_shape), ("f", cfg.f_shape)) if k in LEVEL_CONDITIONS[level]}
    tc = dataclasses.replace(ldm.train_config(level), batch_size=1)
    torch.manual_seed(0)
    module = LDMLightningModule(level, ldm.denoiser_config(level), tc, ldm.schedule)
    check_steps(STEPS[name], *fit_steps(module, batch, STEPS[name], tc.grad_clip))
    x0, cond = module.inputs(batch, train=False)
    with torch.no_grad():
        v = module.ema_model(x0, torch.tensor([500]), *cond)
    assert v.shape == x0.shape and torch.isfinite(v).all()
