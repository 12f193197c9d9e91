"""COCO evaluation: ground truth scores 1.0, the fast backend equals pycocotools, empty input is fine."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import COCO_MINI
from hhrnet.evaluation import (METRIC_NAMES, available_backends, coco_results, evaluate_coco, load_ground_truth,
                               metrics_markdown)
from hhrnet.inference import Poses

SPLITS = ["person_keypoints_val2017.json", "person_keypoints_train2017.json"]


def ground_truth_as_results(gt) -> list[dict]:
    """Every non-crowd person with keypoints as one detection of score 1, via ``coco_results``."""
    results = []
    for image_id in gt.getImgIds():
        anns = [a for a in gt.loadAnns(gt.getAnnIds(imgIds=image_id)) if a["num_keypoints"] > 0 and not a["iscrowd"]]
        keypoints = np.array([a["keypoints"] for a in anns], np.float32).reshape(-1, 17, 3)
        results += coco_results(image_id, Poses(keypoints, np.ones(len(anns)), np.zeros((len(anns), 17, 1))))
    return results


def perturbed(results: list[dict], seed: int = 0) -> list[dict]:
    """Jittered joints, random scores, some duplicates and false positives: a realistic PR curve."""
    rng = np.random.default_rng(seed)
    out = []
    for r in results:
        k = np.asarray(r["keypoints"], np.float64).reshape(17, 3)
        for _ in range(rng.integers(1, 3)):
            j = k.copy()
            j[:, :2] += rng.normal(0, rng.choice([1.0, 4.0, 12.0]), (17, 2))
            out.append(dict(r, keypoints=j.ravel().tolist(), score=float(rng.random())))
        if rng.random() < 0.3:
            j = k.copy()
            j[:, :2] += rng.normal(0, 80, 2)
            out.append(dict(r, keypoints=j.ravel().tolist(), score=float(rng.random() * 0.5)))
    return out


@pytest.fixture(scope="module", params=SPLITS)
def gt(request):
    return load_ground_truth(COCO_MINI / request.param)


def test_coco_result_entries():
    poses = Poses(np.arange(2 * 17 * 3, dtype=np.float32).reshape(2, 17, 3), np.array([0.5, 0.25]),
                  np.zeros((2, 17, 2)))
    entries = coco_results(42, poses)
    assert [set(e) for e in entries] == [{"image_id", "category_id", "keypoints", "score"}] * 2
    assert entries[1]["image_id"] == 42 and entries[1]["category_id"] == 1 and entries[1]["score"] == 0.25
    assert len(entries[0]["keypoints"]) == 51 and entries[0]["keypoints"][:3] == [0.0, 1.0, 2.0]


def test_ground_truth_scores_one(gt):
    metrics = evaluate_coco(gt, ground_truth_as_results(gt))
    assert list(metrics) == list(METRIC_NAMES)
    assert all(v == pytest.approx(1.0) for v in metrics.values()), metrics


def test_perturbed_detections_score_below_one(gt):
    metrics = evaluate_coco(gt, perturbed(ground_truth_as_results(gt)))
    assert 0.2 < metrics["AP"] < 0.95


@pytest.mark.skipif("hotcoco" not in available_backends(), reason="hotcoco not installed")
@pytest.mark.parametrize("seed", [0, 1])
def test_hotcoco_equals_pycocotools(gt, seed):
    results = perturbed(ground_truth_as_results(gt), seed)
    for image_ids in (None, sorted(gt.getImgIds())[::2]):
        reference = evaluate_coco(gt, results, image_ids, backend="pycocotools")
        fast = evaluate_coco(gt, results, image_ids, backend="hotcoco")
        assert fast == pytest.approx(reference, abs=1e-12), (reference, fast)


def test_empty_results_give_zeros(gt):
    for backend in available_backends():
        assert evaluate_coco(gt, [], backend=backend) == dict.fromkeys(METRIC_NAMES, 0.0)


def test_path_input_and_unknown_backend():
    path = COCO_MINI / SPLITS[0]
    assert evaluate_coco(path, [], backend="auto")["AP"] == 0.0
    with pytest.raises(ValueError, match="backend"):
        evaluate_coco(path, [{"image_id": 1}], backend="xtcocotools")


def test_metrics_markdown():
    text = metrics_markdown(dict.fromkeys(METRIC_NAMES, 0.5), title="w32")
    assert text.startswith("### w32") and "| 50.0 |" in text and text.count("\n") == 5
