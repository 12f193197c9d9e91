"""The five sections of a ``Config`` (model, data, loss, test, train) as frozen dataclasses, each checked
when it is built.

Every number is checked against its ``RANGES`` entry (and must be finite); the other checks name the
offending key in one ``ConfigError``.  A section is a plain value: ``hhrnet.config`` assembles them into a
``Config``, derives what follows from other keys and gives the lossless dict/YAML form.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from .keypoints import DEFAULT_KEYPOINTS, KeypointSet, keypoint_set

# The published multi-scale test (``test.scales``): images at 2, 1 and 0.5 times the input size.
MULTI_SCALE: tuple[float, ...] = (2.0, 1.0, 0.5)

# ``test.precision``: the network's float precision at test time (``hhrnet.precision`` resolves auto).
PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "auto")

# Named optimisation recipes (Adam, no weight decay, ×0.1 at epochs 200 and 260 of 300 in both):
SCHEDULES: dict[str, dict[str, float]] = {
    "mmpose": {"lr": 1.5e-3, "warmup_iters": 500, "warmup_ratio": 0.001},  # mmpose 0.x configs
    "official": {"lr": 1e-3, "warmup_iters": 0, "warmup_ratio": 0.001},    # HigherHRNet repo (no warmup)
}


class ConfigError(ValueError):
    """A configuration that cannot be built; the message names the offending key."""


def length_error(key: str, got: int, outputs: int) -> ConfigError:
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
            raise length_error("model.with_ae_loss", len(self.with_ae_loss), self.num_deconvs + 1)
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
                raise length_error(f"loss.{name}", len(value), outputs)
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
