"""What the study's notebooks call: one training, one evaluation, each ending in an atomic ``metrics.json``."""

from __future__ import annotations

import gzip
import shutil
import statistics
from pathlib import Path
from typing import Any

import yaml

from ..checkpoints import load_model
from ..config import Config, from_dict, to_dict
from ..engine import CHECKPOINT, ResumeMismatchError, read_metrics, train, train_seconds
from ..evaluation import evaluate
from ..inference import Predictor
from ..io import atomic_write_json
from ..model import HigherHRNet, count_flops, count_parameters
from ..precision import machine
from .errors import StudyError
from .provenance import code_used
from .runner import generate_synthetic


def config_from_yaml(config_yaml: str) -> Config:
    return from_dict(yaml.safe_load(config_yaml))


def write_metrics(out_dir: str | Path, metrics: dict[str, Any]) -> Path:
    """``metrics.json`` written last and atomically: its presence (with a stamp) means the run finished.

    It records the hhrnet sources this run imported (``code``): the result is current while they are; and
    the machine it ran on (``machine``), without which its clocks cannot be compared.
    """
    return atomic_write_json(Path(out_dir) / "metrics.json",
                             _plain({**metrics, "machine": machine(), "code": code_used()}))


def _plain(value: Any) -> Any:
    """JSON-ready values: numpy and torch scalars become floats, NaN becomes null."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (str, bool, int)):
        return value
    value = float(value)
    return value if value == value and abs(value) != float("inf") else None


def model_size(cfg: Config) -> dict[str, Any]:
    model = HigherHRNet(cfg.model)
    return {"parameters": count_parameters(model),
            "gflops": count_flops(model, (cfg.input_size, cfg.input_size)) / 1e9}


def train_for_study(cfg: Config, checkpoint_dir: str | Path, synthetic: dict[str, Any] | None) -> dict[str, Any]:
    """Generate the data if needed, train (resuming an interrupted run), and summarise the training."""
    if synthetic is not None:
        generate_synthetic(cfg.train.data_root, synthetic)
    checkpoint_dir = Path(checkpoint_dir)
    resume = (checkpoint_dir / CHECKPOINT).exists()
    try:  # the cache is the study's own: a run without a checkpoint is replaced
        train(cfg, checkpoint_dir, resume=resume, overwrite=not resume, progress=False)
    except ResumeMismatchError:  # a stale checkpoint of another config
        train(cfg, checkpoint_dir, resume=False, overwrite=True, progress=False)
    log = read_metrics(checkpoint_dir)
    steps = [r for r in log if "total" in r]  # the loss rows (validation rows come between them)
    rates = [r["images_per_s"] for r in steps if "images_per_s" in r]
    return {**model_size(cfg), "train_seconds": train_seconds(checkpoint_dir), "iterations": log[-1]["iter"] if log else 0,
            "train_images_per_s": statistics.median(rates) if rates else None,
            "final_loss": steps[-1]["total"] if steps else None, "seed": cfg.train.seed, "log": log,
            "precision": steps[-1].get("precision") if steps else None,
            "val_curve": [{k.removeprefix("val_"): v for k, v in r.items() if k == "iter" or k.startswith("val_")}
                          for r in log if "val_AP" in r]}


def evaluate_for_study(cfg: Config, checkpoint: str | Path, out_dir: str | Path,
                       published: bool = False) -> tuple[dict[str, Any], Any]:
    """Keypoint AP of a checkpoint on the validation split, with the test settings of ``cfg`` (the protocol
    of its keypoint set: COCO's, or CrowdPose's with AP_easy / AP_medium / AP_hard).

    A study training's checkpoint must hold the network of ``cfg``.  ``published`` weights (an
    evaluation with ``checkpoint:``) bring their own network; ``cfg`` gives the data and test settings.
    """
    model, trained = load_model(checkpoint, cfg if published else None)
    if trained.model != cfg.model:
        if not published:
            raise StudyError(f"{checkpoint}: trained network differs from the evaluation's config; re-run its training")
        cfg = cfg.override(**{"model." + k: v for k, v in to_dict(trained.model).items()},
                           input_size=trained.input_size)
    predictor = Predictor(model, cfg, cfg.test)
    metrics = evaluate(predictor, root=cfg.train.data_root, split=cfg.train.val_split, out_dir=out_dir,
                       progress=False)
    gzip_file(Path(out_dir) / "results.json")
    return metrics, predictor


def gzip_file(path: Path) -> Path:
    """``x`` → ``x.gz`` (byte-identical for identical input): committed detections take a fifth of the room."""
    target = path.with_name(path.name + ".gz")
    with path.open("rb") as src, target.open("wb") as raw, \
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as dst:
        shutil.copyfileobj(src, dst)
    path.unlink()
    return target
