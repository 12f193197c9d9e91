"""Training results are never lost or mixed: run folders, signals, torn metrics lines, stale temp files."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import REPO
from hhrnet.config import save_config
from hhrnet.engine import METRICS, RunExistsError, read_metrics, train
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


@pytest.mark.parametrize("sig", [signal.SIGINT, pytest.param(signal.SIGTERM, marks=pytest.mark.slow)])
def test_a_signal_writes_the_current_iteration_and_resume_is_bit_identical(coco_root, tmp_path, sig):
    """SIGINT/SIGTERM mid-run: exit 130 with a one-line message, last.pth at the current iteration, and
    --resume ends with exactly the weights and losses of an uninterrupted run."""
    total = 30  # 23 iterations per epoch: the run crosses an epoch end
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
        train(cfg, tmp_path / "straight", progress=False)
    finally:
        torch.set_num_threads(threads)
    a, b = weights(tmp_path / "straight"), weights(tmp_path / "cut")
    assert all(torch.equal(a[k], b[k]) for k in a), "the resumed run differs from the uninterrupted one"
    assert [r["total"] for r in read_metrics(tmp_path / "cut")] == [r["total"] for r in read_metrics(tmp_path / "straight")]
