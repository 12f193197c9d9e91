"""Training throughput (forward + backward + Adam step) on this machine, median of repeated steps.

    python bench/train.py [--steps 5] [--batch 2]          # published network vs CPU-scale variants
    python bench/train.py --study [--profile cpu]          # the study's headline network: precision,
                                                           # memory format, thread layouts, overhead

The first table gives images/s for W32-512 and CPU-scale variants and their ratio to W32-512.  The
``--study`` tables measure, side by side in one run, the training step of a profile's headline network
in fp32, channels_last, bf16 autocast and both (one thread); one process with two threads against two
one-thread processes at once; and a whole engine iteration (data, targets, loss, optimiser) against
the pure network step.  Random tensors with realistic target shapes stand in for data except in the
last comparison.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from hhrnet.config import Config, preset
from hhrnet.losses import MultiResolutionLoss
from hhrnet.model import HigherHRNet

VARIANTS: dict[str, dict] = {
    "w32_512 (published)": {},
    "w32_256": {"input_size": 256},
    "w16_256": {"input_size": 256, "model.width": 16},
    "w8_128 tiny": {"input_size": 128, "model.width": 8, "model.stage_modules": [1, 1, 1],
                    "model.blocks_per_branch": 1, "model.num_basic_blocks": 1},
}


def fake_batch(cfg: Config, batch: int) -> tuple[torch.Tensor, list, list, list]:
    sizes = [cfg.input_size // s for s in cfg.model.output_strides]
    k = cfg.model.num_joints
    joints = torch.zeros(batch, cfg.data.max_people, k, 2, dtype=torch.int64)
    joints[:, :3, :, 0] = torch.randint(0, k * sizes[0] ** 2, (batch, 3, k))
    joints[:, :3, :, 1] = 1
    return (torch.randn(batch, 3, cfg.input_size, cfg.input_size),
            [torch.rand(batch, k, r, r) for r in sizes],
            [torch.ones(batch, r, r) for r in sizes],
            [joints.clone() for _ in sizes])


def images_per_second(cfg: Config, batch: int, steps: int) -> float:
    torch.manual_seed(0)
    model = HigherHRNet(cfg.model).train()
    criterion = MultiResolutionLoss(cfg.loss, cfg.model)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    images, heatmaps, masks, joints = fake_batch(cfg, batch)
    times = []
    for step in range(steps + 1):
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        criterion(model(images), heatmaps, masks, joints).total.backward()
        optimizer.step()
        if step:  # the first step pays for allocation
            times.append(time.perf_counter() - start)
    return batch / statistics.median(times)


def step_rate(cfg: Config, batch: int, steps: int, channels_last: bool = False, bf16: bool = False) -> float:
    """images/s of forward + backward + Adam for ``cfg``'s network, its own initialisation."""
    torch.manual_seed(0)
    model = HigherHRNet(cfg.model).train()
    model.reset_parameters(cfg.train.init)
    criterion = MultiResolutionLoss(cfg.loss, cfg.model)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    images, heatmaps, masks, joints = fake_batch(cfg, batch)
    if channels_last:
        model, images = model.to(memory_format=torch.channels_last), images.contiguous(memory_format=torch.channels_last)
    times = []
    for step in range(steps + 1):
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            outputs = model(images)
        criterion([o.float() for o in outputs], heatmaps, masks, joints).total.backward()
        optimizer.step()
        if step:
            times.append(time.perf_counter() - start)
    return batch / statistics.median(times)


def study_config(profile: str) -> Config:
    from hhrnet.study import Study

    return Study.load(Path(__file__).resolve().parents[1] / "experiments").training_config("w32_512", profile)


def engine_rate(cfg: Config, iterations: int) -> float:
    """images/s of the engine's whole loop (data, augmentation, targets, loss, Adam) on the profile's data."""
    from hhrnet.engine import read_metrics, train
    from hhrnet.study import Study, generate_synthetic

    study = Study.load(Path(__file__).resolve().parents[1] / "experiments")
    generate_synthetic(cfg.train.data_root, study.data_spec(cfg.name.split("@")[-1])["synthetic"])
    with tempfile.TemporaryDirectory() as out:
        train(cfg.override(**{"train.max_iters": iterations + 2, "train.log_every": 1, "train.val_every": 0}),
              out, progress=False)
        rates = [r["images_per_s"] for r in read_metrics(out)[2:]]
    return statistics.median(rates)


def study_tables(profile: str, steps: int) -> None:
    cfg = study_config(profile)
    batch = cfg.train.batch_size
    print(f"{profile} headline: width {cfg.model.width}, input {cfg.input_size}, batch {batch}, one thread, "
          f"median of {steps} steps")
    torch.set_num_threads(1)
    rates = {name: step_rate(cfg, batch, steps, cl, bf) for name, (cl, bf) in {
        "fp32": (False, False), "channels_last": (True, False), "bf16 autocast": (False, True),
        "bf16 + channels_last": (True, True)}.items()}
    print(f"{'precision / layout':24s} {'images/s':>10s} {'× fp32':>8s}")
    for name, rate in rates.items():
        print(f"{name:24s} {rate:10.2f} {rate / rates['fp32']:8.2f}")
    two_threads = subprocess_rates(profile, steps, processes=1, threads=2)
    two_processes = subprocess_rates(profile, steps, processes=2, threads=1)
    print(f"{'thread layout':24s} {'images/s':>10s}")
    print(f"{'1 process × 2 threads':24s} {sum(two_threads):10.2f}")
    print(f"{'2 processes × 1 thread':24s} {sum(two_processes):10.2f}   (ratio {sum(two_processes) / sum(two_threads):.2f})")
    whole = engine_rate(cfg, steps)
    print(f"{'engine iteration':24s} {whole:10.2f}   (× pure network step {whole / rates['fp32']:.2f})")


def subprocess_rates(profile: str, steps: int, processes: int, threads: int) -> list[float]:
    """fp32 rates of ``processes`` simultaneous copies of this script, each with ``threads`` threads."""
    code = (f"import torch, sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import train as b; "
            f"torch.set_num_threads({threads}); cfg = b.study_config({profile!r}); "
            f"print(b.step_rate(cfg, cfg.train.batch_size, {steps}))")
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env)
             for _ in range(processes)]
    return [float(p.communicate()[0].split()[-1]) for p in procs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--study", action="store_true", help="measure the study profile's headline network")
    parser.add_argument("--profile", default="cpu")
    args = parser.parse_args()
    if args.study:
        study_tables(args.profile, args.steps)
        return
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, median of {args.steps} steps")
    rates = {name: images_per_second(preset("w32_512").override(**changes), args.batch, args.steps)
             for name, changes in VARIANTS.items()}
    base = rates["w32_512 (published)"]
    print(f"{'variant':24s} {'images/s':>10s} {'× W32-512':>10s}")
    for name, rate in rates.items():
        print(f"{name:24s} {rate:10.2f} {rate / base:10.1f}")


if __name__ == "__main__":
    main()
