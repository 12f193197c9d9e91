"""Training targets: Gaussian heatmaps, associative-embedding joint indices and loss masks.

Everything here works on joints already mapped to one output resolution ``r`` (pixels of an
``r x r`` map), shaped ``(people, K, 3)`` as ``(x, y, visibility)`` or ``(people, K, 4)`` with a
per-person sigma in column 3 (stored on every joint; the first joint's value is the one used, as in
the reference).  The rules follow the official implementation exactly, because the heatmap peaks
and their sub-pixel offsets are what the network learns:

* a joint counts if ``v > 0`` and its **truncated** position ``(int(x), int(y))`` lies in ``[0, r)``
  (so ``x = -0.5`` still counts: ``int(-0.5) == 0``);
* the Gaussian patch has ``6σ+3`` samples per side, its centre sample is ``3σ+1``, and it is pasted so
  that its corner lands on ``round(int(x) - 3σ - 1)`` (numpy's round-half-to-even, which matters for
  half-integer σ); people are combined with an element-wise max.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import numpy as np
from pycocotools import mask as mask_utils


def _counted_joints(joints: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Truncated integer positions ``(x, y)`` and the boolean "this joint makes a target" array."""
    xi = np.trunc(joints[..., 0]).astype(np.int64)
    yi = np.trunc(joints[..., 1]).astype(np.int64)
    counted = (joints[..., 2] > 0) & (xi >= 0) & (yi >= 0) & (xi < size) & (yi < size)
    return xi, yi, counted


def _paste_gaussians(joints: np.ndarray, size: int, person_sigma: np.ndarray) -> np.ndarray:
    """All patches at once: one ``(n, L, L)`` grid of samples, scattered into the maps with a max."""
    num_joints = joints.shape[1]
    heatmaps = np.zeros((num_joints, size, size), dtype=np.float32)
    xi, yi, counted = _counted_joints(joints, size)
    person, joint = np.nonzero(counted)
    if person.size == 0:
        return heatmaps
    sigma = person_sigma[person].astype(np.float64)[:, None]
    x, y = xi[person, joint][:, None], yi[person, joint][:, None]
    # Patch geometry of the reference: corners rounded half-to-even, sample count = len(arange(6σ+3)).
    left, top = np.round(x - 3 * sigma - 1).astype(np.int64), np.round(y - 3 * sigma - 1).astype(np.int64)
    right, bottom = np.round(x + 3 * sigma + 2).astype(np.int64), np.round(y + 3 * sigma + 2).astype(np.int64)
    samples = np.ceil(6 * sigma + 3).astype(np.int64)
    offsets = np.arange(int(max((right - left).max(), (bottom - top).max())))[None, :]
    px, py = left + offsets, top + offsets  # (n, L) pixel columns / rows covered by each patch
    ok_x = (px >= 0) & (px < size) & (px < right) & (offsets < samples)
    ok_y = (py >= 0) & (py < size) & (py < bottom) & (offsets < samples)
    centre = 3 * sigma + 1
    dx2, dy2 = (offsets - centre) ** 2, (offsets - centre) ** 2  # same offsets on both axes
    values = np.exp(-(dy2[:, :, None] + dx2[:, None, :]) / (2 * sigma[:, :, None] ** 2))
    keep = ok_y[:, :, None] & ok_x[:, None, :]
    n, length = px.shape
    channel = np.broadcast_to(joint[:, None, None], (n, length, length))
    rows = np.broadcast_to(py[:, :, None], (n, length, length))
    cols = np.broadcast_to(px[:, None, :], (n, length, length))
    np.maximum.at(heatmaps, (channel[keep], rows[keep], cols[keep]), values[keep].astype(np.float32))
    return heatmaps


def fixed_sigma_heatmaps(joints: np.ndarray, size: int, sigma: float = 2.0) -> np.ndarray:
    """``(K, size, size)`` float32 heatmaps with one sigma for everybody (the published setting)."""
    joints = np.asarray(joints, dtype=np.float64)
    return _paste_gaussians(joints, size, np.full(joints.shape[0], float(sigma)))


def scale_aware_heatmaps(joints: np.ndarray, size: int) -> np.ndarray:
    """``(K, size, size)`` heatmaps with each person's own sigma, read from ``joints[p, 0, 3]``."""
    joints = np.asarray(joints, dtype=np.float64)
    if joints.shape[-1] < 4:
        raise ValueError(f"scale-aware heatmaps need joints (P, K, 4) with sigma in column 3, got {joints.shape}")
    return _paste_gaussians(joints, size, joints[:, 0, 3])


def joint_tag_targets(joints: np.ndarray, size: int, max_people: int = 30,
                      tag_per_joint: bool = True) -> np.ndarray:
    """``(max_people, K, 2)`` int64 AE targets: per person, counted joints packed from slot 0.

    Each entry is ``(index into the flattened tag maps, 1)``; the index is ``k·r² + y·r + x`` with one
    tag map per joint, ``y·r + x`` with one shared map.  Person ``i`` keeps slot ``i`` (people with no
    counted joint leave an empty row, as in the reference); people beyond ``max_people`` are dropped
    (the reference would fail with an index error).
    """
    joints = np.asarray(joints, dtype=np.float64)[:max_people]
    num_people, num_joints = joints.shape[:2]
    targets = np.zeros((max_people, num_joints, 2), dtype=np.int64)
    xi, yi, counted = _counted_joints(joints, size)
    index = yi * size + xi
    if tag_per_joint:
        index = index + np.arange(num_joints)[None, :] * size * size
    slot = np.cumsum(counted, axis=1) - 1
    person, joint = np.nonzero(counted)
    targets[person, slot[person, joint], 0] = index[person, joint]
    targets[person, slot[person, joint], 1] = 1
    return targets


def segmentation_rle(segmentation: Any, height: int, width: int) -> dict:
    """One compressed RLE for any COCO segmentation: polygons, uncompressed or compressed RLE."""
    if isinstance(segmentation, list):
        return mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    if isinstance(segmentation.get("counts"), list):
        return mask_utils.frPyObjects(segmentation, height, width)
    return segmentation


def is_ignored_region(annotation: Mapping[str, Any]) -> bool:
    """Crowd regions and people without keypoints are not supervised (the reference's rule)."""
    return bool(annotation.get("iscrowd", 0)) or annotation.get("num_keypoints", 0) == 0


def counted_mask(annotations: Iterable[Mapping[str, Any]], height: int, width: int) -> np.ndarray:
    """``(height, width)`` uint8 at image resolution: 1 where the loss counts, 0 on ignored regions.

    The union of every ignored annotation's segmentation (crowd, or ``num_keypoints == 0``), decoded
    once.  Annotations with an empty segmentation add nothing.
    """
    rles = [segmentation_rle(a["segmentation"], height, width)
            for a in annotations if is_ignored_region(a) and a.get("segmentation")]
    if not rles:
        return np.ones((height, width), dtype=np.uint8)
    ignored = mask_utils.decode(mask_utils.merge(rles, intersect=0))
    return (ignored == 0).astype(np.uint8)
