"""The training loop: one process, or many through ``torchrun`` (PyTorch DDP), with exact resume.

``train(cfg, out_dir)`` is the whole story, top to bottom: set up the process group (when launched by
torchrun); check the run folder, the data and the schedule; build (or restore) model, loss, optimiser;
only then write the run folder (``hhrnet.rundir``: ``config.yaml``, ``last.pth``, ``metrics.jsonl``);
then loop over epochs and iterations with the learning rate of ``TrainConfig.lr_at``.  ``last.pth`` is
rewritten atomically every ``checkpoint_every`` iterations and at every epoch end, never with
non-finite weights; a non-finite learning rate or loss stops the run naming the last good checkpoint.
SIGINT / SIGTERM finish the current iteration, write ``last.pth`` for it and stop with
``TrainingInterrupted``; ``--resume`` then continues exactly as if nothing had happened, its training
clock (``train_seconds``) continuing from the checkpoint's.

Exactness: the augmentation of a sample depends only on ``(seed, epoch, index)`` and every process
(or accumulation step) reads a fixed shard of a seeded permutation (``DistributedSampler`` with
``world × accumulate`` virtual replicas).  Hence ``--resume`` continues bit-exactly on CPU, and 2
DDP processes with batch b equal one process with batch b and ``accumulate=2``.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, Sampler

from .averaging import WeightAverage
from .checkpoints import (check_keypoints, checkpoint_payload, load_pretrained_backbone, load_state_dict_strict,
                          read_checkpoint)
from .config import Config
from .data.coco import CocoKeypoints
from .io import append_jsonl, atomic_torch_save
from .losses import MultiResolutionLoss
from .model import HigherHRNet
from .precision import precision_of, training_dtype
from .rundir import (CHECKPOINT, METRICS, ResumeMismatchError, RunExistsError, StopSignals, TrainingError,
                     check_run_dir, read_metrics, rng_state, set_rng_state, start_run_dir, train_seconds)
from .trained_on import training_data

# the training API: the loop here, what a run folder holds and the errors of both from hhrnet.rundir
__all__ = ["train", "TrainingInterrupted", "TrainingError", "RunExistsError", "ResumeMismatchError",
           "read_metrics", "train_seconds", "CHECKPOINT", "METRICS"]


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


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, DistributedDataParallel) else model


# --------------------------------------------------------------------------------------------------
# What the loop works on, built (or restored) before the run folder is touched.


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


def save_training_state(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                        cfg: Config, epoch: int, iteration: int, seconds: float = 0.0,
                        average: WeightAverage | None = None) -> None:
    """Everything ``--resume`` needs to continue exactly, with the run's clock and its data record, atomically.

    With a weight average, ``model`` holds the average (what evaluation and inference load) and
    ``train_model`` the weights the optimiser is moving.
    """
    weights = unwrap(model).state_dict()
    extra = {} if average is None else {"train_model": weights, "ema_updates": average.updates}
    atomic_torch_save(checkpoint_payload(
        cfg, weights if average is None else average.module.state_dict(), optimizer=optimizer.state_dict(),
        scaler=scaler.state_dict(), rng=rng_state(), epoch=epoch, iteration=iteration, train_seconds=seconds,
        data=training_data(cfg), **extra), path)


@dataclass
class Run:
    """One training run in progress: where it runs and writes, what it trains, where it stands, its clock."""

    cfg: Config
    rt: Runtime
    out_dir: Path
    model: nn.Module
    criterion: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    amp_dtype: torch.dtype | None
    per_epoch: int
    total: int
    epoch: int = 0
    iteration: int = 0
    seconds_before: float = 0.0  # training time of the earlier segments of a resumed run
    average: WeightAverage | None = None  # train.ema's moving average of the weights
    started: float = field(default_factory=time.perf_counter)

    @property
    def checkpoint(self) -> Path:
        return self.out_dir / CHECKPOINT

    def network(self) -> nn.Module:
        """The network this run validates and saves: the weight average where there is one."""
        return unwrap(self.model) if self.average is None else self.average.module

    def seconds(self) -> float:
        """Training time of the whole run so far, across resumes."""
        return self.seconds_before + time.perf_counter() - self.started

    def save(self) -> None:
        """``last.pth`` for the current iteration; non-finite weights are refused, keeping the last good one."""
        params = unwrap(self.model).parameters()
        if not all(bool(torch.isfinite(p).all()) for p in params):
            raise TrainingError(f"the weights became non-finite at iteration {self.iteration} (epoch {self.epoch}); "
                                f"{self.checkpoint} keeps the last good checkpoint")
        save_training_state(self.checkpoint, self.model, self.optimizer, self.scaler, self.cfg, self.epoch,
                            self.iteration, self.seconds(), self.average)

    def log(self, row: dict[str, Any]) -> None:
        append_jsonl(self.out_dir / METRICS, {"iter": self.iteration, "epoch": self.epoch, **row,
                                              "train_seconds": self.seconds()})


def training_schedule(num_images: int, cfg: Config, world: int) -> tuple[int, int]:
    """``(iterations per epoch, total iterations)``; a dataset smaller than one step is refused."""
    per_epoch = iterations_per_epoch(num_images, cfg, world)
    if per_epoch == 0:
        raise TrainingError(f"{num_images} training images are fewer than one step of "
                            f"{cfg.train.batch_size} × {world} processes × {cfg.train.accumulate} accumulation")
    total = per_epoch * cfg.train.epochs
    return per_epoch, total if cfg.train.max_iters is None else min(total, cfg.train.max_iters)


def build_run(cfg: Config, rt: Runtime, out_dir: Path, schedule: tuple[int, int],
              network: Callable[[Config], nn.Module] | None, criterion: nn.Module | None,
              resumed: dict[str, Any] | None) -> Run:
    """Network (pretrained weights fetched here), loss, optimiser and scaler, restored from ``resumed`` if given."""
    model = build_model(cfg, rt, network)
    amp_dtype = autocast_dtype(cfg.train.amp, rt.device)
    run = Run(cfg, rt, out_dir, model, criterion if criterion is not None else MultiResolutionLoss(cfg.loss, cfg.model),
              torch.optim.Adam(model.parameters(), lr=cfg.train.base_lr), torch.amp.GradScaler(
                  rt.device.type, enabled=amp_dtype == torch.float16), amp_dtype, *schedule)
    if cfg.train.ema:
        run.average = WeightAverage(unwrap(model), cfg.train.ema)
    if resumed is not None:
        restore(run, resumed)
    return run


def restore(run: Run, state: dict[str, Any]) -> None:
    """Continue exactly where ``state`` stopped; a checkpoint that does not fit is one error naming it."""
    if run.average is not None and "train_model" not in state:
        raise TrainingError(f"{run.checkpoint} holds no train_model weights to continue a train.ema run from")
    if run.average is not None:
        load_state_dict_strict(run.average.module, state["model"], source=str(run.checkpoint))
        run.average.updates = int(state.get("ema_updates", 0))
    load_state_dict_strict(unwrap(run.model), state["model" if run.average is None else "train_model"],
                           source=str(run.checkpoint))
    try:
        run.optimizer.load_state_dict(state["optimizer"])
        run.scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        run.epoch, run.iteration = int(state["epoch"]), int(state["iteration"])
        run.seconds_before = float(state.get("train_seconds", 0.0))
    except (KeyError, ValueError, TypeError, IndexError, RuntimeError) as err:
        detail = f"missing key {err}" if isinstance(err, KeyError) else str(err).strip().splitlines()[0][:200]
        raise TrainingError(f"{run.checkpoint}: its optimiser, scaler or RNG state does not fit ({detail})") from None


# --------------------------------------------------------------------------------------------------
# The loop.


def train(cfg: Config, out_dir: str | Path, resume: bool = False, progress: bool = True,
          dataset: CocoKeypoints | None = None, network: Callable[[Config], nn.Module] | None = None,
          criterion: nn.Module | None = None, overwrite: bool = False) -> Path:
    """Train ``cfg`` into ``out_dir`` (resuming from its ``last.pth`` if asked); returns the checkpoint.

    Every check (folder, resume state, data, schedule, pretrained and init weights) comes before the
    first write, so a refused run leaves the folder as it was.  ``network`` and ``criterion`` replace
    HigherHRNet and its loss (backbone pretraining uses them).
    """
    out_dir = Path(out_dir)
    with StopSignals() as stop:
        rt = start_runtime()
        resumed = check_run_dir(out_dir, cfg, resume, overwrite)
        if dataset is None:
            dataset = CocoKeypoints.from_config(cfg, train=True, root=cfg.train.data_root,
                                                split=cfg.train.train_split, seed=cfg.train.seed)
        schedule = training_schedule(len(dataset), cfg, rt.world)
        run = build_run(cfg, rt, out_dir, schedule, network, criterion, resumed)
        if rt.is_main:
            start_run_dir(out_dir, cfg, run.iteration if resumed is not None else None)
        run_loop(run, dataset, stop, progress)
        if rt.world > 1:
            dist.barrier()
        return run.checkpoint


def run_loop(run: Run, dataset: CocoKeypoints, stop: StopSignals, progress: bool) -> None:
    """Epochs of iterations until ``run.total``; a checkpoint at every epoch end, a validation where asked."""
    cfg, rt = run.cfg, run.rt
    bar = _progress(run.total, run.iteration, enabled=progress and rt.is_main)
    run.model.train()
    window = (run.iteration, time.perf_counter())
    while run.iteration < run.total:
        dataset.set_epoch(run.epoch)
        loaders = shard_loaders(dataset, cfg, rt, run.epoch, run.iteration - run.epoch * run.per_epoch)
        for micro_batches in zip(*loaders):
            log = step(run, micro_batches)
            if rt.is_main:
                bar.update(1)
                bar.set_postfix(loss=f"{log['total']:.4g}", lr=f"{log['lr']:.2e}", refresh=False)
                if run.iteration % cfg.train.log_every == 0 or run.iteration == run.total:
                    now = time.perf_counter()  # throughput over the whole log window, data loading included
                    images = cfg.train.batch_size * rt.world * cfg.train.accumulate * (run.iteration - window[0])
                    run.log({**log, "images_per_s": images / (now - window[1]),
                             "precision": precision_of(run.amp_dtype)})
                    window = (run.iteration, now)
                if cfg.train.checkpoint_every and run.iteration % cfg.train.checkpoint_every == 0:
                    run.save()
            if _stop_requested(stop, rt) and run.iteration < run.total:
                bar.close()
                if rt.is_main:
                    run.save()
                raise TrainingInterrupted(f"{stop.requested or 'a signal'} at iteration {run.iteration} of "
                                          f"{run.total}; {run.checkpoint} holds it: continue with --resume")
            if run.iteration >= run.total:
                break
        else:  # the epoch ran to its end
            run.epoch += 1
        if rt.is_main:
            run.save()
            if cfg.train.val_every and run.epoch % cfg.train.val_every == 0 and run.iteration % run.per_epoch == 0:
                run.log(validate(run.network(), cfg))
                run.model.train()
    bar.close()


def step(run: Run, micro_batches: tuple[dict, ...]) -> dict[str, float]:
    """One optimiser step at the schedule's learning rate; a non-finite rate or loss stops the run by name."""
    lr = run.cfg.train.lr_at(run.iteration, run.per_epoch)
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    run.optimizer.zero_grad(set_to_none=True)
    log = accumulate_gradients(run.model, run.criterion, micro_batches, run.rt, run.amp_dtype, run.scaler,
                               memory_format(run.cfg))
    for name, value in (("learning rate", lr), ("loss", log["total"])):
        if not math.isfinite(value):
            raise TrainingError(f"{name} became {value} at iteration {run.iteration} (epoch {run.epoch}); "
                                f"the last good checkpoint is {run.checkpoint}")
    run.scaler.step(run.optimizer)
    run.scaler.update()
    if run.average is not None:
        run.average.update(unwrap(run.model))
    run.iteration += 1
    return {"lr": lr, **log}


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
    """COCO AP on the validation split (its first ``train.val_images``) with the test pipeline of ``cfg.test``."""
    from .evaluation import evaluate  # the inference stack is only needed when validating
    from .inference import Predictor

    metrics = evaluate(Predictor(model, cfg), root=cfg.train.data_root, split=cfg.train.val_split,
                       progress=False, backend="auto", limit=cfg.train.val_images)
    return {f"val_{k}": v for k, v in metrics.items() if k in ("AP", "AP50", "AP75", "AP_M", "AP_L", "AR")}


def _progress(total: int, done: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, initial=done, disable=not enabled, desc="train", unit="it", mininterval=2.0,
                dynamic_ncols=True)

