"""The semantic class set of the project: which CARLA tags the semantic field predicts, and the CARLA palette.

Captures carry CARLA 0.9.14+ semantic tags (the ``CityObjectLabel`` ids, 0..28; `sim_bridge.semantics`). The
semantic field of stage 1 predicts a smaller set of **classes**, each a group of CARLA tags (`SemanticClasses`);
everything a user sees is in CARLA tags again: a class is written as its *representative* tag (the first of its
group), so rendered labels, BEV maps and exports read like captured ones.

The default set, `DEFAULT_CLASSES` (index: name = representative tag, other tags of the group):

==  ==============  =================================================================
 0  road            1 Roads (25 Ground)
 1  road_line       24 RoadLine
 2  sidewalk        2 SideWalks
 3  building        3 Building (26 Bridge)
 4  wall_fence      4 Wall (5 Fence, 28 GuardRail)
 5  pole            6 Pole
 6  traffic_sign    8 TrafficSign (7 TrafficLight)
 7  vegetation      9 Vegetation
 8  terrain         10 Terrain
 9  sky             11 Sky
10  vehicle         14 Car (15 Truck, 16 Bus, 17 Train, 18 Motorcycle, 19 Bicycle)
11  person          12 Pedestrian (13 Rider)
12  other           22 Other (0 Unlabeled, 20 Static, 21 Dynamic, 23 Water, 27 RailTrack, any unknown tag)
==  ==============  =================================================================

`UNOBSERVED` (255) is the label of "no label here": a BEV cell no captured point (or no top-down ray) reached,
a voxel that is empty. It is not a CARLA tag (CARLA's 0 means "unlabelled surface", a real label).

The mapping lives here and nowhere else; a model with a semantic head records its class set in its config
(``SceneAEConfig.semantic_classes``), so a bundle names the classes it was trained with.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

__all__ = ["CARLA_PALETTE", "CARLA_TAG_NAMES", "DEFAULT_CLASSES", "SKY", "SemanticClasses", "UNOBSERVED",
           "colorize_tags"]

#: Label of "no label": an unobserved BEV cell or an empty voxel (not a CARLA tag).
UNOBSERVED = 255

#: The name the background class must have: a ray that leaves the field renders it (`SemanticClasses.sky_index`).
SKY = "sky"

#: CARLA 0.9.14+ ``CityObjectLabel`` names by tag id.
CARLA_TAG_NAMES = {
    0: "Unlabeled", 1: "Roads", 2: "SideWalks", 3: "Building", 4: "Wall", 5: "Fence", 6: "Pole",
    7: "TrafficLight", 8: "TrafficSign", 9: "Vegetation", 10: "Terrain", 11: "Sky", 12: "Pedestrian",
    13: "Rider", 14: "Car", 15: "Truck", 16: "Bus", 17: "Train", 18: "Motorcycle", 19: "Bicycle",
    20: "Static", 21: "Dynamic", 22: "Other", 23: "Water", 24: "RoadLine", 25: "Ground", 26: "Bridge",
    27: "RailTrack", 28: "GuardRail",
}

_PALETTE_ROWS = {
    0: (0, 0, 0), 1: (128, 64, 128), 2: (244, 35, 232), 3: (70, 70, 70), 4: (102, 102, 156), 5: (190, 153, 153),
    6: (153, 153, 153), 7: (250, 170, 30), 8: (220, 220, 0), 9: (107, 142, 35), 10: (152, 251, 152),
    11: (70, 130, 180), 12: (220, 20, 60), 13: (255, 0, 0), 14: (0, 0, 142), 15: (0, 0, 70), 16: (0, 60, 100),
    17: (0, 80, 100), 18: (0, 0, 230), 19: (119, 11, 32), 20: (110, 190, 160), 21: (170, 120, 50),
    22: (55, 90, 80), 23: (45, 60, 150), 24: (157, 234, 50), 25: (81, 0, 81), 26: (150, 100, 100),
    27: (230, 150, 140), 28: (180, 165, 180), UNOBSERVED: (255, 255, 255),
}
#: ``[256, 3]`` uint8: CARLA's CityScapes palette (``carla.ColorConverter.CityScapesPalette``) by tag; white for
#: `UNOBSERVED`, black for every other unused id.
CARLA_PALETTE = np.zeros((256, 3), np.uint8)
for _tag, _rgb in _PALETTE_ROWS.items():
    CARLA_PALETTE[_tag] = _rgb


def colorize_tags(tags: np.ndarray) -> np.ndarray:
    """CARLA tags ``[...]`` uint8 -> ``[..., 3]`` uint8 RGB in `CARLA_PALETTE` (the picture a person reads)."""
    return CARLA_PALETTE[np.asarray(tags, dtype=np.uint8)]


@dataclass(frozen=True)
class SemanticClasses:
    """An ordered class set: class ``k`` is ``names[k]``, written as CARLA tag ``tags[k][0]``, grouping ``tags[k]``.

    Attributes:
        names: ``K`` class names; exactly one is `SKY` (the background class of the semantic field).
        tags: ``K`` tuples of CARLA tags; every tag 0..255 belongs to at most one class. Tags of no class map to
            the class named ``"other"`` if there is one (else `from_tags` raises).
    """

    names: tuple[str, ...]
    tags: tuple[tuple[int, ...], ...]

    def __post_init__(self):
        if len(self.names) != len(self.tags) or len(self.names) < 2:
            raise ValueError(f"a class set needs >= 2 classes with one tag group each, got {len(self.names)} names "
                             f"and {len(self.tags)} tag groups")
        if self.names.count(SKY) != 1:
            raise ValueError(f"a class set needs exactly one class named {SKY!r} (what a ray leaving the field "
                             f"renders), got {self.names}")
        seen: dict[int, str] = {}
        for name, group in zip(self.names, self.tags):
            if not group:
                raise ValueError(f"class {name!r} has no CARLA tag")
            for t in group:
                if not 0 <= int(t) < UNOBSERVED:
                    raise ValueError(f"class {name!r}: tag {t} is not a CARLA tag (0..254)")
                if t in seen:
                    raise ValueError(f"tag {t} is in two classes: {seen[t]!r} and {name!r}")
                seen[int(t)] = name

    # ------------------------------------------------------------------------------------------ views
    @property
    def num_classes(self) -> int:
        """K, the number of classes (sky included)."""
        return len(self.names)

    @property
    def sky_index(self) -> int:
        """Index of the `SKY` class."""
        return self.names.index(SKY)

    @property
    def representative_tags(self) -> np.ndarray:
        """``[K]`` uint8: the CARLA tag each class is written as."""
        return np.array([g[0] for g in self.tags], np.uint8)

    @property
    def tag_to_class(self) -> np.ndarray:
        """``[256]`` int64 lookup: CARLA tag -> class index; unknown tags -> ``"other"`` (or -1 without one);
        `UNOBSERVED` -> -1."""
        fallback = self.names.index("other") if "other" in self.names else -1
        lut = np.full(256, fallback, np.int64)
        for k, group in enumerate(self.tags):
            lut[list(group)] = k
        lut[UNOBSERVED] = -1
        return lut

    # ------------------------------------------------------------------------------------------ conversions
    def from_tags(self, tags: np.ndarray) -> np.ndarray:
        """CARLA tags ``[...]`` (uint8) -> class indices ``[...]`` int64 (-1 for `UNOBSERVED`).

        Raises ValueError if a tag belongs to no class and the set has no ``"other"`` class."""
        idx = self.tag_to_class[np.asarray(tags, dtype=np.uint8)]
        if "other" not in self.names and (idx < 0).any() and not (np.asarray(tags)[idx < 0] == UNOBSERVED).all():
            bad = sorted(set(np.asarray(tags)[idx < 0].tolist()) - {UNOBSERVED})
            raise ValueError(f"CARLA tags {bad} belong to no class of {self.names}: add them to a class or add 'other'")
        return idx

    def to_tags(self, classes: np.ndarray) -> np.ndarray:
        """Class indices ``[...]`` (int; negative = none) -> CARLA tags ``[...]`` uint8 (representative tags;
        `UNOBSERVED` where negative)."""
        classes = np.asarray(classes)
        lut = np.append(self.representative_tags, np.uint8(UNOBSERVED))
        return lut[np.where(classes < 0, self.num_classes, classes)]

    def normalise_tags(self, tags: np.ndarray) -> np.ndarray:
        """CARLA tags -> the representative tag of their class (captured labels in the form rendered labels take)."""
        return self.to_tags(self.from_tags(tags))

    # ------------------------------------------------------------------------------------------ persistence
    def to_config(self) -> tuple[tuple[str, tuple[int, ...]], ...]:
        """The class set as ``((name, tags), ...)`` — the form ``SceneAEConfig.semantic_classes`` stores."""
        return tuple((n, tuple(int(t) for t in g)) for n, g in zip(self.names, self.tags))

    @classmethod
    def from_config(cls, entries: Sequence[Sequence]) -> "SemanticClasses":
        """Inverse of `to_config` (also accepts the lists JSON gives back)."""
        entries = list(entries)
        return cls(names=tuple(str(e[0]) for e in entries), tags=tuple(tuple(int(t) for t in e[1]) for e in entries))


#: The project's class set (module docstring).
DEFAULT_CLASSES = SemanticClasses(
    names=("road", "road_line", "sidewalk", "building", "wall_fence", "pole", "traffic_sign", "vegetation",
           "terrain", SKY, "vehicle", "person", "other"),
    tags=((1, 25), (24,), (2,), (3, 26), (4, 5, 28), (6,), (8, 7), (9,), (10,), (11,), (14, 15, 16, 17, 18, 19),
          (12, 13), (22, 0, 20, 21, 23, 27)),
)
