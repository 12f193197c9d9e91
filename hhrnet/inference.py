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

``Predictor`` runs the whole chain on images (batched, any size mix); ``evaluate_dataset`` is what
the command line calls (file prediction lives in ``hhrnet.predict``).
"""

from __future__ import annotations

import time
import warnings
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, NamedTuple, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from hhrnet.config import Config, TestConfig, preset
from hhrnet.data.transforms import (affine_matrix, normalize_image, resize_align, input_size_at_scale,
                                    warp_points)
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


class Predictor:
    """Image(s) -> ``Poses`` with a ``HigherHRNet`` (or any module with the same outputs).

    ``predictor(images)`` takes RGB uint8 ``(H, W, 3)`` arrays of any sizes; images of the same size are
    run together in batches of ``batch_size``, results come back in input order.
    """

    def __init__(self, model: torch.nn.Module, cfg: Config, test: TestConfig | None = None,
                 batch_size: int = 1, device: str | torch.device | None = None, fast: bool = True,
                 compile: bool = False):
        """``fast``: BatchNorm folded and channels_last (same outputs within 1e-4, 1.6x faster on CPU);
        ``compile``: also ``torch.compile`` the network (a GPU option: on CPU it compiles for minutes
        and runs no faster, see ``bench/forward.py --compile``)."""
        self.cfg = cfg
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
        from hhrnet.checkpoints import load_model

        model, cfg = load_model(path, config)
        requested = preset(config) if isinstance(config, str) else config
        if requested is not None and requested.model != cfg.model:
            warnings.warn(f"{path}: its embedded config ({cfg.name!r}) differs from the requested "
                          f"{requested.name!r}; using the checkpoint's config", UserWarning, stacklevel=2)
        return cls(model, cfg, test, **kwargs)

    def __call__(self, images: Sequence[np.ndarray]) -> list[Poses]:
        """Poses for each image, in order (same-size images share a batch)."""
        if isinstance(images, np.ndarray) and images.ndim == 3:
            images = [images]
        by_size: dict[SizeHW, list[int]] = defaultdict(list)
        for i, image in enumerate(images):
            by_size[image.shape[:2]].append(i)
        results: list[Poses | None] = [None] * len(images)
        for indices in by_size.values():
            for start in range(0, len(indices), self.batch_size):
                chunk = indices[start:start + self.batch_size]
                for i, poses in zip(chunk, self.predict_batch([images[i] for i in chunk])):
                    results[i] = poses
        return results  # type: ignore[return-value]

    @torch.inference_mode()
    def predict_batch(self, images: Sequence[np.ndarray]) -> list[Poses]:
        """Poses for a batch of images that all have the same size (a ``ValueError`` otherwise)."""
        sizes = {image.shape for image in images}
        if len(sizes) != 1:
            raise ValueError(f"predict_batch needs images of one size, got {sorted(sizes)}; "
                             f"call the predictor itself to batch per size")
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

        num_joints = self.cfg.model.num_joints
        heatmaps, tags = aggregate(passes(), num_joints, self.cfg.data.flip_index, test, base_wh[::-1])
        _, center, scale_200 = warps[-1]  # the reference maps back with the last (smallest) scale's warp
        heatmap_wh = (heatmaps.shape[3], heatmaps.shape[2])
        return [Poses.from_grouped(g, center, scale_200, heatmap_wh) for g in group(heatmaps, tags, test)]

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


# --------------------------------------------------------------------------------------------------
# A COCO-format split in, metrics out (the command line; file prediction is hhrnet.predict)


def evaluate_dataset(predictor: Predictor, root: str | Path | None = None, split: str | None = None,
                     annotation_file: str | Path | None = None, image_dir: str | Path | None = None,
                     out_dir: str | Path | None = None, backend: str = "pycocotools",
                     progress: bool = True, limit: int | None = None) -> dict[str, Any]:
    """COCO keypoint AP of the predictor on a COCO-format split (every image of it, as the reference).

    With ``out_dir``: writes ``results.json`` (COCO result entries), ``metrics.json`` and ``metrics.md``.
    Returns the metrics plus ``images``, ``people`` and ``seconds_per_image``.
    """
    from pycocotools.coco import COCO
    from tqdm import tqdm

    from hhrnet.data.coco import coco_paths, read_rgb_image, validate_ground_truth
    from hhrnet.evaluation import coco_results, evaluate_coco, metrics_markdown
    from hhrnet.io import atomic_write, atomic_write_json

    ann_path, img_dir = coco_paths(root, split, annotation_file, image_dir)
    validate_ground_truth(ann_path, img_dir, predictor.cfg.model.num_joints)  # never score unchecked ground truth
    gt = COCO(str(ann_path))
    image_ids = sorted(gt.getImgIds())[:limit]
    results = []
    start = time.perf_counter()
    for image_id in tqdm(image_ids, desc="evaluate", unit="img", disable=not progress):
        info = gt.loadImgs(image_id)[0]
        image = read_rgb_image(img_dir / info["file_name"], (info["height"], info["width"]))
        results.extend(coco_results(image_id, predictor([image])[0]))
    seconds = (time.perf_counter() - start) / max(1, len(image_ids))
    metrics: dict[str, Any] = evaluate_coco(gt, results, image_ids, backend=backend)
    metrics.update(images=len(image_ids), people=len(results), seconds_per_image=seconds)
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / "results.json", results, indent=None)
        atomic_write_json(out / "metrics.json", metrics, indent=2)
        atomic_write(out / "metrics.md", metrics_markdown(metrics, title=f"{predictor.cfg.name} on {ann_path.name}"))
    return metrics
