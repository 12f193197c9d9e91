"""Levers (``levers:`` in rows.yaml): one training of a profile under one set of changes, with its learning curve.

A lever trains in this process (resumably, in the study cache), validates along training, then runs the
isolating diagnostics of the final network, and writes ``results/levers/<name>.json``: the AP ``curve``,
the ``loss`` at each log step, the final ``diagnostics``, the ``changes``, the configuration and the
seconds it took.  A lever with ``pretrain`` trains a backbone by limb segmentation instead and writes it
to that path; a lever with ``trunk`` also writes its trained network there (fp16, config embedded): the
shared start of a profile's trainings (``backbones``).  ``experiments/levers.py`` is the command line.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from ..checkpoints import save_half
from ..config import load_config, to_dict
from ..diagnostics import diagnostics
from ..engine import read_metrics, train, train_seconds
from ..inference import Predictor
from ..io import atomic_write_json
from ..precision import machine
from ..pretrain import pretrain, save_backbone
from .plan import Study
from .runner import generate_synthetic


def lever_result_path(study: Study, name: str) -> Path:
    return study.root / "results" / "levers" / f"{name}.json"


def record_lever(study: Study, name: str, run_dir: Path, seconds: float | None = None,
                 final: dict[str, Any] | None = None) -> Path:
    """``results/levers/<name>.json`` from a run folder (its ``config.yaml`` and metrics log)."""
    cfg = load_config(str(run_dir / "config.yaml"))
    log = read_metrics(run_dir)
    curve = [{k.removeprefix("val_"): v for k, v in row.items() if k == "iter" or k.startswith("val_")}
             for row in log if "val_AP" in row]
    return atomic_write_json(lever_result_path(study, name), {
        "lever": name, "changes": dict(study.lever(name).changes), "curve": curve, "diagnostics": final,
        "loss": [{k: v for k, v in row.items() if k != "epoch"} for row in log if "total" in row],
        "seconds": seconds, "machine": machine(), "config": to_dict(cfg)})


def run_lever(study: Study, name: str, diagnose: bool = True) -> Path:
    """Train one lever (resuming a cut run) and record it; a ``pretrain`` or ``trunk`` lever writes its weights."""
    lever, cfg = study.lever(name), study.lever_config(name)
    generate_synthetic(cfg.train.data_root, study.lever_data_spec(name)["synthetic"])
    out = study.cache / "levers" / name
    progress = sys.stderr.isatty()
    if lever.pretrain is not None:
        checkpoint = pretrain(cfg, out, cfg.data.keypoint_set.skeleton, resume=(out / "last.pth").exists(),
                              progress=progress)
        return save_backbone(checkpoint, study.root / lever.pretrain)
    checkpoint = train(cfg, out, resume=(out / "last.pth").exists(), progress=progress)
    seconds = train_seconds(out)  # the whole run's clock, across resumes
    if lever.trunk is not None:
        save_half(checkpoint, study.root / lever.trunk)
    final = diagnostics(Predictor.from_checkpoint(checkpoint), root=cfg.train.data_root, split="val",
                        backend="auto") if diagnose else None
    return record_lever(study, name, out, seconds, final)
