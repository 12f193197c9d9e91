"""A whole scene: background, people placed at sampled scales, occluders, noise and blur."""

from __future__ import annotations

import math

import cv2
import numpy as np

from hhrnet.data.synthetic.body import _garment, _Part, _PersonBuilder, _Pose, _random_colour
from hhrnet.data.synthetic.config import BODY_JOINTS, KEYPOINTS, SyntheticConfig
from hhrnet.data.synthetic.scene import Joint, Person, Primitive, Scene, _snap_point
from hhrnet.keypoints import KeypointSet, keypoint_set


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
                 cfg: SyntheticConfig = SyntheticConfig(), keypoints: str | KeypointSet = KEYPOINTS) -> Scene:
    """Draw one random scene description (everything ``render_scene`` and ``annotate_scene`` need).

    ``keypoints`` chooses which joints each person carries (any set of the body model's joints,
    ``BODY_JOINTS``); it draws no random numbers, so the images do not depend on it.
    """
    kset = keypoint_set(keypoints)
    unknown = [n for n in kset.names if n not in BODY_JOINTS]
    if unknown:
        raise ValueError(f"the synthetic body model places no joint {unknown[0]!r} (keypoint set {kset.name!r}); "
                         f"it knows {', '.join(sorted(BODY_JOINTS))}")
    background = _background(rng, width, height, cfg)
    parts: list[_Part] = []
    bodies: list[tuple[float, bool, bool, list]] = []  # height, labelled, crowd, keypoint specs
    crowd = _crowd_placements(rng, width, height, cfg) if rng.random() < cfg.crowd_prob else []
    main = _placements(rng, width, height, cfg)
    for is_crowd, (h, x, y) in [(True, p) for p in crowd] + [(False, p) for p in main]:
        depth = 100.0 + rng.random() if is_crowd else -math.log(h) + rng.normal(0, 0.25)
        pose = _Pose(yaw=_yaw(rng, cfg), tilt=_tilt(rng, cfg), root=(x, y))
        body_parts, specs = _PersonBuilder(rng, h, pose, len(bodies), depth, len(parts), kset).build()
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
    return Scene(width, height, tuple(p.primitive for p in parts), people, background, noise, blur, kset.name)
