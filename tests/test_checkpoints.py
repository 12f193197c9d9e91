"""Checkpoints of every layout load strictly; every way a file can be wrong gives one readable error."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import REPO, golden_params
from hhrnet.checkpoints import (CheckpointError, infer_model_config, load_model,
                                read_checkpoint, save_checkpoint, save_half)
from hhrnet.config import preset
from hhrnet.model import HigherHRNet
from hhrnet.sections import ModelConfig

TINY = ModelConfig(width=8, stage_modules=(1, 1, 1), blocks_per_branch=1, num_basic_blocks=1)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hhrnet", *map(str, args)], capture_output=True, text=True, cwd=REPO)


def mmpose_checkpoint(rows, path, corrupt: bool = False):
    """A file in the mmpose container format with random tensors of the published shapes."""
    gen = torch.Generator().manual_seed(0)
    state = {}
    for key, shape, _ in rows:
        state[key] = (torch.zeros(shape, dtype=torch.int64) if key.endswith("num_batches_tracked")
                      else torch.rand(shape, generator=gen))
    if corrupt:
        del state[rows[1][0]]  # a missing key: backbone.bn1.weight
        state[rows[0][0]] = torch.rand(1, 3, 3, 3)  # a wrong shape: backbone.conv1.weight
    torch.save({"meta": {"epoch": 300, "mmpose_version": "0.x"}, "state_dict": state}, path)
    return state


@pytest.mark.parametrize("manifest", golden_params("mmpose_keys_w*.json"))
def test_mmpose_container_loads_strictly_and_converts(manifest, tmp_path):
    rows = json.loads(manifest.read_text())["keys"]
    src = tmp_path / "mmpose.pth"
    state = mmpose_checkpoint(rows, src)
    model, cfg = load_model(src)  # structure inferred from the tensors (no --config needed)
    assert cfg.model == preset(f"w{cfg.model.width}_512").model
    loaded = model.state_dict()
    for key, _, official in rows[:: len(rows) // 50]:
        assert torch.equal(loaded[official], state[key])

    dst = tmp_path / "hhrnet.pth"
    result = run_cli("convert", src, dst, "--config", f"w{cfg.model.width}_640")
    assert result.returncode == 0, result.stderr
    converted, embedded = read_checkpoint(dst)
    assert embedded["name"] == f"w{cfg.model.width}_640" and list(converted) == [r[2] for r in rows]


def test_mismatch_names_missing_key_and_wrong_shape(tmp_path):
    rows = json.loads(golden_params("mmpose_keys_w32.json")[0].values[0].read_text())["keys"]
    src = tmp_path / "broken.pth"
    mmpose_checkpoint(rows, src, corrupt=True)
    with pytest.raises(CheckpointError) as err:
        load_model(src, "w32_512")
    message = str(err.value)
    assert "missing keys (1): bn1.weight" in message
    assert "wrong shapes (1): conv1.weight (1, 3, 3, 3) != model (64, 3, 3, 3)" in message
    result = run_cli("convert", src, tmp_path / "out.pth", "--config", "w32_512")
    assert result.returncode != 0 and "bn1.weight" in result.stderr and "conv1.weight" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "out.pth").exists()


def test_official_bare_and_ddp_prefixed_state_dicts(tmp_path):
    model = HigherHRNet(TINY)
    torch.save(model.state_dict(), tmp_path / "official.pth")
    torch.save({f"module.{k}": v for k, v in model.state_dict().items()}, tmp_path / "ddp.pth")
    for name in ("official.pth", "ddp.pth"):
        loaded, cfg = load_model(tmp_path / name)
        assert cfg.model == TINY
        assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))


def test_hhrnet_checkpoint_round_trip_and_embedded_config_wins(tmp_path):
    cfg = preset("w32_512").override(**{"model.width": 8, "model.stage_modules": [1, 1, 1],
                                        "model.blocks_per_branch": 1, "model.num_basic_blocks": 1})
    model = HigherHRNet(cfg.model)
    save_checkpoint(tmp_path / "a.pth", model, cfg)
    loaded, loaded_cfg = load_model(tmp_path / "a.pth", "w48_512")  # the embedded config wins
    assert loaded_cfg == cfg and not loaded.training


def test_half_copy_keeps_config_and_outputs_and_halves_the_file(tmp_path):
    """``save_half``: the study's committed networks; fp16 weights load into the fp32 model."""
    cfg = preset("w32_512").override(**{"model.width": 8, "model.stage_modules": [1, 1, 1],
                                        "model.blocks_per_branch": 1, "model.num_basic_blocks": 1})
    torch.manual_seed(0)
    model = HigherHRNet(cfg.model)
    model.reset_parameters("he")
    save_checkpoint(tmp_path / "full.pth", model, cfg)
    save_half(tmp_path / "full.pth", tmp_path / "half.pth")
    state, _ = read_checkpoint(tmp_path / "half.pth")
    assert {v.dtype for v in state.values() if v.is_floating_point()} == {torch.float16}
    assert (tmp_path / "half.pth").stat().st_size < 0.6 * (tmp_path / "full.pth").stat().st_size
    half, half_cfg = load_model(tmp_path / "half.pth")
    assert half_cfg == cfg
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(model.eval()(x), half(x)):
            assert torch.allclose(a, b, rtol=1e-2, atol=1e-2 * a.abs().max().item())
    torch.save(model.state_dict(), tmp_path / "bare.pth")
    with pytest.raises(CheckpointError, match="bare.pth: not an hhrnet checkpoint"):
        save_half(tmp_path / "bare.pth", tmp_path / "x.pth")


@pytest.mark.parametrize("num_deconvs,tag_per_joint,cat_output", [(0, True, True), (2, False, False)])
def test_structure_inference(num_deconvs, tag_per_joint, cat_output):
    cfg = ModelConfig(width=8, stage_modules=(1, 2, 1), blocks_per_branch=2, num_deconvs=num_deconvs,
                      num_basic_blocks=min(num_deconvs, 1), tag_per_joint=tag_per_joint,
                      cat_output=cat_output or num_deconvs == 0)  # head knobs are moot without deconvs
    assert infer_model_config(HigherHRNet(cfg).state_dict()) == cfg


class NotATensor:
    pass


@pytest.mark.parametrize("case,expected", [
    ("list", "not a state dict"),
    ("strings", "not a state dict: 1 entries are not tensors"),
    ("pickle", "weights_only"),
    ("truncated", "truncated"),
    ("text", "truncated or not a PyTorch checkpoint"),
])
def test_bad_files_give_one_line_errors(tmp_path, case, expected):
    path = tmp_path / f"{case}.pth"
    if case == "list":
        torch.save([torch.zeros(1)], path)
    elif case == "strings":
        torch.save({"conv1.weight": torch.zeros(1), "note": "hello"}, path)
    elif case == "pickle":
        path.write_bytes(pickle.dumps({"x": NotATensor()}))
        torch.save({"x": NotATensor()}, path)
    elif case == "truncated":
        torch.save(HigherHRNet(TINY).state_dict(), path)
        path.write_bytes(path.read_bytes()[:5000])
    else:
        path.write_text("this is not a checkpoint\n")
    with pytest.raises(CheckpointError, match=expected) as err:
        read_checkpoint(path)
    assert str(path) in str(err.value)
    result = run_cli("convert", path, tmp_path / "out.pth")
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and str(path) in result.stderr and expected in result.stderr
    assert run_cli("--debug", "convert", path, tmp_path / "out.pth").stderr.count("Traceback") == 1


def test_unknown_preset_in_cli(tmp_path):
    result = run_cli("convert", tmp_path / "x.pth", tmp_path / "y.pth", "--config", "w33_512")
    assert result.returncode == 1 and "w33_512" in result.stderr and "Traceback" not in result.stderr


def test_onnx_export_matches_pytorch(tmp_path):
    """The exported network (dynamic size) equals PyTorch on two input sizes (onnxruntime, 1e-4)."""
    ort = pytest.importorskip("onnxruntime")
    model = HigherHRNet(TINY).eval()
    for m in model.modules():  # non-trivial BN statistics so the comparison means something
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
    save_checkpoint(tmp_path / "tiny.pth", model, preset("w32_512").override(**{
        "model.width": 8, "model.stage_modules": [1, 1, 1], "model.blocks_per_branch": 1, "model.num_basic_blocks": 1}))
    result = run_cli("export", "--checkpoint", tmp_path / "tiny.pth", "--onnx", tmp_path / "tiny.onnx", "--input-size", 128)
    assert result.returncode == 0, result.stderr
    session = ort.InferenceSession(str(tmp_path / "tiny.onnx"), providers=["CPUExecutionProvider"])
    for shape in [(1, 3, 128, 128), (2, 3, 96, 160)]:
        x = torch.randn(shape)
        with torch.no_grad():
            expected = [o.numpy() for o in model(x)]
        got = session.run(None, {"image": x.numpy()})
        for e, g in zip(expected, got):
            np.testing.assert_allclose(g, e, atol=1e-4, rtol=0)
