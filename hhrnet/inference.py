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

``Predictor`` runs the whole chain on images (batched, any size mix) as four steps a caller can also
take one by one (the diagnostics swap perfect maps in between): ``test_warps`` -> ``network_outputs``
-> ``aggregate`` (``Maps``) -> ``poses`` (``Poses``).  ``predict`` gives poses, ``maps`` the aggregated
maps, ``outputs`` every output at its own resolution.  ``load_model`` reads a checkpoint or builds a
preset.  Dataset evaluation is ``hhrnet.evaluation.evaluate`` (``evaluate_dataset`` here is the same
function); file prediction lives in ``hhrnet.predict``.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, NamedTuple, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from hhrnet.checkpoints import load_model as load_checkpoint, open_checkpoint
from hhrnet.config import Config, preset, preset_names
from hhrnet.data.transforms import input_size_at_scale, normalize_image, resize_align
from hhrnet.evaluation import evaluate as evaluate_dataset  # noqa: F401  (its former home)
from hhrnet.grouping import group
from hhrnet.images import as_images, is_one_image
from hhrnet.model import HigherHRNet, fuse_for_inference
from hhrnet.poses import Maps, OutputMaps, Poses
from hhrnet.precision import Choice, autocast, resolve
from hhrnet.sections import TestConfig
from hhrnet.trained_on import checkpoint_record, describe, far_from_training, network_name



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
    return load_checkpoint(source, config)


def load_checked(source: str | Path, config: Config | str | None) -> tuple[HigherHRNet, Config, dict[str, Any]]:
    """``load_model`` and the checkpoint's training-data record (``checkpoint_record``) from one read of the
    file, warning when the checkpoint's embedded config differs from the one asked for."""
    checkpoint = open_checkpoint(source, network=True)
    model, cfg = load_checkpoint(checkpoint, config)
    requested = preset(config) if isinstance(config, str) else config
    if requested is not None and requested.model != cfg.model:
        warnings.warn(f"{source}: its embedded config ({cfg.name!r}) differs from the requested "
                      f"{requested.name!r}; using the checkpoint's config", UserWarning, stacklevel=4)
    return model, cfg, checkpoint_record(checkpoint, cfg)


def resolve_test(base: TestConfig, test: TestConfig | Mapping[str, Any] | None,
                 settings: Mapping[str, Any]) -> TestConfig:
    """``base`` (the config's test settings), replaced by ``test`` (a TestConfig or a dict of its fields) and
    then by keyword ``settings``; a name that is no ``TestConfig`` field is one ``TypeError`` listing them."""
    names = [f.name for f in dataclasses.fields(TestConfig)]
    if isinstance(test, Mapping):
        test, settings = None, {**test, **settings}
    elif test is not None and not isinstance(test, TestConfig):
        raise TypeError(f"test: expected a TestConfig or a dict of its fields, got a {type(test).__name__}")
    unknown = sorted(set(settings) - set(names))
    if unknown:
        hint = " (the network's Config is config=)" if unknown[0] in ("cfg", "configuration") else ""
        raise TypeError(f"Predictor: unknown setting {unknown[0]!r}{hint}; settings are the TestConfig fields "
                        f"{', '.join(names)}")
    chosen = base if test is None else test
    return dataclasses.replace(chosen, **settings) if settings else chosen


class ScaleWarp(NamedTuple):
    """One test scale's network input size and the warp between it and the image."""

    scale: float
    size_wh: tuple[int, int]
    center: np.ndarray
    scale_200: np.ndarray


class Predictor:
    """Image(s) -> ``Poses`` (``predict``), aggregated maps (``maps``) or per-resolution maps (``outputs``).

    ``model`` is a checkpoint file or a published name (what ``load_model`` takes), or a network (or any
    module with the same outputs) with its ``config``.  Test settings come from ``config.test``, replaced
    by ``test`` (a ``TestConfig`` or a dict) and by keywords naming its fields:
    ``Predictor("w32_512", flip_test=False, scales=(2, 1, 0.5))``.  Images are whatever ``hhrnet.images``
    takes (paths, PIL images, arrays); images of the same size run together in batches of ``batch_size``,
    results come back in input order.
    """

    def __init__(self, model: torch.nn.Module | str | Path, config: Config | str | None = None,
                 test: TestConfig | Mapping[str, Any] | None = None, batch_size: int = 1,
                 device: str | torch.device | None = None, fast: bool = True, compile: bool = False, **settings: Any):
        """``fast``: BatchNorm folded and channels_last (same outputs within 1e-4, faster on CPU);
        ``compile``: also ``torch.compile`` the network (a GPU option: on CPU it compiles for minutes
        and runs no faster)."""
        self.trained_on: dict[str, Any] | None = None
        if isinstance(model, (str, Path)):
            model, config, self.trained_on = load_checked(model, config)
        elif isinstance(config, str):
            config = preset(config)
        if not isinstance(config, Config):
            raise ValueError("Predictor needs the network's Config (config=) or a checkpoint path / published name")
        self.cfg = config
        self.keypoints = config.data.keypoint_set
        self.test = resolve_test(config.test, test, settings)
        self.batch_size = max(1, int(batch_size))
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.memory_format = torch.contiguous_format
        if fast and isinstance(model, HigherHRNet):
            model, self.memory_format = fuse_for_inference(model), torch.channels_last
        self.model = model.to(self.device, memory_format=self.memory_format).eval()
        if compile:
            self.model = torch.compile(self.model)
        self._noted_far = False

    @classmethod
    def from_checkpoint(cls, path: str | Path, test: TestConfig | Mapping[str, Any] | None = None,
                        config: Config | str | None = None, **kwargs: Any) -> "Predictor":
        """``Predictor(path, config, test, ...)``: the checkpoint's embedded config wins over ``config`` (with a warning)."""
        return cls(path, config, test, **kwargs)

    @property
    def name(self) -> str:
        """What the network is (width, input size, the row it stands for): ``hhrnet.trained_on.network_name``."""
        return network_name(self.cfg)

    def __repr__(self) -> str:
        test = self.test
        passes = f"{'flip test, ' if test.flip_test else ''}scales {', '.join(f'{s:g}' for s in test.scales)}"
        trained = f"; trained on {describe(self.trained_on)}" if self.trained_on else ""
        return (f"Predictor({self.name}; config {self.cfg.name!r}, {self.keypoints.num_joints} "
                f"{self.keypoints.name} joints; {passes}; {self.device}, batch {self.batch_size}{trained})")

    def predict(self, images: Any, rgb: bool = True, bgr: bool = False) -> list[Poses]:
        """Poses for each image, in order (one image counts as a list of one); arrays are RGB unless ``bgr``."""
        return self._per_size(self._inputs(images, rgb, bgr), self.predict_batch)

    __call__ = predict

    def maps(self, images: Any, rgb: bool = True, bgr: bool = False) -> list[Maps]:
        """Aggregated heatmaps and tags of each image (flip, scales, projection), before grouping."""
        return self._per_size(self._inputs(images, rgb, bgr), self.maps_batch)

    def outputs(self, image: Any, rgb: bool = True, bgr: bool = False) -> list[OutputMaps]:
        """Every network output of one image at every test scale, at its native size (before aggregation),
        each with the warp back to the image: e.g. the 1/4 and the 1/2 heatmaps of HigherHRNet side by side."""
        [rgb_image] = self._inputs(image, rgb, bgr, one=True)
        strides = self.cfg.model.output_strides
        found = []
        for warp, item in zip(self.test_warps(rgb_image.shape[:2]), self.network_outputs([rgb_image])):
            for i, output in enumerate(item.outputs):
                heat, tags = self._native(output, None if item.flipped is None else item.flipped[i])
                found.append(OutputMaps(heat, tags, warp.center, warp.scale_200, warp.scale, strides[i]))
        return found

    def _native(self, output: Tensor, flipped: Tensor | None) -> tuple[np.ndarray, np.ndarray | None]:
        """One image's output: heatmaps (flip-averaged) ``(K, h, w)`` and tags ``(C, h, w, passes)`` at its resolution."""
        k, flip_index = self.keypoints.num_joints, self.keypoints.flip_index
        passes = [(output[:, :k].float().cpu(), output[:, k:].float().cpu())]
        if flipped is not None:
            passes.append((flip_back(flipped[:, :k].float().cpu(), flip_index),
                           flip_back(flipped[:, k:].float().cpu(), flip_index)))
        heat = sum(h for h, _ in passes) / len(passes)
        tags = torch.stack([t for _, t in passes], dim=-1)[0].numpy() if output.shape[1] > k else None
        return heat[0].numpy(), tags

    def _inputs(self, images: Any, rgb: bool, bgr: bool, one: bool = False) -> list[np.ndarray]:
        if one and not is_one_image(images):
            raise ValueError(f"outputs takes one image, got a {type(images).__name__} of several")
        found = as_images(images, rgb, bgr)
        if self.trained_on is not None and not self._noted_far:
            note = next((n for n in (far_from_training(self.trained_on, im.shape[:2]) for im in found) if n), None)
            if note:
                self._noted_far = True
                warnings.warn(note, TrainingDataNote, stacklevel=3)
        return found

    def _per_size(self, images: list[np.ndarray], run_batch: Callable[[list[np.ndarray]], list]) -> list:
        """``run_batch`` over batches of same-size images; results in input order."""
        by_size: dict[tuple[int, int], list[int]] = defaultdict(list)
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
        """Poses for a batch of RGB uint8 images that all have the same size (a ``ValueError`` otherwise)."""
        return [self.poses(m) for m in self.maps_batch(images)]

    def maps_batch(self, images: Sequence[np.ndarray]) -> list[Maps]:
        """``Maps`` for a batch of RGB uint8 images that all have the same size."""
        return self.aggregate(self.network_outputs(images), self._batch_size_hw(images))

    def poses(self, maps: Maps) -> Poses:
        """Group one image's aggregated maps and map the people back to the image (``predict``'s last step)."""
        [grouped] = group(maps.heatmaps[None], maps.tags[None], self.test, self.keypoints)
        return Poses.from_grouped(grouped, maps.center, maps.scale_200, maps.size_wh, self.keypoints)

    def test_warps(self, image_hw: tuple[int, int]) -> list[ScaleWarp]:
        """The network input size and warp of every test scale for an image of ``image_hw``, largest first."""
        size, min_scale = self.cfg.input_size, min(self.test.scales)
        return [ScaleWarp(s, *input_size_at_scale(image_hw, size, s, min_scale)) for s in self.test.scales]

    @torch.inference_mode()
    def aggregate(self, passes: Iterable[ScaleOutputs], image_hw: tuple[int, int]) -> list[Maps]:
        """Network outputs of every test scale (``network_outputs``, or maps swapped in for them) -> one
        ``Maps`` per image: flip-back, scales averaged, projected, with the warp back to the image."""
        kset, warps = self.keypoints, self.test_warps(image_hw)
        base_wh, _, _ = input_size_at_scale(image_hw, self.cfg.input_size, 1.0, min(self.test.scales))
        heatmaps, tags = aggregate(passes, kset.num_joints, kset.flip_index, self.test, base_wh[::-1])
        last = warps[-1]  # the reference maps back with the last (smallest) scale's warp
        return [Maps(h.numpy(), t.numpy(), last.center, last.scale_200)
                for h, t in zip(heatmaps.float().cpu(), tags.float().cpu())]

    def network_outputs(self, images: Sequence[np.ndarray]) -> Iterator[ScaleOutputs]:
        """The network's outputs at every test scale for a batch of same-size images, one scale at a time."""
        for warp in self.test_warps(self._batch_size_hw(images)):
            yield self.run_network(images, warp.scale, warp.size_wh, warp.center, warp.scale_200)

    @staticmethod
    def _batch_size_hw(images: Sequence[np.ndarray]) -> tuple[int, int]:
        sizes = {image.shape for image in images}
        if len(sizes) != 1:
            raise ValueError(f"a batch needs images of one size, got {sorted(sizes)}; "
                             f"call predict / maps to batch per size")
        shape = sizes.pop()
        if len(shape) != 3 or shape[2] != 3 or shape[0] < 1 or shape[1] < 1:
            raise ValueError(f"expected RGB images (H, W, 3), got shape {shape}")
        return shape[0], shape[1]

    @property
    def precision(self) -> Choice:
        """The network's precision here (``test.precision`` resolved for this device, see ``hhrnet.precision``)."""
        return resolve(self.test.precision, self.device)

    @torch.inference_mode()
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
        with autocast(self.precision.name, self.device):
            outputs = self.model(x.contiguous(memory_format=self.memory_format))
        outputs = [o.float().contiguous() for o in outputs]  # aggregation and grouping stay fp32
        if not self.test.flip_test:
            return ScaleOutputs(scale, outputs)
        return ScaleOutputs(scale, [o[:n] for o in outputs], [o[n:] for o in outputs])


class TrainingDataNote(UserWarning):
    """An input unlike the data the network was trained on (noted once per ``Predictor``)."""


