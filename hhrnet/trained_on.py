"""What a network is and what it was trained on: an honest name, and the record of its training data.

A study network is named after the published row it stands for (``w32_512@cpu``) but is smaller;
``network_name`` says what it is (``W16 @128 px, the cpu stand-in for w32_512``).

Training writes ``training_data(cfg)`` into every checkpoint (key ``"data"``): for a synthetic set
the generator's own manifest (sizes, seed, every scene knob: ``hhrnet synth --like`` regenerates it),
otherwise the COCO-format root and splits.  ``checkpoint_record`` reads it back; for checkpoints
written before the record it derives what it can from ``train.data_root`` (the study names synthetic
folders ``synthetic_<size>_<train>_<val>_seed<seed>_<scene hash>``) and says so (``"derived"``).
Published weights were trained on COCO train2017.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Mapping

from hhrnet.checkpoints import Checkpoint
from hhrnet.config import Config
from hhrnet.data.synthetic import SyntheticConfig, dataset_paths

STUDY_FOLDER = re.compile(r"synthetic_(?P<size>\d+)_(?P<n_train>\d+)_(?P<n_val>\d+)_seed(?P<seed>\d+)_(?P<scene>[0-9a-f]{8})"
                          r"(?:_(?P<keypoints>\w+))?")
# An image this many times larger or smaller (per side) than the training scenes is "far" from them.
FAR_FACTOR = 1.5


def network_name(cfg: Config) -> str:
    """``W<width> @<input> px``, and for a study network the row it stands for (its name is ``row@profile``)."""
    name = f"W{cfg.model.width} @{cfg.input_size} px"
    row, _, profile = cfg.name.partition("@")
    return f"{name}, the {profile} stand-in for {row}" if profile else f"{name} ({cfg.name})"


def training_data(cfg: Config) -> dict[str, Any]:
    """The record of ``cfg``'s training data written into checkpoints: a synthetic set's manifest, or the COCO split."""
    root = Path(cfg.train.data_root)
    manifest = dataset_paths(root).manifest
    if manifest.is_file():
        return {"kind": "synthetic", "root": str(root), "generator": json.loads(manifest.read_text())}
    return {"kind": "coco", "root": str(root), "train_split": cfg.train.train_split, "val_split": cfg.train.val_split}


def checkpoint_record(checkpoint: Checkpoint, cfg: Config) -> dict[str, Any]:
    """The training-data record of a checkpoint (``training_data``), or what its config and name tell."""
    if checkpoint.published is not None:
        return {"kind": "coco", "train_split": "train2017", "derived": f"published weights {checkpoint.published.name}"}
    stored = checkpoint.contents
    if isinstance(stored, Mapping) and isinstance(stored.get("data"), Mapping):
        return dict(stored["data"])
    return derived_record(cfg)


def derived_record(cfg: Config) -> dict[str, Any]:
    """What ``cfg.train.data_root`` tells of a checkpoint's training data when the checkpoint has no record."""
    root = Path(cfg.train.data_root)
    found = STUDY_FOLDER.fullmatch(root.name)
    if dataset_paths(root).manifest.is_file():
        return {**training_data(cfg), "derived": f"the manifest in {root}"}
    if found:
        numbers = {k: int(found[k]) for k in ("size", "n_train", "n_val", "seed")}
        return {"kind": "synthetic", "root": str(root), "scene_hash": found["scene"],
                "keypoints": found["keypoints"] or "coco", **numbers, "derived": f"the study folder name {root.name}"}
    return {"kind": "unknown", "root": str(root), "derived": "train.data_root only"}


def describe(record: Mapping[str, Any]) -> str:
    """One line: what the network was trained on."""
    if record["kind"] == "synthetic":
        size = record.get("generator", record).get("size")
        return f"synthetic scenes of {size}x{size} px (hhrnet synth)"
    if record["kind"] == "coco":
        return f"COCO-format {record.get('train_split', 'train')} ({record.get('root', 'COCO')})"
    return f"unrecorded data ({record.get('root')})"


def far_from_training(record: Mapping[str, Any], image_hw: tuple[int, int]) -> str | None:
    """A note when an image is unlike the synthetic scenes a network was trained on (size and shape), else None."""
    if record["kind"] != "synthetic":
        return None
    size = record.get("generator", record).get("size")
    height, width = image_hw
    if size and max(height, width) / size < FAR_FACTOR and size / min(height, width) < FAR_FACTOR:
        return None
    return (f"this network was trained on {describe(record)}; a {width}x{height} image is far from them, "
            f"so expect missed or wrong people (a real photo needs a network trained on COCO)")


def synthetic_settings(record: Mapping[str, Any]) -> dict[str, Any]:
    """``hhrnet.data.synthetic.generate`` keywords that regenerate a recorded synthetic set (sizes, seed, knobs)."""
    if record["kind"] != "synthetic" or "generator" not in record:
        raise ValueError(f"no generator settings recorded ({describe(record)}"
                         f"{', derived from ' + record['derived'] if 'derived' in record else ''})")
    spec = record["generator"]
    knobs = {k: tuple(v) if isinstance(v, list) else v for k, v in spec["config"].items()}
    return {"n_train": spec["n_train"], "n_val": spec["n_val"], "size": spec["size"], "seed": spec["seed"],
            "image_format": spec["image_format"], "config": SyntheticConfig(**knobs),
            "keypoints": spec.get("keypoints", "coco")}
