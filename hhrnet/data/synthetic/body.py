"""One person: a 3-D body (pelvis at the origin; l = person's left, u = up, f = forward) projected
orthographically to primitives and keypoints.  Camera coordinates: x right, y up, z into the scene
(toward the camera is z < 0)."""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from hhrnet.data.synthetic.config import KEYPOINTS
from hhrnet.data.synthetic.scene import Primitive, _snap_point
from hhrnet.keypoints import KeypointSet

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
                 seq_start: int, keypoints: KeypointSet = KEYPOINTS) -> None:
        self.rng, self.h, self.pose, self.index, self.keypoints = rng, h, pose, index, keypoints
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
        """All primitives of the body and its keypoints (in the order of ``self.keypoints``) as (3-D point,
        facing camera, part names).  Beyond COCO's 17: ``neck`` (the base of the neck, just above the
        shoulder line) and ``head`` (the top of the head), both labelled from any direction."""
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
        joints["neck"] = (neck + np.array([0.0, 0.02 * h, 0.0]), True, ("neck", "torso"))
        joints.update(self._head(neck, scale[7]))
        return self.parts, [joints[n] for n in self.keypoints.names]

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
        keypoints["head"] = (centre + r * up, True, ())  # inside the top of the ellipse (semi-axis 1.1 r)
        return {k: (p, facing, tuple(names)) for k, (p, facing, _) in keypoints.items()}
