"""Keypoint sets: the one place that knows a skeleton's joints, flip pairs, OKS sigmas and grouping order.

Everything else receives a ``KeypointSet`` (a config names it in ``data.keypoints``), so adding a set
is one ``register(KeypointSet(...))`` below or in user code.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["KeypointSet", "COCO_17", "CROWDPOSE_14", "DEFAULT_KEYPOINTS", "PROTOCOLS", "keypoint_set",
           "keypoint_set_for_names", "register", "registered"]

# How a set's predictions are scored (``hhrnet.evaluation``): COCO's keypoint AP with area ranges
# (pycocotools), or CrowdPose's AP with easy / medium / hard image splits by crowd index (xtcocotools).
PROTOCOLS: tuple[str, ...] = ("coco", "crowdpose")


@dataclass(frozen=True)
class KeypointSet:
    """Names, skeleton, left/right pairs, OKS sigmas and grouping order of one kind of keypoints.

    Indices are 0-based; ``coco_category()`` writes COCO's 1-based skeleton.  ``joint_order`` is the order
    in which grouping matches joints (the most reliable first, since they found the people); None is
    the natural order.  ``area_bounds`` are the sqrt(area) limits of small / medium / large objects
    (None: the protocol has no area ranges).  ``protocol`` names the evaluation (``PROTOCOLS``).
    """

    name: str
    names: tuple[str, ...]
    skeleton: tuple[tuple[int, int], ...]
    flip_pairs: tuple[tuple[int, int], ...]
    sigmas: tuple[float, ...]
    joint_order: tuple[int, ...] | None = None
    area_bounds: tuple[float, float] | None = (32.0, 96.0)
    category: str = "person"
    category_id: int = 1
    protocol: str = "coco"

    def __post_init__(self) -> None:
        k = len(self.names)
        for field in ("names", "skeleton", "flip_pairs", "sigmas", "area_bounds"):
            if getattr(self, field) is not None:
                object.__setattr__(self, field, tuple(tuple(v) if isinstance(v, list) else v
                                                      for v in getattr(self, field)))
        order = tuple(range(k)) if self.joint_order is None else tuple(self.joint_order)
        object.__setattr__(self, "joint_order", order)
        problems = []
        if len(set(self.names)) != k:
            problems.append("joint names repeat")
        if len(self.sigmas) != k:
            problems.append(f"{len(self.sigmas)} sigmas for {k} joints")
        if sorted(order) != list(range(k)):
            problems.append(f"joint_order {order} is not a permutation of 0..{k - 1}")
        paired = [j for pair in self.flip_pairs for j in pair]
        if len(set(paired)) != len(paired) or any(len(p) != 2 or p[0] == p[1] for p in self.flip_pairs):
            problems.append("flip_pairs must be disjoint pairs of two different joints")
        if any(not 0 <= j < k for edge in (*self.skeleton, *self.flip_pairs) for j in edge):
            problems.append(f"skeleton / flip_pairs index outside 0..{k - 1}")
        if self.protocol not in PROTOCOLS:
            problems.append(f"protocol {self.protocol!r} is not one of {', '.join(PROTOCOLS)}")
        if problems:
            raise ValueError(f"keypoint set {self.name!r}: " + "; ".join(problems))

    @property
    def num_joints(self) -> int:
        return len(self.names)

    def __len__(self) -> int:
        return len(self.names)

    @property
    def flip_index(self) -> tuple[int, ...]:
        """Channel ``k`` of a mirrored image holds joint ``flip_index[k]``; unpaired joints map to themselves."""
        index = list(range(self.num_joints))
        for a, b in self.flip_pairs:
            index[a], index[b] = b, a
        return tuple(index)

    def index(self, name: str) -> int:
        """Position of the joint called ``name``."""
        try:
            return self.names.index(name)
        except ValueError:
            raise KeyError(f"keypoint set {self.name!r} has no joint {name!r}; its joints: "
                           f"{', '.join(self.names)}") from None

    def sigma(self, name: str) -> float:
        """The OKS sigma of the joint called ``name``."""
        return self.sigmas[self.index(name)]

    def coco_category(self) -> dict:
        """The COCO ``categories`` entry (1-based skeleton), as COCO-format annotation files carry it."""
        return {"id": self.category_id, "name": self.category, "supercategory": self.category,
                "keypoints": list(self.names), "skeleton": [[a + 1, b + 1] for a, b in self.skeleton]}


_REGISTRY: dict[str, KeypointSet] = {}


def register(kset: KeypointSet) -> KeypointSet:
    """Make ``kset`` available to configs by name (``data.keypoints``); re-registering a name replaces it."""
    _REGISTRY[kset.name] = kset
    return kset


def registered() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def keypoint_set_for_names(names: "list[str] | tuple[str, ...]") -> KeypointSet | None:
    """The registered set whose joint names are ``names`` in that order (a COCO file's category), or None."""
    return next((k for k in _REGISTRY.values() if k.names == tuple(names)), None)


def keypoint_set(name: str | KeypointSet) -> KeypointSet:
    """The registered set called ``name`` (a ``KeypointSet`` is returned as is)."""
    if isinstance(name, KeypointSet):
        return name
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown keypoint set {name!r}; registered: {', '.join(_REGISTRY)}") from None


COCO_17 = register(KeypointSet(
    name="coco",
    names=("nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
           "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee",
           "right_knee", "left_ankle", "right_ankle"),
    skeleton=((15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7), (6, 8),
              (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6)),
    flip_pairs=((1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16)),
    # pycocotools' values (tenths of the published per-joint constants, divided the way it does)
    sigmas=tuple(s / 10.0 for s in (.26, .25, .25, .35, .35, .79, .79, .72, .72, .62, .62, 1.07, 1.07, .87, .87,
                                    .89, .89)),
    # the official order: head, shoulders and hips first, then the limbs
    joint_order=(0, 1, 2, 3, 4, 5, 6, 11, 12, 7, 8, 9, 10, 13, 14, 15, 16),
))

# CrowdPose (Li et al., CVPR 2019): COCO's twelve limb joints, then the top of the head and the neck,
# named as in its annotation files.  Its evaluation toolkit scores OKS with COCO's sigmas for the twelve
# and .79 (the shoulders' value) for head and neck, with no area ranges (the box area x 0.53 stands in
# for the segment area CrowdPose does not have).
CROWDPOSE_14 = register(KeypointSet(
    name="crowdpose",
    names=("left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
           "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle", "head", "neck"),
    skeleton=((12, 13), (13, 0), (13, 1), (0, 2), (2, 4), (1, 3), (3, 5), (0, 6), (1, 7), (6, 7), (6, 8),
              (8, 10), (7, 9), (9, 11)),
    flip_pairs=((0, 1), (2, 3), (4, 5), (6, 7), (8, 9), (10, 11)),
    sigmas=tuple(s / 10.0 for s in (.79, .79, .72, .72, .62, .62, 1.07, 1.07, .87, .87, .89, .89, .79, .79)),
    # The official code (lib/core/group.py) keeps COCO's 17-entry order and matches the first
    # NUM_JOINTS of it, so 14 joints are matched in the order of its first 14 entries.
    joint_order=(0, 1, 2, 3, 4, 5, 6, 11, 12, 7, 8, 9, 10, 13),
    area_bounds=None,
    protocol="crowdpose",
))

DEFAULT_KEYPOINTS = COCO_17.name
