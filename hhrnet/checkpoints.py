"""Read hhrnet, official HigherHRNet and mmpose checkpoints; write hhrnet checkpoints.

All three layouts hold the same tensors under the same names up to a prefix:

=============  ==========================================  ===================================
source         container                                   key prefix
=============  ==========================================  ===================================
official       bare state dict                             none (``module.`` if saved from DDP)
mmpose 0.x     ``{'meta': ..., 'state_dict': ...}``        ``backbone.`` / ``keypoint_head.``
hhrnet         ``{'format': 'hhrnet', 'config', 'model'}``  none
=============  ==========================================  ===================================

Wherever a path is taken, a published name (``w32_512``, ``hrnet_w32_imagenet``, ... see ``hhrnet.hub``)
works too: an existing file wins, then the name is fetched into the weights cache and verified.

Files are always read with ``torch.load(weights_only=True)``: a checkpoint is data, never code.
Loading is strict; a mismatch raises one ``CheckpointError`` listing the missing, unexpected and
wrongly shaped keys, so a silently half-loaded model is impossible.
"""

from __future__ import annotations

import dataclasses
import pickle
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Any, Mapping

import torch

from .config import Config, from_dict, preset, to_dict
from .hub import REGISTRY, CheckpointError, fetch
from .io import atomic_torch_save, atomic_write, refuse_overlap, short_repr
from .keypoints import keypoint_set, registered
from .model import HigherHRNet
from .sections import ConfigError, ModelConfig

HHRNET_FORMAT = "hhrnet"
PREFIXES = ("module.", "backbone.", "keypoint_head.")
SHOW = 5  # keys listed per category in a mismatch message


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """A checkpoint read once: ``source`` as given, the file it names, its ``hhrnet.hub`` entry (None for a
    file given by path) and what ``torch.load`` returned (``contents``)."""

    source: str | Path
    path: Path
    published: Any
    contents: Any

    def weights(self) -> tuple[OrderedDict[str, torch.Tensor], dict[str, Any] | None]:
        """The state dict with official key names, and the embedded hhrnet config (None for foreign files)."""
        obj = self.contents
        if isinstance(obj, Mapping) and obj.get("format") == HHRNET_FORMAT:
            return _check_tensors(self.path, obj.get("model")), obj.get("config")
        if isinstance(obj, Mapping) and "state_dict" in obj:  # mmpose / mmcv container
            return _check_tensors(self.path, obj["state_dict"]), None
        return _check_tensors(self.path, obj), None


def open_checkpoint(source: str | Path, network: bool = False) -> Checkpoint:
    """``source`` located (``locate``, which ``network`` is passed to) and read, once."""
    path, published = locate(source, network)
    return Checkpoint(source, path, published, _torch_load(path))


def read_checkpoint(path: str | Path) -> tuple[OrderedDict[str, torch.Tensor], dict[str, Any] | None]:
    """The state dict with official key names, and the embedded hhrnet config (None for foreign files)."""
    return open_checkpoint(path).weights()


def locate(spec: str | Path, network: bool = False) -> tuple[Path, Any]:
    """An existing file as it is, else a published name (``hhrnet.hub``) fetched and verified: (file, entry or None).

    ``network=True`` refuses the ImageNet backbones (they only initialise ``train.pretrained``).
    """
    path = Path(spec)
    if path.is_file():
        return path, None
    if str(spec) in REGISTRY:
        entry = REGISTRY[str(spec)]
        if network and entry.is_backbone:
            raise CheckpointError(f"{spec} is an ImageNet HRNet backbone, not a pose network; use it as "
                                  "train.pretrained")
        return fetch(entry.name), entry
    raise CheckpointError(f"{spec}: no such checkpoint file, nor a published name ({', '.join(REGISTRY)})")


def load_file(path: str | Path) -> Any:
    """``torch.load(weights_only=True)`` on CPU; any failure is one ``CheckpointError`` naming the file."""
    return _torch_load(Path(path))


def _torch_load(path: Path) -> Any:
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a bad file; all mean "cannot use it"
        detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if isinstance(err, pickle.UnpicklingError) and "weights only" in str(err).lower():
            raise CheckpointError(
                f"{path}: refused by torch.load(weights_only=True) ({detail}); hhrnet only reads "
                "checkpoints made of tensors and plain Python values"
            ) from None
        raise CheckpointError(f"{path}: truncated or not a PyTorch checkpoint ({type(err).__name__}: {detail})") from None


def _check_tensors(path: Path, state: Any) -> OrderedDict[str, torch.Tensor]:
    if not isinstance(state, Mapping) or not state:
        raise CheckpointError(f"{path}: not a state dict (found {type(state).__name__}"
                              f"{' with keys ' + ', '.join(map(short_repr, list(state)[:SHOW])) if isinstance(state, Mapping) else ''})")
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{path}: not a state dict: {len(bad)} entries are not tensors, e.g. "
                              f"{', '.join(map(short_repr, bad[:SHOW]))}")
    return OrderedDict((official_key(k), v) for k, v in state.items())


def official_key(key: str) -> str:
    """Strip the DDP ``module.`` and mmpose ``backbone.`` / ``keypoint_head.`` prefixes."""
    for prefix in PREFIXES:
        if key.startswith(prefix):
            key = key[len(prefix):]
    return key


def load_state_dict_strict(model: torch.nn.Module, state: Mapping[str, torch.Tensor], source: str = "checkpoint") -> None:
    """``load_state_dict(strict=True)`` with one readable error for every kind of mismatch."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} != model {tuple(v.shape)}"
              for k, v in own.items() if k in state and state[k].shape != v.shape]
    if missing or unexpected or shapes:
        parts = [f"{label} ({len(items)}): {', '.join(items[:SHOW])}{', ...' if len(items) > SHOW else ''}"
                 for label, items in (("missing keys", missing), ("unexpected keys", unexpected),
                                      ("wrong shapes", shapes)) if items]
        raise CheckpointError(f"{source} does not fit the model: " + "; ".join(parts))
    model.load_state_dict(state, strict=True)


def infer_model_config(state: Mapping[str, torch.Tensor]) -> ModelConfig:
    """The network structure a state dict was saved from, read off its key names and shapes.

    Official and mmpose checkpoints carry no config; this recovers width (32/48), depth and head so
    that ``python -m hhrnet convert`` needs no ``--config`` for them.
    """
    try:
        def count(prefix: str) -> int:
            return len({k[len(prefix):].split(".")[0] for k in state if k.startswith(prefix)})

        width = state["transition1.0.0.weight"].shape[0]
        outs = [state[f"final_layers.{i}.weight"] for i in range(count("final_layers."))]
        num_deconvs = len(outs) - 1
        num_joints = outs[-1].shape[0] if num_deconvs else outs[0].shape[0] // 2
        with_ae = tuple(o.shape[0] > num_joints for o in outs)
        tag_channels = outs[0].shape[0] - num_joints if with_ae[0] else num_joints
        deconv_in = state["deconv_layers.0.0.0.weight"].shape[0] if num_deconvs else width
        return ModelConfig(
            width=width,
            num_joints=num_joints,
            stem_channels=state["conv1.weight"].shape[0],
            layer1_blocks=count("layer1."),
            layer1_planes=state["layer1.0.conv1.weight"].shape[0],
            stage_modules=tuple(count(f"stage{s}.") for s in (2, 3, 4)),
            blocks_per_branch=count("stage2.0.branches.0."),
            num_deconvs=num_deconvs,
            deconv_kernel=state["deconv_layers.0.0.0.weight"].shape[-1] if num_deconvs else 4,
            num_basic_blocks=count("deconv_layers.0.") - 1 if num_deconvs else 0,
            cat_output=deconv_in != width if num_deconvs else True,
            tag_per_joint=tag_channels != 1,
            final_conv_kernel=outs[0].shape[-1],
            with_ae_loss=with_ae,
        )
    except (KeyError, IndexError, ConfigError) as err:
        raise CheckpointError(f"cannot infer the network structure from the state dict: {err}") from None


def checkpoint_keypoints(state: Mapping[str, torch.Tensor], embedded: Mapping[str, Any] | None) -> tuple[int, str]:
    """How many joints a checkpoint predicts and the name of its keypoint set (guessed from the count
    for files without an embedded config: the registered set with that many joints, if exactly one)."""
    if embedded is not None:
        kset = from_dict(embedded).data.keypoint_set
        return kset.num_joints, kset.name
    num_joints = infer_model_config(state).num_joints
    same = [name for name in registered() if keypoint_set(name).num_joints == num_joints]
    return num_joints, same[0] if len(same) == 1 else "an unnamed keypoint set"


def check_keypoints(source: str, state: Mapping[str, torch.Tensor], embedded: Mapping[str, Any] | None,
                    cfg: Config) -> None:
    """Refuse, in one line, a checkpoint trained for other joints than ``cfg``'s keypoint set."""
    kset = cfg.data.keypoint_set
    num_joints, name = checkpoint_keypoints(state, embedded)
    if num_joints != kset.num_joints or (embedded is not None and name != kset.name):
        raise CheckpointError(f"checkpoint {source} has {num_joints} joints ({name}); the config asks for "
                              f"{kset.num_joints} ({kset.name})")


def resolve_config(source: str | Path | Checkpoint,
                   requested: Config | str | None = None) -> tuple[OrderedDict[str, torch.Tensor], Config, str]:
    """State dict, the config to build it with, and a note on how the config was chosen.

    ``source`` is a checkpoint file or a published name, or a ``Checkpoint`` already read (``network=True``).
    Precedence: the config embedded in an hhrnet checkpoint, then the requested preset/config, then
    the structure inferred from the tensors (with the preset of that width for everything else).  A
    requested config whose keypoint set differs from the checkpoint's is refused (``check_keypoints``).
    """
    checkpoint = source if isinstance(source, Checkpoint) else open_checkpoint(source, network=True)
    path, published = checkpoint.path, checkpoint.published
    state, embedded = checkpoint.weights()
    if requested is None and published is not None:
        requested = published.preset  # the input size (512/640) is not in the tensors
    if isinstance(requested, str):
        requested = preset(requested)
    if requested is not None:
        check_keypoints(str(path), state, embedded, requested)
    if embedded is not None:
        cfg = from_dict(embedded)
        note = "config embedded in the checkpoint"
        if requested is not None and requested.model != cfg.model:
            note += f" (differs from the requested {requested.name!r}; the checkpoint's config wins)"
        return state, cfg, note
    if requested is not None:
        return state, requested, f"requested config {requested.name!r}"
    model_cfg = infer_model_config(state)
    base = next((preset(n) for n in ("w32_512", "w48_512") if preset(n).model.width == model_cfg.width), preset("w32_512"))
    num_joints, name = checkpoint_keypoints(state, None)
    if name not in registered():
        raise CheckpointError(f"checkpoint {path} has {num_joints} joints and no config; give one whose "
                              f"data.keypoints names its keypoint set")
    data = dataclasses.replace(base.data, keypoints=name)
    return state, Config(name=f"inferred_w{model_cfg.width}", input_size=base.input_size, model=model_cfg, data=data), \
        "structure inferred from the checkpoint's tensors"


def load_model(path: str | Path | Checkpoint, config: Config | str | None = None) -> tuple[HigherHRNet, Config]:
    """Build the network for a checkpoint of any supported layout (or a ``Checkpoint`` already read) and load
    it strictly (eval mode)."""
    state, cfg, _ = resolve_config(path, config)
    model = HigherHRNet(cfg.model)
    load_state_dict_strict(model, state, source=str(path.source if isinstance(path, Checkpoint) else path))
    return model.eval(), cfg


def checkpoint_payload(cfg: Config, model_state: Mapping[str, Any], **extra: Any) -> dict[str, Any]:
    """The one layout of an hhrnet checkpoint: format tag, config as a plain dict, state dict, extras."""
    return {"format": HHRNET_FORMAT, "config": to_dict(cfg), "model": model_state, **extra}


def save_checkpoint(path: str | Path, model: torch.nn.Module, cfg: Config, **extra: Any) -> Path:
    """Write an hhrnet checkpoint atomically (temp file + rename): a crash never leaves half a file."""
    return atomic_torch_save(checkpoint_payload(cfg, model.state_dict(), **extra), path)


def save_half(src: str | Path, dst: str | Path) -> Path:
    """An fp16 copy of an hhrnet checkpoint (config embedded): half the bytes, for committing small trained
    networks; it loads into the usual fp32 model like any checkpoint."""
    checkpoint = open_checkpoint(src)
    state, config = checkpoint.weights()
    if config is None:
        raise CheckpointError(f"{src}: not an hhrnet checkpoint (no embedded config to keep with the weights)")
    half = OrderedDict((k, v.half() if v.is_floating_point() else v) for k, v in state.items())
    record = checkpoint.contents.get("data")  # the training-data record (hhrnet.trained_on) travels with the weights
    return atomic_torch_save(checkpoint_payload(from_dict(config), half, **({"data": record} if record else {})), dst)


def convert(src: str | Path, dst: str | Path, config: Config | str | None = None) -> tuple[Config, str]:
    """Official/mmpose/hhrnet checkpoint → hhrnet checkpoint with its config embedded (verified by a strict load)."""
    refuse_overlap([dst], [src], "destination")
    state, cfg, note = resolve_config(src, config)
    model = HigherHRNet(cfg.model)
    load_state_dict_strict(model, state, source=str(src))
    save_checkpoint(dst, model, cfg)
    return cfg, note


def export_onnx(model: HigherHRNet, path: str | Path, input_hw: tuple[int, int] = (512, 512), opset: int = 17) -> Path:
    """The network alone as ONNX (outputs ``out0``, ``out1``, ...); grouping stays in Python.

    Batch, height and width are dynamic axes, so one file serves every test scale.  Written atomically:
    a failed export (a full disk included) leaves an existing file at ``path`` whole.
    """
    names = [f"out{i}" for i in range(model.cfg.num_deconvs + 1)]
    dynamic = {n: {0: "batch", 2: f"{n}_height", 3: f"{n}_width"} for n in names}
    dynamic["image"] = {0: "batch", 2: "height", 3: "width"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter announces its own deprecation
        return atomic_write(path, lambda f: torch.onnx.export(
            model.eval(), torch.zeros(1, 3, *input_hw), f, input_names=["image"], output_names=names,
            dynamic_axes=dynamic, opset_version=opset, dynamo=False))


BACKBONE_PREFIXES = ("conv1.", "bn1.", "conv2.", "bn2.", "layer1.", "transition", "stage")


def load_pretrained_backbone(model: HigherHRNet, path: str | Path) -> tuple[int, int]:
    """Initialise the backbone from ImageNet HRNet weights (e.g. ``hrnet_w32-36af842e.pth``).

    Like the official recipe, only backbone tensors whose name and shape match are taken; the
    classifier head and the extra multi-scale fusion of the ImageNet model are skipped.  Returns
    (tensors loaded, backbone tensors left at their initialisation); loading nothing is an error.
    """
    state, _ = read_checkpoint(path)
    own = model.state_dict()
    take = {k: v for k, v in state.items()
            if k.startswith(BACKBONE_PREFIXES) and k in own and own[k].shape == v.shape}
    if not take:
        raise CheckpointError(f"{path}: no tensor matches the backbone of a width-{model.cfg.width} HRNet")
    model.load_state_dict(take, strict=False)
    return len(take), sum(k.startswith(BACKBONE_PREFIXES) for k in own) - len(take)
