"""Scene description: plain frozen data, so mirroring is a pure function."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from hhrnet.data.synthetic.config import GRID, KEYPOINTS
from hhrnet.keypoints import keypoint_set


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
    joints: tuple[Joint, ...]  # in the order of the scene's keypoint set
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
    keypoints: str = KEYPOINTS.name  # the registered set whose joints ``Person.joints`` lists


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
    q = round(value * GRID) / GRID
    return q - 1 / GRID if q - math.floor(q) == 0.5 else q


def _snap_point(p: Sequence[float]) -> tuple[float, float]:
    return (_snap(float(p[0])), _snap(float(p[1])))


def mirror_scene(scene: Scene) -> Scene:
    """The horizontally mirrored scene: ``x -> W - 1 - x``, left/right keypoints swapped."""
    last = scene.width - 1
    flip_index = keypoint_set(scene.keypoints).flip_index

    def mirror_point(p: tuple[float, float]) -> tuple[float, float]:
        return (last - p[0], p[1])

    def mirror_primitive(p: Primitive) -> Primitive:
        clip = None if p.clip is None else mirror_primitive(p.clip)
        return dataclasses.replace(p, a=mirror_point(p.a), b=mirror_point(p.b), clip=clip)

    def mirror_person(person: Person) -> Person:
        joints = tuple(dataclasses.replace(person.joints[k], x=last - person.joints[k].x) for k in flip_index)
        return dataclasses.replace(person, joints=joints)

    return dataclasses.replace(
        scene,
        primitives=tuple(mirror_primitive(p) for p in scene.primitives),
        people=tuple(mirror_person(p) for p in scene.people),
        background=np.ascontiguousarray(scene.background[:, ::-1]),
        noise=None if scene.noise is None else np.ascontiguousarray(scene.noise[:, ::-1]),
    )
