"""Training targets against the reference goldens, plus the rules the goldens rely on."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pycocotools import mask as mask_utils

from conftest import COCO_MINI, golden_params
from hhrnet.targets import (counted_mask, fixed_sigma_heatmaps, joint_tag_targets, scale_aware_heatmaps,
                            segmentation_rle)


@pytest.mark.parametrize("path", golden_params("targets*.npz"))
@pytest.mark.parametrize("size", [128, 256])
def test_targets_match_reference(path, size):
    g = np.load(path)
    np.testing.assert_allclose(fixed_sigma_heatmaps(g[f"joints_{size}"], size, 2.0), g[f"heatmaps_{size}"], atol=1e-6)
    np.testing.assert_allclose(scale_aware_heatmaps(g[f"scale_aware_joints_{size}"], size),
                               g[f"scale_aware_heatmaps_{size}"], atol=1e-6)
    np.testing.assert_array_equal(joint_tag_targets(g[f"joints_{size}"], size), g[f"tag_joints_{size}"])
    np.testing.assert_array_equal(joint_tag_targets(g[f"joints_{size}"], size, tag_per_joint=False),
                                  g[f"tag_joints_shared_{size}"])


def _one_joint_at(x: float, y: float, v: float = 2.0, num_joints: int = 2) -> np.ndarray:
    joints = np.zeros((1, num_joints, 3))
    joints[0, 0] = (x, y, v)
    return joints


def test_position_is_truncated_toward_zero_not_rounded():
    hm = fixed_sigma_heatmaps(_one_joint_at(-0.7, 5.9), 16)  # int(-0.7) = 0, int(5.9) = 5
    assert hm[0, 5, 0] == 1.0 and hm[1].max() == 0.0
    assert np.unravel_index(hm[0].argmax(), hm[0].shape) == (5, 0)


@pytest.mark.parametrize("x, y, v", [(-1.0, 3.0, 2), (16.0, 3.0, 2), (3.0, 16.5, 1), (3.0, 3.0, 0)])
def test_invisible_or_outside_joints_make_no_target(x, y, v):
    joints = _one_joint_at(x, y, v)
    assert fixed_sigma_heatmaps(joints, 16).max() == 0.0
    assert not joint_tag_targets(joints, 16).any()


def test_people_combine_by_max_and_tags_pack_from_slot_zero():
    joints = np.zeros((2, 3, 3))
    joints[0] = [(4, 4, 0), (4, 4, 2), (5, 4, 1)]  # joint 0 invisible: person 0 packs joints 1, 2
    joints[1] = [(5, 4, 2), (-3, 0, 2), (30, 0, 2)]
    hm = fixed_sigma_heatmaps(joints, 16)
    assert hm[2, 4, 5] == 1.0 and hm[2, 4, 4] == pytest.approx(np.exp(-1 / 8))  # max, not sum
    tags = joint_tag_targets(joints, 16, max_people=4)
    np.testing.assert_array_equal(tags[0, :2], [(1 * 256 + 4 * 16 + 4, 1), (2 * 256 + 4 * 16 + 5, 1)])
    np.testing.assert_array_equal(tags[1, 0], (4 * 16 + 5, 1))
    assert not tags[0, 2:].any() and not tags[1, 1:].any() and not tags[2:].any()


def _naive_heatmaps(joints: np.ndarray, size: int) -> np.ndarray:
    """Per-joint loop oracle written straight from the rule in ``hhrnet.targets``' docstring."""
    out = np.zeros((joints.shape[1], size, size), dtype=np.float32)
    for person in joints:
        s = person[0, 3]
        n = len(np.arange(0, 6 * s + 3))
        for k, (x, y, v, _) in enumerate(person):
            xi, yi = int(x), int(y)
            if v <= 0 or not (0 <= xi < size and 0 <= yi < size):
                continue
            left, top = int(np.round(xi - 3 * s - 1)), int(np.round(yi - 3 * s - 1))
            right, bottom = int(np.round(xi + 3 * s + 2)), int(np.round(yi + 3 * s + 2))
            for row in range(max(top, 0), min(bottom, size)):
                for col in range(max(left, 0), min(right, size)):
                    i, j = row - top, col - left
                    if i < n and j < n:
                        g = np.exp(-((j - 3 * s - 1) ** 2 + (i - 3 * s - 1) ** 2) / (2 * s * s))
                        out[k, row, col] = max(out[k, row, col], g)
    return out


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from([1.0, 1.5, 2.0, 2.5, 3.0]))
def test_scale_aware_heatmaps_equal_per_joint_loop(seed, sigma):
    rng = np.random.default_rng(seed)
    joints = np.concatenate([rng.uniform(-6, 38, (3, 4, 2)), rng.integers(0, 3, (3, 4, 1)),
                             np.full((3, 4, 1), sigma)], axis=-1)
    joints[1, :, 3] = sigma + 0.5
    np.testing.assert_allclose(scale_aware_heatmaps(joints, 32), _naive_heatmaps(joints, 32), atol=1e-7)


def test_more_people_than_slots_are_dropped():
    joints = np.tile(_one_joint_at(1, 1), (5, 1, 1))
    assert joint_tag_targets(joints, 8, max_people=3).shape == (3, 2, 2)


def test_counted_mask_zeroes_crowd_and_keypointless_people():
    coco = json.loads((COCO_MINI / "person_keypoints.json").read_text())
    crowd = next(a for a in coco["annotations"] if a["iscrowd"])
    empty = next(a for a in coco["annotations"] if not a["iscrowd"] and a["num_keypoints"] == 0)
    person = next(a for a in coco["annotations"] if a["num_keypoints"] > 0)
    for ann in (crowd, empty):
        img = next(i for i in coco["images"] if i["id"] == ann["image_id"])
        h, w = img["height"], img["width"]
        region = mask_utils.decode(segmentation_rle(ann["segmentation"], h, w)).astype(bool)
        assert region.sum() > 0
        mask = counted_mask([ann, person], h, w)
        assert mask.dtype == np.uint8 and mask.shape == (h, w)
        assert not mask[region].any() and mask[~region].all()  # the person with keypoints is not masked


def test_counted_mask_without_ignored_regions_is_all_ones():
    assert counted_mask([{"iscrowd": 0, "num_keypoints": 3, "segmentation": [[0, 0, 5, 0, 5, 5]]}], 4, 6).all()
