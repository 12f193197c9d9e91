"""Affine geometry, training augmentation and test-time sizes (against the inference goldens)."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import golden_params
from hhrnet.config import COCO_FLIP_INDEX, DataConfig
from hhrnet.data.transforms import (AugmentParams, affine_matrix, augment, draw_augmentation, flip_image,
                                    flip_joints, normalize_image, resize_align, input_size_at_scale, warp_points)


@pytest.mark.parametrize("path", golden_params("inference*.npz"))
def test_input_size_at_scales_match_reference(path):
    g = np.load(path)
    min_scale = float(g["scales"].min())
    for k, scale in enumerate(g["scales"]):
        size_wh, center, scale_200 = input_size_at_scale(tuple(g["image_hw"]), int(g["input_size"]), float(scale),
                                                     min_scale)
        assert size_wh == tuple(g[f"s{k}_size_wh"])
        np.testing.assert_array_equal(center, g[f"s{k}_center"])
        np.testing.assert_allclose(scale_200, g[f"s{k}_scale"], rtol=1e-12)
    assert input_size_at_scale(tuple(g["image_hw"]), int(g["input_size"]), 1.0, min_scale)[0] == tuple(g["base_size_wh"])


@pytest.mark.parametrize("path", golden_params("inference*.npz"))
def test_inverse_affine_maps_grouped_joints_to_reference_predictions(path):
    g = np.load(path)
    back = affine_matrix(g["final_center"], g["final_scale"], tuple(g["base_size_wh"]), inverse=True)
    np.testing.assert_allclose(warp_points(g["grouped_final"][..., :2], back), g["final_preds"][..., :2], atol=1e-5)


def test_affine_matrix_matches_an_independent_rotation_matrix():
    center, zoom, angle, size = (130.0, 70.5), 0.8, 23.0, 64
    expected = cv2.getRotationMatrix2D(center, angle, zoom)
    expected[:, 2] += (size / 2 - center[0], size / 2 - center[1])
    np.testing.assert_allclose(affine_matrix(center, size / zoom / 200, (size, size), angle), expected, atol=1e-12)


def test_resize_align_puts_the_image_centre_at_the_input_centre():
    image = np.zeros((427, 640, 3), np.uint8)
    image[209:219, 315:325] = 255  # a block around the centre (320, 214)
    size_wh, center, scale = input_size_at_scale(image.shape[:2], 128, 1.0, 1.0)
    resized = resize_align(image, size_wh, center, scale)
    assert resized.shape == (size_wh[1], size_wh[0], 3)
    ys, xs = np.nonzero(resized[..., 0] > 128)
    assert abs(xs.mean() - size_wh[0] / 2) < 1 and abs(ys.mean() - size_wh[1] / 2) < 1


finite = st.floats(-500, 1500, allow_nan=False)


@settings(max_examples=60, deadline=None)
@given(center=st.tuples(finite, finite), scale=st.floats(0.1, 10), rotation=st.floats(-180, 180),
       out_w=st.integers(8, 1024), out_h=st.integers(8, 1024),
       points=st.lists(st.tuples(finite, finite), min_size=1, max_size=20))
def test_affine_round_trip_returns_the_points(center, scale, rotation, out_w, out_h, points):
    forward = affine_matrix(center, scale, (out_w, out_h), rotation)
    backward = affine_matrix(center, scale, (out_w, out_h), rotation, inverse=True)
    pts = np.array(points)
    np.testing.assert_allclose(warp_points(warp_points(pts, forward), backward), pts, atol=1e-6)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), size=st.integers(4, 300))
def test_flip_twice_is_identity(seed, size):
    rng = np.random.default_rng(seed)
    joints = np.concatenate([rng.uniform(-20, size + 20, (3, 17, 2)), rng.integers(0, 3, (3, 17, 1))], -1)
    np.testing.assert_allclose(flip_joints(flip_joints(joints, size, COCO_FLIP_INDEX), size, COCO_FLIP_INDEX),
                               joints, atol=1e-9)
    image = rng.integers(0, 256, (5, size, 3), dtype=np.uint8)
    np.testing.assert_array_equal(flip_image(flip_image(image)), image)


def test_flip_swaps_left_and_right_joints():
    joints = np.zeros((1, 17, 3))
    joints[0, 5] = (10, 20, 2)  # left shoulder
    flipped = flip_joints(joints, 64, COCO_FLIP_INDEX)
    np.testing.assert_array_equal(flipped[0, 6], (64 - 10 - 1, 20, 2))  # now the right shoulder
    assert flipped[0, 5, 2] == 0  # the empty right shoulder became the (still invisible) left one


def test_augmentation_draws_stay_in_their_ranges():
    cfg = DataConfig()
    rng = np.random.default_rng(0)
    draws = [draw_augmentation(rng, (480, 640), cfg) for _ in range(300)]
    assert all(0.75 <= d.aug_scale <= 1.5 and abs(d.scale_200 - 480 / 200 * d.aug_scale) < 1e-12 for d in draws)
    assert all(-30 <= d.rotation <= 30 for d in draws)
    for d in draws:
        dx, dy = d.center[0] - 320, d.center[1] - 240
        reach = 40 * d.scale_200
        assert dx == int(dx) and dy == int(dy) and int(-reach) <= dx < int(reach) and int(-reach) <= dy < int(reach)
    assert 0.35 < np.mean([d.flip for d in draws]) < 0.65


@pytest.mark.parametrize("flip", [False, True])
def test_image_and_joints_stay_aligned_through_augmentation(flip):
    image = np.zeros((300, 400, 3), np.uint8)
    joints = np.zeros((1, 17, 3))
    joints[0, 9] = (123, 210, 2)  # left wrist, painted as a bright dot
    cv2.circle(image, (123, 210), 3, (255, 255, 255), -1)
    params = AugmentParams(center=(190.0, 160.0), scale_200=1.6, aug_scale=1.0, rotation=17.0, flip=flip)
    out = augment(image, np.ones((300, 400), np.uint8), joints, params, 256, (64, 128), COCO_FLIP_INDEX)
    ys, xs = np.nonzero(out.image[..., 0] > 128)
    dot = np.array([xs.mean(), ys.mean()])
    k = 10 if flip else 9  # the flip permutes the wrist to the other side
    for size, j in zip((64, 128), out.joints):
        assert np.abs(j[0, k, :2] * 256 / size - dot).max() < 256 / size  # within one output pixel
        assert j[0, k, 2] == 2 and not j[0, 19 - k, 2]
    if flip:  # the flipped sample is the mirror of the unflipped one, pixels and joints alike
        plain = augment(image, np.ones((300, 400), np.uint8), joints, dataclasses.replace(params, flip=False), 256,
                        (64, 128), COCO_FLIP_INDEX)
        np.testing.assert_array_equal(out.image, plain.image[:, ::-1])
        for size, j, p in zip((64, 128), out.joints, plain.joints):
            np.testing.assert_allclose(j[0, 10, :2], (size - 1 - p[0, 9, 0], p[0, 9, 1]), atol=1e-9)


def test_mask_outside_the_image_is_ignored_and_inside_counted():
    params = AugmentParams(center=(50.0, 50.0), scale_200=1.0, aug_scale=1.0, rotation=0.0, flip=False)
    out = augment(np.zeros((100, 100, 3), np.uint8), np.ones((100, 100), np.uint8), np.zeros((0, 17, 3)),
                  params, 64, (16,), COCO_FLIP_INDEX)
    mask = out.masks[0]  # 100 px image inside a 200 px crop: the middle half of the map is the image
    assert mask[6:10, 6:10].all() and not mask[:3].any() and not mask[:, -3:].any()


def test_normalize_image_equals_per_pixel_arithmetic():
    image = np.random.default_rng(0).integers(0, 256, (7, 9, 3), dtype=np.uint8)
    mean, std = np.float32([0.485, 0.456, 0.406]), np.float32([0.229, 0.224, 0.225])
    expected = ((image.astype(np.float32) / np.float32(255) - mean) / std).transpose(2, 0, 1)
    np.testing.assert_array_equal(normalize_image(image, mean, std), expected)


def test_normalize_image_is_imagenet_normalisation_in_chw():
    image = np.full((2, 3, 3), (255, 0, 128), np.uint8)
    out = normalize_image(image, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert out.shape == (3, 2, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out[:, 0, 0], [(1 - 0.485) / 0.229, -0.456 / 0.224, (128 / 255 - 0.406) / 0.225],
                               rtol=1e-6)
