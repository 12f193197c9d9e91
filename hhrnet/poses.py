"""What ``Predictor`` returns: people in image pixels (``Poses``) and maps with the warp back to the image.

* ``Poses``: one image's people; ``plot`` / ``draw`` show those scoring at least ``MIN_SCORE``.
* ``Maps``: one image's aggregated heatmaps and tags before grouping (what ``hhrnet.grouping.group`` takes).
* ``OutputMaps``: one network output (one resolution) at one test scale, at its native size.

Every map knows its frame in the image (``center``, ``scale_200``: the test warp, as
``hhrnet.data.transforms.affine_matrix`` reads them), so ``to_image`` / ``from_image`` move points
between map pixels and image pixels.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from hhrnet.data.transforms import affine_matrix, resize_align, warp_points
from hhrnet.grouping import GroupedImage
from hhrnet.images import as_rgb
from hhrnet.keypoints import KeypointSet
from hhrnet.viz.skeleton import MIN_SCORE, draw_found

if TYPE_CHECKING:
    from matplotlib.axes import Axes


def to_image_coords(joints: np.ndarray, center: Sequence[float], scale_200: Sequence[float],
                    heatmap_wh: Sequence[int]) -> np.ndarray:
    """Map ``(..., K, 2+)`` heatmap-pixel coordinates to image pixels (the inverse test warp).

    Other columns (values, tags) are kept.  Joints never found (all zero) land where the heatmap
    origin maps to, as in the reference.
    """
    mapped = joints.copy()
    mapped[..., :2] = warp_points(joints[..., :2], affine_matrix(center, scale_200, heatmap_wh, inverse=True))
    return mapped


def _value_range(values: np.ndarray) -> str:
    return f"{values.min():.2f}-{values.max():.2f}" if values.size else "none"


@dataclass(repr=False)
class Poses:
    """People found in one image, in original image pixels.

    ``keypoints (P, K, 3)``: x, y and the heatmap value at the joint (0 for joints never found);
    ``scores (P,)``: mean joint value taken before refine (the COCO result score);
    ``tags (P, K, T)``: the embedding of each joint (zeros for joints filled in by refine or missing);
    ``kset``: the keypoint set (names, skeleton) the joints follow, for drawing.
    """

    keypoints: np.ndarray
    scores: np.ndarray
    tags: np.ndarray
    kset: KeypointSet | None = field(default=None, compare=False)

    def __len__(self) -> int:
        return len(self.keypoints)

    def __repr__(self) -> str:
        joints = self.keypoints.shape[1] if self.keypoints.ndim == 3 else 0
        drawn = int((np.asarray(self.scores) >= MIN_SCORE).sum())
        people = f"{len(self)} {'person' if len(self) == 1 else 'people'}"
        return (f"Poses({people}, {joints} joints, scores {_value_range(np.asarray(self.scores))}; "
                f"{drawn} drawn at score >= {MIN_SCORE:g})")

    @classmethod
    def from_grouped(cls, grouped: GroupedImage, center: Sequence[float], scale_200: Sequence[float],
                     heatmap_wh: Sequence[int], kset: KeypointSet | None = None) -> "Poses":
        joints = to_image_coords(grouped.joints, center, scale_200, heatmap_wh)
        return cls(joints[..., :3], grouped.scores, joints[..., 3:], kset)

    def _kset(self, kset: KeypointSet | None) -> KeypointSet:
        chosen = kset or self.kset
        if chosen is None:
            raise ValueError("these Poses carry no keypoint set: pass kset= (e.g. hhrnet.COCO_17) to draw them")
        return chosen

    def draw(self, target: "Axes | np.ndarray", min_score: float = MIN_SCORE, kset: KeypointSet | None = None,
             **style: Any) -> "Axes | np.ndarray":
        """Draw the people scoring ``min_score`` or more on an Axes (returned) or an RGB image (a drawn copy)."""
        return draw_found(target, self.keypoints, self.scores, min_score, kset=self._kset(kset), **style)

    def plot(self, image: Any, min_score: float = MIN_SCORE, ax: "Axes | None" = None,
             kset: KeypointSet | None = None) -> "Axes":
        """The image (anything ``hhrnet.images`` reads) with its people drawn, on a new figure unless ``ax``
        is given; the title says how many are shown."""
        import matplotlib.pyplot as plt  # deferred: importing hhrnet never selects a matplotlib backend

        image = as_rgb(image)
        if ax is None:
            _, ax = plt.subplots(figsize=(6, 6 * image.shape[0] / image.shape[1]))
        ax.imshow(image)
        self.draw(ax, min_score, kset)
        shown = int((np.asarray(self.scores) >= min_score).sum())
        ax.set_title(f"{shown} of {len(self)} people (score >= {min_score:g})", fontsize=9)
        ax.axis("off")
        return ax


@dataclass(repr=False)
class Maps:
    """One image's aggregated maps before grouping, and the warp between them and the image.

    ``heatmaps (K, H, W)`` and ``tags (K, H, W, T)`` (``T``: one tag per pass, the flipped pass second)
    are what ``hhrnet.grouping.group`` takes (with a batch axis).
    """

    heatmaps: np.ndarray
    tags: np.ndarray | None
    center: np.ndarray
    scale_200: np.ndarray

    @property
    def size_wh(self) -> tuple[int, int]:
        return self.heatmaps.shape[2], self.heatmaps.shape[1]

    def __repr__(self) -> str:
        k, h, w = self.heatmaps.shape
        tags = "no tags" if self.tags is None else f"tags {'x'.join(map(str, self.tags.shape))}"
        return (f"{type(self).__name__}({self._label()}heatmaps {k}x{h}x{w} (peak {float(self.heatmaps.max()):.2f}), "
                f"{tags})")

    def _label(self) -> str:
        return ""

    def from_image(self, xy: np.ndarray) -> np.ndarray:
        """Image pixels ``(..., 2)`` -> map pixels."""
        return warp_points(np.asarray(xy, np.float64), affine_matrix(self.center, self.scale_200, self.size_wh))

    def to_image(self, joints: np.ndarray) -> np.ndarray:
        """Map pixels ``(..., 2+)`` -> image pixels (other columns kept)."""
        return to_image_coords(joints, self.center, self.scale_200, self.size_wh)

    def image_in_frame(self, image: Any) -> np.ndarray:
        """The image (anything ``hhrnet.images`` reads) resampled into the maps' frame, for overlays."""
        return resize_align(as_rgb(image), self.size_wh, self.center, self.scale_200)


@dataclass(repr=False)
class OutputMaps(Maps):
    """One network output at one test scale, at its native size: ``stride`` input pixels per map pixel.

    ``heatmaps (K, h, w)`` are the mean of the image pass and the mirrored pass mirrored back (flip test);
    ``tags (K or 1, h, w, T)`` are the output's tag channels, one per pass, or None for an output without any.
    """

    scale: float = 1.0
    stride: int = 4

    def _label(self) -> str:
        return f"scale {self.scale:g}, stride {self.stride}: "
