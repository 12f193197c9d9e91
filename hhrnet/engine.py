"""The training loop: one process, or many through ``torchrun`` (PyTorch DDP), with exact resume.

``train(cfg, out_dir)`` is the whole story, top to bottom: set up the process group (when launched by
torchrun), build model, loss, optimiser and data, then loop over epochs and iterations with the
learning rate of ``TrainConfig.lr_at``.  A run directory holds

* ``config.yaml``  the full configuration of the run;
* ``last.pth``     model + optimiser + grad scaler + RNG states + position, rewritten atomically
                   every ``checkpoint_every`` iterations and at every epoch end (also loadable as a
                   model by ``checkpoints.load_model``);
* ``metrics.jsonl`` one JSON line per logged iteration (loss terms per resolution, lr, images/s, precision) and
                   per validation.

A run folder that already holds a run is refused unless ``resume`` (continue it) or ``overwrite``
(replace it).  SIGINT / SIGTERM finish the current iteration, write ``last.pth`` for it and stop with
``TrainingInterrupted``; ``--resume`` then continues exactly as if nothing had happened.

Exactness: the augmentation of a sample depends only on ``(seed, epoch, index)`` and every process
(or accumulation step) reads a fixed shard of a seeded permutation (``DistributedSampler`` with
``world × accumulate`` virtual replicas).  Hence ``--resume`` continues bit-exactly on CPU, and 2
DDP processes with batch b equal one process with batch b and ``accumulate=2``.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, Sampler

from .checkpoints import check_keypoints, load_file, load_pretrained_backbone, load_state_dict_strict, read_checkpoint
from .config import Config, from_dict, save_config, to_dict
from .data.coco import CocoKeypoints
from .io import append_jsonl, atomic_torch_save, checkpoint_payload, read_jsonl, remove_stale_temps, write_jsonl
from .losses import MultiResolutionLoss
from .model import HigherHRNet
from .precision import precision_of, training_dtype
from .trained_on import training_data

CHECKPOINT = "last.pth"
METRICS = "metrics.jsonl"


class TrainingError(RuntimeError):
    """A run that cannot start or continue (bad resume state, non-finite loss)."""


class RunExistsError(TrainingError):
    """The run folder already holds a run and neither resume nor overwrite was asked for."""


class ResumeMismatchError(TrainingError):
    """``resume`` found a checkpoint written with a different configuration."""


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT / SIGTERM stopped training after writing a resumable checkpoint of the current iteration."""


@dataclass
class Runtime:
    """Where this process runs: its rank among ``world`` processes and its device."""

    rank: int
    world: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def start_runtime() -> Runtime:
    """Join the process group torchrun describes in the environment (NCCL on GPU, gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    device = torch.device(f"cuda:{local_rank}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo")
        if not cuda:  # share the cores instead of oversubscribing them
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", world))))
    return Runtime(rank=dist.get_rank() if world > 1 else 0, world=world, device=device)


def autocast_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``TrainConfig.amp`` on this device (None = full fp32; CPU: ``training_dtype``)."""
    if device.type != "cuda":
        return training_dtype(amp)
    if amp == "off":
        return None
    return torch.bfloat16 if amp == "bf16" else torch.float16


# --------------------------------------------------------------------------------------------------
# Data: each process, and each accumulation step within it, reads its own shard of one permutation.


class SkipSampler(Sampler[int]):
    """A sampler without its first ``skip`` indices: resuming mid-epoch loads no skipped image."""

    def __init__(self, sampler: Sampler[int], skip: int) -> None:
        self.sampler, self.skip = sampler, skip

    def __iter__(self) -> Iterator[int]:
        for i, index in enumerate(self.sampler):
            if i >= self.skip:
                yield index

    def __len__(self) -> int:
        return max(len(self.sampler) - self.skip, 0)  # type: ignore[arg-type]


def shard_loaders(dataset: CocoKeypoints, cfg: Config, rt: Runtime, epoch: int, skip_batches: int) -> list[DataLoader]:
    """One DataLoader per accumulation step, each over a ``DistributedSampler`` shard.

    Shard ``a · world + rank`` of ``world × accumulate`` feeds accumulation step ``a`` of process
    ``rank``, so the data of a step never depends on how the total batch is split.
    """
    t = cfg.train
    replicas = rt.world * t.accumulate
    loaders = []
    for a in range(t.accumulate):
        sampler = DistributedSampler(dataset, num_replicas=replicas, rank=a * rt.world + rt.rank,
                                     shuffle=True, seed=t.seed, drop_last=True)
        sampler.set_epoch(epoch)
        loaders.append(DataLoader(
            dataset, batch_size=t.batch_size, sampler=SkipSampler(sampler, skip_batches * t.batch_size),
            num_workers=t.workers, drop_last=True, pin_memory=rt.device.type == "cuda",
            persistent_workers=False,
        ))
    return loaders


def iterations_per_epoch(num_images: int, cfg: Config, world: int) -> int:
    per_shard = num_images // (world * cfg.train.accumulate)
    return per_shard // cfg.train.batch_size


# --------------------------------------------------------------------------------------------------
# Checkpoints: everything needed to continue exactly, written atomically.


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


def save_training_state(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                        scaler: torch.amp.GradScaler, cfg: Config, epoch: int, iteration: int) -> None:
    atomic_torch_save(checkpoint_payload(
        cfg, unwrap(model).state_dict(), optimizer=optimizer.state_dict(), scaler=scaler.state_dict(),
        rng=rng_state(), epoch=epoch, iteration=iteration, data=training_data(cfg)), path)


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, DistributedDataParallel) else model


RESUME_MAY_CHANGE = ("train.max_iters", "train.workers", "train.log_every", "train.checkpoint_every", "train.val_every")


def config_changes(old: Config, new: Config) -> list[str]:
    """Dotted keys whose values differ, except run mechanics that a resumed run may change."""
    def flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
        return out

    a, b = flat(to_dict(old)), flat(to_dict(new))
    return [k for k in a if a[k] != b.get(k) and k not in RESUME_MAY_CHANGE]


def load_training_state(path: Path) -> dict[str, Any]:
    state = load_file(path)
    if not isinstance(state, dict):
        raise TrainingError(f"{path}: not a training checkpoint")
    missing = {"model", "optimizer", "scaler", "rng", "epoch", "iteration", "config"} - set(state)
    if missing:
        raise TrainingError(f"{path}: not a training checkpoint (missing {', '.join(sorted(missing))})")
    return state


# --------------------------------------------------------------------------------------------------
# Metrics: JSON lines, trimmed on resume so that recomputed iterations are not logged twice.


def append_metrics(path: Path, row: dict[str, Any]) -> None:
    append_jsonl(path, row)


def trim_metrics(path: Path, last_iteration: int) -> None:
    """Keep the rows up to ``last_iteration`` (a torn last line from a crash is dropped too)."""
    if path.exists():
        write_jsonl(path, [r for r in read_jsonl(path, warn=_warn) if r.get("iter", 0) <= last_iteration])


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    return read_jsonl(Path(run_dir) / METRICS, warn=_warn)


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


RUN_FILES = (CHECKPOINT, METRICS, "config.yaml")


def prepare_run_dir(out_dir: Path, resume: bool, overwrite: bool) -> None:
    """Refuse to mix two runs in one folder; remove what ``overwrite`` replaces and stale temp files."""
    existing = [name for name in RUN_FILES if (out_dir / name).exists()]
    if existing and not resume:
        if not overwrite:
            raise RunExistsError(f"{out_dir} already holds a run ({', '.join(existing)}); use --resume to "
                                 "continue it or --overwrite to replace it")
        for name in existing:
            (out_dir / name).unlink()
    remove_stale_temps(out_dir)


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
# The loop.


def memory_format(cfg: Config) -> torch.memory_format:
    return torch.channels_last if cfg.train.channels_last else torch.contiguous_format


def build_model(cfg: Config, rt: Runtime, network: Callable[[Config], nn.Module] | None = None) -> nn.Module:
    torch.manual_seed(cfg.train.seed)  # identical initial weights on every process
    if network is not None:
        model = network(cfg)
    else:
        model = HigherHRNet(cfg.model)
        if cfg.train.init != "official":
            model.reset_parameters(cfg.train.init)
    if cfg.train.pretrained:
        load_pretrained_backbone(model, cfg.train.pretrained)
    if cfg.train.init_from:
        state, embedded = read_checkpoint(cfg.train.init_from)
        check_keypoints(f"train.init_from {cfg.train.init_from}", state, embedded, cfg)
        load_state_dict_strict(model, state, source=f"train.init_from {cfg.train.init_from}")
    model.to(rt.device, memory_format=memory_format(cfg))
    if rt.world > 1:
        if cfg.train.sync_bn and rt.device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        model = DistributedDataParallel(model, device_ids=[rt.device.index] if rt.device.type == "cuda" else None)
    return model


def train(cfg: Config, out_dir: str | Path, resume: bool = False, progress: bool = True,
          dataset: CocoKeypoints | None = None, network: Callable[[Config], nn.Module] | None = None,
          criterion: nn.Module | None = None, overwrite: bool = False) -> Path:
    """Train ``cfg`` into ``out_dir`` (resuming from its ``last.pth`` if asked); returns the checkpoint.

    ``network`` and ``criterion`` replace HigherHRNet and its loss (backbone pretraining uses them).
    """
    with StopSignals() as stop:
        return _train(cfg, Path(out_dir), resume, progress, dataset, network, criterion, overwrite, stop)


def _train(cfg: Config, out_dir: Path, resume: bool, progress: bool, dataset: CocoKeypoints | None,
           network: Callable[[Config], nn.Module] | None, criterion: nn.Module | None, overwrite: bool,
           stop: StopSignals) -> Path:
    rt = start_runtime()
    out_dir = Path(out_dir)
    ckpt_path, metrics_path = out_dir / CHECKPOINT, out_dir / METRICS
    epoch, iteration = 0, 0
    resumed = None
    if resume:
        if not ckpt_path.exists():
            raise TrainingError(f"--resume: no {CHECKPOINT} in {out_dir}")
        resumed = load_training_state(ckpt_path)
        changed = config_changes(from_dict(resumed["config"]), cfg)
        if changed:
            raise ResumeMismatchError(f"--resume: {ckpt_path} was written with a different config "
                                f"({', '.join(changed)}); only {', '.join(RESUME_MAY_CHANGE)} may change")
        epoch, iteration = resumed["epoch"], resumed["iteration"]
    if rt.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        prepare_run_dir(out_dir, resume, overwrite)
        save_config(cfg, out_dir / "config.yaml")
        trim_metrics(metrics_path, iteration) if resume else metrics_path.unlink(missing_ok=True)

    model = build_model(cfg, rt, network)
    criterion = criterion if criterion is not None else MultiResolutionLoss(cfg.loss, cfg.model)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.train.base_lr)
    amp_dtype = autocast_dtype(cfg.train.amp, rt.device)
    scaler = torch.amp.GradScaler(rt.device.type, enabled=amp_dtype == torch.float16)
    if resumed is not None:
        unwrap(model).load_state_dict(resumed["model"])
        optimizer.load_state_dict(resumed["optimizer"])
        scaler.load_state_dict(resumed["scaler"])
        set_rng_state(resumed["rng"])

    if dataset is None:
        dataset = CocoKeypoints.from_config(cfg, train=True, root=cfg.train.data_root, split=cfg.train.train_split,
                                            seed=cfg.train.seed)
    per_epoch = iterations_per_epoch(len(dataset), cfg, rt.world)
    if per_epoch == 0:
        raise TrainingError(f"{len(dataset)} training images are fewer than one step of "
                            f"{cfg.train.batch_size} × {rt.world} processes × {cfg.train.accumulate} accumulation")
    total = per_epoch * cfg.train.epochs
    if cfg.train.max_iters is not None:
        total = min(total, cfg.train.max_iters)
    bar = _progress(total, iteration, enabled=progress and rt.is_main)
    images_per_step = cfg.train.batch_size * rt.world * cfg.train.accumulate

    model.train()
    window = (iteration, time.perf_counter())
    while iteration < total:
        dataset.set_epoch(epoch)
        loaders = shard_loaders(dataset, cfg, rt, epoch, iteration - epoch * per_epoch)
        for micro_batches in zip(*loaders):
            lr = cfg.train.lr_at(iteration, per_epoch)
            for group in optimizer.param_groups:
                group["lr"] = lr
            optimizer.zero_grad(set_to_none=True)
            log = accumulate_gradients(model, criterion, micro_batches, rt, amp_dtype, scaler, memory_format(cfg))
            if not math.isfinite(log["total"]):
                raise TrainingError(f"loss became {log['total']} at iteration {iteration} (epoch {epoch}); "
                                    f"the last good checkpoint is {ckpt_path}")
            scaler.step(optimizer)
            scaler.update()
            iteration += 1
            if rt.is_main:
                bar.update(1)
                bar.set_postfix(loss=f"{log['total']:.4g}", lr=f"{lr:.2e}", refresh=False)
                if iteration % cfg.train.log_every == 0 or iteration == total:
                    now = time.perf_counter()  # throughput over the whole log window, data loading included
                    rate = images_per_step * (iteration - window[0]) / (now - window[1])
                    append_metrics(metrics_path, {"iter": iteration, "epoch": epoch, "lr": lr, **log,
                                                  "images_per_s": rate, "precision": precision_of(amp_dtype)})
                    window = (iteration, now)
                if cfg.train.checkpoint_every and iteration % cfg.train.checkpoint_every == 0:
                    save_training_state(ckpt_path, model, optimizer, scaler, cfg, epoch, iteration)
            if _stop_requested(stop, rt) and iteration < total:
                if rt.is_main:
                    bar.close()
                    save_training_state(ckpt_path, model, optimizer, scaler, cfg, epoch, iteration)
                raise TrainingInterrupted(f"{stop.requested or 'a signal'} at iteration {iteration} of {total}; "
                                          f"{ckpt_path} holds it: continue with --resume")
            if iteration >= total:
                break
        else:  # the epoch ran to its end
            epoch += 1
        if rt.is_main:
            save_training_state(ckpt_path, model, optimizer, scaler, cfg, epoch, iteration)
            if cfg.train.val_every and epoch % cfg.train.val_every == 0 and iteration % per_epoch == 0:
                append_metrics(metrics_path, {"iter": iteration, "epoch": epoch, **validate(unwrap(model), cfg)})
                model.train()
    bar.close()
    if rt.world > 1:
        dist.barrier()
    return ckpt_path


def _stop_requested(stop: StopSignals, rt: Runtime) -> bool:
    """Whether any process was asked to stop (every process must stop at the same iteration)."""
    if rt.world == 1:
        return stop.requested is not None
    flag = torch.tensor([float(stop.requested is not None)], device=rt.device)
    dist.all_reduce(flag)
    return bool(flag.item())


def accumulate_gradients(model: nn.Module, criterion: nn.Module, micro_batches: tuple[dict, ...],
                         rt: Runtime, amp_dtype: torch.dtype | None, scaler: torch.amp.GradScaler,
                         layout: torch.memory_format = torch.contiguous_format) -> dict[str, float]:
    """Forward/backward every micro-batch (gradients averaged over them and over processes).

    Returns the loss terms averaged the same way, identical on every process.
    """
    steps = len(micro_batches)
    sums: dict[str, float] = {}
    for a, batch in enumerate(micro_batches):
        sync = a == steps - 1 or not isinstance(model, DistributedDataParallel)
        with (contextlib.nullcontext() if sync else model.no_sync()):
            with torch.autocast(rt.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                images = batch["image"].to(rt.device, non_blocking=True, memory_format=layout)
                outputs = model(images)
                terms = criterion([o.float() for o in outputs], *(
                    [t.to(rt.device, non_blocking=True) for t in batch[key]] for key in ("heatmaps", "masks", "joints")))
            scaler.scale(terms.total / steps).backward()
        for key, value in terms.log_dict().items():
            sums[key] = sums.get(key, 0.0) + value / steps
    if rt.world > 1:
        keys = sorted(sums)
        values = torch.tensor([sums[k] for k in keys], dtype=torch.float64, device=rt.device)
        dist.all_reduce(values)
        sums = {k: float(v) / rt.world for k, v in zip(keys, values)}
    return sums


def validate(model: nn.Module, cfg: Config) -> dict[str, float]:
    """COCO AP on the validation split with the test pipeline of ``cfg.test``."""
    from .evaluation import evaluate  # the inference stack is only needed when validating
    from .inference import Predictor

    metrics = evaluate(Predictor(model, cfg), root=cfg.train.data_root, split=cfg.train.val_split,
                       progress=False, backend="auto")
    return {f"val_{k}": v for k, v in metrics.items() if k in ("AP", "AP50", "AP75", "AP_M", "AP_L", "AR")}


def _progress(total: int, done: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, initial=done, disable=not enabled, desc="train", unit="it", mininterval=2.0,
                dynamic_ncols=True)

