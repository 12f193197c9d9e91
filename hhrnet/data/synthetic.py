"""Procedural, scale-varied multi-person scenes written out as an ordinary COCO keypoints dataset.

Why: COCO cannot be downloaded here and a CPU cannot train on it, yet every HigherHRNet row must be
trained and scored with the real COCO metric.  HigherHRNet's claim is about *scale variation*, so the
people here range from a few percent of the image height to larger than the image (log-uniform), and
the dataset is written exactly as COCO is, so every downstream line is what COCO users run.

How a scene is made (three pure steps):

1. ``sample_scene(rng, ...)`` -> :class:`Scene`: a 3-D stick body with volume per person (yawed to face
   front, back, profile or anything between, random joint angles, proportions, clothes, textures),
   projected orthographically to 2-D drawing primitives (tapered capsules, ellipses, trapezoids) sorted
   back to front, plus the 17 COCO keypoints, occluders, a background and sensor noise.  Left and right
   are decidable the way they are for real people: the face (eyes, nose, mouth) shows only when the head
   faces the camera, feet point forward, and the far-side limbs are painted behind the torso.
2. ``render_scene(scene)`` -> :class:`Render`: coverage from signed distances evaluated at pixel centres
   with numpy, so the rasterizer is mirror-exact by construction.
3. ``annotate_scene(scene, render)`` -> COCO annotations: ``v=2`` when the joint's own body part is the
   top-most surface at the joint's pixel, ``v=1`` when covered (by another person, an occluder, or the
   person's own torso/head), ``v=0`` with ``x=y=0`` outside the image.  ``area`` and ``bbox`` come from
   the visible (modal) silhouette, like COCO's.

Coordinate convention (the one COCO and the reference HigherHRNet code use): a keypoint ``(x, y)`` is in
*pixel-index* coordinates, pixel ``(i, j)`` has its centre at ``x = j, y = i``, so a horizontal flip maps
``x -> W - 1 - x`` (exactly what ``hhrnet.data.transforms.flip_joints`` does).  Boxes and polygons are in
COCO's *pixel-edge* coordinates (pixel ``j`` spans ``[j, j + 1)``), so a flip maps a box
``x -> W - x - w`` and polygon points ``x -> W - x``.  ``mirror_scene`` + ``flip_annotations`` state
this as code, and the tests check ``render(mirror(scene)) == fliplr(render(scene))`` bit for bit.

Exactness: every geometric coordinate is snapped to a 1/8-pixel grid (never exactly on a half pixel, so
"the pixel under a joint" is unambiguous), which makes ``W - 1 - x`` exact in float32; the rasterizer then
only ever uses sign-symmetric IEEE operations of ``x`` differences, and background, noise and blur are
either stored in the scene (and flipped by ``mirror_scene``) or computed with mirror-paired sums.
"""

from __future__ import annotations

import colorsys
import dataclasses
import json
import math
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from hhrnet.config import COCO_FLIP_INDEX
from hhrnet.io import atomic_write

COCO_KEYPOINT_NAMES: tuple[str, ...] = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee",
    "right_knee", "left_ankle", "right_ankle",
)
# The standard COCO person skeleton, 1-based keypoint indices as in the COCO category record.
COCO_SKELETON: tuple[tuple[int, int], ...] = (
    (16, 14), (14, 12), (17, 15), (15, 13), (12, 13), (6, 12), (7, 13), (6, 7), (6, 8), (7, 9),
    (8, 10), (9, 11), (2, 3), (1, 2), (1, 3), (2, 4), (3, 5), (4, 6), (5, 7),
)
SPLITS: tuple[str, ...] = ("train", "val")
FORMAT_VERSION = 2
_SPLIT_ID_OFFSET = {"train": 0, "val": 100_000_000}  # disjoint image ids, as in COCO train/val
_GRID = 8.0  # geometry lives on a 1/8-pixel grid (see module docstring: mirror exactness)


@dataclass(frozen=True)
class SyntheticConfig:
    """Every knob of the scene generator; sizes are fractions of the image side unless named ``_px``."""

    max_people: int = 8
    height_range: tuple[float, float] = (0.05, 1.5)  # person height / image side, log-uniform
    group_prob: float = 0.3  # people standing side by side at a similar scale (overlaps)
    crowd_prob: float = 0.15  # a dense cluster of tiny people labelled as one iscrowd=1 region
    crowd_people: tuple[int, int] = (8, 20)
    crowd_height_range: tuple[float, float] = (0.03, 0.07)
    min_labelled_height_px: float = 16.0  # smaller people get num_keypoints 0, as small COCO people
    unlabelled_prob: float = 0.03  # and a few larger ones too
    min_visible_keypoints: int = 2  # fewer v=2 joints: too hidden to label, written with num_keypoints 0
    tilt_deg: float = 10.0  # std of the in-plane lean
    # Most people in photographs roughly face the camera; that prior is what lets a network label
    # left and right before it can read faces (uniform yaw leaves a small network guessing 50/50).
    # It survives the flip augmentation: a mirrored front-facing person still faces the camera.
    front_facing_prob: float = 0.7
    front_yaw_deg: float = 35.0  # std of the yaw of front-facing people (0 = facing the camera)
    lying_prob: float = 0.04  # people rotated 60-100 degrees (lying, acrobatics)
    occluder_prob: float = 0.5
    max_occluders: int = 2
    clutter_shapes: tuple[int, int] = (4, 14)
    noise_sigma_max: float = 6.0
    blur_prob: float = 0.3
    blur_sigma_max: float = 1.2
    jpeg_quality: int = 92

    def __post_init__(self) -> None:
        lo, hi = self.height_range
        if not 0 < lo <= hi:
            raise ValueError(f"height_range must satisfy 0 < low <= high, got {self.height_range}")
        if not 1 <= self.max_people <= 20:  # COCO keypoint AP keeps 20 detections per image
            raise ValueError(f"max_people must be in 1..20, got {self.max_people}")


# --------------------------------------------------------------------------------------------------
# Scene description: plain frozen data, so mirroring is a pure function.


@dataclass(frozen=True)
class Primitive:
    """One drawable shape in a local frame from ``a`` towards ``b``.

    ``capsule``: segment a-b, radius ``r0`` at a, ``r1`` at b.  ``ellipse``: centre a, axis towards b,
    semi-axes ``r0`` across and ``r1`` along.  ``trapezoid``: from a to b, half widths ``r0``, ``r1``.
    Texture coordinates are (distance along the axis, |distance across|), both mirror invariant.
    """

    kind: str
    a: tuple[float, float]
    b: tuple[float, float]
    r0: float
    r1: float
    colour: tuple[float, float, float]
    colour2: tuple[float, float, float]
    texture: str  # flat | bands (across the axis) | stripes (along it) | checks
    period: float
    shade: float  # darkening towards the silhouette edge, the cue for volume
    owner: int  # person index, or -1 for occluders
    clip: Primitive | None = None  # drawn only inside this shape (the face inside the head)


@dataclass(frozen=True)
class Joint:
    """A keypoint: position, whether its face feature turns to the camera, and the primitives it lies on."""

    x: float
    y: float
    facing: bool
    parts: tuple[int, ...]


@dataclass(frozen=True)
class Person:
    joints: tuple[Joint, ...]  # 17, COCO order
    height: float  # standing height in pixels
    labelled: bool  # False: written with num_keypoints 0
    crowd: bool  # True: part of the iscrowd region, not annotated alone


@dataclass(frozen=True, eq=False)
class Scene:
    width: int
    height: int
    primitives: tuple[Primitive, ...]  # paint order, back to front
    people: tuple[Person, ...]
    background: np.ndarray  # (H, W, 3) uint8 RGB
    noise: np.ndarray | None  # (H, W, 3) float32 added after blurring
    blur_sigma: float


@dataclass(frozen=True, eq=False)
class Render:
    image: np.ndarray  # (H, W, 3) uint8 RGB
    owner: np.ndarray  # (H, W) int32: index of the top-most primitive covering the pixel centre, or -1
    person: np.ndarray  # (H, W) int32: person owning that primitive, -1 for background and occluders

    def person_mask(self, person: int) -> np.ndarray:
        """Visible silhouette of one person: pixels where one of its primitives is on top."""
        return self.person == person


def _snap(value: float) -> float:
    """Snap to the 1/8-pixel grid, avoiding exact half pixels (so rounding to a pixel is mirror-safe)."""
    q = round(value * _GRID) / _GRID
    return q - 1 / _GRID if q - math.floor(q) == 0.5 else q


def _snap_point(p: Sequence[float]) -> tuple[float, float]:
    return (_snap(float(p[0])), _snap(float(p[1])))


def mirror_scene(scene: Scene) -> Scene:
    """The horizontally mirrored scene: ``x -> W - 1 - x``, left/right keypoints swapped."""
    last = scene.width - 1

    def mirror_point(p: tuple[float, float]) -> tuple[float, float]:
        return (last - p[0], p[1])

    def mirror_primitive(p: Primitive) -> Primitive:
        clip = None if p.clip is None else mirror_primitive(p.clip)
        return dataclasses.replace(p, a=mirror_point(p.a), b=mirror_point(p.b), clip=clip)

    def mirror_person(person: Person) -> Person:
        joints = tuple(dataclasses.replace(person.joints[k], x=last - person.joints[k].x) for k in COCO_FLIP_INDEX)
        return dataclasses.replace(person, joints=joints)

    return dataclasses.replace(
        scene,
        primitives=tuple(mirror_primitive(p) for p in scene.primitives),
        people=tuple(mirror_person(p) for p in scene.people),
        background=np.ascontiguousarray(scene.background[:, ::-1]),
        noise=None if scene.noise is None else np.ascontiguousarray(scene.noise[:, ::-1]),
    )


# --------------------------------------------------------------------------------------------------
# Rasterizer: signed distances at pixel centres, composited back to front.


def _local_frame(p: Primitive, xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Pixel centres in the primitive frame: (signed across, along) and the a-b length."""
    ex, ey = p.b[0] - p.a[0], p.b[1] - p.a[1]
    length = math.hypot(ex, ey)
    ux, uy = (ex / length, ey / length) if length > 0 else (0.0, 1.0)
    dx = xs - np.float32(p.a[0])
    dy = ys - np.float32(p.a[1])
    across = dx * np.float32(uy) - dy * np.float32(ux)
    along = dx * np.float32(ux) + dy * np.float32(uy)
    return across, along, length


def _signed_distance(p: Primitive, xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, ...]:
    """Signed distance (negative inside), texture coordinates (along, |across|) and the local half width."""
    across, along, length = _local_frame(p, xs, ys)
    q = np.abs(across)
    r0, r1 = np.float32(p.r0), np.float32(p.r1)
    if p.kind == "ellipse":
        d = (np.sqrt(np.square(across / r0) + np.square(along / r1)) - 1) * min(r0, r1)
        half_width = np.broadcast_to(r0, d.shape)
    else:
        t = np.clip(along / np.float32(length), 0, 1) if length > 0 else np.zeros_like(along)
        half_width = r0 + t * (r1 - r0)
        if p.kind == "capsule":
            d = np.sqrt(np.square(across) + np.square(along - t * np.float32(length))) - half_width
        else:  # trapezoid
            slope = np.float32(length / math.hypot(length, p.r1 - p.r0)) if length > 0 else np.float32(1)
            d = np.maximum(np.maximum(-along, along - np.float32(length)), (q - half_width) * slope)
    if p.clip is not None:
        d = np.maximum(d, _signed_distance(p.clip, xs, ys)[0])
    return d, along, q, half_width


def _pattern(texture: str, along: np.ndarray, q: np.ndarray, period: float) -> np.ndarray | None:
    """Second-colour weight of a clothing texture (None for flat); floor-based, so mirror exact."""
    if texture == "flat":
        return None
    period32 = np.float32(period)
    bands = (np.floor(along / period32) % 2).astype(np.float32)
    stripes = (np.floor(q / period32 + np.float32(0.5)) % 2).astype(np.float32)
    if texture == "bands":
        return bands
    if texture == "stripes":
        return stripes
    return np.abs(bands - stripes)  # checks


def _roi(p: Primitive, width: int, height: int) -> tuple[int, int, int, int] | None:
    """Pixel window that contains every pixel centre the primitive can touch (coverage > 0)."""
    pts = [p.a] if p.kind == "ellipse" else [p.a, p.b]
    # ellipse distances are scaled by the short semi-axis, so coverage reaches further along the long one
    reach = max(p.r0, p.r1) * (1 + 0.5 / min(p.r0, p.r1) if p.kind == "ellipse" else 1) + 1.0
    x0 = max(0, math.floor(min(q[0] for q in pts) - reach))
    x1 = min(width, math.ceil(max(q[0] for q in pts) + reach) + 1)
    y0 = max(0, math.floor(min(q[1] for q in pts) - reach))
    y1 = min(height, math.ceil(max(q[1] for q in pts) + reach) + 1)
    return None if x0 >= x1 or y0 >= y1 else (x0, x1, y0, y1)


def _paint(canvas: np.ndarray, owner: np.ndarray, p: Primitive, index: int) -> None:
    """Alpha-composite one primitive (coverage = clip(0.5 - distance)) and claim the pixels it covers."""
    height, width = owner.shape
    window = _roi(p, width, height)
    if window is None:
        return
    x0, x1, y0, y1 = window
    xs = np.arange(x0, x1, dtype=np.float32)[None, :]
    ys = np.arange(y0, y1, dtype=np.float32)[:, None]
    d, along, q, half_width = _signed_distance(p, xs, ys)
    alpha = np.clip(np.float32(0.5) - d, 0, 1)
    if not alpha.any():
        return
    shade = 1 - np.float32(p.shade) * np.square(np.minimum(q / half_width, 1))
    colour = np.asarray(p.colour, np.float32)
    weight = _pattern(p.texture, along, q, p.period)
    if weight is None:
        fill = colour * shade[..., None]
    else:
        fill = (colour + weight[..., None] * (np.asarray(p.colour2, np.float32) - colour)) * shade[..., None]
    patch = canvas[y0:y1, x0:x1]
    patch += alpha[..., None] * (fill - patch)
    owner[y0:y1, x0:x1][d <= 0] = index


def _blur_axis(image: np.ndarray, weights: np.ndarray, axis: int) -> np.ndarray:
    """1-D symmetric convolution with mirror-paired sums, so it commutes exactly with flips."""
    r = len(weights) - 1
    pad = [(0, 0)] * image.ndim
    pad[axis] = (r, r)
    padded = np.pad(image, pad, mode="reflect")
    n = image.shape[axis]

    def shifted(offset: int) -> np.ndarray:
        return np.take(padded, np.arange(r + offset, r + offset + n), axis=axis)

    out = weights[0] * image
    for i in range(1, r + 1):
        out += weights[i] * (shifted(-i) + shifted(i))
    return out


def _blur(image: np.ndarray, sigma: float) -> np.ndarray:
    radius = max(1, math.ceil(2.5 * sigma))
    w = np.exp(-0.5 * np.square(np.arange(radius + 1) / sigma))
    weights = (w / (w[0] + 2 * w[1:].sum())).astype(np.float32)
    return _blur_axis(_blur_axis(image, weights, 0), weights, 1)


def render_scene(scene: Scene) -> Render:
    """Rasterize a scene; returns the image and which primitive is on top at every pixel centre."""
    canvas = scene.background.astype(np.float32)
    owner = np.full((scene.height, scene.width), -1, np.int32)
    for index, primitive in enumerate(scene.primitives):
        _paint(canvas, owner, primitive, index)
    if scene.blur_sigma > 0:
        canvas = _blur(canvas, scene.blur_sigma)
    if scene.noise is not None:
        canvas += scene.noise
    image = np.rint(np.clip(canvas, 0, 255)).astype(np.uint8)
    primitive_owner = np.array([p.owner for p in scene.primitives] + [-1], np.int32)
    return Render(image=image, owner=owner, person=primitive_owner[owner])  # owner -1 picks the last: -1


# --------------------------------------------------------------------------------------------------
# Scene sampler: a 3-D body (pelvis at the origin; l = person's left, u = up, f = forward) projected
# orthographically.  Camera coordinates: x right, y up, z into the scene (toward the camera is z < 0).

_SKIN = ((255, 224, 196), (241, 194, 160), (224, 172, 105), (198, 134, 66), (141, 85, 36), (92, 58, 37))
_HAIR = ((30, 25, 20), (70, 45, 25), (120, 80, 40), (205, 175, 110), (165, 165, 160), (150, 60, 30))
_TEXTURES = ("flat", "flat", "bands", "stripes", "checks")


@dataclass(frozen=True)
class _Pose:
    """Where a body is placed: yaw about the vertical, in-plane tilt, pelvis position in the image."""

    yaw: float
    tilt: float
    root: tuple[float, float]

    def project(self, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Body-frame (..., 3) points -> image (..., 2) pixel coordinates and camera depth (...)."""
        l, u, f = v[..., 0], v[..., 1], v[..., 2]
        cy, sy = math.cos(self.yaw), math.sin(self.yaw)
        x = l * cy - f * sy
        z = -l * sy - f * cy
        ct, st = math.cos(self.tilt), math.sin(self.tilt)
        img = np.stack([self.root[0] + x * ct + u * st, self.root[1] + x * st - u * ct], axis=-1)
        return img, z


@dataclass(frozen=True)
class _Part:
    """A primitive before global depth sorting; ``name`` lets joints refer to it."""

    entity_depth: float
    part_depth: float
    seq: int
    name: tuple[int, str]
    primitive: Primitive


def _unit(v: np.ndarray) -> np.ndarray:
    return v / max(float(np.linalg.norm(v)), 1e-9)


def _bend(d: np.ndarray, toward: np.ndarray, angle: float) -> np.ndarray:
    """Rotate direction ``d`` by ``angle`` toward ``toward`` (a joint flexing in a preferred plane)."""
    b = toward - np.dot(toward, d) * d
    b = _unit(b) if np.linalg.norm(b) > 1e-6 else _unit(np.cross(d, np.array([0.0, 0.0, 1.0])))
    return math.cos(angle) * d + math.sin(angle) * b


def _sample_limbs(rng: np.random.Generator, side: float) -> dict[str, np.ndarray]:
    """Arm and leg directions for one side (+1 left, -1 right): plausible joint angles, not uniform ones."""
    up, fwd, out = np.array([0.0, 1, 0]), np.array([0.0, 0, 1]), np.array([side, 0, 0])
    elevation = min(abs(rng.normal(0, 0.6)), 2.9) if rng.random() < 0.8 else rng.uniform(0, 2.9)
    azimuth = rng.uniform(-0.6, 2.1)
    upper_arm = math.sin(elevation) * (math.cos(azimuth) * out + math.sin(azimuth) * fwd) - math.cos(elevation) * up
    forearm = _bend(upper_arm, fwd + 0.5 * up, rng.uniform(0, 1) ** 1.5 * 2.4)
    thigh = _unit(-up + float(np.clip(rng.normal(0, 0.35), -0.7, 1.6)) * fwd + rng.uniform(0, 0.3) * out)
    shin = _bend(thigh, -fwd, rng.uniform(0, 1) ** 2 * 1.9)
    foot = _unit(fwd - 0.15 * up + 0.25 * out)
    return {"upper_arm": upper_arm, "forearm": forearm, "thigh": thigh, "shin": shin, "foot": foot}


def _random_colour(rng: np.random.Generator, max_saturation: float = 0.9) -> tuple[float, float, float]:
    r, g, b = colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.05, max_saturation), rng.uniform(0.2, 0.95))
    return (255 * r, 255 * g, 255 * b)


def _jitter(rng: np.random.Generator, rgb: Sequence[float], amount: float = 12.0) -> tuple[float, float, float]:
    return tuple(float(np.clip(c + rng.normal(0, amount), 0, 255)) for c in rgb)  # type: ignore[return-value]


def _garment(rng: np.random.Generator, h: float) -> dict[str, Any]:
    """Colours and texture of one piece of clothing."""
    colour = _random_colour(rng)
    mix = rng.uniform(0.25, 0.6)
    other = _random_colour(rng) if rng.random() < 0.5 else tuple(c * (1 - mix) for c in colour)
    return {"colour": colour, "colour2": tuple(other), "texture": _TEXTURES[rng.integers(len(_TEXTURES))],
            "period": max(2.0, h * rng.uniform(0.015, 0.05))}


class _PersonBuilder:
    """Samples one body and emits its primitives and keypoints; a class only to share the sampled state."""

    def __init__(self, rng: np.random.Generator, h: float, pose: _Pose, index: int, entity_depth: float,
                 seq_start: int) -> None:
        self.rng, self.h, self.pose, self.index = rng, h, pose, index
        self.entity_depth, self.seq = entity_depth, seq_start
        self.parts: list[_Part] = []
        skin = _jitter(rng, _SKIN[rng.integers(len(_SKIN))], 8)
        self.skin = {"colour": skin, "colour2": skin, "texture": "flat", "period": 1.0}
        hair = skin if rng.random() < 0.08 else _jitter(rng, _HAIR[rng.integers(len(_HAIR))])
        self.hair = {"colour": hair, "colour2": tuple(c * 0.75 for c in hair), "texture": "flat", "period": 1.0}
        self.shirt, self.pants = _garment(rng, h), _garment(rng, h)
        shoe = _random_colour(rng)
        self.shoes = {"colour": tuple(c * 0.5 for c in shoe), "colour2": shoe, "texture": "flat", "period": 1.0}
        self.long_sleeves, self.shorts = rng.random() < 0.5, rng.random() < 0.25
        self.thickness = rng.uniform(0.8, 1.3)

    def _add(self, name: str, kind: str, a3: np.ndarray, b3: np.ndarray, r0: float, r1: float, style: dict,
             depth_bias: float, shade: float = 0.35, min_radius: float = 0.8, clip: Primitive | None = None,
             depth: float | None = None) -> Primitive:
        """Project a 3-D segment and queue it as a primitive; ``depth`` overrides its painter's depth."""
        (a, b), z = self.pose.project(np.stack([a3, b3]))
        prim = Primitive(kind=kind, a=_snap_point(a), b=_snap_point(b), r0=max(r0, min_radius),
                         r1=max(r1, min_radius), shade=shade, owner=self.index, clip=clip, **style)
        part_depth = float(z.mean()) - depth_bias * self.h if depth is None else depth
        self.parts.append(_Part(self.entity_depth, part_depth, self.seq, (self.index, name), prim))
        self.seq += 1
        return prim

    def build(self) -> tuple[list[_Part], list[tuple[np.ndarray, bool, tuple[str, ...]]]]:
        """All primitives of the body and its 17 keypoints as (3-D point, facing camera, part names)."""
        rng, h, t = self.rng, self.h, self.thickness
        scale = h * rng.uniform(0.93, 1.07, size=8)
        neck = np.array([0.0, 0.30 * scale[0], 0.0])
        joints: dict[str, tuple[np.ndarray, bool, tuple[str, ...]]] = {}
        self._torso(neck, t)
        for side, name in ((1.0, "left"), (-1.0, "right")):
            limbs = _sample_limbs(rng, side)
            shoulder = neck + np.array([side * 0.115 * scale[1], rng.normal(0, 0.01) * h, 0.0])
            elbow = shoulder + 0.165 * scale[2] * limbs["upper_arm"]
            wrist = elbow + 0.145 * scale[3] * limbs["forearm"]
            hip = np.array([side * 0.075 * scale[4], 0.0, 0.0])
            knee = hip + 0.245 * scale[5] * limbs["thigh"]
            ankle = knee + 0.235 * scale[6] * limbs["shin"]
            sleeve = self.shirt if self.long_sleeves else self.skin
            legwear = self.skin if self.shorts else self.pants
            self._add(f"upper_arm_{name}", "capsule", shoulder, elbow, 0.042 * h * t, 0.035 * h * t, self.shirt, 0.02)
            self._add(f"forearm_{name}", "capsule", elbow, wrist, 0.034 * h * t, 0.026 * h * t, sleeve, 0.021)
            self._add(f"hand_{name}", "capsule", wrist, wrist + 0.055 * h * limbs["forearm"], 0.026 * h * t,
                      0.03 * h * t, self.skin, 0.022)
            self._add(f"thigh_{name}", "capsule", hip, knee, 0.062 * h * t, 0.046 * h * t, self.pants, 0.015)
            self._add(f"shin_{name}", "capsule", knee, ankle, 0.044 * h * t, 0.032 * h * t, legwear, 0.016)
            self._add(f"foot_{name}", "capsule", ankle, ankle + 0.075 * h * limbs["foot"], 0.03 * h * t,
                      0.027 * h * t, self.shoes, 0.017, shade=0.2)
            joints[f"{name}_shoulder"] = (shoulder, True, (f"upper_arm_{name}",))
            joints[f"{name}_elbow"] = (elbow, True, (f"upper_arm_{name}", f"forearm_{name}"))
            joints[f"{name}_wrist"] = (wrist, True, (f"forearm_{name}", f"hand_{name}"))
            joints[f"{name}_hip"] = (hip, True, (f"thigh_{name}",))
            joints[f"{name}_knee"] = (knee, True, (f"thigh_{name}", f"shin_{name}"))
            joints[f"{name}_ankle"] = (ankle, True, (f"shin_{name}", f"foot_{name}"))
        joints.update(self._head(neck, scale[7]))
        return self.parts, [joints[n] for n in COCO_KEYPOINT_NAMES]

    def _torso(self, neck: np.ndarray, t: float) -> None:
        """Trapezoid whose projected width follows an elliptic cross-section (wide front, narrow profile)."""
        h, c, s = self.h, abs(math.cos(self.pose.yaw)), abs(math.sin(self.pose.yaw))
        top_half = math.hypot(0.135 * h * t * c, 0.075 * h * t * s)
        bottom_half = math.hypot(0.1 * h * t * c, 0.07 * h * t * s)
        top, bottom = neck + np.array([0, 0.012 * h, 0]), np.array([0, -0.05 * h, 0])
        self._add("torso", "trapezoid", top, bottom, top_half, bottom_half, self.shirt, 0.0, shade=0.25)
        self._add("neck", "capsule", neck, neck + np.array([0, 0.06 * h, 0]), 0.036 * h, 0.034 * h, self.skin,
                  0.005)

    def _head(self, neck: np.ndarray, size: float) -> dict[str, tuple[np.ndarray, bool, tuple[str, ...]]]:
        """Head (hair-coloured), then face, ears, eyes, nose, mouth where they turn to the camera."""
        rng, h = self.rng, self.h
        yaw, pitch = float(np.clip(rng.normal(0, 0.45), -1.1, 1.1)), rng.normal(0, 0.15)
        fwd = np.array([math.sin(yaw), 0, math.cos(yaw)])
        left = np.array([math.cos(yaw), 0, -math.sin(yaw)])
        up = math.sin(pitch) * fwd + math.cos(pitch) * np.array([0.0, 1, 0])
        fwd = math.cos(pitch) * fwd - math.sin(pitch) * np.array([0.0, 1, 0])
        r = 0.058 * size
        centre = neck + np.array([0, 0.112 * size, 0]) + 0.15 * r * fwd
        depth = float(self.pose.project(centre)[1]) - 0.08 * h

        def toward_camera(normal: np.ndarray, threshold: float) -> bool:
            return float(self.pose.project(normal)[1]) < threshold  # camera depth of a direction

        def feature(direction: np.ndarray) -> np.ndarray:
            return centre + r * direction

        names: list[str] = ["head"]
        head = self._add("head", "ellipse", centre, centre + 8 * up, 0.9 * r, 1.1 * r, self.hair, 0, shade=0.3,
                         depth=depth)
        big = r >= 2.5
        if toward_camera(fwd, 0.35):
            face_centre = centre + 0.3 * r * fwd - 0.12 * r * up
            self._add("face", "ellipse", face_centre, face_centre + 8 * up, 0.8 * r, 0.95 * r, self.skin, 0,
                      shade=0.3, clip=head, depth=depth)
            names.append("face")
        keypoints: dict[str, tuple[np.ndarray, bool, tuple[str, ...]]] = {}
        ear_colour = {**self.skin, "colour": tuple(c * 0.9 for c in self.skin["colour"])}
        eye_colour = {**self.skin, "colour": (35.0, 25.0, 20.0)}
        for side, name in ((1.0, "left"), (-1.0, "right")):
            ear_dir = _unit(side * left - 0.05 * fwd)
            ear_visible = toward_camera(ear_dir, 0.3)
            if ear_visible:
                ear = feature(ear_dir)
                self._add(f"ear_{name}", "ellipse", ear, ear + 8 * up, 0.2 * r, 0.33 * r, ear_colour, 0,
                          min_radius=0.6, depth=depth)
                names.append(f"ear_{name}")
            eye_dir = _unit(side * 0.38 * left + 0.12 * up + 0.9 * fwd)
            eye_visible = toward_camera(eye_dir, -0.12)
            if eye_visible and big:
                eye = feature(eye_dir)
                self._add(f"eye_{name}", "ellipse", eye, eye + 8 * up, 0.11 * r, 0.14 * r, eye_colour, 0, shade=0,
                          min_radius=0.3, depth=depth)
                names.append(f"eye_{name}")
            keypoints[f"{name}_ear"] = (feature(ear_dir), ear_visible, ())
            keypoints[f"{name}_eye"] = (feature(eye_dir), eye_visible, ())
        nose_dir = _unit(-0.12 * up + fwd)
        nose_visible = toward_camera(nose_dir, 0.2)
        if nose_visible:
            nose_colour = {**self.skin, "colour": tuple(c * 0.82 for c in self.skin["colour"])}
            self._add("nose", "ellipse", feature(nose_dir), feature(nose_dir) + 8 * up, 0.2 * r, 0.24 * r,
                      nose_colour, 0, shade=0.2, min_radius=0.6, depth=depth)
            names.append("nose")
        mouth_dir = _unit(-0.5 * up + 0.87 * fwd)
        if big and toward_camera(mouth_dir, -0.15):
            mouth = feature(mouth_dir)
            self._add("mouth", "capsule", mouth - 0.22 * r * left, mouth + 0.22 * r * left, 0.06 * r, 0.06 * r,
                      {**self.skin, "colour": (150.0, 45.0, 50.0)}, 0, shade=0, min_radius=0.3, depth=depth)
        keypoints["nose"] = (feature(nose_dir), nose_visible, ())
        return {k: (p, facing, tuple(names)) for k, (p, facing, _) in keypoints.items()}


def _log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(math.exp(rng.uniform(math.log(low), math.log(high))))


def _background(rng: np.random.Generator, width: int, height: int, cfg: SyntheticConfig) -> np.ndarray:
    """Gradient sky/ground, low-frequency blotches and clutter (lines, boxes, discs, limb-like sticks)."""
    top, bottom = np.array(_random_colour(rng, 0.6)), np.array(_random_colour(rng, 0.6))  # muted, like photos
    ramp = np.linspace(0, 1, height)[:, None, None]
    image = np.broadcast_to(top + ramp * (bottom - top), (height, width, 3)).copy()
    if rng.random() < 0.6:
        horizon = int(rng.uniform(0.3, 0.8) * height)
        image[horizon:] = np.array(_random_colour(rng, 0.6)) * rng.uniform(0.6, 1.0)
    blotches = rng.normal(0, rng.uniform(5, 30), (6, 6, 3)).astype(np.float32)
    image += cv2.resize(blotches, (width, height), interpolation=cv2.INTER_CUBIC)
    canvas = np.ascontiguousarray(np.clip(image, 0, 255).astype(np.uint8))
    side = min(width, height)
    for _ in range(rng.integers(cfg.clutter_shapes[0], cfg.clutter_shapes[1] + 1)):
        colour = tuple(int(c) for c in _random_colour(rng))
        x, y = int(rng.integers(width)), int(rng.integers(height))
        extent = max(2, int(side * _log_uniform(rng, 0.02, 0.4)))
        kind = rng.integers(4)
        if kind == 0:
            cv2.rectangle(canvas, (x, y), (x + extent, y + int(extent * rng.uniform(0.2, 2))), colour, -1)
        elif kind == 1:
            cv2.circle(canvas, (x, y), extent // 2, colour, -1, lineType=cv2.LINE_AA)
        else:
            angle = rng.uniform(0, math.pi)
            end = (int(x + extent * math.cos(angle)), int(y + extent * math.sin(angle)))
            thickness = max(1, int(extent * rng.uniform(0.03, 0.15)))
            cv2.line(canvas, (x, y), end, colour, thickness, lineType=cv2.LINE_AA)
    return canvas


def _occluder(rng: np.random.Generator, width: int, height: int, entity_depth: float, seq: int) -> _Part:
    """A box, pole or bush in front of some people (they become v=1 where it covers them)."""
    side = min(width, height)
    centre = np.array([rng.uniform(0, width), rng.uniform(0, height)])
    style = _garment(rng, side * 0.3)
    if rng.random() < 0.5:
        half_length = side * _log_uniform(rng, 0.05, 0.4)
        angle = rng.normal(math.pi / 2, 0.1) if rng.random() < 0.5 else rng.uniform(0, math.pi)
        axis = np.array([math.cos(angle), math.sin(angle)])
        half_width = side * _log_uniform(rng, 0.015, 0.15)
        ends = _snap_point(centre - half_length * axis), _snap_point(centre + half_length * axis)
        prim = Primitive("trapezoid", *ends, half_width, half_width, shade=0.15, owner=-1, **style)
    else:
        radius = side * _log_uniform(rng, 0.04, 0.2)
        prim = Primitive("ellipse", _snap_point(centre), _snap_point(centre + (0, -8)), radius,
                         radius * rng.uniform(0.5, 1.3), shade=0.3, owner=-1, **style)
    return _Part(entity_depth, 0.0, seq, (-1, f"occluder{seq}"), prim)


Placement = tuple[float, float, float]  # standing height, pelvis x, pelvis y (pixels)


def _placements(rng: np.random.Generator, width: int, height: int, cfg: SyntheticConfig) -> list[Placement]:
    """(standing height, pelvis x, pelvis y) of the main people: scattered, or a group at one scale."""
    side = min(width, height)
    n = int(rng.integers(1, cfg.max_people + 1))
    low, high = cfg.height_range
    if rng.random() < cfg.group_prob and n > 1:
        base = _log_uniform(rng, low, high) * side
        x = rng.uniform(0, width)
        y = rng.uniform(0.3, 0.9) * height
        spacing = base * rng.uniform(0.15, 0.35) * rng.choice([-1, 1])
        return [(base * rng.uniform(0.85, 1.15), x + i * spacing + rng.normal(0, 0.03 * base),
                 y + rng.normal(0, 0.03 * base)) for i in range(n)]
    return [(_log_uniform(rng, low, high) * side, rng.uniform(0, width), rng.uniform(0.15, 0.95) * height)
            for _ in range(n)]


def _crowd_placements(rng: np.random.Generator, width: int, height: int, cfg: SyntheticConfig) -> list[Placement]:
    """Tiny people packed in a few rows: the kind of region COCO labels as one iscrowd=1 annotation."""
    side = min(width, height)
    h = _log_uniform(rng, *cfg.crowd_height_range) * side
    n = int(rng.integers(cfg.crowd_people[0], cfg.crowd_people[1] + 1))
    rows = int(rng.integers(1, 4))
    x0, y0 = rng.uniform(0, 0.7) * width, rng.uniform(0.2, 0.8) * height
    return [(h * rng.uniform(0.85, 1.15), x0 + (i // rows) * h * 0.3 + rng.normal(0, 0.05 * h),
             y0 + (i % rows) * h * 0.35 + rng.normal(0, 0.05 * h)) for i in range(n)]


def _yaw(rng: np.random.Generator, cfg: SyntheticConfig) -> float:
    """Body yaw in radians (0 faces the camera): mostly frontal, otherwise any direction."""
    if rng.random() < cfg.front_facing_prob:
        return float(np.clip(rng.normal(0, math.radians(cfg.front_yaw_deg)), -math.pi, math.pi))
    return float(rng.uniform(-math.pi, math.pi))


def _tilt(rng: np.random.Generator, cfg: SyntheticConfig) -> float:
    if rng.random() < cfg.lying_prob:
        return float(rng.choice([-1, 1]) * rng.uniform(1.05, 1.75))
    return float(rng.normal(0, math.radians(cfg.tilt_deg)))


def sample_scene(rng: np.random.Generator, width: int = 256, height: int = 256,
                 cfg: SyntheticConfig = SyntheticConfig()) -> Scene:
    """Draw one random scene description (everything ``render_scene`` and ``annotate_scene`` need)."""
    background = _background(rng, width, height, cfg)
    parts: list[_Part] = []
    bodies: list[tuple[float, bool, bool, list]] = []  # height, labelled, crowd, keypoint specs
    crowd = _crowd_placements(rng, width, height, cfg) if rng.random() < cfg.crowd_prob else []
    main = _placements(rng, width, height, cfg)
    for is_crowd, (h, x, y) in [(True, p) for p in crowd] + [(False, p) for p in main]:
        depth = 100.0 + rng.random() if is_crowd else -math.log(h) + rng.normal(0, 0.25)
        pose = _Pose(yaw=_yaw(rng, cfg), tilt=_tilt(rng, cfg), root=(x, y))
        body_parts, specs = _PersonBuilder(rng, h, pose, len(bodies), depth, len(parts)).build()
        parts.extend(body_parts)
        labelled = not is_crowd and h >= cfg.min_labelled_height_px and rng.random() >= cfg.unlabelled_prob
        bodies.append((h, labelled, is_crowd, [(pose.project(p)[0], facing, names) for p, facing, names in specs]))
    person_depths = [p.entity_depth for p in parts if p.name[0] >= 0 and p.entity_depth < 100]
    if person_depths and rng.random() < cfg.occluder_prob:
        for _ in range(int(rng.integers(1, cfg.max_occluders + 1))):
            depth = rng.uniform(min(person_depths) - 0.1, max(person_depths) + 0.1)
            parts.append(_occluder(rng, width, height, depth, len(parts)))
    parts.sort(key=lambda p: (-p.entity_depth, -p.part_depth, p.seq))
    index_of = {p.name: i for i, p in enumerate(parts)}
    people = tuple(
        Person(joints=tuple(Joint(*_snap_point(xy), facing, tuple(index_of[(i, n)] for n in names))
                            for xy, facing, names in specs), height=h, labelled=labelled, crowd=is_crowd)
        for i, (h, labelled, is_crowd, specs) in enumerate(bodies)
    )
    noise_sigma = rng.uniform(0, cfg.noise_sigma_max)
    noise = (rng.standard_normal((height, width, 3), dtype=np.float32) * np.float32(noise_sigma)
             if noise_sigma > 0.5 else None)
    blur = rng.uniform(0.4, cfg.blur_sigma_max) if rng.random() < cfg.blur_prob else 0.0
    return Scene(width, height, tuple(p.primitive for p in parts), people, background, noise, blur)


# --------------------------------------------------------------------------------------------------
# COCO annotations


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
    """17x3 COCO keypoints: v=2 if the joint's own part is on top at its pixel, v=1 if covered, v=0 outside.

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
            "category_id": 1, "iscrowd": 0, "area": float(area), "bbox": bbox,
            "num_keypoints": sum(1 for v in keypoints[2::3] if v > 0), "keypoints": keypoints,
            "segmentation": _mask_polygons(mask, bbox),
        })
    if crowd_mask.any():
        annotations.append({
            "category_id": 1, "iscrowd": 1, "area": float(crowd_mask.sum()), "bbox": _mask_bbox(crowd_mask),
            "num_keypoints": 0, "keypoints": [0] * (3 * len(COCO_KEYPOINT_NAMES)),
            "segmentation": mask_to_rle(crowd_mask),
        })
    return annotations


def _flip_segmentation(segmentation: Any, width: int) -> Any:
    if isinstance(segmentation, list):
        return [[width - v if i % 2 == 0 else v for i, v in enumerate(poly)] for poly in segmentation]
    from pycocotools import mask as mask_utils  # only needed for RLE, which is rare

    rle = mask_utils.frPyObjects(segmentation, *segmentation["size"])
    return mask_to_rle(mask_utils.decode(rle)[:, ::-1])


def flip_annotations(annotations: list[dict], width: int) -> list[dict]:
    """Labels of the horizontally flipped image: keypoints ``x -> W-1-x`` with left/right swapped,
    boxes ``x -> W-x-w``, polygons ``x -> W-x`` (pixel-edge), RLE masks mirrored."""
    flipped = []
    for ann in annotations:
        joints = [ann["keypoints"][3 * k: 3 * k + 3] for k in COCO_FLIP_INDEX]
        keypoints = [v for x, y, vis in joints for v in ((width - 1 - x, y, vis) if vis > 0 else (x, y, vis))]
        x, y, w, h = ann["bbox"]
        flipped.append({**ann, "keypoints": keypoints,
                        "bbox": [width - x - w, y, w, h],
                        "segmentation": _flip_segmentation(ann["segmentation"], width)})
    return flipped


def coco_categories() -> list[dict]:
    """The COCO person category with its 17 keypoint names and 1-based skeleton."""
    return [{"id": 1, "name": "person", "supercategory": "person", "keypoints": list(COCO_KEYPOINT_NAMES),
             "skeleton": [list(edge) for edge in COCO_SKELETON]}]


# --------------------------------------------------------------------------------------------------
# Writing the dataset


@dataclass(frozen=True)
class SyntheticDataset:
    """Where a generated dataset lives; ``images[split]`` and ``annotations[split]`` as COCO expects."""

    root: Path
    images: dict[str, Path]
    annotations: dict[str, Path]
    manifest: Path


def dataset_paths(out_dir: str | Path) -> SyntheticDataset:
    root = Path(out_dir)
    return SyntheticDataset(
        root=root,
        images={s: root / "images" / s for s in SPLITS},
        annotations={s: root / "annotations" / f"person_keypoints_{s}.json" for s in SPLITS},
        manifest=root / "manifest.json",
    )


def image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """Per-image generator from (seed, split, index): results do not depend on the worker count."""
    return np.random.default_rng(np.random.SeedSequence([seed, SPLITS.index(split), index]))


def _atomic_write(path: Path, data: bytes) -> None:
    """Write through a temporary file and rename, so a crash never leaves a truncated file in place."""
    atomic_write(path, data)


def _write_json(path: Path, obj: Any) -> None:
    _atomic_write(path, json.dumps(obj, separators=(",", ":")).encode())


def _encode_image(image_rgb: np.ndarray, image_format: str, cfg: SyntheticConfig) -> bytes:
    params = [cv2.IMWRITE_JPEG_QUALITY, cfg.jpeg_quality] if image_format == "jpg" else [cv2.IMWRITE_PNG_COMPRESSION, 1]
    ok, buffer = cv2.imencode(f".{image_format}", np.ascontiguousarray(image_rgb[..., ::-1]), params)
    if not ok:
        raise RuntimeError(f"OpenCV could not encode a {image_format} image")
    return buffer.tobytes()


@dataclass(frozen=True)
class _Job:
    images_dir: Path
    split: str
    index: int
    size: int
    seed: int
    image_format: str
    cfg: SyntheticConfig

    @property
    def image_id(self) -> int:
        return _SPLIT_ID_OFFSET[self.split] + self.index + 1

    @property
    def file_name(self) -> str:
        return f"{self.image_id:012d}.{self.image_format}"


def _make_example(job: _Job) -> tuple[dict, list[dict]]:
    """Sample, render, write one image; return its COCO image record and annotations (ids added later)."""
    scene = sample_scene(image_rng(job.seed, job.split, job.index), job.size, job.size, job.cfg)
    render = render_scene(scene)
    _atomic_write(job.images_dir / job.file_name, _encode_image(render.image, job.image_format, job.cfg))
    record = {"id": job.image_id, "file_name": job.file_name, "width": job.size, "height": job.size}
    return record, annotate_scene(scene, render, job.cfg.min_visible_keypoints)


def _worker_init() -> None:
    cv2.setNumThreads(1)  # the pool is the parallelism; OpenCV threads would only oversubscribe


def _run_jobs(jobs: list[_Job], workers: int) -> list[tuple[dict, list[dict]]]:
    """Run the jobs in order, in a forked process pool when ``workers > 1`` (results keep job order).

    Forking is cheap (no re-import of torch), but a child inherits OpenCV's thread pool without its
    threads and hangs in the first parallel OpenCV call; OpenCV is therefore single-threaded while the
    children are forked, and the caller's setting is restored afterwards.
    """
    if workers <= 1 or len(jobs) <= 1:
        return [_make_example(job) for job in jobs]
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    opencv_threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_worker_init) as pool:
            return list(pool.map(_make_example, jobs, chunksize=max(1, len(jobs) // (8 * workers))))
    finally:
        cv2.setNumThreads(opencv_threads)


def _coco_document(records: list[tuple[dict, list[dict]]], spec: dict) -> dict:
    images, annotations = [], []
    for record, anns in records:
        images.append(record)
        for ann in anns:
            annotations.append({"id": len(annotations) + 1, "image_id": record["id"], **ann})
    info = {"description": "hhrnet procedural multi-person keypoints (hhrnet.data.synthetic)", **spec}
    return {"info": info, "licenses": [], "images": images, "annotations": annotations,
            "categories": coco_categories()}


def _remove_stale_images(images_dir: Path, keep: set[str]) -> None:
    """Drop images of an earlier, different generation so the folder matches its annotations."""
    for path in images_dir.glob("*"):
        if path.suffix in (".png", ".jpg") and path.name not in keep:
            path.unlink()


def generate(out_dir: str | Path, n_train: int, n_val: int, size: int = 256, seed: int = 0,
             workers: int | None = None, image_format: str = "png", config: SyntheticConfig | None = None,
             force: bool = False) -> SyntheticDataset:
    """Write ``out_dir/images/{train,val}/*`` and ``out_dir/annotations/person_keypoints_{train,val}.json``.

    Idempotent: if ``out_dir/manifest.json`` (written last, after every image and JSON) records the same
    settings, nothing is redone.  Otherwise the manifest is removed first, so an interrupted run never
    looks complete.  The output is byte-identical for a given (seed, settings), whatever ``workers`` is
    (default: all CPUs).
    """
    if image_format not in ("png", "jpg"):
        raise ValueError(f"image_format must be 'png' or 'jpg', got {image_format!r}")
    if max(n_train, n_val) >= _SPLIT_ID_OFFSET["val"] or min(n_train, n_val) < 0 or size < 32:
        raise ValueError(f"need 0 <= n_train, n_val < 1e8 and size >= 32, got {n_train}, {n_val}, {size}")
    cfg = config or SyntheticConfig()
    paths = dataset_paths(out_dir)
    spec = {"format_version": FORMAT_VERSION, "n_train": n_train, "n_val": n_val, "size": size, "seed": seed,
            "image_format": image_format, "config": dataclasses.asdict(cfg)}
    spec = json.loads(json.dumps(spec))  # tuples -> lists, as they come back from disk
    if not force and paths.manifest.exists() and json.loads(paths.manifest.read_text()) == spec:
        return paths
    paths.manifest.unlink(missing_ok=True)
    workers = workers or os.cpu_count() or 1
    for split, count in (("train", n_train), ("val", n_val)):
        paths.images[split].mkdir(parents=True, exist_ok=True)
        jobs = [_Job(paths.images[split], split, i, size, seed, image_format, cfg) for i in range(count)]
        records = _run_jobs(jobs, workers)
        _write_json(paths.annotations[split], _coco_document(records, spec))
        _remove_stale_images(paths.images[split], {job.file_name for job in jobs})
    _write_json(paths.manifest, spec)
    return paths
