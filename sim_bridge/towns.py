"""CARLA town names accepted by both backends, with the character of each town.

The CARLA backend loads the map of that name; the procedural backend builds its own deterministic layout
with the same character (see `sim_bridge.backends.procedural.layout`).
"""
from __future__ import annotations

#: CARLA town name -> one-line description of its character.
TOWNS: dict[str, str] = {
    "Town01": "small town: a grid of two-lane streets with mostly T-junctions and low buildings",
    "Town02": "small residential town: short blocks, houses with gardens, many trees",
    "Town03": "larger city: a roundabout centre, multi-lane avenues and mixed blocks rising downtown",
    "Town04": "highway loop with ramps around a small town in the hills",
    "Town05": "grid city with multi-lane roads, wide junctions and mid-rise blocks",
    "Town06": "long multi-lane highways with few buildings and exits",
    "Town07": "rural village: narrow winding country roads, fields, farm houses and many trees",
    "Town10HD": "dense downtown with tall blocks, wide avenues and a waterfront",
}


def check_town(name: str) -> str:
    """Return `name` if it is a known town, else raise ValueError listing the towns.

    Args:
        name: a CARLA town name, e.g. ``"Town03"`` (case-sensitive, CARLA's spelling).
    Returns:
        the same name.
    """
    if name not in TOWNS:
        raise ValueError(f"unknown town {name!r}: choose one of {', '.join(TOWNS)}")
    return name
