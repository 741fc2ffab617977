"""Shared fixtures. Everything runs on CPU; pretrained weights are never downloaded."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402

try:  # keep the suite within the 2 cores of CI machines
    import torch

    torch.set_num_threads(min(2, torch.get_num_threads()))
    # Without a GPU the Triton render kernels (nfldm_sdk.render_triton) run in Triton's CPU interpreter. Triton
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
