"""CrowdPose's crowd index: how much of each person's box is filled with other people's joints.

CrowdPose (Li et al., CVPR 2019) rates an image by averaging, over its annotated people, the number of
*other* people's labelled joints that lie inside a person's bounding box divided by that person's own
number of labelled joints.  Its evaluator splits the images at ``CROWD_INDEX_SPLITS``: easy below the
first limit, hard from the second on, medium between (the published AP(E), AP(M), AP(H)).
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import numpy as np

# The limits the CrowdPose evaluator applies (its toolkit, as carried by xtcocotools: easy < 0.2,
# medium < 0.8, hard otherwise); the CrowdPose paper describes the splits more loosely.
CROWD_INDEX_SPLITS: tuple[float, float] = (0.2, 0.8)
SPLIT_NAMES: tuple[str, str, str] = ("easy", "medium", "hard")


def _labelled_joints(ann: Mapping[str, Any]) -> np.ndarray:
    keypoints = np.asarray(ann["keypoints"], np.float64).reshape(-1, 3)
    return keypoints[keypoints[:, 2] > 0, :2]


def crowd_index(annotations: Iterable[Mapping[str, Any]]) -> float:
    """The crowd index of one image from its annotations (``keypoints`` and ``bbox`` [x, y, w, h]).

    People are the non-crowd annotations with at least one labelled joint (v > 0); a joint is inside a
    box when ``x0 <= x <= x0 + w`` and ``y0 <= y <= y0 + h``.  An image without people has index 0.
    """
    people = [(np.asarray(a["bbox"], np.float64), _labelled_joints(a)) for a in annotations
              if not a.get("iscrowd", 0)]
    people = [(box, joints) for box, joints in people if len(joints)]
    if not people:
        return 0.0
    ratios = []
    for i, (box, own) in enumerate(people):
        x0, y0, w, h = box
        others = np.concatenate([joints for j, (_, joints) in enumerate(people) if j != i] or [np.zeros((0, 2))])
        inside = ((others[:, 0] >= x0) & (others[:, 0] <= x0 + w) & (others[:, 1] >= y0) & (others[:, 1] <= y0 + h))
        ratios.append(np.count_nonzero(inside) / len(own))
    return float(np.mean(ratios))


def crowd_split(index: float, limits: tuple[float, float] = CROWD_INDEX_SPLITS) -> str:
    """``easy``, ``medium`` or ``hard`` for a crowd index, with the evaluator's limits."""
    return SPLIT_NAMES[0] if index < limits[0] else SPLIT_NAMES[1] if index < limits[1] else SPLIT_NAMES[2]


def images_by_split(images: Iterable[Mapping[str, Any]]) -> dict[str, list[int]]:
    """Image ids of a CrowdPose-format ``images`` list (each with ``crowdIndex``) per split."""
    out: dict[str, list[int]] = {name: [] for name in SPLIT_NAMES}
    for image in images:
        out[crowd_split(float(image["crowdIndex"]))].append(int(image["id"]))
    return out
