"""A moving average of a network's weights (``train.ema``): it is what a training validates and saves.

Averaging the last few hundred steps' weights smooths the noise of small-batch Adam; the book's training
chapter measures what it buys.  The decay warms up as ``(1 + n) / (10 + n)`` so that the first updates do
not keep the random initialisation, and buffers (batch-norm statistics) are averaged like weights.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class WeightAverage:
    """The averaged copy of ``model``, updated after each optimiser step."""

    def __init__(self, model: nn.Module, decay: float, updates: int = 0) -> None:
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay, self.updates = decay, updates

    def __repr__(self) -> str:
        return f"WeightAverage(decay={self.decay}, updates={self.updates})"

    def rate(self) -> float:
        """The next update's decay: warmed up over the first steps, then ``decay``."""
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Fold the current weights of ``model`` (same architecture) into the average."""
        keep = self.rate()
        self.updates += 1
        for avg, now in zip(self.module.state_dict().values(), model.state_dict().values()):
            if avg.is_floating_point():
                avg.lerp_(now.detach(), 1 - keep)
            else:
                avg.copy_(now)
