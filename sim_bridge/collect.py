"""The collection loop: drive a backend episode by episode and append every tick to a capture store.

Crash safety comes from the store (the committed frame count is written after each frame's data); this module
adds resume: `collect(..., resume=True)` reopens the store, takes the collection settings recorded in it, skips
complete episodes and asks the backend to continue each partial episode at its first missing frame. With a LiDAR
(`CollectConfig.lidar`) every frame also stores the scan; a resume takes the LiDAR recorded in the store.
"""
from __future__ import annotations

import dataclasses
import socket
import sys
import time
from dataclasses import dataclass

from tqdm.auto import tqdm

from sim_bridge.backends.base import Backend, EpisodeSpec, episode_seed
from sim_bridge.backends.carla_backend import CarlaBackend
from sim_bridge.backends.carla_server import probe_carla
from sim_bridge.lidar import LidarSpec
from sim_bridge.rig import DEFAULT_RIG, Rig, canonical_rig_name
from sim_bridge.store.writer import StoreWriter

#: Settings recorded in the store's `collection` attribute; a resume must use the same values.
_RECORDED = ("backend", "town", "weather", "seed", "episodes", "frames", "fps", "width", "height", "rig", "lidar")


@dataclass
class CollectConfig:
    """What `sim_bridge collect` captures.

    Attributes:
        out: store path or fsspec URL.
        town: CARLA town name (Town01–Town07, Town10HD).
        backend: "auto" (CARLA if a server answers at host:port, else the built-in simulator), "carla" or "procedural".
        episodes: number of episodes (each a fresh spawn point / route).
        frames: frames per episode.
        fps: simulation rate, ticks per second.
        width, height: image size in pixels (all cameras); None: 256 for a preset, a rig file's own size
            (see `Rig.resolve`: a size that changes a rig file's aspect ratio is refused). `collect` records the
            size it used.
        rig: a rig preset name (``capture``, also called ``default`` or ``ring6``; ``nuscenes``; ``front``) or a rig
            JSON file; the store records it as given.
        weather: CARLA weather preset name (ClearNoon, CloudyNoon, WetNoon, ClearSunset, …).
        lidar: a LiDAR on the ego: a preset name (``nuscenes32``, ``hdl64``, ``os128``) or a LiDAR JSON file
            (`sim_bridge.lidar.LidarSpec.resolve`), or None for cameras only; the store records it as given and
            holds the resolved spec in its ``lidar`` attribute.
        seed: run seed; episode e uses `episode_seed(seed, e)`.
        host, port, tm_port, timeout: CARLA server address, Traffic Manager port, connection timeout (s).
        resume: continue an interrupted store at `out` (its recorded settings win).
        overwrite: replace whatever is at `out`.
    """

    out: str
    town: str = "Town03"
    backend: str = "auto"
    episodes: int = 1
    frames: int = 100
    fps: float = 10.0
    width: int | None = None
    height: int | None = None
    rig: str = DEFAULT_RIG
    weather: str = "ClearNoon"
    lidar: str | None = None
    seed: int = 0
    host: str = "127.0.0.1"
    port: int = 2000
    tm_port: int = 8000
    timeout: float = 10.0
    resume: bool = False
    overwrite: bool = False


@dataclass
class CollectResult:
    """Outcome of `collect`: where the store is, which backend ran, frames written by this call and in total."""

    out: str
    backend: str
    frames_written: int
    frames_total: int
    episodes: int
    seconds: float

    @property
    def frames_per_s(self) -> float:
        return self.frames_written / self.seconds if self.seconds > 0 else 0.0


def carla_server_listening(host: str, port: int, timeout: float = 0.5) -> bool:
    """True if something accepts TCP connections at host:port (a cheap first check before the CARLA client)."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def choose_backend(cfg: CollectConfig, log=print) -> str:
    """Resolve "auto" to "carla" or "procedural"; says in one line when the built-in simulator is used."""
    if cfg.backend not in ("auto", "carla", "procedural"):
        raise ValueError(f"unknown backend {cfg.backend!r}: use auto, carla or procedural")
    if cfg.backend != "auto":
        return cfg.backend
    if carla_server_listening(cfg.host, cfg.port):
        try:
            version = probe_carla(cfg.host, cfg.port, timeout=min(cfg.timeout, 5.0))
        except ImportError:
            log(f"A server listens at {cfg.host}:{cfg.port} but the carla package is missing (pip install 'nfldm[carla]'): "
                "using the built-in procedural simulator.")
            return "procedural"
        if version:
            log(f"CARLA server {version} at {cfg.host}:{cfg.port}: using it.")
            return "carla"
    log(f"No CARLA server at {cfg.host}:{cfg.port}: using the built-in procedural simulator (--backend carla to require one).")
    return "procedural"


def make_backend(name: str, cfg: CollectConfig, rig: Rig, lidar: LidarSpec | None = None) -> Backend:
    """Instantiate backend `name` for `cfg`, `rig` and the optional `lidar`."""
    if name == "procedural":
        # start-up time: open3d and numba load only for the procedural backend
        from sim_bridge.backends.procedural.simulator import ProceduralBackend

        return ProceduralBackend(town=cfg.town, weather=cfg.weather, rig=rig, fps=cfg.fps, seed=cfg.seed, lidar=lidar)
    if name == "carla":
        return CarlaBackend(town=cfg.town, weather=cfg.weather, rig=rig, fps=cfg.fps, seed=cfg.seed, host=cfg.host,
                            port=cfg.port, tm_port=cfg.tm_port, timeout=cfg.timeout, lidar=lidar)
    raise ValueError(f"unknown backend {name!r}")


def _recorded_settings(cfg: CollectConfig, backend: str) -> dict:
    d = {k: getattr(cfg, k) for k in _RECORDED if k != "backend"}
    d["backend"] = backend
    return d


def settings_for_resume(stored: dict, requested: CollectConfig, explicitly_set: set[str]) -> CollectConfig:
    """The config to resume with: the store's recorded settings, except `episodes`, which may grow.

    Raises ValueError naming every option the user set explicitly to a value that differs from the store's (a rig
    preset given by another of its names, e.g. ``capture`` for a store collected with ``default``, is the same).
    """
    conflicts = []
    for key in _RECORDED:
        want, have = getattr(requested, key, None), stored.get(key)
        if key == "rig" and isinstance(want, str) and isinstance(have, str):
            want, have = canonical_rig_name(want), canonical_rig_name(have)
        if key in explicitly_set and key != "episodes" and have != want:
            conflicts.append(f"--{key} {getattr(requested, key)!r} (store has {stored.get(key)!r})")
    if conflicts:
        raise ValueError("cannot resume with different settings: " + ", ".join(conflicts)
                         + "; drop these options to continue the store as collected, or collect into a new --out")
    updates = {k: stored[k] for k in _RECORDED if k in stored and k != "backend"}
    if "episodes" in explicitly_set:
        if requested.episodes < stored["episodes"]:
            raise ValueError(f"--episodes {requested.episodes} is fewer than the store's {stored['episodes']}: resume can only add episodes")
        updates["episodes"] = requested.episodes
    return dataclasses.replace(requested, **updates, backend=stored.get("backend", requested.backend))


def collect(cfg: CollectConfig, explicitly_set: set[str] | None = None, progress: bool = True, log=print) -> CollectResult:
    """Capture `cfg.episodes` × `cfg.frames` ticks of the rig into the store at `cfg.out`.

    On KeyboardInterrupt the backend is closed (actors destroyed, settings restored), the committed frames stay,
    and the exception propagates; `collect(..., resume=True)` continues later without losing or repeating a frame.
    """
    explicitly_set = explicitly_set or set()
    if cfg.resume:
        writer = StoreWriter.open_for_resume(cfg.out)
        stored = dict(writer.root_attrs.get("collection", {}))
        cfg = settings_for_resume(stored, cfg, explicitly_set)
        backend_name = cfg.backend
        if stored.get("episodes") != cfg.episodes:
            writer.update_collection({**stored, "episodes": cfg.episodes})
        rig = Rig.from_list(writer.root_attrs["rig"])
        lidar = writer.lidar
    else:
        # the rig and the LiDAR are checked completely (and the size settled) before anything is created
        rig = Rig.resolve(cfg.rig, cfg.width, cfg.height)
        lidar = LidarSpec.resolve(cfg.lidar) if cfg.lidar is not None else None
        cfg = dataclasses.replace(cfg, width=rig.width, height=rig.height)
        backend_name = choose_backend(cfg, log=log)
        writer = None

    start = time.perf_counter()
    written = 0
    with make_backend(backend_name, cfg, rig, lidar) as backend:
        if writer is None:
            described = backend.describe()
            root_attrs = {
                "backend": backend_name,
                "town": cfg.town,
                "weather": cfg.weather,
                "seed": cfg.seed,
                "fps": cfg.fps,
                "rig": rig.to_list(),
                "collection": _recorded_settings(cfg, backend_name),
                "simulator": described,
            }
            if lidar is not None:
                root_attrs["lidar"] = lidar
            writer = StoreWriter.create(cfg.out, root_attrs, overwrite=cfg.overwrite)
        episodes = [writer.episode(e, cfg.frames, episode_seed(cfg.seed, e)) for e in range(cfg.episodes)]
        already = sum(ep.committed for ep in episodes)
        total = cfg.episodes * cfg.frames
        bar = _progress_bar(total, already, enabled=progress)
        try:
            for index, ep in enumerate(episodes):
                if ep.committed >= cfg.frames:
                    continue
                bar.set_description(f"episode {index + 1}/{cfg.episodes}")
                backend.start_episode(EpisodeSpec(index=index, seed=episode_seed(cfg.seed, index), start_frame=ep.committed,
                                                  resume_ego_to_world=ep.last_ego_to_world() if ep.committed else None))
                while ep.committed < cfg.frames:
                    ep.append(backend.step())
                    written += 1
                    bar.update(1)
                ep.finish()
        finally:
            bar.close()
            writer.close()
    return CollectResult(out=cfg.out, backend=backend_name, frames_written=written, frames_total=total,
                         episodes=cfg.episodes, seconds=time.perf_counter() - start)


def _progress_bar(total: int, initial: int, enabled: bool):
    return tqdm(total=total, initial=initial, unit="frame", dynamic_ncols=True, disable=not enabled, file=sys.stderr,
                bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} frames [{elapsed}<{remaining}, {rate_fmt}]")
