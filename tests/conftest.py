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

TINY_CAPTURE = dict(town="Town03", episodes=2, frames=8, width=64, height=64, rig="default", weather="ClearNoon", seed=7, fps=5.0)


def make_capture(path: str, **overrides) -> str:
    """Collect a small procedural capture at `path` (settings: TINY_CAPTURE with `overrides`)."""
    from sim_bridge.collect import CollectConfig, collect

    cfg = CollectConfig(out=str(path), backend="procedural", **{**TINY_CAPTURE, **overrides})
    collect(cfg, progress=False, log=lambda m: None)
    return str(path)


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
    """``write_tiny_bundle(path, generator, latent_stats=None) -> path``: `generator`'s parts written as a model bundle
    (preset "tiny", a zero training-data hash); `latent_stats` replaces the generator's statistics (and is set on it)."""
    def write(path, generator, latent_stats=None):
        from nfldm_sdk.pipelines.bundle import write_bundle

        if latent_stats is not None:
            generator.latent_stats = latent_stats
        return write_bundle(path, scene_ae=generator.scene_ae, latent_ae=generator.latent_ae,
                            denoisers=generator.denoisers, latent_stats=generator.latent_stats,
                            noise_schedule=generator.noise_schedule, sampler_defaults=generator.sampler_defaults,
                            preset="tiny", training_data_hash="0" * 64)

    return write
