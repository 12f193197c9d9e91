"""Configuration as plain dataclasses.

Every published row is one ``Config`` built by ``preset(name)``; the widths (32, 48) and input sizes
(512, 640) are the only numbers that differ between rows, so each preset is *derived* from them rather
than written out.  CPU-scale variants are derived from a preset with ``dataclasses.replace`` (see
``Config.override``), never copied.  ``to_dict``/``from_dict`` give a lossless round trip through
JSON/YAML, which is how a checkpoint carries its own configuration.

The keypoint set is named once, by ``data.keypoints``: the joint count (``model.num_joints``,
``data.num_joints``) and the flip index (``data.flip_index``) follow from it and are never written as
keys (files written before that carry them; they are read and checked against the set).  Some values
are derived when unset (None): ``model.num_deconvs`` gives the length of every per-output tuple
(``model.with_ae_loss``, ``loss.*``, ``test.with_heatmaps/with_tags``).
``Config.override`` lets derived values follow a structural change, so ``model.num_deconvs`` alone
defines the HRNet baseline (0) or a two-deconv network.
"""

from __future__ import annotations

import dataclasses
import math
import re
import typing
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any, Mapping

from .io import atomic_write, load_yaml
from .keypoints import COCO_17, DEFAULT_KEYPOINTS, KeypointSet, keypoint_set

COCO_FLIP_INDEX: tuple[int, ...] = COCO_17.flip_index  # imported by the golden tests (tests/test_inference.py)

# The published multi-scale test (``test.scales``): images at 2, 1 and 0.5 times the input size.
MULTI_SCALE: tuple[float, ...] = (2.0, 1.0, 0.5)

# ``test.precision``: the network's float precision at test time (``hhrnet.precision`` resolves auto).
PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "auto")

# HRNet halves the input five times (stem 4x, branches to 1/32) and fuses the branches by exact 2x
# upsampling, so a training input (``input_size``) must divide by its coarsest stride.
INPUT_STRIDE = 32
# The test resize (``hhrnet.data.transforms.input_size_at_scale``) rounds sizes up to multiples of this, so
# only an input size that is one (a study profile's ``input_sizes``) is tested at the size it trained at.
TEST_SIZE_MULTIPLE = 64

PRESETS: dict[str, tuple[int, int, int]] = {
    # name: (HRNet width C, training input size, images per GPU in mmpose's 0.x configs)
    "w32_512": (32, 512, 24),
    "w32_640": (32, 640, 16),
    "w48_512": (48, 512, 16),
    "w48_640": (48, 640, 16),  # no mmpose row; the official repo's W48 is trained at 640
}

# CrowdPose rows: a COCO preset's network on CrowdPose's 14 joints, with the official repository's
# CrowdPose recipe (experiments/crowd_pose/higher_hrnet/w32_512_adam_lr1e-3.yaml: Adam at 1e-3 without
# warmup, 12 images per GPU, the `train` split for training and `val` for testing).
# name: (COCO preset, images per GPU)
CROWDPOSE_PRESETS: dict[str, tuple[str, int]] = {
    "crowdpose_w32_512": ("w32_512", 12),
}

# Named optimisation recipes (Adam, no weight decay, ×0.1 at epochs 200 and 260 of 300 in both):
SCHEDULES: dict[str, dict[str, float]] = {
    "mmpose": {"lr": 1.5e-3, "warmup_iters": 500, "warmup_ratio": 0.001},  # mmpose 0.x configs
    "official": {"lr": 1e-3, "warmup_iters": 0, "warmup_ratio": 0.001},    # HigherHRNet repo (no warmup)
}


class ConfigError(ValueError):
    """A configuration that cannot be built; the message names the offending key."""


def _length_error(key: str, got: int, outputs: int) -> ConfigError:
    return ConfigError(f"{key} has {got} entries, expected one per network output: model.num_deconvs + 1 "
                       f"= {outputs} (leave it unset for the default on every output)")


# The inclusive range (low, high; None: open) of each numeric setting; ``_check_numbers`` refuses a value
# outside it or not finite (every number, listed here or not), naming the key.  Tuples are checked per entry.
RANGES: dict[str, tuple[float | None, float | None]] = {
    **{f"model.{k}": (1, None) for k in ("width", "num_joints", "stem_channels", "layer1_blocks", "layer1_planes",
                                         "stage_modules", "blocks_per_branch")},
    "model.num_deconvs": (0, None), "model.num_basic_blocks": (0, None),
    "test.max_people": (1, None), "test.detection_threshold": (0, None), "test.tag_threshold": (0, None),
    "data.sigma": (1e-6, None), "data.base_sigma": (1e-6, None), "data.base_size": (1, None),
    "data.max_people": (1, None), "data.max_rotation": (0, None), "data.max_translate": (0, None),
    "data.flip_prob": (0, 1), "data.std": (1e-6, None),
    **{f"loss.{k}": (0, None) for k in ("heatmaps_loss_factor", "push_loss_factor", "pull_loss_factor")},
    **{f"train.{k}": (1, None) for k in ("epochs", "batch_size", "accumulate", "max_iters", "log_every",
                                         "val_images")},
    **{f"train.{k}": (0, None) for k in ("lr", "lr_steps", "lr_gamma", "workers", "checkpoint_every", "val_every",
                                         "warmup_iters")},
    "train.ema": (0, 0.99999),
}


def _check_numbers(section: str, obj: Any) -> None:
    """Every number of a config section finite and within its ``RANGES`` entry; else one error naming the key."""
    for f in dataclasses.fields(obj):
        key, value = f"{section}.{f.name}", getattr(obj, f.name)
        low, high = RANGES.get(key, (None, None))
        bounds = "".join([f" >= {low}" if low is not None and high is None else "",
                          f" between {low} and {high}" if low is not None and high is not None else ""])
        for v in value if isinstance(value, tuple) else (value,):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                continue
            if not math.isfinite(v):
                raise ConfigError(f"{key} must be a finite number{bounds}, got {value!r}")
            if (low is not None and v < low) or (high is not None and v > high):
                raise ConfigError(f"{key} must be a number{bounds}, got {value!r}")


@dataclass(frozen=True)
class ModelConfig:
    """Structure of HRNet + HigherHRNet head.

    Branch ``b`` of every stage has ``width * 2**b`` channels.  The defaults are the published
    HigherHRNet (stem 64, layer1 = 4 Bottlenecks of 64 planes, stages 2-4 with 1/4/3 modules of 4
    BasicBlocks per branch, one deconv to ``width`` channels followed by 4 BasicBlocks).
    """

    width: int = 32
    # Heatmap channels.  Inside a ``Config`` it is the joint count of ``data.keypoints`` (set by ``Config``,
    # never a key of a file); a bare ``ModelConfig`` describes a network on its own and says it itself.
    num_joints: int = field(default=17, metadata={"follows": "data.keypoints"})
    stem_channels: int = 64
    layer1_blocks: int = 4
    layer1_planes: int = 64
    stage_modules: tuple[int, int, int] = (1, 4, 3)
    blocks_per_branch: int = 4
    num_deconvs: int = 1
    deconv_kernel: int = 4
    num_basic_blocks: int = 4
    cat_output: bool = True
    tag_per_joint: bool = True
    final_conv_kernel: int = 1
    # Which outputs carry tag maps next to their heatmaps (official LOSS.WITH_AE_LOSS); None means
    # "the 1/4-resolution output only", the published setting.
    with_ae_loss: tuple[bool, ...] | None = None

    def __post_init__(self) -> None:
        if self.with_ae_loss is None:
            object.__setattr__(self, "with_ae_loss", (True,) + (False,) * self.num_deconvs)
        else:
            object.__setattr__(self, "with_ae_loss", tuple(bool(v) for v in self.with_ae_loss))
        object.__setattr__(self, "stage_modules", tuple(int(v) for v in self.stage_modules))
        _check_numbers("model", self)
        if len(self.with_ae_loss) != self.num_deconvs + 1:
            raise _length_error("model.with_ae_loss", len(self.with_ae_loss), self.num_deconvs + 1)
        if len(self.stage_modules) != 3:
            raise ConfigError(f"model.stage_modules must list stages 2, 3, 4; got {self.stage_modules}")
        if self.final_conv_kernel not in (1, 3):
            raise ConfigError(f"model.final_conv_kernel must be 1 or 3, got {self.final_conv_kernel}")
        if self.deconv_kernel not in (2, 3, 4):
            raise ConfigError(f"model.deconv_kernel must be 2, 3 or 4, got {self.deconv_kernel}")

    @property
    def tag_channels(self) -> int:
        """Tag maps per output that carries tags: one per joint, or one shared map."""
        return self.num_joints if self.tag_per_joint else 1

    def branch_channels(self, num_branches: int) -> tuple[int, ...]:
        return tuple(self.width * 2**b for b in range(num_branches))

    def output_channels(self, i: int) -> int:
        """Channels of output ``i``: heatmaps, then tag maps where that output has an AE loss."""
        return self.num_joints + (self.tag_channels if self.with_ae_loss[i] else 0)

    @property
    def output_strides(self) -> tuple[int, ...]:
        """Input pixels per output pixel: 4 for the backbone output, halved by each deconv."""
        return tuple(4 // 2**i for i in range(self.num_deconvs + 1))



@dataclass(frozen=True)
class TestConfig:
    """Test-time aggregation and grouping; defaults are the published mmpose ``test_cfg`` (single scale).

    The multi-scale rows use ``scales=MULTI_SCALE``.  ``with_heatmaps`` / ``with_tags`` pick, per
    network output, whether it contributes heatmaps / tag maps (None: every output gives heatmaps, every
    output with more than ``num_joints`` channels gives tags); ``(True, False)`` is the "1/4 only" ablation.
    """

    __test__ = False  # not a pytest test class despite the name

    flip_test: bool = True
    scales: tuple[float, ...] = (1.0,)
    project2image: bool = True
    with_heatmaps: tuple[bool, ...] | None = None
    with_tags: tuple[bool, ...] | None = None
    align_corners: bool = False
    nms_kernel: int = 5
    max_people: int = 30
    detection_threshold: float = 0.1
    tag_threshold: float = 1.0
    use_detection_val: bool = True
    ignore_too_much: bool = False
    adjust: bool = True
    refine: bool = True
    precision: str = "fp32"  # fp32 | bf16 | auto: bf16 where the CPU has bf16 units and it measures faster

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ConfigError(f"test.precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        object.__setattr__(self, "scales", tuple(float(s) for s in self.scales))
        for name in ("with_heatmaps", "with_tags"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, tuple(bool(v) for v in getattr(self, name)))
        _check_numbers("test", self)
        if not self.scales or any(s <= 0 for s in self.scales) or list(self.scales) != sorted(self.scales, reverse=True):
            raise ConfigError(f"test.scales must be positive and in descending order, got {self.scales}")
        if len(self.scales) > 1 and 1.0 not in self.scales:
            raise ConfigError(f"test.scales must contain 1.0 (tags come from scale 1), got {self.scales}")
        if self.nms_kernel < 1 or self.nms_kernel % 2 == 0:
            raise ConfigError(f"test.nms_kernel must be a positive odd number, got {self.nms_kernel}")

@dataclass(frozen=True)
class DataConfig:
    """Training targets and augmentation; defaults are the published COCO recipe (all four presets).

    Output map sizes are not stored here: they follow from ``Config.input_size`` and
    ``ModelConfig.output_strides`` so that a CPU variant with a smaller input cannot get stale sizes.
    ``keypoints`` names a registered ``KeypointSet`` (``hhrnet.keypoints``); the flip index is its.
    """

    keypoints: str = DEFAULT_KEYPOINTS

    sigma: float = 2.0
    scale_aware_sigma: bool = False
    # Scale-aware sigma = max(bbox w, h) / base_size * base_sigma; None means input_size // 2, the
    # published 256 at 512 and 320 at 640.
    base_size: int | None = None
    base_sigma: float = 2.0
    max_people: int = 30
    max_rotation: float = 30.0
    min_scale: float = 0.75
    max_scale: float = 1.5
    scale_type: str = "short"
    max_translate: float = 40.0
    flip_prob: float = 0.5
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)

    def __post_init__(self) -> None:
        for name in ("mean", "std"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        _check_numbers("data", self)
        try:
            keypoint_set(self.keypoints)
        except KeyError as err:
            raise ConfigError(f"data.keypoints: {err.args[0]}") from None
        if self.scale_type not in ("short", "long"):
            raise ConfigError(f"data.scale_type must be 'short' or 'long', got {self.scale_type!r}")
        if not 0 < self.min_scale <= self.max_scale:
            raise ConfigError(f"data.min_scale/max_scale must satisfy 0 < min <= max, got "
                              f"{self.min_scale}, {self.max_scale}")

    @property
    def keypoint_set(self) -> KeypointSet:
        return keypoint_set(self.keypoints)

    @property
    def num_joints(self) -> int:
        return self.keypoint_set.num_joints

    @property
    def flip_index(self) -> tuple[int, ...]:
        return self.keypoint_set.flip_index

    def scale_aware_base_size(self, input_size: int) -> int:
        """``base_size``, or half the input size when unset (keeps CPU variants consistent)."""
        return self.base_size if self.base_size is not None else input_size // 2


# The published value of each per-output loss setting, the same for every output (official ``LOSS.*``).
LOSS_EVERY_OUTPUT: dict[str, Any] = {"with_heatmaps_loss": True, "heatmaps_loss_factor": 1.0,
                                     "push_loss_factor": 0.001, "pull_loss_factor": 0.001}


@dataclass(frozen=True)
class LossConfig:
    """Loss switches and factors per output resolution (official ``LOSS.*``; W32-512 values).

    Each tuple has one entry per network output, or one entry for every output; None means
    ``LOSS_EVERY_OUTPUT`` on every output (filled in by ``for_outputs``, which ``Config`` calls).  Which outputs carry tags (and so get an
    AE loss) is ``ModelConfig.with_ae_loss``.
    """

    ae_type: str = "exp"
    with_heatmaps_loss: tuple[bool, ...] | None = None
    heatmaps_loss_factor: tuple[float, ...] | None = None
    push_loss_factor: tuple[float, ...] | None = None
    pull_loss_factor: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        for name in LOSS_EVERY_OUTPUT:
            if getattr(self, name) is not None:
                object.__setattr__(self, name, tuple(getattr(self, name)))
        _check_numbers("loss", self)
        if self.ae_type not in ("exp", "max"):
            raise ConfigError(f"loss.ae_type must be 'exp' or 'max', got {self.ae_type!r}")

    def for_outputs(self, outputs: int) -> "LossConfig":
        """Every per-output tuple filled in for a network with ``outputs`` outputs (lengths checked)."""
        values = {}
        for name, default in LOSS_EVERY_OUTPUT.items():
            value = getattr(self, name)
            if value is not None and len(value) == 1:
                value = value * outputs  # one value: the same on every output
            if value is not None and len(value) != outputs:
                raise _length_error(f"loss.{name}", len(value), outputs)
            values[name] = (default,) * outputs if value is None else value
        return dataclasses.replace(self, **values)


@dataclass(frozen=True)
class TrainConfig:
    """Data location, optimisation and run mechanics.

    ``batch_size`` is per process; the total batch is ``batch_size × processes × accumulate``.
    mmpose trained the published rows on (most likely) 8 GPUs, i.e. 192 images per step for W32-512:
    two GPUs reproduce that total with ``accumulate=4``.  ``schedule`` names a recipe in
    ``SCHEDULES``; ``lr`` overrides its learning rate.
    """

    data_root: str = "data/coco"
    train_split: str = "train2017"
    val_split: str = "val2017"
    schedule: str = "mmpose"
    lr: float | None = None
    epochs: int = 300
    lr_steps: tuple[int, ...] = (200, 260)
    lr_gamma: float = 0.1
    lr_decay: str = "step"  # step: × lr_gamma at each epoch of lr_steps | cosine: half a cosine to 0 at the end
    warmup_iters: int | None = None  # linear warmup from the schedule's warmup_ratio; None: the schedule's
    ema: float = 0.0  # decay of a moving average of the weights, which is validated and saved; 0: none
    batch_size: int = 24
    accumulate: int = 1
    workers: int = 2
    seed: int = 0
    amp: str = "auto"  # auto: fp16 autocast + GradScaler on CUDA, off on CPU; or fp16 | bf16 | off
    sync_bn: bool = False  # CUDA only (PyTorch's SyncBatchNorm has no CPU kernel)
    channels_last: bool = False  # NHWC weights and images: faster convolutions on CPU (bench/train.py --study)
    init: str = "official"  # weight initialisation: official N(0, 0.001) | he (for training from scratch)
    pretrained: str | None = None  # ImageNet HRNet weights for the backbone: a file or a name (hrnet_w32_imagenet)
    init_from: str | None = None  # fine-tune: every weight from a full checkpoint (hhrnet, official, mmpose)
    checkpoint_every: int = 0  # iterations; a checkpoint is always written at each epoch end
    val_every: int = 0  # epochs; 0 = no validation during training
    val_images: int | None = None  # validate on the first N images of the split (a cheap curve); None: all
    max_iters: int | None = None  # stop early (smoke runs, tests)
    log_every: int = 10

    def __post_init__(self) -> None:
        object.__setattr__(self, "lr_steps", tuple(int(e) for e in self.lr_steps))
        _check_numbers("train", self)
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"train.schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if self.lr_decay not in ("step", "cosine"):
            raise ConfigError(f"train.lr_decay must be step or cosine, got {self.lr_decay!r}")
        if self.init not in ("official", "he"):
            raise ConfigError(f"train.init must be official or he, got {self.init!r}")
        if self.amp not in ("auto", "fp16", "bf16", "off"):
            raise ConfigError(f"train.amp must be auto, fp16, bf16 or off, got {self.amp!r}")
        if self.pretrained and self.init_from:
            raise ConfigError("train.pretrained (backbone only) and train.init_from (every weight) exclude "
                              "each other; give one")

    @property
    def base_lr(self) -> float:
        return self.lr if self.lr is not None else SCHEDULES[self.schedule]["lr"]

    def lr_at(self, iteration: int, iters_per_epoch: int) -> float:
        """Learning rate of an iteration: linear warmup from ``warmup_ratio``, then steps by epoch or a cosine."""
        recipe = SCHEDULES[self.schedule]
        if self.lr_decay == "cosine":
            total = max(iters_per_epoch * self.epochs, 1)
            lr = self.base_lr * 0.5 * (1 + math.cos(math.pi * min(iteration, total) / total))
        else:
            epoch = iteration // max(iters_per_epoch, 1)
            lr = self.base_lr * self.lr_gamma ** sum(epoch >= s for s in self.lr_steps)
        warmup = recipe["warmup_iters"] if self.warmup_iters is None else self.warmup_iters
        if iteration < warmup:
            lr *= recipe["warmup_ratio"] + (1 - recipe["warmup_ratio"]) * iteration / warmup
        return lr


@dataclass(frozen=True)
class Config:
    """Everything that defines a run.  Sections grow as the package grows (data, loss, test, train)."""

    name: str = "w32_512"
    input_size: int = 512
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    test: TestConfig = field(default_factory=TestConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        if isinstance(self.input_size, bool) or not isinstance(self.input_size, int) \
                or self.input_size < INPUT_STRIDE or self.input_size % INPUT_STRIDE:
            raise ConfigError(f"input_size must be a positive multiple of {INPUT_STRIDE} (the network's coarsest "
                              f"stride), got {self.input_size!r}")
        outputs = self.model.num_deconvs + 1
        if self.model.num_joints != self.data.num_joints:
            object.__setattr__(self, "model", dataclasses.replace(self.model, num_joints=self.data.num_joints))
        object.__setattr__(self, "loss", self.loss.for_outputs(outputs))
        for name in ("with_heatmaps", "with_tags"):
            value = getattr(self.test, name)
            if value is not None and len(value) != outputs:
                raise _length_error(f"test.{name}", len(value), outputs)

    def override(self, **changes: Any) -> "Config":
        """A copy with dotted-path changes, e.g. ``override(**{"model.width": 8, "input_size": 256})``.

        Derived values that still have their derived value (``DERIVED``) and per-output loss settings with
        one value on every output follow the change, so ``override(**{"model.num_deconvs": 0})`` just works;
        ``data.keypoints`` brings its joint count.
        """
        for key in changes:
            _refuse_follower(key)
        d = to_dict(self)
        for key, derive in DERIVED.items():
            section, leaf = key.split(".")
            if key not in changes and d[section][leaf] == to_dict(derive(self)):
                d[section][leaf] = None
        for name in LOSS_EVERY_OUTPUT:
            values = d["loss"][name]
            if f"loss.{name}" not in changes and values is not None and len(set(values)) == 1:
                d["loss"][name] = values[:1]  # one value: the same on every output, however many
        return from_dict(_set_dotted(d, changes))


# Dotted keys whose unset (None) value is derived from other keys, with that derived value.
DERIVED: dict[str, Any] = {
    "model.with_ae_loss": lambda cfg: dataclasses.replace(cfg.model, with_ae_loss=None).with_ae_loss,
    **{f"loss.{name}": (lambda cfg, name=name: getattr(LossConfig().for_outputs(cfg.model.num_deconvs + 1), name))
       for name in LOSS_EVERY_OUTPUT},
}


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict (tuples become lists), suitable for JSON/YAML and checkpoints; values that follow
    another key (``model.num_joints``) are left out."""

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v) if "follows" not in f.metadata}
        if isinstance(v, (tuple, list)):
            return [plain(x) for x in v]
        return v

    return plain(cfg)


def from_dict(d: Mapping[str, Any], cls: type = Config, where: str = "") -> Any:
    """Inverse of ``to_dict``; unknown keys are an error naming the key, so typos don't pass silently."""
    if not isinstance(d, Mapping):
        raise ConfigError(f"config{where or ''}: expected a mapping, got {type(d).__name__}")
    d = _read_old_keypoint_keys(d, cls, where)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - set(fields))
    if unknown:
        raise ConfigError(f"unknown config key(s) {', '.join(where + '.' + k if where else k for k in unknown)}")
    kwargs: dict[str, Any] = {}
    hints = typing.get_type_hints(cls)
    for key, value in d.items():
        sub = _dataclass_type(cls, key)
        path = f"{where}.{key}" if where else key
        kwargs[key] = from_dict(value, sub, path) if sub is not None else _typed(value, hints[key], path)
    try:
        return cls(**kwargs)
    except TypeError as err:
        raise ConfigError(f"config{' ' + where if where else ''}: {err}") from None


def _read_old_keypoint_keys(d: Mapping[str, Any], cls: type, where: str) -> Mapping[str, Any]:
    """Accept the ``model.num_joints`` and ``data.flip_index`` that files written before keypoint sets carry
    when they are the set's own, and drop them (they follow ``data.keypoints``); else one error naming both."""
    if cls is Config and isinstance(d.get("model"), Mapping) and "num_joints" in d["model"]:
        model = dict(d["model"])
        num_joints = model.pop("num_joints")
        data = d.get("data") if isinstance(d.get("data"), Mapping) else {}
        try:
            expected = keypoint_set(data.get("keypoints", DEFAULT_KEYPOINTS)).num_joints
        except (KeyError, TypeError):
            expected = num_joints  # not a set: DataConfig reports the name
        if num_joints is not None and num_joints != expected:
            raise ConfigError(f"model.num_joints is {num_joints} but data.keypoints "
                              f"{data.get('keypoints', DEFAULT_KEYPOINTS)!r} has {expected} joints; the joint "
                              "count comes from the keypoint set")
        d = {**d, "model": model}
    elif cls is DataConfig and "flip_index" in d:
        d = dict(d)
        flip_index = d.pop("flip_index")
        try:
            expected_index = keypoint_set(d.get("keypoints", DEFAULT_KEYPOINTS)).flip_index
        except (KeyError, TypeError):
            return d
        if flip_index is not None and list(flip_index) != list(expected_index):
            raise ConfigError(f"{where}.flip_index {list(flip_index)} differs from that of {where}.keypoints "
                              f"({list(expected_index)}); the flip index comes from the keypoint set")
    return d


def _refuse_follower(key: str) -> None:
    """A dotted key that follows another (``model.num_joints``) cannot be changed on its own."""
    section, _, leaf = key.rpartition(".")
    owner = {"model": ModelConfig, "data": DataConfig}.get(section)
    follows = {f.name: f.metadata.get("follows") for f in dataclasses.fields(owner)} if owner else {}
    if follows.get(leaf):
        raise ConfigError(f"{key} follows {follows[leaf]}; change {follows[leaf]} instead")


def _typed(value: Any, hint: Any, path: str) -> Any:
    """``value`` checked against (and converted to) a field's type, or an error naming the key.

    YAML and the command line give ints where floats are meant, lists for tuples and, for ``1e-3``
    (no dot: not a float in YAML 1.1), a string; all three are accepted.
    """
    args = typing.get_args(hint)
    if type(None) in args:
        if value is None:
            return None
        hint = next(a for a in args if a is not type(None))
        args = typing.get_args(hint)
    if typing.get_origin(hint) is tuple:
        if isinstance(value, (list, tuple)):
            items = args[:1] * len(value) if args[-1] is Ellipsis else args
            if len(items) == len(value):
                return tuple(_typed(v, h, f"{path}[{i}]") for i, (v, h) in enumerate(zip(value, items)))
        count = "a list" if args[-1] is Ellipsis else f"a list of {len(args)}"
        raise ConfigError(f"{path} must be {count} of {args[0].__name__}, got {value!r}")
    if hint is float and isinstance(value, (int, float, str)) and not isinstance(value, bool):
        try:
            return float(value)
        except ValueError:
            pass
    elif isinstance(value, hint) and not (hint is int and isinstance(value, bool)):
        return value
    raise ConfigError(f"{path} must be {'a number' if hint is float else hint.__name__}, got {value!r}")


def _dataclass_type(cls: type, key: str) -> type | None:
    default = dataclasses.fields(cls)[[f.name for f in dataclasses.fields(cls)].index(key)]
    if default.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        probe = default.default_factory()  # type: ignore[misc]
        if dataclasses.is_dataclass(probe):
            return type(probe)
    return None


def _set_dotted(d: dict[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    for dotted, value in changes.items():
        node = d
        *parents, leaf = dotted.split(".")
        for p in parents:
            if not isinstance(node.get(p), dict):
                raise ConfigError(f"unknown config section {dotted!r}")
            node = node[p]
        if leaf not in node:
            raise ConfigError(f"unknown config key {dotted!r}")
        node[leaf] = list(value) if isinstance(value, tuple) else value
    return d


def preset_names() -> tuple[str, ...]:
    """Every preset ``preset`` builds: the COCO rows, then the CrowdPose rows."""
    return (*PRESETS, *CROWDPOSE_PRESETS)


def crowdpose_preset(name: str = "crowdpose_w32_512") -> Config:
    """The official CrowdPose configuration of a network (``CROWDPOSE_PRESETS``), data in ``data/crowd_pose``."""
    if name not in CROWDPOSE_PRESETS:
        raise ConfigError(f"unknown CrowdPose preset {name!r}; choose one of {', '.join(CROWDPOSE_PRESETS)}")
    base, batch_size = CROWDPOSE_PRESETS[name]
    return preset(base).override(**{
        "name": name, "data.keypoints": "crowdpose", "train.schedule": "official", "train.batch_size": batch_size,
        "train.data_root": "data/crowd_pose", "train.train_split": "train", "train.val_split": "val"})


def preset(name: str) -> Config:
    """A published configuration: ``w32_512``, ``w32_640``, ``w48_512``, ``w48_640`` (COCO) or a CrowdPose
    row (``crowdpose_w32_512``)."""
    if name in CROWDPOSE_PRESETS:
        return crowdpose_preset(name)
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(preset_names())}")
    width, input_size, batch_size = PRESETS[name]
    return Config(name=name, input_size=input_size, model=ModelConfig(width=width),
                  train=TrainConfig(batch_size=batch_size))


def model_config_from_official(extra: Mapping[str, Any], num_joints: int | None = None,
                               tag_per_joint: bool = True, with_ae_loss: tuple[bool, ...] | None = None) -> ModelConfig:
    """Read the official repo's ``MODEL.EXTRA`` block (also the goldens' ``model_tiny.json`` layout).

    The joint count is the block's ``NUM_JOINTS`` (the goldens') or ``num_joints`` (the official YAML
    keeps it in ``MODEL.NUM_JOINTS``).  Keys may be upper case (official YAML) or lower case.  Structures hhrnet cannot express (branch
    widths that do not double, unequal blocks per branch) raise ``ConfigError`` naming the key.
    """
    e = _lower_keys(extra)
    stages = e.get("stages", e)
    try:
        s2, s3, s4 = (stages[f"stage{i}"] for i in (2, 3, 4))
        deconv = e["deconv"]
    except KeyError as err:
        raise ConfigError(f"MODEL.EXTRA: missing key {err.args[0].upper()}") from None
    width = int(s2["num_channels"][0])
    blocks = {int(b) for s in (s2, s3, s4) for b in s["num_blocks"]}
    if len(blocks) != 1:
        raise ConfigError(f"MODEL.EXTRA.STAGE*.NUM_BLOCKS: hhrnet needs one block count, got {sorted(blocks)}")
    for i, s in zip((2, 3, 4), (s2, s3, s4)):
        want = [width * 2**b for b in range(i)]
        if [int(c) for c in s["num_channels"]] != want:
            raise ConfigError(f"MODEL.EXTRA.STAGE{i}.NUM_CHANNELS must be {want} (width {width}), got {s['num_channels']}")
        if str(s.get("block", "BASIC")).upper() != "BASIC" or str(s.get("fuse_method", "SUM")).upper() != "SUM":
            raise ConfigError(f"MODEL.EXTRA.STAGE{i}: only BASIC blocks with SUM fusion are supported")
    num_deconvs = int(deconv["num_deconvs"])
    if num_deconvs and [int(c) for c in deconv["num_channels"]] != [width] * num_deconvs:
        raise ConfigError(f"MODEL.EXTRA.DECONV.NUM_CHANNELS must equal the width {width}, got {deconv['num_channels']}")
    kernels = {int(k) for k in deconv.get("kernel_size", [4])}
    cats = {bool(c) for c in deconv.get("cat_output", [True])}
    if len(kernels) > 1 or len(cats) > 1:
        raise ConfigError("MODEL.EXTRA.DECONV: KERNEL_SIZE and CAT_OUTPUT must be the same for every deconv")
    if e.get("num_joints", num_joints) is None:
        raise ConfigError("MODEL.EXTRA: no NUM_JOINTS; give num_joints (MODEL.NUM_JOINTS of the official YAML)")
    layer1 = e.get("layer1") or _layer1_from_stage1(e.get("stage1"))
    return ModelConfig(
        width=width,
        num_joints=int(e.get("num_joints", num_joints)),
        stem_channels=int(e.get("stem_inplanes", 64)),
        layer1_blocks=int(layer1.get("num_blocks", 4)),
        layer1_planes=int(layer1.get("planes", 64)),
        stage_modules=(int(s2["num_modules"]), int(s3["num_modules"]), int(s4["num_modules"])),
        blocks_per_branch=blocks.pop(),
        num_deconvs=num_deconvs,
        deconv_kernel=kernels.pop() if kernels else 4,
        num_basic_blocks=int(deconv.get("num_basic_blocks", 0)),
        cat_output=cats.pop() if cats else True,
        tag_per_joint=bool(e.get("tag_per_joint", tag_per_joint)),
        final_conv_kernel=int(e.get("final_conv_kernel", 1)),
        with_ae_loss=tuple(e["with_ae_loss"]) if "with_ae_loss" in e else with_ae_loss,
    )


def _layer1_from_stage1(stage1: Mapping[str, Any] | None) -> dict[str, int]:
    """mmpose writes layer1 as a one-branch Bottleneck ``stage1``; the official code hard-codes it."""
    if not stage1:
        return {}
    return {"num_blocks": int(stage1["num_blocks"][0]), "planes": int(stage1["num_channels"][0])}


def _lower_keys(d: Any) -> Any:
    if isinstance(d, Mapping):
        return {re.sub(r"\s+", "_", str(k)).lower(): _lower_keys(v) for k, v in d.items()}
    return d


def load_config(spec: str, overrides: Mapping[str, Any] | None = None) -> Config:
    """A preset name or a YAML/JSON file written by ``save_config``, with optional dotted overrides."""
    if spec in preset_names():
        cfg = preset(spec)
    else:
        path = Path(spec)
        if not path.is_file():
            raise ConfigError(f"{spec!r} is neither a preset ({', '.join(preset_names())}) nor a config file")
        data = load_yaml(path, ConfigError)
        try:
            cfg = from_dict(data)
        except ConfigError as err:
            raise ConfigError(f"{path}: {err}") from None
    return cfg.override(**overrides) if overrides else cfg


def save_config(cfg: Config, path: str | Path) -> Path:
    """YAML that ``load_config`` reads back to an equal ``Config``."""
    import yaml

    return atomic_write(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["model.width=8", "input_size=256"]`` → typed dotted overrides (values parsed as YAML)."""
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        out[key.strip()] = yaml.safe_load(value)
    return out
