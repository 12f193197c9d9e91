"""A training run's folder: what it holds, when it may be reused, and the state that resumes it exactly.

A run folder holds ``config.yaml`` (the run's configuration), ``last.pth`` (model, optimiser, grad
scaler, RNG states, position and the training clock) and ``metrics.jsonl`` (one strict-JSON line per
logged iteration and validation, each with the run's ``train_seconds`` so far).  ``check_run_dir``
only reads: it refuses a folder holding another run (unless ``--resume`` or ``--overwrite``) and a
checkpoint written with another configuration.  ``start_run_dir`` is the run's first write, called
once every check (data, schedule, weights) has passed, so a refused run leaves the folder as it was.
``StopSignals`` turns SIGINT / SIGTERM into a request the loop answers by writing ``last.pth`` first.
"""

from __future__ import annotations

import random
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .checkpoints import load_file
from .config import Config, from_dict, save_config, to_dict
from .io import read_jsonl, refuse_overlap, remove_stale_temps, write_jsonl

CHECKPOINT = "last.pth"
METRICS = "metrics.jsonl"


class TrainingError(RuntimeError):
    """A run that cannot start or continue (bad resume state, non-finite loss)."""


class RunExistsError(TrainingError):
    """The run folder already holds a run and neither resume nor overwrite was asked for."""


class ResumeMismatchError(TrainingError):
    """``resume`` found a checkpoint written with a different configuration."""


class StopSignals:
    """SIGINT / SIGTERM set ``requested`` instead of killing the process (a second signal does).

    Installed only in the main thread (Python's rule for signal handlers); elsewhere it does nothing.
    """

    def __init__(self) -> None:
        self.requested: str | None = None
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested is not None:  # asked twice: stop now
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


# --------------------------------------------------------------------------------------------------
# Exact resume: RNG states and the checkpoint's state, refused by name when they do not fit.


def rng_state() -> dict[str, Any]:
    """Global RNG states as tensors and plain values (readable with ``weights_only=True``)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_tuples(state["python"]))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuples(x: Any) -> Any:
    return tuple(_tuples(v) for v in x) if isinstance(x, (list, tuple)) else x


RESUME_MAY_CHANGE = ("train.max_iters", "train.workers", "train.log_every", "train.checkpoint_every", "train.val_every",
                     "train.val_images")


def config_changes(old: Config, new: Config) -> list[str]:
    """Dotted keys whose values differ, except run mechanics that a resumed run may change."""
    def flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
        return out

    a, b = flat(to_dict(old)), flat(to_dict(new))
    return [k for k in a if a[k] != b.get(k) and k not in RESUME_MAY_CHANGE]


TRAINING_STATE = ("model", "optimizer", "scaler", "rng", "epoch", "iteration", "config")


def load_training_state(path: Path, cfg: Config) -> dict[str, Any]:
    """The resumable state in ``path``, refused by name unless it was written with ``cfg`` (up to RESUME_MAY_CHANGE)."""
    state = load_file(path)
    missing = set(TRAINING_STATE) - set(state) if isinstance(state, dict) else set(TRAINING_STATE)
    if missing:
        raise TrainingError(f"{path}: not a training checkpoint (missing {', '.join(sorted(missing))})")
    try:
        changed = config_changes(from_dict(state["config"]), cfg)
    except (ValueError, TypeError) as err:
        raise TrainingError(f"{path}: its embedded config is unreadable ({err})") from None
    if changed:
        raise ResumeMismatchError(f"--resume: {path} was written with a different config "
                                  f"({', '.join(changed)}); only {', '.join(RESUME_MAY_CHANGE)} may change")
    return state


# --------------------------------------------------------------------------------------------------
# Metrics: JSON lines (strict JSON), trimmed on resume so that recomputed iterations are not logged twice.


def trim_metrics(path: Path, last_iteration: int) -> None:
    """Keep the rows up to ``last_iteration`` (a torn last line from a crash is dropped too)."""
    if path.exists():
        write_jsonl(path, [r for r in read_jsonl(path, warn=_warn) if r.get("iter", 0) <= last_iteration])


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    return read_jsonl(Path(run_dir) / METRICS, warn=_warn)


def train_seconds(run_dir: str | Path) -> float | None:
    """The whole run's training time, every resumed segment included (the last logged clock)."""
    clocks = [r["train_seconds"] for r in read_metrics(run_dir) if "train_seconds" in r]
    return clocks[-1] if clocks else None


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


# --------------------------------------------------------------------------------------------------
# The folder: checked before anything is built, written only once every check has passed.


RUN_FILES = (CHECKPOINT, METRICS, "config.yaml")


def check_run_dir(out_dir: Path, cfg: Config, resume: bool, overwrite: bool) -> dict[str, Any] | None:
    """Refuse to mix two runs in one folder (reads only); returns the state to resume, if any."""
    if resume:
        if not (out_dir / CHECKPOINT).exists():
            raise TrainingError(f"--resume: no {CHECKPOINT} in {out_dir}")
        return load_training_state(out_dir / CHECKPOINT, cfg)
    existing = [name for name in RUN_FILES if (out_dir / name).exists()]
    if existing and not overwrite:
        raise RunExistsError(f"{out_dir} already holds a run ({', '.join(existing)}); use --resume to "
                             "continue it or --overwrite to replace it")
    if out_dir.exists() and not out_dir.is_dir():
        raise TrainingError(f"{out_dir}: not a folder; --out names the run folder")
    weights = [w for w in (cfg.train.init_from, cfg.train.pretrained) if w]
    refuse_overlap([out_dir / name for name in RUN_FILES], weights, "run file")
    return None


def start_run_dir(out_dir: Path, cfg: Config, iteration: int | None) -> None:
    """The first write of a run: config.yaml, metrics trimmed to ``iteration`` (resume) or emptied and
    the old checkpoint removed (a new run), stale temp files swept.  Called after every check."""
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out_dir)
    if iteration is None:
        (out_dir / CHECKPOINT).unlink(missing_ok=True)
        write_jsonl(out_dir / METRICS, [])
    else:
        trim_metrics(out_dir / METRICS, iteration)
    save_config(cfg, out_dir / "config.yaml")
