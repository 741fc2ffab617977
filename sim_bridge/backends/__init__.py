"""Simulator backends. Each produces `FrameData` for a `Rig`; see `sim_bridge.backends.base`."""
from sim_bridge.backends.base import Backend, EpisodeSpec, FrameData

__all__ = ["Backend", "EpisodeSpec", "FrameData"]
