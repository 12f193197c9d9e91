"""Every subcommand against bad input: a non-zero exit and one line naming the file or key, never a traceback."""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from conftest import COCO_MINI, REPO
from hhrnet.checkpoints import save_checkpoint
from hhrnet.cli import main
from hhrnet.config import preset, save_config
from hhrnet.model import HigherHRNet

TINY = preset("w32_512").override(**{"name": "tiny", "input_size": 64, "model.width": 8,
                                     "model.stage_modules": [1, 1, 1], "model.blocks_per_branch": 1,
                                     "model.num_basic_blocks": 1})


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tiny checkpoint, bad files of every kind, and a broken copy of the study."""
    d = tmp_path_factory.mktemp("cli")
    torch.manual_seed(0)
    save_checkpoint(d / "tiny.pth", HigherHRNet(TINY.model), TINY)
    save_config(TINY, d / "tiny.yaml")
    (d / "empty.jpg").write_bytes(b"")
    (d / "garbage.pth").write_bytes(b"not a checkpoint")
    (d / "bad.yaml").write_text("model: {width: [1, 2\n")
    (d / "typo.yaml").write_text("model: {widht: 8}\n")
    gt = json.loads((COCO_MINI / "person_keypoints_val2017.json").read_text())
    (d / "no_annotations.json").write_text(json.dumps({k: v for k, v in gt.items() if k != "annotations"}))
    (d / "no_images.json").write_text(json.dumps({**gt, "images": []}))
    (d / "short.json").write_text(json.dumps({**gt, "annotations": [dict(gt["annotations"][0], keypoints=[1.0] * 48)]}))
    (d / "malformed.json").write_text("{\"images\": [")
    original = (REPO / "experiments" / "rows.yaml").read_text()

    def set_in(spec, keys, value):
        for k in keys[:-1]:
            spec = spec[k]
        spec[keys[-1]] = value

    for name, keys, value in [("unknown_key", ["trainings", "w32_512", "chnages"], {}),
                              ("missing_training", ["evaluations", "w32_512_ss", "training"], "nope"),
                              ("wrong_type", ["profiles", "smoke", "width"], "fast"),
                              ("bad_config_key", ["trainings", "w32_512", "changes"], {"model.widht": 3}),
                              ("unknown_profile", ["evaluations", "w32_512_ss", "profiles"], ["gpu"]),
                              ("syntax", None, None), ("duplicate", None, None)]:
        exp = d / f"study_{name}"
        exp.mkdir()
        if name == "duplicate":  # PyYAML would keep the second value silently
            text = original.replace("\nprofiles:\n  smoke:\n", "\nprofiles:\n  smoke:\n    seeds: [7]\n", 1)
            assert text != original
        elif keys is None:
            text = original + "\nbroken: {a: [1, 2\n"
        else:
            spec = yaml.safe_load(original)
            set_in(spec, keys, value)
            text = yaml.safe_dump(spec, allow_unicode=True)
        (exp / "rows.yaml").write_text(text)
        for nb in ("train.ipynb", "evaluate.ipynb"):
            shutil.copy(REPO / "experiments" / nb, exp / nb)
    return d


def battery(d):
    # the broken studies run with --only matching nothing: a rows.yaml wrongly accepted fails the test at
    # once ("--only no_such_run: no run") instead of starting a real study
    ck, img = str(d / "tiny.pth"), str(COCO_MINI / "images")
    ev = ["evaluate", "--checkpoint", ck, "--images", img, "--no-progress", "--annotations"]
    return [
        (["info", "--config", "w99"], r"'w99' is neither a preset"),
        (["info", "--config", str(d / "bad.yaml")], r"bad.yaml:2:1: YAML syntax error: expected ',' or ']'"),
        (["info", "--config", str(d / "typo.yaml")], r"typo.yaml: unknown config key\(s\) model.widht"),
        (["info", "--config", "w32_512", "--set", "model.width=0"], r"model.width must be a number >= 1"),
        (["info", "--config", "w32_512", "--set", "input_size=50"], r"input_size must be a positive multiple of 32"),
        (["info", "--config", "w32_512", "--set", "test.scales=[1, -1]"], r"test.scales must be positive"),
        (["info", "--config", "w32_512", "--input-size", "50"], r"--input-size: must be a positive multiple of 32"),
        (["export", "--checkpoint", ck, "--onnx", str(d / "x.onnx"), "--input-size", "0"], r"--input-size: must be at least 1"),
        (["export", "--checkpoint", str(d / "garbage.pth"), "--onnx", str(d / "x.onnx")], r"garbage.pth: (truncated or not|refused by torch.load)"),
        (["convert", str(d / "nope.pth"), str(d / "out.pth")], r"nope.pth: no such checkpoint file"),
        (ev + [str(d / "no_annotations.json")], r"no_annotations.json: not a COCO file"),
        (ev + [str(d / "no_images.json")], r"no_images.json: 'images' is empty"),
        (ev + [str(d / "short.json")], r"short.json: annotation \d+: 'keypoints' has 48 values"),
        (ev + [str(d / "malformed.json")], r"malformed.json: not valid JSON"),
        (["evaluate", "--checkpoint", ck, "--data", str(d / "nowhere"), "--split", "val"], r"no image folder for split 'val'"),
        (["evaluate", "--checkpoint", ck, "--annotations", str(d / "short.json")], r"--annotations and --images go together"),
        (["evaluate", "--checkpoint", ck, "--data", str(d / "nowhere")], r"give --data and --split"),
        (ev[:-1] + ["--data", img, "--split", "val", "--annotations", str(d / "short.json")], r"not both"),
        (["predict", str(d / "empty.jpg"), "--checkpoint", ck, "--out", str(d / "p1"), "--no-progress"], r"empty.jpg: empty file"),
        (["predict", str(d / "nothing*.jpg"), "--checkpoint", ck, "--out", str(d / "p2")], r"nothing\*.jpg: pattern matches no file"),
        (["predict", img, "--checkpoint", ck, "--out", str(d / "p3"), "--min-score", "2"], r"--min-score: must be between 0 and 1"),
        (["predict", img, "--checkpoint", ck, "--out", str(d / "p4"), "--set", "test.flip_test=false"], r"--set test.flip_test=false needs --config"),
        (["train", "--config", "w32_512", "--out", str(d / "t1"), "--data", str(d / "nowhere")], r"no image folder for split 'train2017'"),
        (["train", "--config", "w32_512", "--out", str(d / "t2"), "--resume"], r"--resume: no last.pth in"),
        (["synth", "--out", str(d / "s"), "--size", "100"], r"--size: must be a positive multiple of 32"),
        (["synth", "--out", str(d / "s"), "--train", "-3"], r"--train: must be at least 1"),
        (["study", "--experiments", str(d / "study_unknown_key"), "--profile", "smoke", "--only", "no_such_run"], r"rows.yaml: trainings.w32_512: unknown key 'chnages'"),
        (["study", "--experiments", str(d / "study_syntax"), "--profile", "smoke", "--only", "no_such_run"], r"rows.yaml:\d+:\d+: YAML syntax error"),
        (["study", "--experiments", str(d / "study_duplicate"), "--profile", "smoke", "--only", "no_such_run"], r"rows.yaml:\d+:\d+: YAML syntax error: key 'seeds' appears twice"),
        (["study", "--experiments", str(d / "study_missing_training"), "--profile", "smoke", "--only", "no_such_run"], r"rows.yaml: evaluations.w32_512_ss.training: unknown training 'nope'"),
        (["study", "--experiments", str(d / "study_wrong_type"), "--profile", "smoke", "--only", "no_such_run"], r"rows.yaml: profiles.smoke.width: expected a number > 0, got 'fast'"),
        (["study", "--experiments", str(d / "study_bad_config_key"), "--profile", "smoke", "--only", "no_such_run"], r"rows.yaml: trainings.w32_512.changes: unknown config key 'model.widht'"),
        (["study", "--experiments", str(d / "study_unknown_profile"), "--profile", "smoke", "--only", "no_such_run"], r"rows.yaml: evaluations.w32_512_ss.profiles: unknown profile 'gpu'"),
        (["study", "--experiments", str(d / "nowhere")], r"nowhere/rows.yaml: no study definition"),
        (["study", "--experiments", str(REPO / "experiments"), "--profile", "nope"], r"unknown profile 'nope'"),
        (["study", "--experiments", str(REPO / "experiments"), "--profile", "smoke", "--only", "zzz"], r"--only zzz: no run"),
    ]


def test_every_subcommand_fails_in_one_line_naming_the_file_or_key(files, capsys):
    import re

    failures = []
    for argv, pattern in battery(files):
        try:
            code = main(argv)
        except SystemExit as exit_:  # argparse: usage line + one error line, exit 2
            code = exit_.code
        err = capsys.readouterr().err
        errors = [line for line in err.splitlines() if "error:" in line]
        if code == 0 or "Traceback" in err or len(errors) != 1 or not re.search(pattern, errors[0]):
            failures.append(f"{argv[:2]} -> exit {code}: {err.strip()[-400:]!r} (wanted {pattern!r})")
    assert not failures, "\n".join(failures)


def test_predict_a_folder_with_one_bad_image_completes_the_rest_and_exits_1(files, tmp_path, capsys):
    import cv2

    for sub in ("a", "b"):
        (tmp_path / "in" / sub).mkdir(parents=True)
        shutil.copy(COCO_MINI / "images" / "000000000785.jpg", tmp_path / "in" / sub / "pic.jpg")
    (tmp_path / "in" / "a" / "broken.png").write_bytes(b"\x89PNG not really")
    cv2.imwrite(str(tmp_path / "in" / "b" / "strip.png"), np.zeros((10, 1000, 3), np.uint8))
    argv = ["predict", str(tmp_path / "in"), "--checkpoint", str(files / "tiny.pth"), "--out", str(tmp_path / "out"),
            "--no-progress", "--config", str(files / "tiny.yaml"), "--set", "test.flip_test=false"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "broken.png: not a readable image" in err and "strip.png: image is 10x1000, an aspect ratio of 100:1" in err
    assert (tmp_path / "out" / "a" / "pic.jpg").is_file() and (tmp_path / "out" / "b" / "pic.jpg").is_file()
    results = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert {r["file_name"] for r in results} <= {"a/pic.jpg", "b/pic.jpg"}
    # nothing is overwritten without --overwrite; with it, the run repeats
    before = (tmp_path / "out" / "a" / "pic.jpg").read_bytes()
    assert main(argv) == 1 and "already exists" in capsys.readouterr().err
    assert (tmp_path / "out" / "a" / "pic.jpg").read_bytes() == before
    assert main(argv + ["--overwrite"]) == 1  # the two bad inputs still fail


def test_predict_and_evaluate_test_with_the_config_then_the_flags(files, tmp_path, monkeypatch):
    """``--set test.*`` and a YAML ``test:`` section reach the predictor; --no-flip / --multi-scale change only
    their field; without --config the checkpoint's own test settings are used (not a fresh TestConfig)."""
    import hhrnet.evaluation
    import hhrnet.predict
    from hhrnet.sections import MULTI_SCALE

    own = TINY.override(**{"test.detection_threshold": 0.2})
    save_checkpoint(tmp_path / "own.pth", HigherHRNet(own.model), own)
    save_config(TINY.override(**{"test.max_people": 7}), tmp_path / "test7.yaml")
    seen = []

    def capture(predictor, *args, **kwargs):
        seen.append(predictor.test)
        raise RuntimeError("captured")

    monkeypatch.setattr(hhrnet.evaluation, "evaluate", capture)
    monkeypatch.setattr(hhrnet.predict, "predict_inputs", capture)
    ev = ["evaluate", "--annotations", str(COCO_MINI / "person_keypoints_val2017.json"),
          "--images", str(COCO_MINI / "images"), "--no-progress"]
    pr = ["predict", str(COCO_MINI / "images"), "--out", str(tmp_path / "out"), "--no-progress"]
    cases = [
        (["--checkpoint", str(tmp_path / "own.pth")], own.test),
        (["--checkpoint", str(tmp_path / "own.pth"), "--no-flip"], replace(own.test, flip_test=False)),
        (["--checkpoint", str(files / "tiny.pth"), "--config", str(files / "tiny.yaml"),
          "--set", "test.flip_test=false", "--set", "test.scales=[2.0, 1.0]"],
         replace(TINY.test, flip_test=False, scales=(2.0, 1.0))),
        (["--checkpoint", str(files / "tiny.pth"), "--config", str(tmp_path / "test7.yaml"), "--multi-scale"],
         replace(TINY.test, max_people=7, scales=MULTI_SCALE)),
    ]
    for command in (ev, pr):
        for flags, expected in cases:
            seen.clear()
            assert main(command + flags) == 1 and seen == [expected], (command[0], flags, seen)


def test_a_bad_video_is_one_line_without_ffmpeg_chatter(files, tmp_path):
    """OpenCV's FFmpeg backend logs to stderr by itself ("moov atom not found"); the CLI silences it
    (before cv2 is imported, hence a fresh process) and reports the file in one line."""
    import os
    import subprocess
    import sys

    (tmp_path / "fake.mp4").write_bytes(b"not a video")
    env = {k: v for k, v in os.environ.items() if k != "OPENCV_FFMPEG_LOGLEVEL"}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-m", "hhrnet", "predict", str(tmp_path / "fake.mp4"), "--checkpoint",
                           str(files / "tiny.pth"), "--out", str(tmp_path / "out"), "--no-progress"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [f"hhrnet predict: error: {tmp_path / 'fake.mp4'}: not a readable video "
                                                "(corrupt or unsupported format)"], done.stderr


def _alias_bomb(levels: int) -> str:
    """A config whose model.width is ``9 ** levels`` values once its aliases are expanded (a few hundred bytes)."""
    anchors = ["&a0 [x, x, x, x, x, x, x, x, x]"] + [f"&a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "model:\n  width: [" + ", ".join(anchors) + "]\n"


@pytest.mark.parametrize("text, message", [
    (_alias_bomb(6), r": its aliases expand to more than 100000 values"),
    ("model: {width: 8}\ntrain: {lr: 0.1}\nmodel: {width: 16}\n", r":3:1: YAML syntax error: key 'model' appears twice"),
    ("train:\n  lr: 0.1\n  seed: 1\n  lr: 0.2\n", r":4:3: YAML syntax error: key 'lr' appears twice"),
    ("model: " + "[" * 5000 + "]" * 5000 + "\n", r":1:\d+: YAML syntax error: nested deeper than 64 levels"),
    ("model: &a [*a]\n", r":1:8: an alias refers to the value that holds it"),
])
def test_hostile_yaml_is_refused_in_one_short_line_naming_the_file(tmp_path, capsys, text, message):
    """Alias bombs, duplicate keys (PyYAML keeps the last one silently), deep nesting and recursive aliases."""
    path = tmp_path / "hostile.yaml"
    path.write_text(text)
    assert main(["info", "--config", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and len(err) < 500 and "Traceback" not in err, err[:500]
    assert re.search(rf"error: {path}{message}", err), err


def test_yaml_merge_keys_may_override_and_ctrl_c_is_one_line(tmp_path, capsys, monkeypatch):
    """Overriding a merged (``<<: *anchor``) value is not a duplicate key; Ctrl-C is one line, exit 130."""
    from hhrnet.io import load_yaml

    path = tmp_path / "merge.yaml"
    path.write_text("base: &b {width: 8, num_deconvs: 1}\nmodel: {<<: *b, width: 16}\n")
    assert load_yaml(path)["model"] == {"width": 16, "num_deconvs": 1}

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr("hhrnet.cli.cmd_info", interrupted)
    assert main(["info", "--config", "w32_512"]) == 130
    assert capsys.readouterr().err == "hhrnet info: interrupted\n"


def test_evaluate_never_writes_over_its_annotations_or_checkpoint(files, tmp_path, capsys):
    """An ``--out`` whose results.json / metrics.json would be the annotation file or the checkpoint is
    refused in one line before any work, and both stay byte-identical."""
    out = tmp_path / "out"
    out.mkdir()
    annotations = shutil.copy(COCO_MINI / "person_keypoints_val2017.json", out / "results.json")
    checkpoint = shutil.copy(files / "tiny.pth", out / "metrics.json")
    before = {p: Path(p).read_bytes() for p in (annotations, checkpoint)}
    for ckpt, ann in ((checkpoint, COCO_MINI / "person_keypoints_val2017.json"), (files / "tiny.pth", annotations)):
        argv = ["evaluate", "--checkpoint", str(ckpt), "--annotations", str(ann), "--images", str(COCO_MINI / "images"),
                "--out", str(out), "--no-progress"]
        assert main(argv) == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "is the input" in err and "never writes over what it reads" in err
    assert {p: Path(p).read_bytes() for p in before} == before
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "results.json"]
