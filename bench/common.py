"""What every benchmark shares: timing by median, and a random network that runs at trained speed."""

from __future__ import annotations

import statistics
import time
from typing import Callable

import torch

from hhrnet.config import Config, preset
from hhrnet.model import HigherHRNet


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``fn`` over ``repeats`` calls, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def realistic_random_model(cfg: Config | None = None, seed: int = 0) -> tuple[HigherHRNet, Config]:
    """He-initialised convolutions and BatchNorm statistics calibrated on one random batch, in eval mode.

    The official N(0, 0.001) initialisation with unit BatchNorm statistics shrinks eval-mode activations
    to denormal floats, which makes CPU convolutions about 10× slower than with any trained checkpoint;
    this model has activations of order one, like a trained network.
    """
    torch.manual_seed(seed)
    cfg = cfg or preset("w32_512")
    model = HigherHRNet(cfg.model)
    for module in model.modules():
        if isinstance(module, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
            torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
        elif isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = 1.0
    with torch.no_grad():
        model.train()(torch.randn(2, 3, 256, 256))
    return model.eval(), cfg
