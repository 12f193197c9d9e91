"""Skeletons on an image or a matplotlib Axes: labelled poses (COCO visibility) and found poses (scores).

Skeletons are drawn from a ``KeypointSet`` (``kset``).  Colours: the **left** side (joints named
``left_*``) in blue, the **right** side in orange, the rest and the links across the body in green; a
person facing the camera therefore shows blue on the image's right-hand side.

Two kinds of third column meet here.  Ground truth carries COCO visibility ``v`` (0 unlabelled,
1 occluded, 2 visible): ``draw_poses``.  Predictions carry the heatmap value at the joint (below 1;
0 for a joint never found) and a score per person: ``draw_found`` draws every person scoring at least
``min_score`` (``MIN_SCORE`` by default, the grouping's own detection threshold) and each of its found
joints.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from hhrnet.keypoints import COCO_17, KeypointSet
from hhrnet.sections import TestConfig

if TYPE_CHECKING:
    from matplotlib.axes import Axes

SIDE_COLOURS: dict[str, tuple[float, float, float]] = {
    "left": (0.12, 0.47, 0.71),
    "right": (1.0, 0.5, 0.05),
    "centre": (0.17, 0.63, 0.17),
}
# People drawn by default: those scoring at least the default detection threshold, the value a joint needs
# to be found at all (a person's score is the mean value of its joints).
MIN_SCORE = TestConfig().detection_threshold


def keypoint_side(name: str) -> str:
    """'left', 'right' or 'centre' for a keypoint name."""
    return name.split("_")[0] if name.startswith(("left_", "right_")) else "centre"


def _limb_side(edge: tuple[int, int], kset: KeypointSet) -> str:
    """A limb takes its joints' side when both agree (an arm), else it is a centre link (hips, shoulders)."""
    a, b = (keypoint_side(kset.names[i]) for i in edge)
    return a if a == b else "centre"


def as_poses(keypoints: Any, kset: KeypointSet = COCO_17) -> np.ndarray:
    """Any keypoint layout -> ``(N, K, 3)``: flat COCO lists (3K values), ``(K, 2|3)``, ``(N, K, 2|3)``.

    Without a visibility column every joint counts as visible.
    """
    arr = np.asarray(keypoints, np.float64)
    k = kset.num_joints
    if arr.size == 0:
        return np.zeros((0, k, 3))
    if arr.ndim == 1 or (arr.ndim == 2 and arr.shape[-1] == 3 * k):
        arr = arr.reshape(-1, k, 3)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.shape[-1] == 2:
        arr = np.concatenate([arr, np.full(arr.shape[:-1] + (1,), 2.0)], axis=-1)
    return arr


def found_poses(keypoints: Any, scores: Any, min_score: float = MIN_SCORE) -> np.ndarray:
    """Predicted people ``(P, K, 3+)`` with their scores -> the visibility layout of the people to draw.

    People scoring below ``min_score`` are left out; a found joint (value > 0) becomes visible (``v=2``),
    a joint never found unlabelled (``v=0``).
    """
    people = np.asarray(keypoints, np.float64)[..., :3]
    keep = np.asarray(scores, np.float64).reshape(-1) >= min_score
    if people.size == 0 or not keep.any():
        return np.zeros((0,) + people.shape[1:2] + (3,))
    drawn = people[keep].copy()
    drawn[..., 2] = np.where(drawn[..., 2] > 0, 2.0, 0.0)
    return drawn


def draw_found(target: "Axes | np.ndarray", keypoints: Any, scores: Any, min_score: float = MIN_SCORE,
               kset: KeypointSet = COCO_17, **style: Any):
    """Draw predicted people (``draw_poses`` on ``found_poses``): the drawn copy of an image, or the Axes."""
    return draw_poses(target, found_poses(keypoints, scores, min_score), kset=kset, **style)


def draw_poses(target: "Axes | np.ndarray", keypoints: Any, min_visibility: int = 1,
               joint_size: float | None = None, line_width: float | None = None, alpha: float = 1.0,
               kset: KeypointSet = COCO_17):
    """Draw labelled skeletons on a matplotlib Axes (returned) or on an RGB uint8 image (a drawn copy returned).

    Joints with COCO visibility ``v >= min_visibility`` are drawn; occluded joints (``v == 1``) are hollow.
    For predictions (heatmap values, not visibilities) use ``draw_found``.
    """
    poses = as_poses(keypoints, kset)
    if isinstance(target, np.ndarray):
        return _draw_on_image(target, poses, min_visibility, joint_size, line_width, kset)
    _draw_on_axes(target, poses, min_visibility, joint_size, line_width, alpha, kset)
    return target
def _draw_on_image(image: np.ndarray, poses: np.ndarray, min_visibility: int, joint_size: float | None,
                   line_width: float | None, kset: KeypointSet) -> np.ndarray:
    out = np.ascontiguousarray(image.copy())
    radius = max(1, int(round(joint_size or max(out.shape[:2]) / 160)))
    thickness = max(1, int(round(line_width or radius / 2)))
    colour = {side: tuple(int(255 * c) for c in rgb) for side, rgb in SIDE_COLOURS.items()}
    shift = 4  # cv2 draws with 4 fractional bits, so sub-pixel keypoints land where they belong

    def fixed(x: float, y: float) -> tuple[int, int]:
        return int(round(x * (1 << shift))), int(round(y * (1 << shift)))

    for pose in poses:
        for edge in kset.skeleton:
            p, q = pose[edge[0]], pose[edge[1]]
            if min(p[2], q[2]) >= min_visibility and min(p[2], q[2]) > 0:
                cv2.line(out, fixed(*p[:2]), fixed(*q[:2]), colour[_limb_side(edge, kset)], thickness, cv2.LINE_AA,
                         shift)
        for name, (x, y, v) in zip(kset.names, pose):
            if v >= min_visibility and v > 0:
                fill = -1 if v >= 2 else max(1, thickness)
                cv2.circle(out, fixed(x, y), radius << shift, colour[keypoint_side(name)], fill, cv2.LINE_AA, shift)
    return out


def _draw_on_axes(ax: "Axes", poses: np.ndarray, min_visibility: int, joint_size: float | None,
                  line_width: float | None, alpha: float, kset: KeypointSet) -> None:
    size = joint_size or 12.0
    width = line_width or 1.5
    for pose in poses:
        for edge in kset.skeleton:
            p, q = pose[edge[0]], pose[edge[1]]
            if min(p[2], q[2]) >= min_visibility and min(p[2], q[2]) > 0:
                ax.plot([p[0], q[0]], [p[1], q[1]], color=SIDE_COLOURS[_limb_side(edge, kset)], lw=width, alpha=alpha)
        for name, (x, y, v) in zip(kset.names, pose):
            if v >= min_visibility and v > 0:
                rgb = SIDE_COLOURS[keypoint_side(name)]
                ax.scatter([x], [y], s=size, color=rgb if v >= 2 else "none", edgecolors=[rgb], linewidths=1,
                           alpha=alpha, zorder=3)

