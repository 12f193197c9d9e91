"""Grouping: goldens from the official HeatmapParser, the assignment solver, adjust/refine, bad input."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from scipy.optimize import linear_sum_assignment

from hhrnet.config import TestConfig
from hhrnet.grouping import (COCO_JOINT_ORDER, adjust, group, joint_order, mean_tags, munkres_assignment,
                             refine, top_candidates)
from conftest import golden_params

VARIANTS = {  # golden array, golden scores, test switches
    "plain": ("grouped_plain", "scores_plain", dict(adjust=False, refine=False)),
    "adjust_only": ("grouped_adjust_only", "scores_adjust_only", dict(refine=False)),
    "final": ("grouped_final", "scores", {}),
}


def golden_maps(path) -> tuple[np.lib.npyio.NpzFile, np.ndarray, np.ndarray]:
    g = np.load(path)
    return g, g["final_heatmaps"], g["final_tags"]


@pytest.mark.parametrize("path", golden_params("inference_*.npz"))
def test_top_candidates_match_golden(path):
    g, heatmaps, tags = golden_maps(path)
    cand = top_candidates(heatmaps, tags, k=30, kernel=5)
    np.testing.assert_array_equal(cand.values, g["topk_val_k"])
    np.testing.assert_array_equal(cand.xy, g["topk_loc_k"])
    np.testing.assert_array_equal(cand.tags, g["topk_tag_k"])


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("path", golden_params("inference_*.npz"))
def test_group_matches_golden(path, variant):
    g, heatmaps, tags = golden_maps(path)
    joints_key, scores_key, switches = VARIANTS[variant]
    [result] = group(heatmaps, tags, dataclasses.replace(TestConfig(), **switches))
    assert result.joints.shape == g[joints_key].shape
    np.testing.assert_allclose(result.joints, g[joints_key], atol=1e-4)
    np.testing.assert_allclose(result.scores, g[scores_key], atol=1e-6)


@pytest.mark.parametrize("path", golden_params("inference_*.npz"))
def test_batched_group_equals_single_images(path):
    g, heatmaps, tags = golden_maps(path)
    other = np.roll(heatmaps, shift=7, axis=3) * np.float32(0.9)  # a different image of the same size
    batch = group(np.concatenate([heatmaps, other]), np.concatenate([tags, tags]), TestConfig())
    single = group(heatmaps, tags, TestConfig()) + group(other, tags, TestConfig())
    for a, b in zip(batch, single):
        np.testing.assert_array_equal(a.joints, b.joints)
        np.testing.assert_array_equal(a.scores, b.scores)


def test_joint_order():
    assert joint_order(17) == COCO_JOINT_ORDER == (0, 1, 2, 3, 4, 5, 6, 11, 12, 7, 8, 9, 10, 13, 14, 15, 16)
    assert joint_order(14) == tuple(range(14))


tie_heavy_costs = st.tuples(st.integers(1, 8), st.integers(1, 8), st.integers(0, 2**31 - 1)).map(
    lambda a: np.random.default_rng(a[2]).integers(0, 3, (a[0], a[1])) * 100.0
    - np.random.default_rng(a[2] + 1).choice([0.3, 0.5, 0.7], (a[0], 1)))


@settings(max_examples=300, deadline=None)
@given(tie_heavy_costs)
def test_munkres_assignment_is_optimal(cost):
    rows, cols = munkres_assignment(cost)
    ref_rows, ref_cols = linear_sum_assignment(cost)
    assert len(rows) == min(cost.shape) and len(set(cols.tolist())) == len(cols)
    assert list(rows) == sorted(rows)
    assert cost[rows, cols].sum() == pytest.approx(cost[ref_rows, ref_cols].sum(), abs=1e-9)


@settings(max_examples=300, deadline=None)
@given(tie_heavy_costs)
def test_munkres_assignment_breaks_ties_like_munkres_2(cost):
    munkres = pytest.importorskip("munkres")
    if not munkres.__version__.startswith("2."):
        pytest.skip(f"tie-breaking oracle is munkres 2.x, found {munkres.__version__}")
    if cost.shape[0] > cost.shape[1]:  # the reference pads to square with 1e10 columns
        cost = np.pad(cost, ((0, 0), (0, cost.shape[0] - cost.shape[1])), constant_values=1e10)
    rows, cols = munkres_assignment(cost)
    assert list(zip(rows.tolist(), cols.tolist())) == munkres.Munkres().compute(cost)


def test_adjust_moves_a_quarter_pixel_towards_the_higher_neighbour():
    heat = np.zeros((1, 5, 5), np.float32)
    heat[0, 2, 2], heat[0, 2, 3], heat[0, 1, 2] = 1.0, 0.5, 0.4  # right > left, above > below
    joints = np.array([[[2, 2, 1.0, 0.0]]], np.float32)
    np.testing.assert_array_equal(adjust(joints, heat)[0, 0, :2], [2.75, 2.25])
    # borders are clamped; ties go to -0.25; missing joints (value 0) are untouched
    corner = np.array([[[0, 0, 0.5, 0.0]], [[3, 3, 0.0, 0.0]]], np.float32)
    np.testing.assert_array_equal(adjust(corner, np.zeros((1, 5, 5), np.float32))[:, 0, :2], [[0.25, 0.25], [3, 3]])


def test_refine_fills_only_missing_joints_near_the_person_tag():
    heat = np.zeros((2, 8, 8), np.float32)
    tags = np.zeros((2, 8, 8, 1), np.float32)
    heat[1, 5, 1], tags[1, 5, 1] = 0.9, 3.0  # strong peak, but tag of another person
    heat[1, 2, 6], tags[1, 2, 6] = 0.3, 1.2  # weaker peak with the person's tag (distance 0.2 -> 0)
    heat[1, 2, 5] = 0.1  # left neighbour is higher than the right one (0): x -= 0.25
    joints = np.array([[[4, 4, 0.8, 1.0], [0, 0, 0, 0]]], np.float32)
    out = refine(joints, heat, tags)
    np.testing.assert_array_equal(out[0, 0], joints[0, 0])
    np.testing.assert_allclose(out[0, 1, :3], [6 + 0.5 - 0.25, 2 + 0.5 - 0.25, 0.3])
    assert out[0, 1, 3] == 0  # tags of filled joints stay zero, as in the reference


def test_refine_ignores_positions_without_heat():
    joints = np.array([[[4, 4, 0.8, 1.0], [0, 0, 0, 0]]], np.float32)
    heat = np.zeros((2, 8, 8), np.float32)
    heat[0, 4, 4] = 0.8
    np.testing.assert_array_equal(refine(joints, heat, np.ones((2, 8, 8, 1), np.float32)), joints)


def test_other_skeletons_use_natural_order_and_one_dimensional_tags():
    heat = np.zeros((1, 4, 16, 16), np.float32)
    tags = np.zeros((1, 4, 16, 16, 1), np.float32)
    for x0, tag, value in [(2, -1.0, 0.8), (10, 1.0, 0.7)]:
        for k in range(4):
            heat[0, k, 3 + 3 * k, x0] = value
            tags[0, k, 3 + 3 * k, x0] = tag
    [result] = group(heat, tags, TestConfig())
    assert len(result) == 2
    np.testing.assert_array_equal(result.joints[:, :, 0], [[2.25] * 4, [10.25] * 4])
    np.testing.assert_allclose(result.scores, [0.8, 0.7])


def test_no_candidate_gives_no_people_without_warning():
    heat = torch.full((1, 17, 32, 32), 0.05)  # torch tensors are accepted too
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        [result] = group(heat, torch.zeros(1, 17, 32, 32, 2), TestConfig())
    assert result.joints.shape == (0, 17, 5) and result.scores.shape == (0,)


@pytest.mark.parametrize("fill", [0.0, float("nan"), float("inf")])
def test_degenerate_heatmaps_give_no_people_and_a_warning(fill):
    heat = np.full((2, 17, 32, 32), fill, np.float32)
    heat[1] = 0.0 if fill != 0.0 else float("nan")
    with pytest.warns(RuntimeWarning, match="heatmaps contain"):
        results = group(heat, np.zeros((2, 17, 32, 32, 2), np.float32), TestConfig())
    assert [len(r) for r in results] == [0, 0]


# --------------------------------------------------------------------------------------------------
# The shortcuts (NMS above the threshold only, refine on pixels that can still win) against the
# plain full-map definitions, on random maps.


def full_map_top_k(heatmaps: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Definition: 5x5 max-pool NMS over the whole map, then top-k (values, flat indices), equal
    values in row-major order (``torch.topk`` leaves the order of ties unspecified)."""
    t = torch.from_numpy(heatmaps)
    kept = (t * (torch.nn.functional.max_pool2d(t, 5, 1, 2) == t)).flatten(2).numpy()
    position = np.broadcast_to(np.arange(kept.shape[2]), kept.shape)
    index = np.lexsort((position, -kept), axis=2)[..., :k]
    return np.take_along_axis(kept, index, axis=2), index


def full_map_refine_pixel(heat: np.ndarray, tags: np.ndarray, centre: np.ndarray) -> int:
    """Definition: argmax over the whole map of heat - round(tag distance)."""
    return int(np.argmax(heat - np.round(np.sqrt(((tags - centre) ** 2).sum(axis=-1)))))


random_maps = st.tuples(st.integers(0, 2**31 - 1), st.sampled_from([(9, 13), (24, 16), (32, 40), (100, 130), (200, 260)]))


@settings(max_examples=60, deadline=None)
@given(random_maps, st.sampled_from([0.0, 0.1, 0.5, 0.9]), st.sampled_from([1.0, 0.01, 0.0005]))
@example(seed_shape=(15480141, (100, 130)), floor=0.0, density=1.0)  # two equal values among the top 8 of one map
def test_top_candidates_above_floor_equal_full_map_nms(seed_shape, floor, density):
    """Dense maps take the max-pool path, sparser ones the window test, the sparsest (most tiles below
    the floor) read only the pixels of the tiles whose maximum is above it."""
    seed, (h, w) = seed_shape
    rng = np.random.default_rng(seed)
    heat = (rng.random((2, 3, h, w)) ** 3 * (rng.random((2, 3, h, w)) < density)).astype(np.float32)
    tags = rng.normal(size=(2, 3, h, w, 2)).astype(np.float32)
    cand = top_candidates(heat, tags, k=8, floor=floor)
    values, index = full_map_top_k(heat, 8)
    above = values > floor
    np.testing.assert_array_equal(cand.values[above], values[above])
    np.testing.assert_array_equal(cand.values[~above], 0)
    np.testing.assert_array_equal(cand.xy[above], np.stack([index % w, index // w], -1)[above])
    flat_tags = tags.reshape(2, 3, h * w, 2)
    expected_tags = np.take_along_axis(flat_tags, index[..., None], axis=2)
    np.testing.assert_array_equal(cand.tags[above], expected_tags[above])


@settings(max_examples=80, deadline=None)
@given(random_maps, st.floats(0.05, 3.0), st.floats(-0.2, 0.2))
def test_refine_shortcut_equals_full_map_argmax(seed_shape, tag_spread, heat_offset):
    seed, (h, w) = seed_shape
    rng = np.random.default_rng(seed)
    heat = (rng.random((4, h, w)) + heat_offset).astype(np.float32)
    blocks = rng.uniform(-4, 4, (4, h // 16 + 1, w // 16 + 1, 2)).repeat(16, 1).repeat(16, 2)[:, :h, :w]
    tags = (rng.normal(size=(4, h, w, 2)) * tag_spread + blocks).astype(np.float32)  # tile-like regions
    tags[1, :, : w // 2] = 0.25  # a plateau: many equal scores, first pixel must win
    heat[2] = np.round(heat[2] * 4) / 4  # few heatmap levels: equal scores in many tiles
    joints = np.zeros((6, 4, 5), np.float32)  # several people per joint: refine handles them together
    for person in range(6):
        for joint in rng.choice(4, size=rng.integers(1, 4), replace=False):
            x, y = rng.integers(0, w), rng.integers(0, h)
            joints[person, joint] = (x + 0.75, y + 0.25, heat[joint, y, x] + 1, *tags[joint, y, x])
    out = refine(joints, heat, tags)
    planes_in_memory = np.moveaxis(np.ascontiguousarray(np.moveaxis(tags, -1, 1)), 1, -1)  # as aggregate returns
    np.testing.assert_array_equal(refine(joints, heat, planes_in_memory), out)
    detected = joints[..., 2] > 0  # the reference centre: the mean tag of the detected joints only
    centres = np.stack([joints[p, detected[p], 3:].sum(axis=0, dtype=np.float32) / np.float32(detected[p].sum())
                        for p in range(len(joints))])
    np.testing.assert_array_equal(mean_tags(joints), centres)
    for person, joint in zip(*np.nonzero(joints[..., 2] == 0)):
        centre = centres[person]
        y, x = divmod(full_map_refine_pixel(heat[joint], tags[joint], centre), w)
        if heat[joint, y, x] > 0:
            assert tuple(np.floor(out[person, joint, :2]).astype(int)) == (x, y)
            assert out[person, joint, 2] == heat[joint, y, x]
        else:
            np.testing.assert_array_equal(out[person, joint], joints[person, joint])
