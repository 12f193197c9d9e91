"""Backbone pretraining at CPU scale: the study's stand-in for ImageNet.

The paper starts every row from an ImageNet-pretrained HRNet, so its ablations compare heads, losses
and test settings on top of one shared, already useful backbone.  The CPU study cannot use ImageNet,
so it pretrains each backbone width once on a task that none of its ablations varies: **limb
segmentation** at 1/4 resolution (one channel per skeleton edge: is this pixel on that limb of some
person?) on a synthetic split disjoint from the study's training and validation scenes.  The task has
no Gaussian heatmaps (neutral to sigma), no tags (neutral to the AE loss), one output at 1/4 whose
1×1 head is discarded (every row trains its own heads, at 1/4, 1/2 or 1/1, from scratch), and sees the
same random scale augmentation as every row (neutral to the input size).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .checkpoints import BACKBONE_PREFIXES, HHRNET_FORMAT, read_checkpoint
from .config import Config
from .engine import train
from .io import atomic_torch_save
from .model import HigherHRNet

LIMB_RADIUS = 1.0  # output pixels: a limb is the set of pixels within this distance of its segment


def pretraining_config(cfg: Config) -> Config:
    """``cfg`` with one 1/4-resolution output and no tags: the network limb segmentation trains."""
    return cfg.override(**{
        "name": f"pretrain_{cfg.name}", "model.num_deconvs": 0, "model.with_ae_loss": [False],
        "train.val_every": 0,
    })


def limb_network(cfg: Config, num_limbs: int) -> HigherHRNet:
    """HRNet with its 1/4-resolution head replaced by ``num_limbs`` limb logits."""
    model = HigherHRNet(cfg.model)
    if cfg.train.init != "official":
        model.reset_parameters(cfg.train.init)
    model.final_layers[0] = nn.Conv2d(cfg.model.width, num_limbs, 1)
    return model


def decode_joints(joints: Tensor, size: int, num_joints: int) -> tuple[Tensor, Tensor]:
    """Per-joint ``(B, P, K, 2)`` positions and ``(B, P, K)`` presence from packed AE targets.

    ``hhrnet.targets.joint_tag_targets`` packs each person's counted joints as ``k·r² + y·r + x``.
    """
    batch, people = joints.shape[:2]
    index, present = joints[..., 0], joints[..., 1] > 0
    k = torch.where(present, index // (size * size), num_joints)  # absent slots go to a spare joint
    xy = torch.stack((index % size, (index // size) % size), dim=-1).float()
    positions = xy.new_zeros(batch, people, num_joints + 1, 2)
    seen = torch.zeros(batch, people, num_joints + 1, dtype=torch.bool, device=joints.device)
    positions.scatter_(2, k[..., None].expand(-1, -1, -1, 2), xy)
    seen.scatter_(2, k, present)
    return positions[:, :, :num_joints], seen[:, :, :num_joints]


def limb_targets(joints: Tensor, size: int, skeleton: Sequence[tuple[int, int]], num_joints: int,
                 radius: float = LIMB_RADIUS) -> Tensor:
    """``(B, L, size, size)`` 0/1 maps: pixels within ``radius`` of a limb whose two joints are counted."""
    positions, seen = decode_joints(joints, size, num_joints)
    a_idx = torch.tensor([a for a, _ in skeleton], device=joints.device)
    b_idx = torch.tensor([b for _, b in skeleton], device=joints.device)
    valid = seen[:, :, a_idx] & seen[:, :, b_idx]                               # (B, P, L)
    image, person, limb = valid.nonzero(as_tuple=True)                          # only the drawn limbs
    a, b = positions[image, person, a_idx[limb]], positions[image, person, b_idx[limb]]  # (S, 2)
    grid = torch.stack(torch.meshgrid(torch.arange(size, device=joints.device),
                                      torch.arange(size, device=joints.device), indexing="xy"), -1)
    pixels = grid.reshape(1, -1, 2).float()                                     # (1, N, 2)
    ab = (b - a)[:, None]
    t = ((pixels - a[:, None]) * ab).sum(-1) / (ab * ab).sum(-1).clamp(min=1e-6)
    nearest = a[:, None] + t.clamp(0, 1)[..., None] * ab
    on_limb = ((pixels - nearest).norm(dim=-1) <= radius).float()               # (S, N)
    maps = joints.new_zeros((joints.shape[0] * len(skeleton), size * size), dtype=torch.float32)
    maps.index_add_(0, image * len(skeleton) + limb, on_limb)  # people overlapping on one limb add up...
    return maps.clamp_(max=1).reshape(joints.shape[0], len(skeleton), size, size)  # ... and are one


@dataclass
class LimbTerms:
    """The engine's view of a loss: a scalar ``total`` and a log row."""

    total: Tensor

    def log_dict(self) -> dict[str, float]:
        value = float(self.total.detach())
        return {"limb": value, "total": value}


class LimbLoss(nn.Module):
    """Masked binary cross-entropy of limb logits against ``limb_targets`` (called like the pose loss)."""

    def __init__(self, skeleton: Sequence[tuple[int, int]], num_joints: int) -> None:
        super().__init__()
        self.skeleton, self.num_joints = [tuple(e) for e in skeleton], num_joints

    def forward(self, outputs: list[Tensor], heatmaps: list[Tensor], masks: list[Tensor],
                joints: list[Tensor]) -> LimbTerms:
        logits = outputs[0]
        target = limb_targets(joints[0], logits.shape[-1], self.skeleton, self.num_joints)
        loss = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        mask = masks[0][:, None].expand_as(loss)
        return LimbTerms(total=(loss * mask).sum() / mask.sum().clamp(min=1))


def pretrain(cfg: Config, out_dir: str | Path, skeleton: Sequence[tuple[int, int]], resume: bool = False,
             progress: bool = True) -> Path:
    """Train limb segmentation with ``cfg``'s backbone and schedule; returns the training checkpoint."""
    cfg = pretraining_config(cfg)
    return train(cfg, out_dir, resume=resume, progress=progress,
                 network=lambda c: limb_network(c, len(skeleton)),
                 criterion=LimbLoss(skeleton, cfg.model.num_joints))


def save_backbone(checkpoint: str | Path, path: str | Path) -> Path:
    """The backbone tensors of a pretraining checkpoint in fp16 (what ``train.pretrained`` reads)."""
    state, config = read_checkpoint(checkpoint)
    backbone = {k: (v.half() if v.is_floating_point() else v) for k, v in state.items()
                if k.startswith(BACKBONE_PREFIXES)}
    return atomic_torch_save({"format": HHRNET_FORMAT, "model": backbone, "config": config}, path)
