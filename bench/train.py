"""Training throughput (forward + backward + Adam step) on this machine, median of repeated steps.

    python bench/train.py [--steps 5] [--batch 2]

Prints images/s for W32-512 (the published recipe's network and input size) and the CPU-scale
variants used by the study profiles, measured one after the other in this run, plus their ratio to
W32-512.  Data loading is excluded (see bench/data.py); the batch is random tensors with realistic
targets shapes.
"""

from __future__ import annotations

import argparse
import statistics
import time

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch", type=int, default=2)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, median of {args.steps} steps")
    rates = {name: images_per_second(preset("w32_512").override(**changes), args.batch, args.steps)
             for name, changes in VARIANTS.items()}
    base = rates["w32_512 (published)"]
    print(f"{'variant':24s} {'images/s':>10s} {'× W32-512':>10s}")
    for name, rate in rates.items():
        print(f"{name:24s} {rate:10.2f} {rate / base:10.1f}")


if __name__ == "__main__":
    main()
