"""Long ego drives through a built-in town, with their ground-truth map (`sim_bridge route`).

`town_route(town, length_m, seed=s)` is the path the procedural simulator's ego drives (`driving.Route`: the
rightmost lane of each road, traffic keeping right, a seeded choice of road at every junction, cubic connectors
through junctions), sampled at constant speed: pose k is ``k · speed/rate`` metres along the lanes, at time
``k / rate`` s. Without `start` the drive begins where an episode of seed `s` spawns its ego (`driving.Traffic`),
so the ego of episode e of ``sim_bridge collect --seed S`` drives this path with ``seed =
episode_seed(S, e)`` and ``world_seed = S`` (at its own, varying speed). Poses are ``ego_to_world [T, 4, 4]``
float64 in our right-handed world (ego x forward, y left, z up; the road surface is z = 0, so z = 0), heading the
direction of the path over a 3 m window (the simulator's heading).

`route_bev(town, route)` is the town seen from above over an axis-aligned box of the world around the route
(`TownBEV`'s top-down rays with the identity as "ego" pose, so the map's frame is the world frame): ``[Y, X]``
uint8 CARLA tags (255 unobserved), cell ``(iy, ix)`` covering ``x ∈ xmin + [ix, ix+1)·cell``, ``y ∈ ymin +
[iy, iy+1)·cell``; the box is the route's x/y range grown by the margin and snapped outwards to whole cells.

Files (`write_route`): ``trajectory.json`` in the SDK's trajectory format (the twin of
`nfldm_sdk.cameras.trajectory.Trajectory.to_json`, read by ``Trajectory.load``; sim_bridge does not import the SDK,
a test holds them equal), plus the town, seeds, speed and rate; ``map.npy`` and ``map.png`` with their shared
sidecar ``map.json`` (`sim_bridge.bev.write_bev`'s files: ``BEVMap.load("DIR/map.npy")`` reads them, bounds in
world metres).
"""
from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sim_bridge import semantics as sem
from sim_bridge.bev import BEV_Z_MIN, UNOBSERVED, TownBEV, write_bev
from sim_bridge.errors import SimBridgeError
from sim_bridge.towns import check_town

# The procedural town (and through its package Open3D) loads inside the functions that drive it (start-up time:
# the `sim_bridge` CLI imports this module only inside `sim_bridge route`, but scripts may import it early).

__all__ = ["MAX_MAP_CELLS", "MAX_POSES", "ROUTE_FILES", "TRAJECTORY_FORMAT", "TRAJECTORY_FORMAT_VERSION", "RouteError",
           "DRIVABLE_TAGS", "TownRoute", "check_out_dir", "lane_route", "max_route_length", "road_net", "route_bev", "tags_under",
           "town_route", "write_route"]

#: The SDK's trajectory file format (twins of `nfldm_sdk.cameras.trajectory`'s constants; a test holds them equal).
TRAJECTORY_FORMAT = "nfldm.trajectory"
TRAJECTORY_FORMAT_VERSION = 1
TRAJECTORY_CONVENTIONS = ("timestamps [T] seconds, strictly increasing; ego_to_world [T,4,4] float64 rigid, ego x "
                          "forward, y left, z up, world right-handed z up, metres")
#: The files `write_route` writes into its folder (and the only ones ``overwrite`` replaces).
ROUTE_FILES = ("trajectory.json", "map.npy", "map.png", "map.json")
#: Most poses a route may have (a ~100 MB trajectory file): past it, raise the speed or lower the rate.
MAX_POSES = 200_000
#: Most cells a route map may have (~100 MB of rays while casting): past it, use larger cells or a smaller margin.
MAX_MAP_CELLS = 16_000_000
#: Farthest a `start` may be from a lane centre line, metres.
START_TOLERANCE_M = 15.0
#: Rays per strip of a route map: its rows are cast in strips of about this many cells (memory; the progress bar).
_STRIP_CELLS = 1 << 18


class RouteError(SimBridgeError, ValueError):
    """A bad route request (town, length, speed, start, map, output folder); the message names the fix."""


@dataclass(frozen=True, eq=False)  # eq=False: arrays have no single truth value
class TownRoute:
    """An ego drive through a built-in town (module docstring).

    Attributes:
        town: CARLA town name; seed: the route's seed (start lane, junction choices); world_seed: the town's.
        speed_mps: constant speed, m/s; rate_hz: poses per second.
        timestamps: ``[T]`` float64 seconds, ``k / rate_hz``.
        ego_to_world: ``[T, 4, 4]`` float64 rigid, our right-handed world (z up, metres).
    """

    town: str
    seed: int
    world_seed: int
    speed_mps: float
    rate_hz: float
    timestamps: np.ndarray
    ego_to_world: np.ndarray

    def __len__(self) -> int:
        return len(self.timestamps)

    @property
    def length_m(self) -> float:
        """Metres driven along the lanes from the first pose to the last: ``(T − 1) · speed / rate``."""
        return (len(self) - 1) * self.speed_mps / self.rate_hz

    @property
    def positions(self) -> np.ndarray:
        """``[T, 3]`` ego origins in the world, metres."""
        return self.ego_to_world[:, :3, 3]

    @property
    def path_length(self) -> float:
        """Length of the polyline through the positions, metres (a little under `length_m` in curves)."""
        return float(np.linalg.norm(np.diff(self.positions, axis=0), axis=-1).sum())

    def to_json(self, source: str | None = None) -> dict:
        """The SDK's trajectory JSON (``format``, ``format_version``, ``conventions``, ``timestamps [T]``,
        ``ego_to_world [T][4][4]``) plus ``town``, ``seed``, ``world_seed``, ``speed_mps``, ``rate_hz``,
        ``length_m`` and `source` (keys ``Trajectory.from_json`` ignores)."""
        return {"format": TRAJECTORY_FORMAT, "format_version": TRAJECTORY_FORMAT_VERSION,
                "conventions": TRAJECTORY_CONVENTIONS, "timestamps": self.timestamps.tolist(),
                "ego_to_world": self.ego_to_world.tolist(), "town": self.town, "seed": self.seed,
                "world_seed": self.world_seed, "speed_mps": self.speed_mps, "rate_hz": self.rate_hz,
                "length_m": self.length_m, "source": source}


def _town(town: str) -> str:
    try:
        return check_town(town)
    except ValueError as e:
        raise RouteError(str(e)) from e


def _positive(value, name: str, option: str) -> float:
    v = float(value)
    if not (math.isfinite(v) and v > 0):
        raise RouteError(f"{name} must be a positive number of {option}, got {value!r}")
    return v


@functools.lru_cache(maxsize=4)
def road_net(town: str, world_seed: int = 0):
    """The lanes of procedural town `town` built with `world_seed` (`driving.RoadNet`; cached per town and seed)."""
    # start-up time: the procedural package (Open3D, numba) loads only when a route is driven
    from sim_bridge.backends.procedural.driving import RoadNet
    from sim_bridge.backends.procedural.layout import build_layout
    from sim_bridge.backends.procedural.roads import build_roads

    layout = build_layout(_town(town), int(world_seed))
    return RoadNet(layout, build_roads(layout))


def max_route_length(town: str, world_seed: int = 0) -> float:
    """The longest route, metres: every road of the town once in each direction (a longer drive only repeats)."""
    return 2.0 * sum(e.length for e in road_net(town, world_seed).layout.edges)


def _nearest_lane(net, start) -> tuple[object, float]:
    """The rightmost lane (`LaneRef`) whose centre line passes nearest to `start`, and the arc length there (m).

    `start`: (x, y) or (x, y, yaw radians, counter-clockwise from +x) in our world, or an ``ego_to_world [4, 4]``;
    with a heading only lanes running within 90° of it count."""
    from sim_bridge.backends.procedural.driving import STEP, LaneRef  # start-up time: with the procedural town

    a = np.asarray(start, np.float64)
    if a.shape == (4, 4):
        a = np.array([a[0, 3], a[1, 3], math.atan2(a[1, 0], a[0, 0])])
    if a.shape not in ((2,), (3,)) or not np.isfinite(a).all():
        raise RouteError(f"start must be (x, y), (x, y, yaw radians) or an ego_to_world 4x4 in the world frame, "
                         f"got {start!r}")
    best = (math.inf, None, 0)
    for k, e in enumerate(net.layout.edges):
        for forward in (True, False):
            ref = LaneRef(k, forward, e.style.lanes - 1)
            pts = net.lane(ref)[:-2]                  # a route needs two points after its start
            d = np.linalg.norm(pts - a[:2], axis=1)
            if len(a) == 3:
                u = np.diff(net.lane(ref), axis=0)[: len(pts)]
                d = np.where(u @ [math.cos(a[2]), math.sin(a[2])] > 0, d, np.inf)
            i = int(np.argmin(d))
            if d[i] < best[0]:
                best = (float(d[i]), ref, i)
    if best[0] > START_TOLERANCE_M:
        x0, y0, x1, y1 = net.layout.extent
        raise RouteError(f"start ({a[0]:g}, {a[1]:g}) is {best[0]:.0f} m from the nearest lane"
                         f"{' heading that way' if len(a) == 3 else ''} of {net.layout.name} (at most "
                         f"{START_TOLERANCE_M:g} m): pick a point on a road (its roads span x [{x0:.0f}, {x1:.0f}], "
                         f"y [{y0:.0f}, {y1:.0f}] m) or leave start out")
    return best[1], best[2] * STEP


def lane_route(town: str, seed: int = 0, *, world_seed: int = 0, start=None):
    """The ego's `driving.Route` of seed `seed` through `town` (world seed `world_seed`): from the spawn of an
    episode of that seed (`driving.Traffic`), or from the rightmost lane nearest to `start` (see `_nearest_lane`),
    with the ego's junction generator ``default_rng([seed, 0])`` either way."""
    # start-up time: the procedural package loads only when a route is driven
    from sim_bridge.backends.procedural.driving import Route, Traffic
    from sim_bridge.backends.procedural.placement import CAR_COLOURS

    net = road_net(town, int(world_seed))
    if start is None:
        return Traffic(net, int(seed), 0, CAR_COLOURS).vehicles[0].route
    ref, s0 = _nearest_lane(net, start)
    return Route(net, ref, s0, np.random.default_rng([int(seed), 0]), rightmost=True)


def town_route(town: str, length_m: float, *, seed: int = 0, speed_mps: float = 10.0, rate_hz: float = 10.0,
               start=None, world_seed: int = 0) -> TownRoute:
    """An ego drive of `length_m` metres along the lanes of built-in town `town` (module docstring).

    Args:
        town: a CARLA town name (`sim_bridge towns`); seed: start lane and junction choices; world_seed: the town.
        length_m: metres along the lanes, > 0, at most `max_route_length`; the last pose is the last whole tick.
        speed_mps, rate_hz: constant speed (m/s) and poses per second; consecutive poses are speed/rate m apart
            along the path.
        start: None (an episode's spawn), (x, y), (x, y, yaw rad) or an ``ego_to_world [4, 4]`` in the world frame.
    Returns:
        a `TownRoute`: ``timestamps [T]`` s and ``ego_to_world [T, 4, 4]``, ``T = ⌊length · rate / speed⌋ + 1``.
    Raises:
        RouteError: an unknown town, a bad length, speed, rate or start (the message names the fix).
    """
    from sim_bridge.backends.procedural.driving import HEADING_WINDOW  # start-up time: with the procedural town

    town = _town(town)
    length_m = _positive(length_m, "length_m", "metres (--length)")
    speed = _positive(speed_mps, "speed_mps", "metres per second (--speed)")
    rate = _positive(rate_hz, "rate_hz", "poses per second (--rate)")
    longest = max_route_length(town, world_seed)
    if length_m > longest:
        raise RouteError(f"a {length_m:g} m route is longer than {town}'s network allows ({longest:.0f} m: every road "
                         "once each way): ask for a shorter --length, join routes of several --seed values, or "
                         "drive a larger town (sim_bridge towns)")
    step = speed / rate
    n = int(math.floor(length_m / step + 1e-9)) + 1
    if n < 2:
        raise RouteError(f"a {length_m:g} m route is shorter than one tick ({step:g} m at {speed:g} m/s and "
                         f"{rate:g} Hz): ask for a longer --length or a higher --rate")
    if n > MAX_POSES:
        raise RouteError(f"{length_m:g} m at {step:g} m per tick is {n} poses (at most {MAX_POSES}): raise --speed "
                         "or lower --rate")
    route = lane_route(town, seed, world_seed=world_seed, start=start)
    s = np.arange(n) * step
    route.ensure(s[-1] + HEADING_WINDOW + 1.0)
    # `Route.pose`, vectorised: the position on the path at s, the heading over s ± HEADING_WINDOW
    at = lambda q, c: np.interp(q, route.s, route.pts[:, c])  # noqa: E731
    yaw = np.arctan2(at(s + HEADING_WINDOW, 1) - at(s - HEADING_WINDOW, 1),
                     at(s + HEADING_WINDOW, 0) - at(s - HEADING_WINDOW, 0))
    m = np.zeros((n, 4, 4))
    m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1] = np.cos(yaw), -np.sin(yaw), np.sin(yaw), np.cos(yaw)
    m[:, 0, 3], m[:, 1, 3] = at(s, 0), at(s, 1)
    m[:, 2, 2] = m[:, 3, 3] = 1.0
    return TownRoute(town, int(seed), int(world_seed), speed, rate, np.arange(n) / rate, m)


def route_bev(town: str, route, *, margin_m: float = 40.0, cell_m: float = 1.0, seed: int | None = None,
              samples: int = 1, progress: bool = False) -> tuple[np.ndarray, tuple[tuple[float, float], tuple[float, float]]]:
    """The ground-truth map of `town` around a route, in the world frame (module docstring).

    Args:
        route: a `TownRoute` or ``ego_to_world [T, 4, 4]`` poses in the world.
        margin_m: metres of map beyond the route's x/y range on every side; cell_m: cell size, metres.
        seed: the town's world seed (default: the route's `world_seed`, 0 for bare poses).
        samples: rays per cell side (`TownBEV.at_ego`); progress: a progress bar over the strips cast.
    Returns:
        ``tags [Y, X]`` uint8 CARLA tags / 255 and ``bounds ((xmin, ymin), (xmax, ymax))`` world metres.
    """
    town = _town(town)
    if isinstance(route, TownRoute):
        if route.town != town:
            raise RouteError(f"the route drives {route.town}, not {town}: map the route's own town")
        if seed is not None and int(seed) != route.world_seed:
            raise RouteError(f"the route was driven in world seed {route.world_seed}, not {seed}: leave seed out")
        poses, seed = route.ego_to_world, route.world_seed
    else:
        poses = np.asarray(route, np.float64)
        if poses.ndim != 3 or poses.shape[1:] != (4, 4) or not len(poses) or not np.isfinite(poses).all():
            raise RouteError(f"route must be a TownRoute or finite ego_to_world [T, 4, 4] poses, got shape {poses.shape}")
    cell = _positive(cell_m, "cell_m", "metres (--cell)")
    if not (math.isfinite(float(margin_m)) and float(margin_m) >= 0):
        raise RouteError(f"margin_m must be a number of metres >= 0 (--margin), got {margin_m!r}")
    xy = poses[:, :2, 3]
    lo = np.floor((xy.min(0) - float(margin_m)) / cell) * cell
    X, Y = (int(v) for v in np.ceil((xy.max(0) + float(margin_m) - lo) / cell - 1e-9))
    X, Y = max(X, 1), max(Y, 1)
    if X * Y > MAX_MAP_CELLS:
        raise RouteError(f"the map would be {Y}x{X} cells (at most {MAX_MAP_CELLS}): use larger cells (--cell) or a "
                         "smaller --margin")
    bounds = ((float(lo[0]), float(lo[1])), (float(lo[0] + X * cell), float(lo[1] + Y * cell)))
    caster = TownBEV.for_town(town, int(seed or 0))
    tags = np.empty((Y, X), np.uint8)
    rows = max(1, _STRIP_CELLS // (X * samples * samples))
    strips = range(0, Y, rows)
    from tqdm.auto import tqdm  # start-up time: tqdm only when a map is cast

    for r0 in tqdm(strips, desc="map", unit="strip", disable=not progress or len(strips) < 2, leave=False):
        r1 = min(r0 + rows, Y)
        box = ((bounds[0][0], bounds[0][1] + r0 * cell), (bounds[1][0], bounds[0][1] + r1 * cell))
        # the identity "ego": the map's frame is the world's (z = 0 is the road surface)
        tags[r0:r1] = caster.at_ego(np.eye(4), grid_yx=(r1 - r0, X), box=box, z_min=BEV_Z_MIN, samples=samples)
    return tags, bounds


def tags_under(tags: np.ndarray, bounds, xy: np.ndarray) -> np.ndarray:
    """``[N]`` uint8 tags of the cells of map ``tags [Y, X]`` over `bounds` under world points ``xy [N, 2]``
    (255 outside the map)."""
    tags, xy = np.asarray(tags), np.asarray(xy, np.float64).reshape(-1, 2)
    (x0, y0), (x1, y1) = np.asarray(bounds, np.float64)
    Y, X = tags.shape
    ix = np.floor((xy[:, 0] - x0) / (x1 - x0) * X).astype(np.int64)
    iy = np.floor((xy[:, 1] - y0) / (y1 - y0) * Y).astype(np.int64)
    inside = (ix >= 0) & (ix < X) & (iy >= 0) & (iy < Y)
    out = np.full(len(xy), UNOBSERVED, np.uint8)
    out[inside] = tags[iy[inside], ix[inside]]
    return out


#: The tags a drivable cell holds (lane markings are paint on the road, so the town's maps read them as road).
DRIVABLE_TAGS = (sem.ROAD, sem.ROADLINE)


def check_out_dir(out_dir: str | Path, overwrite: bool = False) -> Path:
    """`out_dir` as a Path after checking it may be written: absent or an empty folder, or with `overwrite` a
    folder (whose `ROUTE_FILES` get replaced; nothing else in it is touched). Raises `RouteError` otherwise."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise RouteError(f"--out {out} is a file: a route is a folder (trajectory.json, map.npy, map.json); choose "
                         "another --out")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise RouteError(f"--out {out} exists and is not empty: choose another --out or pass --overwrite")
    return out


def write_route(out_dir: str | Path, route: TownRoute, bev=None, *, overwrite: bool = False,
                source: str | None = None) -> list[Path]:
    """Write `route` as ``out_dir/trajectory.json`` and, with ``bev = (tags [Y, X], bounds)`` (`route_bev`),
    ``out_dir/map.npy`` + ``map.png`` + ``map.json`` (module docstring); `source` is the command that made them.
    Stale route files of an earlier write are removed first (with `overwrite`). Returns the paths written."""
    out = check_out_dir(out_dir, overwrite)
    for name in ROUTE_FILES:
        if (out / name).is_file():
            (out / name).unlink()
    out.mkdir(parents=True, exist_ok=True)
    traj = out / "trajectory.json"
    traj.write_text(json.dumps(route.to_json(source)))
    written = [traj]
    if bev is not None:
        tags, bounds = bev
        meta = dict(name=f"{route.town} route, seed {route.seed}", source=source,
                    extra={"town": route.town, "seed": route.seed, "world_seed": route.world_seed, "frame": "world"})
        written.append(write_bev(out / "map.npy", tags, bounds, **meta))
        written.append(write_bev(out / "map.png", tags, bounds, overwrite=True, **meta))  # the same sidecar again
        written.append(out / "map.json")
    return written
