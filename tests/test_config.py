"""Presets derive from one width number; configs round-trip; official MODEL.EXTRA blocks are read."""

from __future__ import annotations

import dataclasses
import json
import re
import typing
from pathlib import Path

import pytest
import torch

from conftest import golden_files
from hhrnet.checkpoints import checkpoint_payload, load_model
from hhrnet.config import (crowdpose_preset, from_dict, load_config, model_config_from_official, parse_overrides,
                           preset, save_config, to_dict)
from hhrnet.keypoints import COCO_17, KeypointSet, register
from hhrnet.model import HigherHRNet
from hhrnet.sections import MULTI_SCALE, ConfigError, LossConfig, ModelConfig


@pytest.mark.parametrize("name,width,size", [("w32_512", 32, 512), ("w32_640", 32, 640),
                                             ("w48_512", 48, 512), ("w48_640", 48, 640)])
def test_presets(name, width, size):
    cfg = preset(name)
    assert (cfg.model.width, cfg.input_size) == (width, size)
    assert cfg.model.branch_channels(4) == (width, 2 * width, 4 * width, 8 * width)
    assert cfg.model.stage_modules == (1, 4, 3) and cfg.model.blocks_per_branch == 4
    assert cfg.model.with_ae_loss == (True, False) and cfg.model.num_basic_blocks == 4


def test_unknown_preset_is_named():
    with pytest.raises(ConfigError, match="w64_512"):
        preset("w64_512")


@pytest.mark.parametrize("name", ["w32_512", "w48_640"])
def test_yaml_round_trip(tmp_path, name):
    cfg = preset(name).override(**{"model.width": 8, "input_size": 256})
    assert load_config(str(save_config(cfg, tmp_path / "c.yaml"))) == cfg
    assert from_dict(json.loads(json.dumps(to_dict(cfg)))) == cfg


def test_overrides_are_typed_and_checked():
    cfg = load_config("w32_512", parse_overrides(["model.width=8", "model.stage_modules=[1,1,1]"]))
    assert cfg.model.width == 8 and cfg.model.stage_modules == (1, 1, 1)
    with pytest.raises(ConfigError, match="model.widht"):
        load_config("w32_512", {"model.widht": 8})
    with pytest.raises(ConfigError, match="section.key=value"):
        parse_overrides(["width"])


def test_values_are_checked_against_the_field_types(tmp_path):
    """YAML reads ``1e-3`` as a string and ints where floats are meant: both become floats; a value
    of the wrong kind is an error naming the key, not a crash deep inside training."""
    cfg = load_config("w32_512", parse_overrides(["train.lr=4e-3", "data.max_rotation=30", "test.scales=[2, 1]"]))
    assert cfg.train.lr == 0.004 and isinstance(cfg.data.max_rotation, float) and cfg.test.scales == (2.0, 1.0)
    (tmp_path / "c.yaml").write_text("train: {lr: 1e-3}\n")
    assert load_config(str(tmp_path / "c.yaml")).train.lr == 0.001
    for override, message in [("train.lr=fast", r"train.lr must be a number, got 'fast'"),
                              ("model.width=32.5", r"model.width must be int, got 32.5"),
                              ("test.flip_test=1", r"test.flip_test must be bool, got 1"),
                              ("train.epochs=true", r"train.epochs must be int, got True"),
                              ("test.scales=3", r"test.scales must be a list of float, got 3"),
                              ("train.pretrained=[a]", r"train.pretrained must be str, got \['a'\]")]:
        with pytest.raises(ConfigError, match=message):
            load_config("w32_512", parse_overrides([override]))


def test_bad_config_file_is_named(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: {width: 8, colour: red}\n")
    with pytest.raises(ConfigError, match=r"bad.yaml.*model.colour"):
        load_config(str(bad))


def test_official_extra_yaml_layout():
    """The official repo's upper-case MODEL.EXTRA block gives the published W32 structure."""
    stage = lambda n, m: {"NUM_MODULES": m, "NUM_BRANCHES": n, "BLOCK": "BASIC", "NUM_BLOCKS": [4] * n,
                          "NUM_CHANNELS": [32 * 2**b for b in range(n)], "FUSE_METHOD": "SUM"}
    extra = {"FINAL_CONV_KERNEL": 1, "STEM_INPLANES": 64, "STAGE2": stage(2, 1), "STAGE3": stage(3, 4),
             "STAGE4": stage(4, 3), "DECONV": {"NUM_DECONVS": 1, "NUM_CHANNELS": [32], "KERNEL_SIZE": [4],
                                               "NUM_BASIC_BLOCKS": 4, "CAT_OUTPUT": [True]}}
    assert model_config_from_official(extra, num_joints=17) == preset("w32_512").model
    with pytest.raises(ConfigError, match="MODEL.EXTRA: no NUM_JOINTS; give num_joints"):
        model_config_from_official(extra)
    extra["STAGE3"]["NUM_CHANNELS"] = [32, 64, 100]
    with pytest.raises(ConfigError, match="STAGE3.NUM_CHANNELS"):
        model_config_from_official(extra, num_joints=17)


@pytest.mark.parametrize("path", golden_files("model_tiny*.json"), ids=lambda p: p.name)
def test_golden_tiny_json_is_expressible(path):
    """Every golden MODEL.EXTRA block is read field by field, whatever its sizes (nothing hard-coded)."""
    spec = json.loads(path.read_text())
    stages = [spec["stages"][f"STAGE{i}"] for i in (2, 3, 4)]
    deconv = spec["deconv"]
    cfg = model_config_from_official(spec, num_joints=spec["num_joints"], tag_per_joint=spec["tag_per_joint"],
                                     with_ae_loss=tuple(spec["with_ae_loss"]))
    assert cfg.width == stages[0]["num_channels"][0]
    assert all(cfg.branch_channels(s["num_branches"]) == tuple(s["num_channels"]) for s in stages)
    assert cfg.stage_modules == tuple(s["num_modules"] for s in stages)
    assert {cfg.blocks_per_branch} == {b for s in stages for b in s["num_blocks"]}
    assert (cfg.stem_channels, cfg.layer1_blocks, cfg.layer1_planes) == \
        (spec["stem_inplanes"], spec["layer1"]["num_blocks"], spec["layer1"]["planes"])
    assert (cfg.num_deconvs, cfg.num_basic_blocks, [cfg.deconv_kernel] * cfg.num_deconvs, [cfg.cat_output] * cfg.num_deconvs) == \
        (deconv["num_deconvs"], deconv["num_basic_blocks"], deconv["kernel_size"], deconv["cat_output"])
    assert (cfg.final_conv_kernel, cfg.num_joints, cfg.tag_per_joint, list(cfg.with_ae_loss)) == \
        (spec["final_conv_kernel"], spec["num_joints"], spec["tag_per_joint"], spec["with_ae_loss"])


def test_with_ae_loss_length_is_checked():
    with pytest.raises(ConfigError, match="with_ae_loss"):
        ModelConfig(num_deconvs=2, with_ae_loss=(True, False))
    assert dataclasses.replace(ModelConfig(), num_deconvs=2, with_ae_loss=None).with_ae_loss == (True, False, False)


# --------------------------------------------------------------------------------------------------
# Derived values: per-output tuples follow model.num_deconvs, joint count and flip index the keypoint set

# rows.yaml's structural ablations as they were written before per-output tuples were derived
OLD_STRUCTURAL_CHANGES = {
    "hrnet_baseline": {"model.num_deconvs": 0, "model.with_ae_loss": [True], "loss.with_heatmaps_loss": [True],
                       "loss.heatmaps_loss_factor": [1.0], "loss.push_loss_factor": [0.001],
                       "loss.pull_loss_factor": [0.001]},
    "deconv_2": {"model.num_deconvs": 2, "model.with_ae_loss": [True, False, False],
                 "loss.with_heatmaps_loss": [True, True, True], "loss.heatmaps_loss_factor": [1.0, 1.0, 1.0],
                 "loss.push_loss_factor": [0.001, 0.001, 0.001], "loss.pull_loss_factor": [0.001, 0.001, 0.001]},
}


@pytest.mark.parametrize("training", sorted(OLD_STRUCTURAL_CHANGES))
def test_num_deconvs_alone_defines_the_structural_ablations(training):
    """``model.num_deconvs`` alone gives, field by field, the configs the six coordinated keys gave,
    in every profile of the study."""
    from conftest import REPO
    from hhrnet.study import Study

    study = Study.load(REPO / "experiments")
    assert study.spec["trainings"][training]["changes"] == {"model.num_deconvs":
                                                             OLD_STRUCTURAL_CHANGES[training]["model.num_deconvs"]}
    old = Study.load(REPO / "experiments")
    old.spec["trainings"][training]["changes"] = OLD_STRUCTURAL_CHANGES[training]
    for profile in study.spec["profiles"]:
        new_cfg, old_cfg = study.training_config(training, profile), old.training_config(training, profile)
        assert to_dict(new_cfg) == to_dict(old_cfg) and new_cfg == old_cfg


def test_published_multi_scale_set_is_one_constant():
    from conftest import REPO
    from hhrnet.study import Study

    study = Study.load(REPO / "experiments")
    assert MULTI_SCALE == (2.0, 1.0, 0.5) and tuple(study.spec["multi_scale"]) == MULTI_SCALE
    for name in ("w32_512_ms", "w32_640_ms", "w48_512_ms", "w32_512_noflip_ms"):
        assert study.evaluation_config(name, "paper").test.scales == MULTI_SCALE


def test_per_output_settings_follow_num_deconvs():
    cfg = preset("w32_512")
    assert (cfg.loss.with_heatmaps_loss, cfg.loss.heatmaps_loss_factor, cfg.loss.push_loss_factor) == \
        ((True, True), (1.0, 1.0), (0.001, 0.001))
    for n in (0, 1, 2, 3):
        changed = cfg.override(**{"model.num_deconvs": n})
        assert changed.model.with_ae_loss == (True,) + (False,) * n
        assert changed.loss == LossConfig().for_outputs(n + 1) and len(changed.loss.pull_loss_factor) == n + 1
        assert from_dict(to_dict(changed)) == changed
        assert changed.override(**{"model.num_deconvs": 1}) == cfg  # and back
    # an explicit, non-default tuple does not follow: its length error names the key and the length
    weighted = cfg.override(**{"loss.heatmaps_loss_factor": [1.0, 0.5]})
    with pytest.raises(ConfigError, match=r"loss.heatmaps_loss_factor has 2 entries.*= 1"):
        weighted.override(**{"model.num_deconvs": 0})
    with pytest.raises(ConfigError, match=r"test.with_heatmaps has 2 entries.*= 3"):
        cfg.override(**{"test.with_heatmaps": [True, False], "model.num_deconvs": 2})
    with pytest.raises(ConfigError, match=r"model.with_ae_loss has 1 entries.*= 2"):
        cfg.override(**{"model.with_ae_loss": [True]})


def test_joint_count_and_flip_index_come_from_the_keypoint_set():
    register(KeypointSet(name="test_three", names=("head", "left_hand", "right_hand"), skeleton=((0, 1), (0, 2)),
                         flip_pairs=((1, 2),), sigmas=(0.05, 0.05, 0.05)))
    cfg = preset("w32_512")
    assert cfg.data.keypoints == "coco" and cfg.data.flip_index == COCO_17.flip_index and cfg.model.num_joints == 17
    three = cfg.override(**{"data.keypoints": "test_three"})
    assert three.model.num_joints == three.data.num_joints == 3 and three.data.flip_index == (0, 2, 1)
    assert from_dict(to_dict(three)) == three and three.override(**{"data.keypoints": "coco"}) == cfg
    assert "num_joints" not in to_dict(cfg)["model"] and "flip_index" not in to_dict(cfg)["data"]  # named once
    assert from_dict({**to_dict(cfg), "data": {**to_dict(cfg.data), "keypoints": "test_three"}}) == three
    with pytest.raises(ConfigError, match=r"model.num_joints follows data.keypoints; change data.keypoints instead"):
        cfg.override(**{"model.num_joints": 3})
    with pytest.raises(ConfigError, match="data.keypoints: unknown keypoint set 'nope'"):
        cfg.override(**{"data.keypoints": "nope"})


def test_configs_written_before_keypoint_sets_still_load(tmp_path):
    """Old YAML files and checkpoint-embedded configs carry ``model.num_joints`` and ``data.flip_index``, some
    no ``data.keypoints``: read when they are the set's own, refused naming the key otherwise."""
    old = to_dict(preset("w32_512"))
    del old["data"]["keypoints"]
    old["data"]["flip_index"] = list(COCO_17.flip_index)
    old["model"]["num_joints"] = 17
    assert from_dict(old) == preset("w32_512")
    crowd = to_dict(crowdpose_preset())
    crowd["model"]["num_joints"] = 14
    assert from_dict(crowd) == crowdpose_preset()
    crowd["model"]["num_joints"] = 17
    with pytest.raises(ConfigError, match=r"model.num_joints is 17 but data.keypoints 'crowdpose' has 14 joints"):
        from_dict(crowd)
    old["data"]["flip_index"] = list(range(17))
    with pytest.raises(ConfigError, match="data.flip_index"):
        from_dict(old)


def test_checkpoints_with_old_style_configs_still_load(tmp_path):
    """A checkpoint whose embedded config carries ``model.num_joints`` (written before keypoint sets) loads
    unchanged; so does every committed CPU network, old-style or new."""
    cfg = preset("w32_512").override(**{"model.width": 4, "model.stage_modules": (1, 1, 1), "model.num_deconvs": 0})
    payload = checkpoint_payload(cfg, HigherHRNet(cfg.model).state_dict())
    payload["config"]["model"]["num_joints"] = 17
    del payload["config"]["data"]["keypoints"]
    torch.save(payload, tmp_path / "old.pth")
    model, loaded = load_model(tmp_path / "old.pth")
    assert loaded == cfg and model.final_layers[0].out_channels == cfg.model.output_channels(0)
    weights = sorted(Path(__file__).resolve().parents[1].glob("experiments/results/cpu/train/*/seed0/weights.pth"))
    assert weights
    for path in weights:
        model, cfg = load_model(path)
        assert model.final_layers[0].out_channels == cfg.model.output_channels(0) == 2 * cfg.data.num_joints


def test_one_loss_value_applies_to_every_output():
    """A profile scales a loss factor for every structure at once: ``[x]`` means x on every output."""
    for deconvs in (0, 1, 2):
        cfg = preset("w32_512").override(**{"model.num_deconvs": deconvs, "loss.push_loss_factor": [0.01]})
        assert cfg.loss.push_loss_factor == (0.01,) * (deconvs + 1)
        assert cfg.loss.pull_loss_factor == (0.001,) * (deconvs + 1)
    with pytest.raises(ConfigError, match="push_loss_factor"):
        preset("w32_512").override(**{"loss.push_loss_factor": [0.01, 0.01, 0.01]})


def _numeric_keys() -> list[str]:
    """Every numeric setting of a config (scalars and tuples of numbers, optional ones included)."""
    cfg, keys = preset("w32_512"), []
    for section in ("model", "data", "loss", "test", "train"):
        part = getattr(cfg, section)
        hints = typing.get_type_hints(type(part))
        for f in dataclasses.fields(part):
            hint = str(hints[f.name])
            if "follows" not in f.metadata and "bool" not in hint and ("int" in hint or "float" in hint):
                keys.append(f"{section}.{f.name}")
    return keys


@pytest.mark.parametrize("key", _numeric_keys())
@pytest.mark.parametrize("bad", [float("inf"), float("nan"), -float("inf")], ids=["inf", "nan", "-inf"])
def test_every_numeric_value_is_refused_when_not_finite_naming_its_key(key, bad):
    section, name = key.split(".")
    current = getattr(getattr(preset("w32_512"), section), name)
    value = [bad] * len(current) if isinstance(current, tuple) else bad
    with pytest.raises(ConfigError, match=rf"^{re.escape(key)}(\[\d+\])? must be ") as err:
        preset("w32_512").override(**{key: value})
    assert "\n" not in str(err.value)


def test_numbers_out_of_range_are_refused_with_the_range():
    assert "train.lr" in _numeric_keys() and "data.flip_prob" in _numeric_keys() and len(_numeric_keys()) > 30
    for key, value, message in [("train.lr", -1e-3, "train.lr must be a number >= 0, got -0.001"),
                                ("data.flip_prob", 1.5, "data.flip_prob must be a number between 0 and 1, got 1.5"),
                                ("loss.push_loss_factor", [-1.0], r"loss.push_loss_factor must be a number >= 0"),
                                ("model.stage_modules", [1, 0, 1], r"model.stage_modules must be a number >= 1")]:
        with pytest.raises(ConfigError, match=re.escape(message) if "(" not in message else message):
            preset("w32_512").override(**{key: value})
    with pytest.raises(ConfigError, match=r"^train.lr must be a finite number >= 0, got inf$"):  # as --set writes it
        load_config("w32_512", parse_overrides(["train.lr=.inf"]))
