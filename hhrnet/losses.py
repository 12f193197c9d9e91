"""Losses: masked heatmap MSE, associative-embedding pull/push, and their multi-resolution sum.

All per-image values follow the official ``lib/core/loss.py`` arithmetic (same reductions, same
order where it matters for float32: the push sum includes the diagonal and then subtracts ``n``),
but the AE loss is vectorised over people and over the batch instead of looping in Python.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from hhrnet.sections import LossConfig, ModelConfig


def heatmap_loss(pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Per-image masked MSE ``(B,)``: mean over W, then H, then joints (mask 1 = counted)."""
    squared = (pred - target) ** 2 * mask[:, None, :, :]
    return squared.mean(dim=3).mean(dim=2).mean(dim=1)


def ae_loss(tags: Tensor, joints: Tensor, loss_type: str = "exp") -> tuple[Tensor, Tensor]:
    """Per-image ``(push, pull)``, each ``(B,)``, from flattened tag maps ``(B, N)``.

    ``joints`` is ``(B, max_people, K, 2)``: an index into the ``N`` tag values and a flag (> 0 = use).
    A person takes part if it has at least one flagged joint.  pull = mean over people of the mean
    squared deviation of their tags from their mean tag; push = over ordered pairs of distinct people
    of ``exp(-Δ²)`` (``exp``) or ``max(0, 1 - |Δ|)`` (``max``), divided by ``n(n-1)`` and halved.
    No person gives 0 and 0; one person gives push 0.
    """
    if loss_type not in ("exp", "max"):
        raise ValueError(f"AE loss type must be 'exp' or 'max', got {loss_type!r}")
    batch, people, num_joints, _ = joints.shape
    index = joints[..., 0].reshape(batch, -1).long()
    used = (joints[..., 1] > 0).to(tags.dtype)  # (B, P, K)
    values = tags.gather(1, index).reshape(batch, people, num_joints)
    count = used.sum(dim=2)  # joints per person
    present = count > 0
    denom = count.clamp(min=1)
    mean = (values * used).sum(dim=2) / denom  # (B, P)
    person_pull = ((values - mean[..., None]) ** 2 * used).sum(dim=2) / denom
    num_people = present.sum(dim=1).to(tags.dtype)  # (B,)
    pull = (person_pull * present).sum(dim=1) / num_people.clamp(min=1)

    diff = mean[:, :, None] - mean[:, None, :]
    similarity = torch.exp(-diff**2) if loss_type == "exp" else (1 - diff.abs()).clamp(min=0)
    pair = (present[:, :, None] & present[:, None, :]).to(tags.dtype)
    # Diagonal terms are exactly 1 for both types; the reference sums them, then subtracts n.
    push_sum = (similarity * pair).sum(dim=(1, 2)) - num_people
    push = push_sum / (num_people * (num_people - 1)).clamp(min=1) * 0.5
    push = torch.where(num_people > 1, push, torch.zeros_like(push))
    return push, pull


@dataclass
class LossTerms:
    """Per-resolution, per-image terms (``None`` where a term is switched off) and the scalar total.

    ``heatmap[i]``, ``push[i]``, ``pull[i]`` are already multiplied by their factors; ``total`` is the
    sum of their batch means, which is what the optimiser sees.
    """

    heatmap: list[Tensor | None]
    push: list[Tensor | None]
    pull: list[Tensor | None]
    total: Tensor

    def log_dict(self) -> dict[str, float]:
        """Flat ``{"heatmap0": ..., "push0": ..., "total": ...}`` of batch means, for JSONL logs."""
        row: dict[str, float] = {}
        for name, terms in (("heatmap", self.heatmap), ("push", self.push), ("pull", self.pull)):
            for i, term in enumerate(terms):
                if term is not None:
                    row[f"{name}{i}"] = float(term.detach().mean())
        row["total"] = float(self.total.detach())
        return row


class MultiResolutionLoss(nn.Module):
    """Sum of heatmap and AE losses over the network outputs (official ``MultiLossFactory``).

    Output ``i`` holds ``K`` heatmaps and, where ``model.with_ae_loss[i]``, tag maps after them.
    The flattened tag maps are indexed by the targets of ``hhrnet.targets.joint_tag_targets``.
    """

    def __init__(self, loss: LossConfig, model: ModelConfig) -> None:
        super().__init__()
        self.cfg = loss.for_outputs(model.num_deconvs + 1)  # unset tuples: every output; lengths checked
        self.num_joints = model.num_joints
        self.with_ae_loss = model.with_ae_loss

    def forward(self, outputs: list[Tensor], heatmaps: list[Tensor], masks: list[Tensor],
                joints: list[Tensor]) -> LossTerms:
        cfg = self.cfg
        terms = LossTerms(heatmap=[], push=[], pull=[], total=outputs[0].new_zeros(()))
        for i, output in enumerate(outputs):
            hm = push = pull = None
            if cfg.with_heatmaps_loss[i]:
                hm = heatmap_loss(output[:, : self.num_joints], heatmaps[i], masks[i]) * cfg.heatmaps_loss_factor[i]
                terms.total = terms.total + hm.mean()
            if self.with_ae_loss[i]:
                tags = output[:, self.num_joints:].reshape(output.shape[0], -1)
                push, pull = ae_loss(tags, joints[i], cfg.ae_type)
                push, pull = push * cfg.push_loss_factor[i], pull * cfg.pull_loss_factor[i]
                terms.total = terms.total + push.mean() + pull.mean()
            terms.heatmap.append(hm)
            terms.push.append(push)
            terms.pull.append(pull)
        return terms
