"""A run's ``Config``: the five sections (``hhrnet.sections``) assembled, overridden and read and written.

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

The official repository's ``MODEL.EXTRA`` block is read by ``model_config_from_official``; a config file
(YAML or JSON) by ``load_config``, written by ``save_config``.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any, Mapping

from .io import atomic_write, load_yaml
from .keypoints import COCO_17, DEFAULT_KEYPOINTS, keypoint_set
from .sections import (LOSS_EVERY_OUTPUT, ConfigError, DataConfig, LossConfig, ModelConfig, TestConfig, TrainConfig,
                       length_error)

COCO_FLIP_INDEX: tuple[int, ...] = COCO_17.flip_index  # imported by the golden tests (tests/test_inference.py)

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
                raise length_error(f"test.{name}", len(value), outputs)

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
