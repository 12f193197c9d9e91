"""From network outputs to poses in image pixels: flip test, multi-scale, projection, back-mapping.

The test pipeline of the official HigherHRNet (``get_multi_stage_outputs`` + ``aggregate_results``),
one function per step:

* ``output_maps``: one forward pass -> heatmaps and tag maps.  Every output is first upsampled
  (bilinear) to the last (highest-resolution) output's size; heatmaps are the mean of the chosen
  outputs' heatmap channels, tags are collected from the outputs that carry them (output 0).
* ``flip_back``: the pass on the mirrored image is mirrored back on W and its channels permuted with the
  flip index (heatmaps and per-joint tags alike; no pixel shift).
* ``scale_maps``: one test scale: both passes projected to the reference size, heatmaps averaged,
  tag maps kept side by side.
* ``aggregate``: all scales, largest first: heatmaps averaged over scales, tags only from scale 1,
  stacked on a last axis -> ``(N, K, H, W, T)`` ready for ``hhrnet.grouping.group``.
* ``to_image_coords``: grouped heatmap coordinates -> original image pixels.

``Predictor`` runs the whole chain on images (batched, any size mix): ``predict`` gives poses, ``maps``
the aggregated heatmaps and tags before grouping.  ``load_model`` reads a checkpoint or builds a
preset.  Dataset evaluation is ``hhrnet.evaluation.evaluate`` (``evaluate_dataset`` here is the
same function); file prediction lives in ``hhrnet.predict``.
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, NamedTuple, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from hhrnet.config import Config, TestConfig, preset, preset_names
from hhrnet.data.transforms import (affine_matrix, normalize_image, resize_align, input_size_at_scale,
                                    warp_points)
from hhrnet.evaluation import evaluate as evaluate_dataset  # noqa: F401  (its former home)
from hhrnet.grouping import GroupedImage, group
from hhrnet.model import HigherHRNet, fuse_for_inference

SizeHW = tuple[int, int]


class ScaleOutputs(NamedTuple):
    """The network outputs for one test scale: on the image and (flip test) on its mirror image."""

    scale: float
    outputs: Sequence[Tensor]
    flipped: Sequence[Tensor] | None = None


# --------------------------------------------------------------------------------------------------
# Network outputs -> aggregated heatmaps and tags


def _resize(maps: Tensor, size_hw: Sequence[int], align_corners: bool) -> Tensor:
    if tuple(maps.shape[-2:]) == tuple(size_hw):
        return maps
    return F.interpolate(maps, size=tuple(size_hw), mode="bilinear", align_corners=align_corners)


def output_maps(outputs: Sequence[Tensor], num_joints: int, test: TestConfig) -> tuple[Tensor, list[Tensor]]:
    """Heatmaps ``(N, K, h, w)`` and the tag maps of one pass, at the last output's resolution.

    Output ``i`` gives heatmaps if ``test.with_heatmaps[i]`` and tags (its channels after the first
    ``num_joints``) if ``test.with_tags[i]``; unset means every output / every output with tag channels.
    """
    with_heatmaps = test.with_heatmaps or (True,) * len(outputs)
    with_tags = test.with_tags or tuple(o.shape[1] > num_joints for o in outputs)
    if len(with_heatmaps) != len(outputs) or len(with_tags) != len(outputs):
        raise ValueError(f"the network has {len(outputs)} outputs but test.with_heatmaps={test.with_heatmaps} "
                         f"and test.with_tags={test.with_tags}")
    if not any(with_heatmaps) or not any(with_tags):
        raise ValueError("test.with_heatmaps and test.with_tags must each select at least one output")
    size = outputs[-1].shape[-2:]
    heat_sum: Tensor | int = 0
    tags = []
    for i, output in enumerate(outputs):
        output = _resize(output, size, test.align_corners)
        if with_heatmaps[i]:
            heat_sum = heat_sum + output[:, :num_joints]
        if with_tags[i]:
            if output.shape[1] <= num_joints:
                raise ValueError(f"output {i} has {output.shape[1]} channels: no tag maps after the "
                                 f"{num_joints} heatmaps (check test.with_tags)")
            tags.append(output[:, num_joints:])
    return heat_sum / sum(with_heatmaps), tags


def flip_back(maps: Tensor, flip_index: Sequence[int]) -> Tensor:
    """Mirror maps of the flipped image back on W; per-joint channels also swap left and right."""
    maps = torch.flip(maps, dims=[3])
    return maps[:, list(flip_index)] if maps.shape[1] == len(flip_index) else maps


def scale_maps(item: ScaleOutputs, num_joints: int, flip_index: Sequence[int], test: TestConfig,
               size_hw: Sequence[int] | None) -> tuple[Tensor, list[Tensor]]:
    """One scale: heatmaps averaged over the (flip) passes, tag maps of both passes, at ``size_hw``."""
    heatmaps, tags = output_maps(item.outputs, num_joints, test)
    heat_list = [heatmaps]
    if item.flipped is not None:
        flip_heat, flip_tags = output_maps(item.flipped, num_joints, test)
        heat_list.append(flip_back(flip_heat, flip_index))
        tags = tags + [flip_back(t, flip_index) for t in flip_tags]
    size_hw = heatmaps.shape[-2:] if size_hw is None else size_hw
    heat_list = [_resize(h, size_hw, test.align_corners) for h in heat_list]
    tags = [_resize(t, size_hw, test.align_corners) for t in tags]
    averaged = heat_list[0] if len(heat_list) == 1 else (heat_list[0] + heat_list[1]) / 2.0
    return averaged, tags


def aggregate(scales: Iterable[ScaleOutputs], num_joints: int, flip_index: Sequence[int], test: TestConfig,
              base_size_hw: Sequence[int]) -> tuple[Tensor, Tensor]:
    """Heatmaps ``(N, K, H, W)`` averaged over scales and tags ``(N, K, H, W, T)`` from scale 1.

    Everything is projected to ``base_size_hw`` (the scale-1 input size) when ``test.project2image``;
    otherwise to the map size of the first (largest) scale, as the reference does.  ``scales`` may be
    a generator, so only one scale's outputs need to be alive at a time.
    """
    heat_sum: Tensor | None = None
    tags: Tensor | None = None
    count = 0
    for item in scales:
        size = base_size_hw if test.project2image else (None if heat_sum is None else heat_sum.shape[-2:])
        heatmaps, tag_list = scale_maps(item, num_joints, flip_index, test, size)
        heat_sum = heatmaps if heat_sum is None else heat_sum + heatmaps
        count += 1
        if item.scale == 1.0 or len(test.scales) == 1:
            tags = torch.stack(tag_list, dim=2).movedim(2, -1)  # (N, K, T, H, W) in memory: refine reads planes
    if heat_sum is None or tags is None:
        raise ValueError(f"no outputs for scale 1 among the scales given (test.scales={test.scales})")
    tags = tags.expand(-1, num_joints, -1, -1, -1) if tags.shape[1] == 1 else tags
    return heat_sum / float(count), tags


def to_image_coords(joints: np.ndarray, center: Sequence[float], scale_200: Sequence[float],
                    heatmap_wh: Sequence[int]) -> np.ndarray:
    """Map ``(..., K, 2+)`` heatmap-pixel coordinates to image pixels (the inverse test warp).

    Other columns (values, tags) are kept.  Joints never found (all zero) land where the heatmap
    origin maps to, as in the reference.
    """
    mapped = joints.copy()
    mapped[..., :2] = warp_points(joints[..., :2], affine_matrix(center, scale_200, heatmap_wh, inverse=True))
    return mapped


# --------------------------------------------------------------------------------------------------
# Images -> poses


@dataclass
class Poses:
    """People found in one image, in original image pixels.

    ``keypoints (P, K, 3)``: x, y and the heatmap value at the joint (0 for joints never found);
    ``scores (P,)``: mean joint value taken before refine (the COCO result score);
    ``tags (P, K, T)``: the embedding of each joint (zeros for joints filled in by refine or missing).
    """

    keypoints: np.ndarray
    scores: np.ndarray
    tags: np.ndarray

    def __len__(self) -> int:
        return len(self.keypoints)

    @classmethod
    def from_grouped(cls, grouped: GroupedImage, center: Sequence[float], scale_200: Sequence[float],
                     heatmap_wh: Sequence[int]) -> "Poses":
        joints = to_image_coords(grouped.joints, center, scale_200, heatmap_wh)
        return cls(joints[..., :3], grouped.scores, joints[..., 3:])


@dataclass
class Maps:
    """One image's aggregated maps before grouping, and the warp between them and the image.

    ``heatmaps (K, H, W)`` and ``tags (K, H, W, T)`` (``T``: one tag per pass, the flipped pass second)
    are what ``hhrnet.grouping.group`` takes (with a batch axis); ``center`` and ``scale_200`` define the
    map frame in the image, as ``hhrnet.data.transforms.affine_matrix`` reads them.
    """

    heatmaps: np.ndarray
    tags: np.ndarray
    center: np.ndarray
    scale_200: np.ndarray

    @property
    def size_wh(self) -> tuple[int, int]:
        return self.heatmaps.shape[2], self.heatmaps.shape[1]

    def from_image(self, xy: np.ndarray) -> np.ndarray:
        """Image pixels ``(..., 2)`` -> map pixels."""
        return warp_points(np.asarray(xy, np.float64), affine_matrix(self.center, self.scale_200, self.size_wh))

    def to_image(self, joints: np.ndarray) -> np.ndarray:
        """Map pixels ``(..., 2+)`` -> image pixels (other columns kept)."""
        return to_image_coords(joints, self.center, self.scale_200, self.size_wh)

    def image_in_frame(self, image: np.ndarray) -> np.ndarray:
        """The image resampled into the maps' frame, for overlays."""
        return resize_align(image, self.size_wh, self.center, self.scale_200)


def load_model(source: str | Path, config: Config | str | None = None,
               weights: bool = True) -> tuple[HigherHRNet, Config]:
    """``(network in eval mode, its Config)`` from a checkpoint file (official, mmpose or hhrnet) or a
    published name (``"w32_512"``, fetched once, see ``hhrnet.hub``); ``weights=False`` builds the
    preset ``source`` untrained, to look at shapes without any download."""
    if not weights:
        if source not in preset_names():
            raise ValueError(f"weights=False builds a preset ({', '.join(preset_names())}), got {source!r}")
        cfg = preset(str(source)) if config is None else (preset(config) if isinstance(config, str) else config)
        return HigherHRNet(cfg.model).eval(), cfg
    from hhrnet.checkpoints import load_model as load_checkpoint

    return load_checkpoint(source, config)


class Predictor:
    """Image(s) -> ``Poses`` (``predict``) or aggregated maps (``maps``) with a ``HigherHRNet``.

    ``model`` is a network (or any module with the same outputs) with its ``cfg``, or what
    ``load_model`` takes: a checkpoint file or a published name.  Images are RGB uint8 ``(H, W, 3)``
    arrays of any sizes; images of the same size are run together in batches of ``batch_size``,
    results come back in input order.  ``test`` replaces ``cfg.test``.
    """

    def __init__(self, model: torch.nn.Module | str | Path, cfg: Config | None = None, test: TestConfig | None = None,
                 batch_size: int = 1, device: str | torch.device | None = None, fast: bool = True,
                 compile: bool = False):
        """``fast``: BatchNorm folded and channels_last (same outputs within 1e-4, faster on CPU);
        ``compile``: also ``torch.compile`` the network (a GPU option: on CPU it compiles for minutes
        and runs no faster)."""
        if isinstance(model, (str, Path)):
            model, cfg = load_model(model, cfg)
        if cfg is None:
            raise ValueError("Predictor needs the network's Config (or a checkpoint path / preset name)")
        self.cfg = cfg
        self.keypoints = cfg.data.keypoint_set
        self.test = test if test is not None else cfg.test
        self.batch_size = max(1, int(batch_size))
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.memory_format = torch.contiguous_format
        if fast and isinstance(model, HigherHRNet):
            model, self.memory_format = fuse_for_inference(model), torch.channels_last
        self.model = model.to(self.device, memory_format=self.memory_format).eval()
        if compile:
            self.model = torch.compile(self.model)

    @classmethod
    def from_checkpoint(cls, path: str | Path, test: TestConfig | None = None, config: Config | str | None = None,
                        **kwargs: Any) -> "Predictor":
        """Load any supported checkpoint; a config embedded in it wins over ``config`` (with a warning)."""
        from hhrnet.checkpoints import load_model as load_checkpoint

        model, cfg = load_checkpoint(path, config)
        requested = preset(config) if isinstance(config, str) else config
        if requested is not None and requested.model != cfg.model:
            warnings.warn(f"{path}: its embedded config ({cfg.name!r}) differs from the requested "
                          f"{requested.name!r}; using the checkpoint's config", UserWarning, stacklevel=2)
        return cls(model, cfg, test, **kwargs)

    def predict(self, images: Sequence[np.ndarray] | np.ndarray) -> list[Poses]:
        """Poses for each image, in order (one ``(H, W, 3)`` array counts as a list of one)."""
        return self._per_size(images, self.predict_batch)

    __call__ = predict

    def maps(self, images: Sequence[np.ndarray] | np.ndarray) -> list[Maps]:
        """Aggregated heatmaps and tags of each image (flip, scales, projection), before grouping."""
        return self._per_size(images, self.maps_batch)

    def _per_size(self, images: Sequence[np.ndarray] | np.ndarray, run_batch) -> list:
        """``run_batch`` over batches of same-size images; results in input order."""
        if isinstance(images, np.ndarray) and images.ndim == 3:
            images = [images]
        by_size: dict[SizeHW, list[int]] = defaultdict(list)
        for i, image in enumerate(images):
            by_size[image.shape[:2]].append(i)
        results: list[Any] = [None] * len(images)
        for indices in by_size.values():
            for start in range(0, len(indices), self.batch_size):
                chunk = indices[start:start + self.batch_size]
                for i, result in zip(chunk, run_batch([images[i] for i in chunk])):
                    results[i] = result
        return results

    def predict_batch(self, images: Sequence[np.ndarray]) -> list[Poses]:
        """Poses for a batch of images that all have the same size (a ``ValueError`` otherwise)."""
        heatmaps, tags, center, scale_200 = self._aggregate(images)
        heatmap_wh = (heatmaps.shape[3], heatmaps.shape[2])
        return [Poses.from_grouped(g, center, scale_200, heatmap_wh)
                for g in group(heatmaps, tags, self.test, self.keypoints)]

    def maps_batch(self, images: Sequence[np.ndarray]) -> list[Maps]:
        """``Maps`` for a batch of images that all have the same size."""
        heatmaps, tags, center, scale_200 = self._aggregate(images)
        return [Maps(h.numpy(), t.numpy(), center, scale_200) for h, t in zip(heatmaps, tags)]

    @torch.inference_mode()
    def _aggregate(self, images: Sequence[np.ndarray]) -> tuple[Tensor, Tensor, np.ndarray, np.ndarray]:
        """Heatmaps ``(N, K, H, W)``, tags ``(N, K, H, W, T)`` (on the CPU) and the warp back to the images."""
        sizes = {image.shape for image in images}
        if len(sizes) != 1:
            raise ValueError(f"a batch needs images of one size, got {sorted(sizes)}; "
                             f"call predict / maps to batch per size")
        shape = sizes.pop()
        if len(shape) != 3 or shape[2] != 3:
            raise ValueError(f"expected RGB images (H, W, 3), got shape {shape}")
        image_hw = shape[:2]
        test, size = self.test, self.cfg.input_size
        min_scale = min(test.scales)
        base_wh, _, _ = input_size_at_scale(image_hw, size, 1.0, min_scale)
        warps = [input_size_at_scale(image_hw, size, s, min_scale) for s in test.scales]

        def passes() -> Iterator[ScaleOutputs]:
            for s, (size_wh, center, scale_200) in zip(test.scales, warps):
                yield self.run_network(images, s, size_wh, center, scale_200)

        kset = self.keypoints
        heatmaps, tags = aggregate(passes(), kset.num_joints, kset.flip_index, test, base_wh[::-1])
        _, center, scale_200 = warps[-1]  # the reference maps back with the last (smallest) scale's warp
        return heatmaps.cpu(), tags.cpu(), center, scale_200

    def run_network(self, images: Sequence[np.ndarray], scale: float, size_wh: Sequence[int],
                    center: np.ndarray, scale_200: np.ndarray) -> ScaleOutputs:
        """Warp, normalise and run one scale; with flip test the mirror images share the forward pass."""
        data = self.cfg.data
        batch = np.stack([normalize_image(resize_align(im, size_wh, center, scale_200), data.mean, data.std)
                          for im in images])
        x = torch.from_numpy(batch).to(self.device)
        n = len(images)
        if self.test.flip_test:
            x = torch.cat([x, torch.flip(x, dims=[3])])
        outputs = [o.contiguous() for o in self.model(x.contiguous(memory_format=self.memory_format))]
        if not self.test.flip_test:
            return ScaleOutputs(scale, outputs)
        return ScaleOutputs(scale, [o[:n] for o in outputs], [o[n:] for o in outputs])
