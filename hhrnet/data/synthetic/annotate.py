"""COCO annotations of a rendered scene, and their horizontal flip."""

from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np

from hhrnet.data.synthetic.config import KEYPOINTS
from hhrnet.data.synthetic.scene import Person, Render, Scene
from hhrnet.keypoints import KeypointSet, keypoint_set


def mask_to_rle(mask: np.ndarray) -> dict:
    """Uncompressed COCO RLE (column-major run lengths, starting with a zero run), as COCO crowds use."""
    flat = np.asarray(mask, bool).ravel(order="F")
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        counts = [0] + counts
    return {"counts": counts, "size": [int(mask.shape[0]), int(mask.shape[1])]}


def _mask_bbox(mask: np.ndarray) -> list[float]:
    """Tight box of a pixel mask in COCO pixel-edge coordinates ``[x, y, w, h]``."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return [float(cols[0]), float(rows[0]), float(cols[-1] - cols[0] + 1), float(rows[-1] - rows[0] + 1)]


def _mask_polygons(mask: np.ndarray, bbox: list[float]) -> list[list[float]]:
    """Outer contours as COCO polygons (pixel-edge coordinates); a box when the mask is too thin."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polygons = [(c.reshape(-1, 2) + 0.5).ravel().tolist() for c in contours if len(c) >= 3]
    if polygons:
        return polygons
    x, y, w, h = bbox
    return [[x, y, x + w, y, x + w, y + h, x, y + h]]


def _keypoints(person: Person, render: Render, min_visible: int) -> list[float]:
    """K x 3 COCO keypoints: v=2 if the joint's own part is on top at its pixel, v=1 if covered, v=0 outside.

    People with fewer than ``min_visible`` visible joints get no keypoints at all (a sliver of a person
    behind another cannot be labelled), like unlabelled people in COCO.
    """
    height, width = render.owner.shape
    out: list[float] = []
    for joint in person.joints:
        px, py = math.floor(joint.x + 0.5), math.floor(joint.y + 0.5)
        if not (0 <= px < width and 0 <= py < height):
            out += [0, 0, 0]
            continue
        visible = joint.facing and int(render.owner[py, px]) in joint.parts
        out += [joint.x, joint.y, 2 if visible else 1]
    if not person.labelled or out[2::3].count(2) < min_visible:
        return [0] * len(out)
    return out


def annotate_scene(scene: Scene, render: Render, min_visible_keypoints: int = 2) -> list[dict]:
    """COCO annotations (without ``id``/``image_id``): one per visible person, then the crowd region."""
    kset = keypoint_set(scene.keypoints)
    annotations = []
    crowd_mask = np.zeros(render.owner.shape, bool)
    for index, person in enumerate(scene.people):
        mask = render.person_mask(index)
        if person.crowd:
            crowd_mask |= mask
            continue
        area = int(mask.sum())
        if area == 0:
            continue  # entirely hidden: nobody would annotate it
        keypoints = _keypoints(person, render, min_visible_keypoints)
        bbox = _mask_bbox(mask)
        annotations.append({
            "category_id": kset.category_id, "iscrowd": 0, "area": float(area), "bbox": bbox,
            "num_keypoints": sum(1 for v in keypoints[2::3] if v > 0), "keypoints": keypoints,
            "segmentation": _mask_polygons(mask, bbox),
        })
    if crowd_mask.any():
        annotations.append({
            "category_id": kset.category_id, "iscrowd": 1, "area": float(crowd_mask.sum()), "bbox": _mask_bbox(crowd_mask),
            "num_keypoints": 0, "keypoints": [0] * (3 * kset.num_joints),
            "segmentation": mask_to_rle(crowd_mask),
        })
    return annotations


def _flip_segmentation(segmentation: Any, width: int) -> Any:
    if isinstance(segmentation, list):
        return [[width - v if i % 2 == 0 else v for i, v in enumerate(poly)] for poly in segmentation]
    from pycocotools import mask as mask_utils  # only needed for RLE, which is rare

    rle = mask_utils.frPyObjects(segmentation, *segmentation["size"])
    return mask_to_rle(mask_utils.decode(rle)[:, ::-1])


def flip_annotations(annotations: list[dict], width: int, keypoints: str | KeypointSet = KEYPOINTS) -> list[dict]:
    """Labels of the horizontally flipped image: keypoints ``x -> W-1-x`` with left/right swapped,
    boxes ``x -> W-x-w``, polygons ``x -> W-x`` (pixel-edge), RLE masks mirrored."""
    flipped = []
    flip_index = keypoint_set(keypoints).flip_index
    for ann in annotations:
        joints = [ann["keypoints"][3 * k: 3 * k + 3] for k in flip_index]
        keypoints = [v for x, y, vis in joints for v in ((width - 1 - x, y, vis) if vis > 0 else (x, y, vis))]
        x, y, w, h = ann["bbox"]
        flipped.append({**ann, "keypoints": keypoints,
                        "bbox": [width - x - w, y, w, h],
                        "segmentation": _flip_segmentation(ann["segmentation"], width)})
    return flipped


def coco_categories(keypoints: str | KeypointSet = KEYPOINTS) -> list[dict]:
    """The category record of a keypoint set (names and 1-based skeleton), as COCO files carry it."""
    return [keypoint_set(keypoints).coco_category()]
