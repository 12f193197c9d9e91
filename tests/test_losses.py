"""Losses against the reference goldens and against a per-person loop written from the definition."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import golden_params
from hhrnet.config import ConfigError, LossConfig, ModelConfig, preset
from hhrnet.losses import MultiResolutionLoss, ae_loss, heatmap_loss


def _relative_close(actual: torch.Tensor, expected: np.ndarray, rtol: float = 1e-6) -> None:
    np.testing.assert_allclose(actual.detach().numpy(), expected, rtol=rtol, atol=0)


@pytest.mark.parametrize("path", golden_params("loss*.npz"))
def test_losses_match_reference(path):
    g = {k: torch.from_numpy(v) for k, v in np.load(path).items()}
    cfg = preset("w32_512")
    terms = MultiResolutionLoss(cfg.loss, cfg.model)(
        [g["out0"], g["out1"]], [g["heatmaps0"], g["heatmaps1"]], [g["masks0"], g["masks1"]],
        [g["joints0"], g["joints1"]])
    for i in (0, 1):
        _relative_close(terms.heatmap[i], g[f"heatmap_loss{i}"].numpy())
        _relative_close(heatmap_loss(g[f"out{i}"][:, :17], g[f"heatmaps{i}"], g[f"masks{i}"]),
                        g[f"heatmap_loss{i}"].numpy())
    _relative_close(terms.push[0], g["push_loss0"].numpy())
    _relative_close(terms.pull[0], g["pull_loss0"].numpy())
    assert terms.push[1] is None and terms.pull[1] is None  # W32-512: AE loss on output 0 only
    _relative_close(terms.total, g["total_loss"].numpy())
    tags = g["out0"][:, 17:].reshape(2, -1)
    for loss_type in ("exp", "max"):
        push, pull = ae_loss(tags, g["joints0"], loss_type)
        _relative_close(push, g[f"ae_{loss_type}_push"].numpy())
        _relative_close(pull, g[f"ae_{loss_type}_pull"].numpy())


def _loop_ae(tags: torch.Tensor, joints: torch.Tensor, loss_type: str) -> tuple[float, float]:
    """One image, one person at a time: the definition in words, in float64."""
    means, pull = [], 0.0
    for person in joints:
        values = [float(tags[i]) for i, flag in person.tolist() if flag > 0]
        if values:
            m = sum(values) / len(values)
            means.append(m)
            pull += sum((v - m) ** 2 for v in values) / len(values)
    n = len(means)
    if n == 0:
        return 0.0, 0.0
    pairs = [(a, b) for i, a in enumerate(means) for j, b in enumerate(means) if i != j]
    sim = [np.exp(-(a - b) ** 2) if loss_type == "exp" else max(0.0, 1 - abs(a - b)) for a, b in pairs]
    push = sum(sim) / (n * (n - 1)) * 0.5 if n > 1 else 0.0
    return push, pull / n


@pytest.mark.parametrize("loss_type", ["exp", "max"])
@pytest.mark.parametrize("people", [0, 1, 2, 7])
def test_ae_loss_equals_per_person_loop(loss_type, people):
    gen = torch.Generator().manual_seed(people)
    tags = torch.randn(3, 200, generator=gen, dtype=torch.float64)
    joints = torch.zeros(3, 10, 5, 2, dtype=torch.int64)
    joints[:, :people, :, 0] = torch.randint(0, 200, (3, people, 5), generator=gen)
    joints[:, :people, :, 1] = torch.randint(0, 2, (3, people, 5), generator=gen)
    joints[:, :people, 0, 1] = 1  # every planted person has at least one joint
    push, pull = ae_loss(tags, joints, loss_type)
    for b in range(3):
        expected_push, expected_pull = _loop_ae(tags[b], joints[b], loss_type)
        assert float(push[b]) == pytest.approx(expected_push, rel=1e-12, abs=1e-15)
        assert float(pull[b]) == pytest.approx(expected_pull, rel=1e-12, abs=1e-15)


def test_ae_loss_gradients_reach_only_tagged_pixels():
    tags = torch.zeros(1, 50, requires_grad=True)
    joints = torch.tensor([[[[3, 1], [4, 1]], [[10, 1], [0, 0]]]])  # (1, 2 people, 2 joints, 2)
    push, pull = ae_loss(tags + torch.arange(50.0), joints)
    (push + pull).sum().backward()
    touched = set(torch.nonzero(tags.grad[0]).flatten().tolist())
    assert touched == {3, 4, 10}


def test_masked_pixels_do_not_count():
    pred, target = torch.ones(1, 2, 4, 4), torch.zeros(1, 2, 4, 4)
    mask = torch.zeros(1, 4, 4)
    mask[0, :2] = 1
    assert heatmap_loss(pred, target, mask).item() == pytest.approx(0.5)


def test_log_dict_has_per_resolution_terms_and_total():
    model = ModelConfig(width=8)
    loss = MultiResolutionLoss(LossConfig(), model)
    outputs = [torch.rand(2, 34, 8, 8), torch.rand(2, 17, 16, 16)]
    heatmaps = [torch.rand(2, 17, 8, 8), torch.rand(2, 17, 16, 16)]
    masks = [torch.ones(2, 8, 8), torch.ones(2, 16, 16)]
    joints = [torch.zeros(2, 30, 17, 2, dtype=torch.int64)] * 2
    row = loss(outputs, heatmaps, masks, joints).log_dict()
    assert set(row) == {"heatmap0", "heatmap1", "push0", "pull0", "total"}
    assert row["total"] == pytest.approx(row["heatmap0"] + row["heatmap1"], rel=1e-6)


def test_factor_lists_must_match_the_number_of_outputs():
    """One entry per output, or a single entry for every output; any other length is refused."""
    with pytest.raises(ConfigError, match="loss.push_loss_factor"):
        MultiResolutionLoss(LossConfig(push_loss_factor=(0.001, 0.001, 0.001)), ModelConfig())
