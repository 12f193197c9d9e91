"""The training engine: exact resume, DDP equivalence through torchrun, non-finite loss handling."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

from conftest import COCO_MINI, REPO
from hhrnet.checkpoints import CheckpointError, load_model, read_checkpoint
from hhrnet.config import preset, save_config
from hhrnet.engine import TrainingError, read_metrics, train, train_seconds
from hhrnet.inference import Predictor, evaluate_dataset
from hhrnet.losses import MultiResolutionLoss
from hhrnet.sections import ConfigError, DataConfig, TrainConfig


def tiny_config(root, **train):
    """A CPU-second configuration of the full structure on the real coco_mini images.

    Every part of the network is there (stem, layer1, three stages, the deconvolution head) with one block
    each and a narrow stem: what these tests check (exact resume, equal losses, refusals) does not depend
    on the width, and a forward/backward pass costs about a third of one with the preset's stem and layer1.
    """
    overrides = {"input_size": 128, "model.width": 8, "model.stem_channels": 16, "model.layer1_planes": 16,
                 "model.layer1_blocks": 1, "model.stage_modules": [1, 1, 1],
                 "model.blocks_per_branch": 1, "model.num_basic_blocks": 1, "train.data_root": str(root),
                 "train.train_split": "val", "train.batch_size": 2, "train.workers": 0, "train.log_every": 1}
    overrides.update({f"train.{k}": v for k, v in train.items()})
    return preset("w32_512").override(**overrides)


def weights(run_dir):
    state, _ = read_checkpoint(run_dir / "last.pth")
    return state


def test_resume_is_exact(coco_root, tmp_path):
    """k iterations, stop, resume to 2k (crossing an epoch end) = 2k uninterrupted; seeded runs are identical."""
    cfg = tiny_config(coco_root, batch_size=4, epochs=2, checkpoint_every=3)  # 10 iterations per epoch
    train(cfg.override(**{"train.max_iters": 14}), tmp_path / "straight", progress=False)
    train(cfg.override(**{"train.max_iters": 7}), tmp_path / "resumed", progress=False)
    train(cfg.override(**{"train.max_iters": 14}), tmp_path / "resumed", resume=True, progress=False)
    a, b = weights(tmp_path / "straight"), weights(tmp_path / "resumed")
    assert list(a) == list(b)
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed run differs from the uninterrupted one"
    straight, resumed = read_metrics(tmp_path / "straight"), read_metrics(tmp_path / "resumed")
    assert [r["iter"] for r in resumed] == list(range(1, 15))
    assert [r["total"] for r in resumed] == [r["total"] for r in straight]


def test_a_weight_average_resumes_exactly_and_is_what_the_checkpoint_serves(coco_root, tmp_path):
    """train.ema: resume is still bit-exact; ``model`` holds the average, ``train_model`` the optimiser's weights."""
    cfg = tiny_config(coco_root, batch_size=4, epochs=2, checkpoint_every=3, ema=0.9)
    train(cfg.override(**{"train.max_iters": 12}), tmp_path / "straight", progress=False)
    train(cfg.override(**{"train.max_iters": 5}), tmp_path / "resumed", progress=False)
    train(cfg.override(**{"train.max_iters": 12}), tmp_path / "resumed", resume=True, progress=False)
    a, b = (torch.load(tmp_path / d / "last.pth", weights_only=True) for d in ("straight", "resumed"))
    for key in ("model", "train_model"):
        assert all(torch.equal(a[key][k], b[key][k]) for k in a[key]), key
    assert a["ema_updates"] == 12
    averaged = [k for k, v in a["model"].items() if v.is_floating_point() and not torch.equal(v, a["train_model"][k])]
    assert averaged, "the average equals the last weights"
    assert torch.equal(weights(tmp_path / "straight")[averaged[0]], a["model"][averaged[0]])  # inference loads it


def test_validation_on_the_first_val_images_scores_the_saved_network_on_those_images(coco_root, tmp_path):
    """train.val_images: the curve's last point is the saved (averaged) network's AP on the first N images."""
    from hhrnet.evaluation import evaluate
    from hhrnet.study import train_for_study

    cfg = tiny_config(coco_root, batch_size=4, epochs=1, val_every=1, val_images=3, ema=0.9,
                      val_split="val")
    summary = train_for_study(cfg, tmp_path / "run", None)  # the study's training: its curve goes in metrics.json
    last = [r for r in read_metrics(tmp_path / "run") if "val_AP" in r][-1]
    again = evaluate(Predictor.from_checkpoint(tmp_path / "run" / "last.pth"), root=coco_root, split="val",
                     progress=False, backend="auto", limit=3)
    assert again["images"] == 3 and last["val_AP"] == again["AP"]
    assert summary["precision"] == "fp32"  # train.amp auto: fp32 on CPU, recorded with the result
    assert summary["val_curve"] == [{k.removeprefix("val_"): v for k, v in last.items()
                                     if k == "iter" or k.startswith("val_")}]


def test_the_weight_average_follows_its_warmed_up_decay():
    """After n updates of a constant net the average is exact; each update moves it by (1 - rate) toward the net."""
    from hhrnet.averaging import WeightAverage

    net = torch.nn.Linear(2, 1)
    avg = WeightAverage(net, decay=0.99)
    start = avg.module.weight.clone()
    with torch.no_grad():
        net.weight.add_(1.0)
    rate = avg.rate()
    avg.update(net)
    assert rate == pytest.approx(1 / 10) and avg.updates == 1
    assert torch.allclose(avg.module.weight, rate * start + (1 - rate) * net.weight)
    avg.updates = 10_000
    assert avg.rate() == 0.99 and not avg.module.weight.requires_grad


def test_cosine_decay_warms_up_then_falls_to_zero_at_the_last_iteration():
    t = TrainConfig(schedule="official", lr=0.002, epochs=5, lr_decay="cosine", warmup_iters=100)
    per_epoch, total = 500, 2500
    assert t.lr_at(0, per_epoch) == pytest.approx(0.002 * 0.001)
    assert t.lr_at(100, per_epoch) == pytest.approx(0.002 * 0.5 * (1 + math.cos(math.pi * 100 / total)))
    assert t.lr_at(total // 2, per_epoch) == pytest.approx(0.001)
    assert t.lr_at(total, per_epoch) == pytest.approx(0.0, abs=1e-12)
    rates = [t.lr_at(i, per_epoch) for i in range(100, total + 1, 50)]
    assert rates == sorted(rates, reverse=True)
    with pytest.raises(ConfigError, match="train.lr_decay must be step or cosine"):
        TrainConfig(lr_decay="linear")
    with pytest.raises(ConfigError, match="train.ema"):
        TrainConfig(ema=1.0)


def test_channels_last_trains_the_same_network(coco_root, tmp_path):
    """NHWC only reorders memory: the same losses up to float rounding (not the same weights: Adam's
    first steps move every weight by about lr whatever the sign of a gradient of ~0), a checkpoint any
    model loads, and an exact resume."""
    cfg = tiny_config(coco_root, max_iters=3)
    train(cfg, tmp_path / "nchw", progress=False)
    nhwc = cfg.override(**{"train.channels_last": True})
    train(nhwc, tmp_path / "nhwc", progress=False)
    a, b = read_metrics(tmp_path / "nchw"), read_metrics(tmp_path / "nhwc")
    assert [r["total"] for r in b] == pytest.approx([r["total"] for r in a], rel=1e-4)
    wb = weights(tmp_path / "nhwc")
    model, _ = load_model(tmp_path / "nhwc" / "last.pth")
    assert all(p.is_contiguous() for p in model.parameters())
    train(nhwc.override(**{"train.max_iters": 2}), tmp_path / "resumed", progress=False)
    train(nhwc, tmp_path / "resumed", resume=True, progress=False)
    assert all(torch.equal(wb[k], weights(tmp_path / "resumed")[k]) for k in wb)


def test_resume_refuses_a_changed_config(coco_root, tmp_path):
    cfg = tiny_config(coco_root, max_iters=1)
    train(cfg, tmp_path, progress=False)
    with pytest.raises(TrainingError, match="train.lr"):
        train(cfg.override(**{"train.lr": 0.1}), tmp_path, resume=True, progress=False)


def test_init_from_starts_from_every_weight_of_a_checkpoint(coco_root, tmp_path):
    """Fine-tuning: a run with ``train.init_from`` begins at the given checkpoint's weights (lr 0
    keeps them), with a fresh optimiser; a checkpoint of another network is refused by name."""
    cfg = tiny_config(coco_root, max_iters=2)
    train(cfg, tmp_path / "source", progress=False)
    train(cfg.override(**{"train.init_from": str(tmp_path / "source" / "last.pth"), "train.lr": 0.0,
                          "train.seed": 1}), tmp_path / "tuned", progress=False)
    source, tuned = load_model(tmp_path / "source" / "last.pth")[0], load_model(tmp_path / "tuned" / "last.pth")[0]
    assert all(torch.equal(a, b) for a, b in zip(source.parameters(), tuned.parameters()))
    wider = cfg.override(**{"model.width": 16, "train.init_from": str(tmp_path / "source" / "last.pth")})
    with pytest.raises(CheckpointError, match=r"train.init_from .*source/last.pth does not fit the model"):
        train(wider, tmp_path / "wider", progress=False)
    with pytest.raises(ConfigError, match="exclude each other"):
        cfg.override(**{"train.init_from": "a.pth", "train.pretrained": "b.pth"})


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(coco_root, tmp_path, monkeypatch):
    calls = {"n": 0}
    original = MultiResolutionLoss.forward

    def poisoned(self, *args):
        terms = original(self, *args)
        calls["n"] += 1
        if calls["n"] == 3:
            terms.total = terms.total * float("nan")
        return terms

    monkeypatch.setattr(MultiResolutionLoss, "forward", poisoned)
    with pytest.raises(TrainingError, match=r"loss became nan at iteration 2 .*last.pth"):
        train(tiny_config(coco_root, max_iters=5, checkpoint_every=1), tmp_path, progress=False)
    assert torch.load(tmp_path / "last.pth", weights_only=True)["iteration"] == 2


def test_a_non_finite_learning_rate_stops_before_the_step_and_metrics_stay_strict_json(coco_root, tmp_path, monkeypatch):
    """A learning rate that becomes infinite (here at iteration 1 of 2) stops the run by name; the checkpoint
    keeps finite weights and metrics.jsonl never holds the non-JSON tokens Infinity / NaN."""
    schedule = TrainConfig.lr_at
    monkeypatch.setattr(TrainConfig, "lr_at", lambda self, it, per_epoch: math.inf if it >= 1 else schedule(self, it, per_epoch))
    with pytest.raises(TrainingError, match=r"learning rate became inf at iteration 1 .*last.pth"):
        train(tiny_config(coco_root, max_iters=2, checkpoint_every=1), tmp_path, progress=False)
    state = torch.load(tmp_path / "last.pth", weights_only=True)
    assert state["iteration"] == 1 and all(torch.isfinite(v).all() for v in state["model"].values())
    text = (tmp_path / "metrics.jsonl").read_text()
    rows = [json.loads(line, parse_constant=lambda token: pytest.fail(f"{token} in metrics.jsonl")) for line in text.splitlines()]
    assert [r["iter"] for r in rows] == [1]


def test_train_seconds_count_every_segment_of_a_resumed_run(coco_root, tmp_path):
    """The run's clock is stored in last.pth and continues on --resume: every metrics row carries the
    whole run's training time so far, so the last one is the run's cost, not its last segment's."""
    cfg = tiny_config(coco_root, max_iters=4)
    train(cfg.override(**{"train.max_iters": 2}), tmp_path, progress=False)
    first = torch.load(tmp_path / "last.pth", weights_only=True)["train_seconds"]
    train(cfg, tmp_path, resume=True, progress=False)
    total = torch.load(tmp_path / "last.pth", weights_only=True)["train_seconds"]
    clocks = [r["train_seconds"] for r in read_metrics(tmp_path)]
    assert len(clocks) == 4 and clocks == sorted(clocks) and clocks[2] > first
    assert first < clocks[-1] <= total and train_seconds(tmp_path) == clocks[-1]


@pytest.mark.slow
def test_ddp_two_processes_equal_one_process_with_accumulation(coco_root, tmp_path):
    """torchrun, 2 gloo processes × batch 2 = 1 process × batch 2 × accumulate 2 (the same total
    batch of 4, BatchNorm statistics per micro-batch in both, as per GPU in the published runs)."""
    cfg = tiny_config(coco_root, max_iters=3, lr=1e-3)
    save_config(cfg, tmp_path / "ddp.yaml")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "hhrnet", "train", "--config", str(tmp_path / "ddp.yaml"), "--out", str(tmp_path / "ddp"),
         "--no-progress"], capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    train(cfg.override(**{"train.accumulate": 2}), tmp_path / "single", progress=False)
    a, b = weights(tmp_path / "ddp"), weights(tmp_path / "single")
    for key in a:
        if a[key].is_floating_point() and "running" not in key:  # parameters (buffers follow rank 0)
            torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=0, msg=key)
    assert [r["total"] for r in read_metrics(tmp_path / "ddp")] == pytest.approx(
        [r["total"] for r in read_metrics(tmp_path / "single")], rel=1e-5)


OVERFIT_ITERS = 600
OVERFIT_IMAGES = (785, 40083, 196141, 197388)  # coco_mini val2017: 1, 2, 4 and 5 labelled people
LETTERBOX_BGR = tuple(round(255 * m) for m in DataConfig().mean[::-1])  # reads as zeros once normalised


@pytest.fixture(scope="module")
def four_images(tmp_path_factory):
    """The four images alone, each letterboxed to a square, as a split ``four`` (``ROOT/images/<split>``).

    Annotations move with the picture (keypoints, boxes, polygons); areas, and so OKS, are unchanged.
    """
    root = tmp_path_factory.mktemp("four_images")
    coco = json.loads((COCO_MINI / "person_keypoints_val2017.json").read_text())
    coco["images"] = [i for i in coco["images"] if i["id"] in OVERFIT_IMAGES]
    coco["annotations"] = [a for a in coco["annotations"] if a["image_id"] in OVERFIT_IMAGES]
    (root / "images" / "four").mkdir(parents=True)
    shifts = {}
    for info in coco["images"]:
        image = cv2.imread(str(COCO_MINI / "images" / info["file_name"]))
        height, width = image.shape[:2]
        side = max(height, width)
        left, top = (side - width) // 2, (side - height) // 2
        square = np.full((side, side, 3), LETTERBOX_BGR, np.uint8)
        square[top:top + height, left:left + width] = image
        info.update(file_name=info["file_name"].replace(".jpg", ".png"), height=side, width=side)
        cv2.imwrite(str(root / "images" / "four" / info["file_name"]), square)
        shifts[info["id"]] = np.array([left, top])
    for ann in coco["annotations"]:
        shift = shifts[ann["image_id"]]
        keypoints = np.array(ann["keypoints"]).reshape(-1, 3)
        keypoints[keypoints[:, 2] > 0, :2] += shift
        ann["keypoints"] = keypoints.ravel().tolist()
        ann["bbox"][:2] = (np.array(ann["bbox"][:2]) + shift).tolist()
        ann["segmentation"] = [(np.array(poly).reshape(-1, 2) + shift).ravel().tolist()
                               for poly in ann["segmentation"]]
    (root / "annotations").mkdir()
    (root / "annotations" / "person_keypoints_four.json").write_text(json.dumps(coco))
    return root


@pytest.mark.slow
def test_overfits_four_real_images(four_images, tmp_path):
    """The whole chain learns: a small HigherHRNet memorises 4 real COCO images to AP >= 0.9.

    Training and test show the network the same picture.  Each image is letterboxed to a square,
    which both the 256 px training crop (0.95-1.05 of the side, shifts of a few pixels, no rotation
    or flip) and the reference's 256 px test input hold whole.  With the 3:2 originals they cannot:
    a square crop that holds the long side has image-free bands above and below, which the loss
    ignores (the reference masks everything outside the image), while the test input has the
    picture up to its top and bottom edges and padding at the sides.  The network's outputs there
    were never trained; their stray peaks carried a person's tag, grouping took them as that
    person's joints, and AP was 0.77-0.92 after 1000 iterations over seeds and thread counts.
    Letterboxed, 600 iterations at 384 px gave AP 0.95 (two threads) and 0.98 (one thread), other
    seeds 0.95-0.98, with AP50 and AP75 1.0 in every run; at 256 px (2.25x cheaper, what runs here)
    AP 0.98 with one thread, AP50 and AP75 1.0 (400 iterations at 320 px: AP 0.93).
    """
    cfg = preset("w32_512").override(**{
        "input_size": 256, "model.width": 16, "model.stem_channels": 32, "model.layer1_blocks": 1,
        "model.layer1_planes": 32, "model.stage_modules": [1, 1, 1], "model.blocks_per_branch": 2,
        "model.num_basic_blocks": 1, "train.data_root": str(four_images), "train.train_split": "four",
        "train.val_split": "four", "train.batch_size": 4, "train.workers": 0, "train.schedule": "official",
        "train.lr": 2e-3, "train.max_iters": OVERFIT_ITERS, "train.epochs": OVERFIT_ITERS,
        "train.lr_steps": [int(OVERFIT_ITERS * 0.8)], "train.log_every": 50, "data.scale_type": "short",
        "data.min_scale": 0.95, "data.max_scale": 1.05, "data.max_rotation": 0.0, "data.max_translate": 2.0,
        "data.flip_prob": 0.0, "test.flip_test": False})
    train(cfg, tmp_path, progress=False)
    model, trained = load_model(tmp_path / "last.pth")
    metrics = evaluate_dataset(Predictor(model, trained), root=four_images, split="four", progress=False)
    assert metrics["AP"] >= 0.9, {k: metrics[k] for k in ("AP", "AP50", "AP75", "AR")}
