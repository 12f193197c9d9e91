"""Training results are never lost or mixed: run folders, signals, torn metrics lines, stale temp files."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import resource
import signal
import stat
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
import torch

from conftest import REPO
from hhrnet.checkpoints import CheckpointError, export_onnx
from hhrnet.config import preset, save_config
from hhrnet.data.coco import DatasetError
from hhrnet.engine import METRICS, RunExistsError, TrainingError, read_metrics, train
from hhrnet.io import atomic_write_json
from hhrnet.predict import predict_inputs
from hhrnet.study.results import read_result
from test_engine import tiny_config, weights


def test_train_refuses_an_existing_run_folder_unless_resume_or_overwrite(coco_root, tmp_path):
    cfg = tiny_config(coco_root, max_iters=2)
    train(cfg, tmp_path / "run", progress=False)
    before = (tmp_path / "run" / METRICS).read_bytes(), (tmp_path / "run" / "last.pth").read_bytes()
    with pytest.raises(RunExistsError, match=r"run already holds a run \(last.pth, metrics.jsonl, config.yaml\); "
                                             r"use --resume .* or --overwrite"):
        train(cfg, tmp_path / "run", progress=False)
    assert ((tmp_path / "run" / METRICS).read_bytes(), (tmp_path / "run" / "last.pth").read_bytes()) == before
    train(cfg.override(**{"train.max_iters": 1}), tmp_path / "run", progress=False, overwrite=True)
    assert [r["iter"] for r in read_metrics(tmp_path / "run")] == [1]


def test_a_torn_last_metrics_line_is_skipped_and_resume_still_works(coco_root, tmp_path, capsys):
    cfg = tiny_config(coco_root, max_iters=2)
    run = tmp_path / "run"
    train(cfg, run, progress=False)
    with (run / METRICS).open("a") as f:
        f.write('{"iter": 3, "tot')  # a crash in the middle of a write
    assert [r["iter"] for r in read_metrics(run)] == [1, 2]
    assert "torn last line" in capsys.readouterr().err
    (run / ".last.pth.abc123.tmp").write_bytes(b"half a checkpoint")  # a killed atomic write
    train(cfg.override(**{"train.max_iters": 3}), run, resume=True, progress=False)
    assert [r["iter"] for r in read_metrics(run)] == [1, 2, 3]
    assert not list(run.glob(".*.tmp")), "stale temp files are removed when a run starts"


SIGNAL_ITERS = 30  # 23 iterations per epoch: the run crosses an epoch end


@pytest.fixture(scope="module")
def uninterrupted(coco_root, tmp_path_factory):
    """(weights, metrics rows) of the uninterrupted run both signals' resumed runs must equal, trained once
    (seeded, one thread as the interrupted process: the same run for SIGINT and SIGTERM)."""
    out = tmp_path_factory.mktemp("straight")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the interrupted process: bit-exactness holds for one thread count
    try:
        train(tiny_config(coco_root, max_iters=SIGNAL_ITERS), out, progress=False)
    finally:
        torch.set_num_threads(threads)
    return weights(out), read_metrics(out)


@pytest.mark.parametrize("sig", [signal.SIGINT, pytest.param(signal.SIGTERM, marks=pytest.mark.slow)])
def test_a_signal_writes_the_current_iteration_and_resume_is_bit_identical(coco_root, tmp_path, sig, uninterrupted):
    """SIGINT/SIGTERM mid-run: exit 130 with a one-line message, last.pth at the current iteration, and
    --resume ends with exactly the weights and losses of an uninterrupted run."""
    total = SIGNAL_ITERS
    cfg = tiny_config(coco_root, max_iters=total)
    save_config(cfg, tmp_path / "cfg.yaml")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "hhrnet", "train", "--config", str(tmp_path / "cfg.yaml"), "--out",
           str(tmp_path / "cut"), "--no-progress"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while len(read_metrics(tmp_path / "cut")) < 3 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err and f"{sig.name} at iteration" in err and "--resume" in err, err
    stopped = torch.load(tmp_path / "cut" / "last.pth", weights_only=True)["iteration"]
    assert 3 <= stopped < total and [r["iter"] for r in read_metrics(tmp_path / "cut")] == list(range(1, stopped + 1))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the interrupted process: bit-exactness holds for one thread count
    try:
        train(cfg, tmp_path / "cut", resume=True, progress=False)
    finally:
        torch.set_num_threads(threads)
    (a, straight), b = uninterrupted, weights(tmp_path / "cut")
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a), \
        "the resumed run differs from the uninterrupted one"
    assert [r["total"] for r in read_metrics(tmp_path / "cut")] == [r["total"] for r in straight]


# --------------------------------------------------------------------------------------------------
# Issue 27: an input is never an output; a refused or failed command leaves the user's files whole.


def _hashes(folder) -> dict[str, str]:
    """sha256 and mode of every file below ``folder`` (what "untouched" means, byte for byte)."""
    return {str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mode)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _cli(*args, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run([sys.executable, "-m", "hhrnet", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300, **kwargs)


def test_synth_refuses_a_coco_dataset_it_did_not_create_and_rewrites_only_its_own(tmp_path):
    user = tmp_path / "mine"
    for split in ("train", "val"):
        (user / "images" / split).mkdir(parents=True)
        (user / "images" / split / "holiday.jpg").write_bytes(b"my photo " + split.encode())
    (user / "annotations").mkdir()
    (user / "annotations" / "person_keypoints_train.json").write_text('{"my": "labels"}')
    before = _hashes(user)
    for extra in ([], ["--force"]):
        result = _cli("synth", "--out", str(user), "--train", "2", "--val", "1", "--size", "64", "--workers", "1", *extra)
        assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
        assert f"{user}: holds files that hhrnet synth did not write" in result.stderr
        assert _hashes(user) == before
    ours = tmp_path / "synth"
    assert _cli("synth", "--out", str(ours), "--train", "2", "--val", "1", "--size", "64", "--workers", "1").returncode == 0
    (ours / "images" / "train" / "notes.jpg").write_bytes(b"a file synth did not write")
    result = _cli("synth", "--out", str(ours), "--train", "1", "--val", "1", "--size", "64", "--workers", "1")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (ours / "images" / "train").iterdir()) == ["000000000001.png", "notes.jpg"]


def test_predict_refuses_an_out_folder_holding_its_inputs_even_with_overwrite(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("a.jpg", "b.png"):
        cv2.imwrite(str(photos / name), np.full((32, 32, 3), 100, np.uint8))
    before = _hashes(photos)
    for out in (photos, tmp_path):  # the inputs' folder, and a folder above it
        with pytest.raises(ValueError, match=rf"--out {out} holds the input .*a.jpg"):
            predict_inputs(object(), [str(photos / "*.jpg"), str(photos / "b.png")], out, overwrite=True)
    assert _hashes(photos) == before


def test_a_refused_or_failed_train_leaves_the_run_folder_as_it_was(coco_root, tmp_path):
    """Bad --data, a batch larger than the data, a missing pretrained file, init_from the run's own
    checkpoint: with --overwrite the old run stays byte-identical; in a new folder nothing is written."""
    cfg = tiny_config(coco_root, max_iters=2)
    run = tmp_path / "run"
    train(cfg, run, progress=False)
    before = _hashes(run)
    refused = [({"train.data_root": str(tmp_path / "typo")}, DatasetError, "no image folder"),
               ({"train.batch_size": 64}, TrainingError, "fewer than one step"),
               ({"train.pretrained": str(tmp_path / "missing.pth")}, CheckpointError, "missing.pth"),
               ({"train.init_from": str(run / "last.pth")}, ValueError, "holds the input|is the input")]
    for changes, error, message in refused:
        with pytest.raises(error, match=message):
            train(cfg.override(**changes), run, progress=False, overwrite=True)
        assert _hashes(run) == before, changes
        if "train.init_from" not in changes:  # (another folder may start from that checkpoint)
            with pytest.raises(error):
                train(cfg.override(**changes), tmp_path / "fresh", progress=False)
            assert not (tmp_path / "fresh" / "config.yaml").exists(), f"{changes} left a config.yaml stub"
    train(cfg, tmp_path / "fresh", progress=False)  # the corrected command needs no --overwrite


def test_resume_from_a_checkpoint_that_does_not_fit_names_the_file(coco_root, tmp_path):
    cfg = tiny_config(coco_root, max_iters=1)
    train(cfg, tmp_path, progress=False)
    good = torch.load(tmp_path / "last.pth", weights_only=True)
    for broken, message in [({**good, "model": {**good["model"], "bogus.weight": torch.zeros(1)}}, "unexpected keys"),
                            ({**good, "rng": {k: v for k, v in good["rng"].items() if k != "torch"}}, "missing key 'torch'")]:
        torch.save(broken, tmp_path / "last.pth")
        before = _hashes(tmp_path)
        with pytest.raises((TrainingError, CheckpointError), match=rf"{tmp_path / 'last.pth'}.*{message}"):
            train(cfg.override(**{"train.max_iters": 2}), tmp_path, resume=True, progress=False)
        assert _hashes(tmp_path) == before


# --------------------------------------------------------------------------------------------------
# Every write atomic, with the user's umask; a full disk or a size limit names the file and keeps the old one.


def test_writes_respect_the_umask_and_keep_the_mode_of_the_file_they_replace(tmp_path):
    old = os.umask(0o027)
    try:
        atomic_write_json(tmp_path / "new.json", {"a": 1})
        save_config(preset("w32_512"), tmp_path / "config.yaml")
        (tmp_path / "shared.json").write_text("{}")
        os.chmod(tmp_path / "shared.json", 0o604)
        atomic_write_json(tmp_path / "shared.json", {"b": 2})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "new.json").stat().st_mode) == 0o640
    assert stat.S_IMODE((tmp_path / "config.yaml").stat().st_mode) == 0o640
    assert stat.S_IMODE((tmp_path / "shared.json").stat().st_mode) == 0o604
    assert json.loads((tmp_path / "shared.json").read_text()) == {"b": 2}


def test_a_failed_onnx_export_leaves_the_old_file_whole(tmp_path, monkeypatch):
    (tmp_path / "net.onnx").write_bytes(b"the good export")

    def disk_full(model, args, f, **kwargs):
        if isinstance(f, (str, os.PathLike)):
            f = open(f, "wb")
        f.write(b"half an export")
        f.flush()
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch.onnx, "export", disk_full)
    from hhrnet.model import HigherHRNet
    with pytest.raises(OSError, match=rf"{tmp_path / 'net.onnx'}: cannot write \(No space left on device\)"):
        export_onnx(HigherHRNet(tiny_config(tmp_path).model), tmp_path / "net.onnx", (64, 64))
    assert (tmp_path / "net.onnx").read_bytes() == b"the good export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.onnx"]


def test_a_file_size_limit_names_the_file_and_keeps_the_old_one(tmp_path):
    """``[Errno 27] File too large`` (or torch's ``[enforce fail at inline_container.cc]``) names the file."""
    from hhrnet.checkpoints import save_checkpoint
    from hhrnet.model import HigherHRNet

    cfg = tiny_config(tmp_path)
    save_checkpoint(tmp_path / "src.pth", HigherHRNet(cfg.model), cfg)
    (tmp_path / "dst.pth").write_bytes(b"the previous conversion")

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead

    result = _cli("convert", str(tmp_path / "src.pth"), str(tmp_path / "dst.pth"), preexec_fn=limit)
    assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
    assert f"error: {tmp_path / 'dst.pth'}: cannot write" in result.stderr
    assert (tmp_path / "dst.pth").read_bytes() == b"the previous conversion"
    assert not list(tmp_path.glob(".*.tmp"))
    same = _cli("convert", str(tmp_path / "src.pth"), str(tmp_path / "src.pth"))
    assert same.returncode == 1 and "destination" in same.stderr and "is the input" in same.stderr, same.stderr


def test_gather_refuses_a_stamped_result_holding_nan_or_true_naming_the_file_and_key(tmp_path):
    for value, shown in (("NaN", "nan"), ("true", "True"), ('"0.5"', "'0.5'")):
        path = tmp_path / "metrics.json"
        path.write_text(f'{{"stamp": {{"code": "x"}}, "AP": 0.5, "AR": {value}}}')
        with pytest.raises(ValueError, match=rf"{path}: key 'AR' must be a finite number or null, got {shown}"):
            read_result(path)
