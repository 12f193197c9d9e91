"""The tiled refine search (hhrnet._refine_tiles) equals the full-map definition in grouping.refine, exactly."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from hhrnet._refine_tiles import best_refine_pixels
from hhrnet.grouping import mean_tags, refine, refine_scores


def full_map_pixels(joints, heat, tags):
    """Per missing (person, joint), grouped by joint: the first pixel maximising refine_scores."""
    centres = mean_tags(joints)
    person, joint = np.nonzero((joints[..., 2] == 0).T)[::-1]
    pixels = [np.argmax(refine_scores(heat[k], np.moveaxis(tags[k], -1, 0), centres[p])) for p, k in zip(person, joint)]
    return person, joint, centres, np.array(pixels, np.int64)


def random_people(rng, heat, tags, people):
    k, h, w = heat.shape
    joints = np.zeros((people, k, 3 + tags.shape[-1]), np.float32)
    for p in range(people):
        for j in rng.choice(k, size=rng.integers(1, k), replace=False):
            x, y = rng.integers(0, w), rng.integers(0, h)
            joints[p, j] = (x + 0.75, y + 0.25, heat[j, y, x] + 1, *tags[j, y, x])
    return joints


def assert_same(joints, heat, tags):
    np.testing.assert_array_equal(refine(joints, heat, tags, fast=True), refine(joints, heat, tags, fast=False))
    person, joint, centres, expected = full_map_pixels(joints, heat, tags)
    np.testing.assert_array_equal(best_refine_pixels(joints, heat, tags, person, joint, centres), expected)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**31 - 1), st.sampled_from([(9, 13), (32, 40), (64, 64), (100, 130), (150, 97)]),
       st.sampled_from([1, 2]), st.floats(0.05, 3.0), st.sampled_from([None, 2, 4, 8]))
def test_random_scenes(seed, shape, tag_dim, tag_spread, levels):
    """Random maps, blocky tags; few heatmap levels (``levels``) make equal scores in many tiles."""
    rng = np.random.default_rng(seed)
    h, w = shape
    heat = (rng.random((4, h, w)) - 0.1).astype(np.float32)
    if levels:
        heat = np.round(heat * levels) / levels
    blocks = rng.uniform(-4, 4, (4, h // 16 + 1, w // 16 + 1, tag_dim)).repeat(16, 1).repeat(16, 2)[:, :h, :w]
    tags = (rng.normal(size=(4, h, w, tag_dim)) * tag_spread + blocks).astype(np.float32)
    tags[1, :, : w // 2] = 0.25  # a plateau of equal tags
    assert_same(random_people(rng, heat, tags, int(rng.integers(1, 8))), heat, tags)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(1, 12))
def test_planted_scenes_with_ties(seed, people):
    """Gaussian peaks with one tag per person, as a trained network paints them; copies of each peak
    in other tiles (same value, same tag) tie exactly, so the first pixel must win."""
    rng = np.random.default_rng(seed)
    k, h, w = 5, 96, 128
    yy, xx = np.mgrid[:h, :w]
    heat = np.zeros((k, h, w), np.float32)
    tags = np.zeros((k, h, w, 1), np.float32)
    for p in range(people):
        for j in range(k):
            x, y = rng.uniform(0, w), rng.uniform(0, h)
            peak = np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / 8).astype(np.float32) * rng.choice([0.5, 1.0])
            near = peak > heat[j]
            heat[j][near], tags[j][near] = peak[near], p * 2.0
    twin = heat[:, :32, :32].copy(), tags[:, :32, :32].copy()
    heat[:, 64:96, 96:128], tags[:, 64:96, 96:128] = twin  # the same block again, tiles apart
    joints = np.zeros((people, k, 4), np.float32)
    for p in range(people):
        for j in rng.choice(k, size=rng.integers(1, k), replace=False):
            joints[p, j] = (1.5, 1.5, 1.0, p * 2.0)
    assert_same(joints, heat, tags)


def test_nothing_missing_and_nothing_positive():
    heat = -np.ones((2, 40, 40), np.float32)
    tags = np.zeros((2, 40, 40, 1), np.float32)
    joints = np.zeros((3, 2, 4), np.float32)
    joints[:, 0] = (3.5, 4.5, 0.9, 0.0)
    assert_same(joints, heat, tags)
    np.testing.assert_array_equal(refine(joints, heat, tags), joints)  # no pixel above 0: nothing filled
    joints[:, 1] = (5.5, 6.5, 0.8, 0.0)
    assert_same(joints, heat, tags)
