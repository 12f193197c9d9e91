"""Geometry shared by training and test: one affine model, the training augmentation, test resizing.

A crop is described as the reference does it: a ``center`` in image pixels and a ``scale`` in units of
200 px (the side of the source square).  ``affine_matrix`` maps that square to an output of
``output_wh`` pixels, optionally rotated about the centre; training uses it once per resolution
(input image, every output map) with the same centre, scale and rotation, so image, masks and joints
stay aligned; test time uses it to resize-and-pad the image and, inverted, to map predictions back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np

from hhrnet.config import TEST_SIZE_MULTIPLE
from hhrnet.sections import DataConfig

ArrayLike = Sequence[float] | np.ndarray


def affine_matrix(center: ArrayLike, scale_200: float | ArrayLike, output_wh: Sequence[int],
                  rotation: float = 0.0, inverse: bool = False) -> np.ndarray:
    """``(2, 3)`` float64 matrix taking image pixels to output pixels (or back, with ``inverse``).

    The source square has side ``200 · scale_200`` (only the width component is used when a pair is
    given, as in the reference, so the mapping is isotropic and any extra height becomes padding);
    ``center`` lands on the output centre ``(w/2, h/2)``; ``rotation`` in degrees turns the crop
    counter-clockwise in the image, i.e. the content clockwise in the output.
    """
    scale_w = float(np.atleast_1d(np.asarray(scale_200, dtype=np.float64))[0])
    out_w, out_h = float(output_wh[0]), float(output_wh[1])
    zoom = out_w / (200.0 * scale_w)
    theta = np.deg2rad(rotation)
    cos, sin = np.cos(theta) * zoom, np.sin(theta) * zoom
    cx, cy = float(center[0]), float(center[1])
    matrix = np.array([[cos, sin, out_w / 2 - cos * cx - sin * cy],
                       [-sin, cos, out_h / 2 + sin * cx - cos * cy]])
    return cv2.invertAffineTransform(matrix) if inverse else matrix


def warp_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply a ``(2, 3)`` affine to the last axis ``(..., 2)`` of ``points``."""
    points = np.asarray(points, dtype=np.float64)
    return points @ matrix[:, :2].T + matrix[:, 2]


def normalize_image(image: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """uint8 RGB ``(H, W, 3)`` to float32 ``(3, H, W)``: /255, then ImageNet mean/std (ToTensor+Normalize).

    Computed once per channel for the 256 possible values and looked up: the same float32 numbers as
    the arithmetic on every pixel, about ten times faster (it was the costliest step of a sample).
    """
    levels = np.arange(256, dtype=np.float32)[:, None] / np.float32(255)
    tables = ((levels - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)).T  # (3, 256)
    planes = np.ascontiguousarray(image.transpose(2, 0, 1))
    return np.stack([cv2.LUT(plane, np.ascontiguousarray(table)) for plane, table in zip(planes, tables)])


# --------------------------------------------------------------------------------------------------
# Training augmentation


@dataclass(frozen=True)
class AugmentParams:
    """One draw of the random augmentation; everything a sample's geometry depends on."""

    center: tuple[float, float]
    scale_200: float
    aug_scale: float
    rotation: float
    flip: bool


def draw_augmentation(rng: np.random.Generator, image_hw: tuple[int, int], cfg: DataConfig) -> AugmentParams:
    """Reference ``RandomAffineTransform`` + ``RandomHorizontalFlip`` draws, in the reference order.

    Scale ~ U(min, max) times the short (or long) side / 200; rotation ~ U(-max, max) degrees; the centre
    moves by a random integer in ``[int(-t), int(t))`` per axis with ``t = max_translate · scale_200``
    (``±40·side/200`` px); flip with probability ``flip_prob``.
    """
    height, width = image_hw
    side = min(height, width) if cfg.scale_type == "short" else max(height, width)
    aug_scale = rng.random() * (cfg.max_scale - cfg.min_scale) + cfg.min_scale
    scale_200 = side / 200.0 * aug_scale
    rotation = (rng.random() * 2 - 1) * cfg.max_rotation
    reach = cfg.max_translate * scale_200
    low, high = int(-reach), int(reach)
    dx, dy = (int(rng.integers(low, high)), int(rng.integers(low, high))) if high > low else (0, 0)
    flip = bool(rng.random() < cfg.flip_prob)
    return AugmentParams((width / 2.0 + dx, height / 2.0 + dy), scale_200, aug_scale, rotation, flip)


def warp_mask(mask: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """Warp a 0/1 "counted" mask like the reference: uint8 ×255, bilinear, black border, > 0.5.

    Pixels whose bilinear value is at most half counted become ignored, and so does everything outside
    the source image (the black border), as in the official pipeline.
    """
    warped = cv2.warpAffine(mask.astype(np.uint8) * 255, matrix, (size, size), flags=cv2.INTER_LINEAR)
    return (warped.astype(np.float32) / 255 > 0.5).astype(np.float32)


def flip_joints(joints: np.ndarray, size: int, flip_index: Sequence[int]) -> np.ndarray:
    """Mirror joints in a ``size``-wide map: swap left/right, then ``x -> size - x - 1`` (reference)."""
    flipped = joints[:, list(flip_index)].copy()
    flipped[..., 0] = size - flipped[..., 0] - 1
    return flipped


def flip_image(image: np.ndarray) -> np.ndarray:
    """Horizontal mirror of an ``(H, W, ...)`` array, as a contiguous copy."""
    return np.ascontiguousarray(image[:, ::-1])


@dataclass
class AugmentedSample:
    """Warped uint8 RGB input image, and per output resolution the counted mask and joints."""

    image: np.ndarray
    masks: list[np.ndarray]
    joints: list[np.ndarray]


def augment(image: np.ndarray, mask: np.ndarray, joints: np.ndarray, params: AugmentParams,
            input_size: int, output_sizes: Sequence[int], flip_index: Sequence[int]) -> AugmentedSample:
    """Apply one augmentation draw to an image, its image-resolution mask and its joints.

    ``joints`` is ``(P, K, 3 or 4)`` in image pixels; a 4th column (scale-aware sigma) is divided by
    the zoom factor like the reference.  Each output gets its own affine straight from the image (not a
    resize of the input crop), exactly as the reference does.
    """
    masks, all_joints = [], []
    for size in output_sizes:
        matrix = affine_matrix(params.center, params.scale_200, (size, size), params.rotation)
        warped = joints.astype(np.float64).copy()
        warped[..., :2] = warp_points(joints[..., :2], matrix)
        if warped.shape[-1] > 3:
            warped[..., 3] /= params.aug_scale
        out_mask = warp_mask(mask, matrix, size)
        if params.flip:
            warped, out_mask = flip_joints(warped, size, flip_index), flip_image(out_mask)
        masks.append(out_mask)
        all_joints.append(warped)
    matrix = affine_matrix(params.center, params.scale_200, (input_size, input_size), params.rotation)
    warped_image = cv2.warpAffine(image, matrix, (input_size, input_size), flags=cv2.INTER_LINEAR)
    if params.flip:
        warped_image = flip_image(warped_image)
    return AugmentedSample(warped_image, masks, all_joints)


# --------------------------------------------------------------------------------------------------
# Test time


def input_size_at_scale(image_hw: tuple[int, int], input_size: int, scale: float,
                    min_scale: float) -> tuple[tuple[int, int], np.ndarray, np.ndarray]:
    """Network input ``(w, h)``, ``center`` and ``scale_200`` (x, y) for one test scale (reference).

    Sizes are multiples of ``TEST_SIZE_MULTIPLE`` (64) at ``min_scale`` (so every scale's outputs line up after resizing),
    multiplied by ``scale / min_scale``; the short side follows the input size, the long side keeps the
    aspect ratio rounded up to that multiple, and the scale's long component is widened to match (padding).
    """
    height, width = int(image_hw[0]), int(image_hw[1])
    center = np.array([int(width / 2.0 + 0.5), int(height / 2.0 + 0.5)], dtype=np.float64)
    step = TEST_SIZE_MULTIPLE
    min_input = int((min_scale * input_size + step - 1) // step * step)
    factor = scale / min_scale
    short, long = (width, height) if width < height else (height, width)
    short_resized = int(min_input * factor)
    long_resized = int(int((min_input / short * long + step - 1) // step * step) * factor)
    short_scale = short / 200.0
    long_scale = long_resized / short_resized * short / 200.0
    if width < height:
        return (short_resized, long_resized), center, np.array([short_scale, long_scale])
    return (long_resized, short_resized), center, np.array([long_scale, short_scale])


def resize_align(image: np.ndarray, size_wh: tuple[int, int], center: ArrayLike,
                 scale_200: ArrayLike) -> np.ndarray:
    """Warp the image to ``size_wh`` for one test scale: bilinear, aspect kept, black padding."""
    matrix = affine_matrix(center, scale_200, size_wh)
    return cv2.warpAffine(image, matrix, (int(size_wh[0]), int(size_wh[1])), flags=cv2.INTER_LINEAR)
