"""The scene generator's knobs, the keypoints it labels and the dataset layout constants."""

from __future__ import annotations

from dataclasses import dataclass

from hhrnet.keypoints import COCO_17, CROWDPOSE_14

KEYPOINTS = COCO_17  # the default set: the joints the annotations carry unless ``generate(keypoints=...)``
# Every joint the body model places; a keypoint set made of these names can be generated.
BODY_JOINTS: frozenset[str] = frozenset(COCO_17.names) | frozenset(CROWDPOSE_14.names)
SPLITS: tuple[str, ...] = ("train", "val")
FORMAT_VERSION = 2
GRID = 8.0  # geometry lives on a 1/8-pixel grid (see the package docstring: mirror exactness)


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


# Crowded scenes for CrowdPose-format data: mostly groups of people standing close together at one
# scale, no iscrowd regions (CrowdPose has none), so the crowd index spreads over easy (< 0.2), medium
# and hard (>= 0.8) images (``hhrnet.data.crowd``); on 96-256 px images about 40 / 40 / 20 %.
CROWD_SCENES = SyntheticConfig(max_people=6, height_range=(0.3, 1.0), group_prob=0.9, crowd_prob=0.0)
