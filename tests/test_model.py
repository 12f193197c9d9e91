"""The network equals the official implementation: golden outputs and the published checkpoint layout."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import golden_params
from hhrnet.checkpoints import load_state_dict_strict
from hhrnet.config import model_config_from_official, preset
from hhrnet.model import HigherHRNet, count_flops, count_parameters
from hhrnet.sections import ModelConfig


def tiny_model_from_golden(npz_path):
    spec = json.loads(npz_path.with_suffix(".json").read_text())
    golden = np.load(npz_path)
    state = {k: torch.from_numpy(golden[f"state_dict/{k}"]) for k in spec["keys"]}
    model = HigherHRNet(model_config_from_official(spec))
    return model, state, spec, golden


@pytest.mark.parametrize("path", golden_params("model_tiny*.npz"))
def test_golden_model_outputs(path):
    """Every state-dict entry loads strictly; eval-mode outputs equal the official ones within 1e-5."""
    model, state, spec, golden = tiny_model_from_golden(path)
    assert list(model.state_dict()) == spec["keys"], "state-dict order differs from the official one"
    load_state_dict_strict(model, state, source=path.name)
    model.eval()
    with torch.no_grad():
        outputs = model(torch.from_numpy(golden["x"]))
    assert [list(o.shape) for o in outputs] == spec["output_shapes"]
    for i, out in enumerate(outputs):
        np.testing.assert_allclose(out.numpy(), golden[f"out{i}"], atol=1e-5, rtol=0)


@pytest.mark.parametrize("path", golden_params("mmpose_keys_w*.json"))
def test_published_layout(path):
    """Keys (after the prefix rule), shapes and order equal the published mmpose checkpoints."""
    manifest = json.loads(path.read_text())
    rows = manifest["keys"]
    width = rows[[r[2] for r in rows].index("transition1.0.0.weight")][1][0]
    cfg = preset(f"w{width}_512").model
    model = HigherHRNet(cfg)
    ours = [(k, list(v.shape)) for k, v in model.state_dict().items()]
    assert ours == [(official, shape) for _, shape, official in rows]
    assert count_parameters(model) == manifest["num_parameters"]


def test_published_parameter_counts():
    assert count_parameters(HigherHRNet(preset("w32_512").model)) == 28_645_331
    assert count_parameters(HigherHRNet(preset("w48_512").model)) == 63_827_139


def test_flops_follow_input_size():
    """Convolution MACs scale with the pixel count and are near mmpose's 46.58 GFLOPs for W32-512."""
    model = HigherHRNet(preset("w32_512").model)
    g512 = count_flops(model, (512, 512))
    assert 45.5e9 < g512 < 46.6e9
    assert count_flops(model, (256, 256)) == pytest.approx(g512 / 4, rel=1e-6)


@pytest.mark.parametrize("num_deconvs", [0, 1, 2])
def test_output_resolutions(num_deconvs):
    """Output i is at 1/4 · 2^i of the input; output 0 carries tags; ablation heads build and run."""
    cfg = ModelConfig(width=8, stage_modules=(1, 1, 1), blocks_per_branch=1, num_deconvs=num_deconvs, num_basic_blocks=1)
    outputs = HigherHRNet(cfg).eval()(torch.zeros(1, 3, 64, 96))
    assert [tuple(o.shape) for o in outputs] == [
        (1, 34 if i == 0 else 17, 16 * 2**i, 24 * 2**i) for i in range(num_deconvs + 1)
    ]


def test_shared_tag_map_and_no_cat_output():
    cfg = ModelConfig(width=8, stage_modules=(1, 1, 1), blocks_per_branch=1, num_basic_blocks=0,
                      tag_per_joint=False, cat_output=False)
    model = HigherHRNet(cfg)
    assert model.final_layers[0].out_channels == 18
    assert model.deconv_layers[0][0][0].in_channels == 8


@pytest.mark.parametrize("path", golden_params("model_tiny*.npz"))
@pytest.mark.parametrize("channels_last", [False, True])
def test_fused_inference_equals_plain(path, channels_last):
    """BatchNorm folding (and channels_last memory) keep the golden outputs within 1e-4."""
    from hhrnet.model import fuse_for_inference

    model, state, _, golden = tiny_model_from_golden(path)
    load_state_dict_strict(model, state, source=path.name)
    fast = fuse_for_inference(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.modules())
    x = torch.from_numpy(golden["x"])
    if channels_last:
        fast, x = fast.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        outputs = fast(x)
    for i, out in enumerate(outputs):
        np.testing.assert_allclose(out.contiguous().numpy(), golden[f"out{i}"], atol=1e-4, rtol=0)
    assert model.bn1.weight.shape == (64,), "fusing must not modify the original model"


def test_he_init_scales_hidden_convolutions_and_keeps_final_layers_official():
    """``train.init: he`` draws He-normal hidden convolutions; the final layers stay N(0, 0.001)."""
    cfg = preset("w32_512").override(**{"model.width": 8})
    torch.manual_seed(0)
    model = HigherHRNet(cfg.model)
    model.reset_parameters("he")
    conv = model.stage2[0].branches[0][0].conv1
    fan_out = conv.weight.shape[0] * conv.weight[0, 0].numel()
    assert abs(conv.weight.std().item() / (2 / fan_out) ** 0.5 - 1) < 0.1
    for final in model.final_layers:
        assert final.weight.std().item() < 0.002
    with pytest.raises(ValueError, match="init must be one of"):
        model.reset_parameters("xavier")
