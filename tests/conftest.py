"""Shared fixtures. Everything runs on CPU; pretrained weights are never downloaded."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402

try:  # keep the suite within the 2 cores of CI machines
    import torch

    torch.set_num_threads(min(2, torch.get_num_threads()))
    # Without a GPU the Triton render kernels (nfldm_sdk.rendering.triton_render) run in Triton's CPU interpreter. Triton
    # reads the variable when a kernel is decorated, i.e. when that module is first imported: set it before.
    if not torch.cuda.is_available():
        os.environ.setdefault("TRITON_INTERPRET", "1")
except ImportError:  # pragma: no cover
    pass

# Project modules are imported inside the fixtures (start-up time: a run of a few tests imports only what they use).
TINY_CAPTURE = dict(town="Town03", episodes=2, frames=8, width=64, height=64, rig="default", weather="ClearNoon", seed=7, fps=5.0)


def make_capture(path: str, **overrides) -> str:
    """Collect a small procedural capture at `path` (settings: TINY_CAPTURE with `overrides`)."""
    from sim_bridge.collect import CollectConfig, collect

    cfg = CollectConfig(out=str(path), backend="procedural", **{**TINY_CAPTURE, **overrides})
    collect(cfg, progress=False, log=lambda m: None)
    return str(path)


@pytest.fixture(scope="session")
def capture_factory():
    """``capture_factory(path, **overrides) -> path``: `make_capture`, for tests that need a capture of their own
    (other episodes, frames or size than `tiny_capture`)."""
    return make_capture


@pytest.fixture(scope="session")
def tiny_capture(tmp_path_factory) -> str:
    """Path of a tiny procedural capture: Town03, 2 episodes × 8 frames, default 6-camera rig at 64×64, seed 7."""
    return make_capture(tmp_path_factory.mktemp("capture") / "tiny.zarr")


@pytest.fixture(scope="module")
def one_thread_module():
    """One intra-op torch thread for a module of tiny models: as fast, and it does not fight the other jobs for the
    cores (measured on a shared 2-core runner: two spinning OpenMP threads made tiny training steps ~6x slower).
    Modules opt in with ``pytestmark = pytest.mark.usefixtures("one_thread_module")``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_generator():
    """A `SceneGenerator` of the `tiny` preset with random weights (seed 0)."""
    from nfldm_training.configs.ldm import random_generator

    return random_generator("tiny", seed=0)


@pytest.fixture(scope="session")
def write_tiny_bundle():
    """``write_tiny_bundle(path, generator, latent_stats=None, semantic=True) -> path``: `generator`'s parts written as
    a model bundle (preset "tiny", a zero training-data hash); `latent_stats` replaces the generator's statistics (and
    is set on it). ``semantic=False`` writes its stage-1 model without the semantic head (same weights otherwise): a
    bundle trained before the head existed."""
    def write(path, generator, latent_stats=None, semantic=True):
        import dataclasses

        from nfldm_sdk.models.bundle import write_bundle
        from nfldm_sdk.models.scene_ae import SceneAutoEncoder

        if latent_stats is not None:
            generator.latent_stats = latent_stats
        scene_ae = generator.scene_ae
        if not semantic and scene_ae.semantic_head is not None:
            scene_ae = SceneAutoEncoder(dataclasses.replace(scene_ae.config, semantic_classes=()))
            scene_ae.load_state_dict({k: v for k, v in generator.scene_ae.state_dict().items()
                                      if not k.startswith("semantic_head.")})
        return write_bundle(path, scene_ae=scene_ae, latent_ae=generator.latent_ae,
                            denoisers=generator.denoisers, latent_stats=generator.latent_stats,
                            noise_schedule=generator.noise_schedule, sampler_defaults=generator.sampler_defaults,
                            preset="tiny", training_data_hash="0" * 64)

    return write


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory, tiny_generator, write_tiny_bundle):
    """Path of a bundle of `tiny_generator` with non-trivial latent statistics, so that de-normalisation is exercised.
    The statistics are set on `tiny_generator` too: the bundle and the generator make the same scenes."""
    from nfldm_sdk.models.latent_ae import LatentStats

    stats = LatentStats(g_mean=0.1, g_std=0.5, c_mean=(0.0, 0.1, 0.2, 0.3), c_std=(1.0, 2.0, 0.5, 1.0),
                        f_mean=(0.0,) * 4, f_std=(0.7,) * 4)
    return write_tiny_bundle(tmp_path_factory.mktemp("bundle") / "tiny", tiny_generator, latent_stats=stats)


@pytest.fixture(scope="module")
def default_stats_bundle(tmp_path_factory, tiny_generator, write_tiny_bundle):
    """Path of a bundle of `tiny_generator` with the generator's own (default) latent statistics."""
    return write_tiny_bundle(tmp_path_factory.mktemp("bundle") / "tiny", tiny_generator)


class Oracle(torch.nn.Module):
    """A 'denoiser' that knows the clean sample x*: returns the exact v of x_t, ``(√ᾱ_t x_t − x*) / √(1−ᾱ_t)``
    (from ``x_t = √ᾱ x* + √(1−ᾱ) ε`` and ``v = √ᾱ ε − √(1−ᾱ) x*``).

    Args:
        target: x*, [B, ...] (the shape of the samples it denoises).
        alphas_cumprod: ᾱ_t of the schedule, [T].
    """

    def __init__(self, target: torch.Tensor, alphas_cumprod: torch.Tensor):
        super().__init__()
        self.register_buffer("target", target)
        self.register_buffer("ac", alphas_cumprod.double())
        self.dummy = torch.nn.Parameter(torch.zeros(()))  # sample_level reads the device/dtype from a parameter

    def forward(self, x_t, t):
        """v for x_t [B, ...] at integer timesteps t [B]: [B, ...], the dtype of x_t."""
        a = self.ac[t].reshape(-1, *[1] * (x_t.dim() - 1))
        return ((a.sqrt() * x_t.double() - self.target.double()) / (1 - a).sqrt()).to(x_t.dtype)


@pytest.fixture(scope="session")
def oracle_factory():
    """``oracle_factory(target, alphas_cumprod) -> Oracle``: the exact v-predictor of a known clean sample."""
    return Oracle


#: The stage-3 overrides of a BEV-conditioned tiny bundle (every level), with the trajectory in g.
CONDITIONAL_OVERRIDES = {"denoiser_g.bev_condition": True, "denoiser_c.bev_condition": True,
                         "denoiser_f.bev_condition": True, "denoiser_g.trajectory_in_g": True,
                         "denoiser_g.trajectory_frames": 2, "denoiser_g.bev_token_dim": 16,
                         "denoiser_c.bev_token_dim": 16, "denoiser_f.bev_token_dim": 16}


@pytest.fixture(scope="module")
def tiny_conditional_generator():
    """A `SceneGenerator` of the `tiny` preset with random weights (seed 0) whose three denoisers are BEV-conditioned
    and whose ψ_g samples a 2-pose trajectory (`CONDITIONAL_OVERRIDES`)."""
    from nfldm_training.configs.ldm import random_generator

    return random_generator("tiny", seed=0, overrides=CONDITIONAL_OVERRIDES)


@pytest.fixture(scope="module")
def tiny_conditional_bundle(tmp_path_factory, tiny_conditional_generator, write_tiny_bundle):
    """Path of a bundle of `tiny_conditional_generator`."""
    return write_tiny_bundle(tmp_path_factory.mktemp("bundle") / "tiny_cond", tiny_conditional_generator)
