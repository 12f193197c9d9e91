"""Match tables reproduce pycocotools' AP exactly; the paired bootstrap behaves like an interval should."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
from pycocotools.coco import COCO

from conftest import COCO_MINI
from hhrnet.evaluation import evaluate_coco, load_ground_truth
from hhrnet.stats import (METRICS, MatchTable, ap_from_matches, match_table, metric_from_matches,
                          paired_bootstrap, verdict)

ALL_JSON = COCO_MINI / "person_keypoints.json"


def make_gt(images: list, annotations: list) -> COCO:
    gt = COCO()
    gt.dataset = {"images": images, "annotations": annotations,
                  "categories": [{"id": 1, "name": "person", "keypoints": [str(k) for k in range(17)], "skeleton": []}]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
    return gt


def synthetic_gt(num_images: int, seed: int = 0) -> COCO:
    """Random people (0-5 per image, some without keypoints, some crowd) with areas over all ranges."""
    rng = np.random.default_rng(seed)
    images, anns = [], []
    for i in range(1, num_images + 1):
        images.append({"id": i, "width": 640, "height": 480, "file_name": f"{i}.jpg"})
        for _ in range(rng.integers(0, 6)):
            w, h = rng.uniform(15, 250), rng.uniform(30, 300)
            x0, y0 = rng.uniform(0, 640 - w), rng.uniform(0, 480 - h)
            k = np.zeros((17, 3))
            k[:, 0], k[:, 1], k[:, 2] = x0 + rng.uniform(0, w, 17), y0 + rng.uniform(0, h, 17), 2
            k[rng.random(17) < 0.2] = 0
            if rng.random() < 0.05:
                k[:] = 0
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": 1, "keypoints": k.ravel().tolist(),
                         "num_keypoints": int((k[:, 2] > 0).sum()), "area": w * h, "bbox": [x0, y0, w, h],
                         "iscrowd": int(rng.random() < 0.02)})
    return make_gt(images, anns)


def planted_results(gt: COCO, noise: float, drop: float, false_per_image: float, seed: int,
                    score_decimals: int | None = None) -> list[dict]:
    """GT keypoints jittered by up to ``noise``·sqrt(area), some people dropped, random false positives."""
    rng = np.random.default_rng(seed)
    results = []
    for a in gt.dataset["annotations"]:
        if a["num_keypoints"] == 0 or rng.random() < drop:
            continue
        k = np.asarray(a["keypoints"], np.float64).reshape(17, 3)
        k[:, :2] += rng.normal(0, 1, (17, 2)) * np.sqrt(a["area"]) * noise * rng.random()
        k[:, 2] = 1
        results.append({"image_id": a["image_id"], "category_id": 1, "keypoints": k.ravel().tolist(),
                        "score": float(rng.random())})
    for im in gt.dataset["images"]:
        for _ in range(rng.poisson(false_per_image)):
            k = np.ones((17, 3))
            k[:, 0], k[:, 1] = rng.uniform(0, im["width"], 17), rng.uniform(0, im["height"], 17)
            results.append({"image_id": im["id"], "category_id": 1, "keypoints": k.ravel().tolist(),
                            "score": float(rng.random())})
    if score_decimals is not None:  # ties: the order among equal scores must follow COCOeval's
        for r in results:
            r["score"] = round(r["score"], score_decimals)
    return results


@pytest.fixture(scope="module")
def mini_gt() -> COCO:
    return load_ground_truth(ALL_JSON)


@pytest.fixture(scope="module")
def synth() -> dict:
    """A 300-image synthetic split and tables for a better (a) and a worse (b) result set."""
    gt = synthetic_gt(300)
    a, b = planted_results(gt, 0.05, 0.1, 1.0, 1), planted_results(gt, 0.15, 0.3, 2.0, 2)
    return {"gt": gt, "results_a": a, "a": match_table(gt, a), "b": match_table(gt, b)}


# --------------------------------------------------------------------------------------------------
# Exactness


@pytest.mark.parametrize("noise, drop, false_per_image, decimals", [
    (0.02, 0.0, 0.0, None), (0.1, 0.2, 1.0, 1), (0.3, 0.1, 3.0, None), (0.05, 0.5, 10.0, 2)])
def test_ap_from_matches_equals_pycocotools_on_real_annotations(mini_gt, noise, drop, false_per_image, decimals):
    results = planted_results(mini_gt, noise, drop, false_per_image, seed=int(noise * 100), score_decimals=decimals)
    reference = evaluate_coco(mini_gt, results)
    table = match_table(mini_gt, results)
    for name in METRICS:
        assert ap_from_matches(table, metric=name) == pytest.approx(reference[name], abs=1e-12), name


def test_ap_from_matches_equals_pycocotools_on_many_images(synth):
    reference = evaluate_coco(synth["gt"], synth["results_a"])
    for name in METRICS:
        assert ap_from_matches(synth["a"], metric=name) == pytest.approx(reference[name], abs=1e-12), name
    assert 0.3 < reference["AP"] < 0.95  # neither trivial nor perfect


def test_repeated_images_count_like_duplicated_images(mini_gt):
    """A multiset of images scores like a dataset in which the repeated images are real copies."""
    results = planted_results(mini_gt, 0.1, 0.2, 2.0, seed=3)  # continuous scores: no ties across copies
    table = match_table(mini_gt, results)
    rng = np.random.default_rng(0)
    drawn = rng.choice(table.image_ids, size=len(table.image_ids), replace=True)
    images, anns, dets = [], [], []
    by_image = {int(i): [r for r in results if r["image_id"] == i] for i in table.image_ids}
    for copy_index, image_id in enumerate(drawn):
        new_id = int(copy_index + 1)
        images.append(dict(mini_gt.imgs[int(image_id)], id=new_id))
        for a in mini_gt.imgToAnns[int(image_id)]:
            anns.append(dict(a, id=len(anns) + 1, image_id=new_id))
        dets += [dict(r, image_id=new_id) for r in by_image[int(image_id)]]
    reference = evaluate_coco(make_gt(images, anns), dets)
    for name in METRICS:
        assert ap_from_matches(table, drawn, metric=name) == pytest.approx(reference[name], abs=1e-12), name


def test_empty_results_and_round_trip(mini_gt, tmp_path):
    empty = match_table(mini_gt, [])
    assert ap_from_matches(empty) == 0.0 and empty.det_score.size == 0 and empty.people[0].sum() > 0
    table = match_table(mini_gt, planted_results(mini_gt, 0.1, 0.2, 1.0, seed=5))
    loaded = MatchTable.load(table.save(tmp_path / "matches.npz"))
    for field in ("image_ids", "people", "det_image", "det_score", "matched", "ignored", "iou_thrs", "rec_thrs"):
        np.testing.assert_array_equal(getattr(loaded, field), getattr(table, field))
    assert ap_from_matches(loaded) == ap_from_matches(table)
    with pytest.raises(ValueError, match="not in the match table"):
        ap_from_matches(table, [123456789])


# --------------------------------------------------------------------------------------------------
# Paired bootstrap


def test_row_against_itself_is_exactly_zero(synth):
    c = paired_bootstrap([synth["a"]], [synth["a"]], n=200)
    assert (c.delta, c.low, c.high, c.p_le_0) == (0.0, 0.0, 0.0, 1.0)
    assert c.verdict == "a ≈ b"


def test_planted_improvement_is_detected_both_ways(synth):
    better = paired_bootstrap([synth["a"]], [synth["b"]], n=300)
    worse = paired_bootstrap([synth["b"]], [synth["a"]], n=300)
    assert better.low > 0 and better.verdict == "a > b" and better.p_le_0 == 0.0
    assert worse.high < 0 and worse.verdict == "a < b"
    assert better.delta == pytest.approx(ap_from_matches(synth["a"]) - ap_from_matches(synth["b"]))
    assert better.low < better.delta < better.high


def test_deterministic_with_a_seed(synth):
    one = paired_bootstrap([synth["a"]], [synth["b"]], n=200, seed=7)
    assert one == paired_bootstrap([synth["a"]], [synth["b"]], n=200, seed=7)
    other = paired_bootstrap([synth["a"]], [synth["b"]], n=200, seed=8)
    assert (one.low, one.high) != (other.low, other.high)


def test_interval_width_shrinks_like_one_over_sqrt_images():
    widths = {}
    for num_images in (60, 240):
        gt = synthetic_gt(num_images, seed=11)
        a = match_table(gt, planted_results(gt, 0.05, 0.1, 1.0, 1))
        b = match_table(gt, planted_results(gt, 0.08, 0.15, 1.0, 2))
        c = paired_bootstrap([a], [b], n=400)
        widths[num_images] = c.high - c.low
    assert 1.4 < widths[60] / widths[240] < 2.9, widths  # sqrt(4) = 2


def test_seeds_are_resampled_and_paired():
    gt = synthetic_gt(120, seed=5)
    seeds_a = [match_table(gt, planted_results(gt, noise, 0.1, 1.0, 20 + s))
               for s, noise in enumerate((0.04, 0.06, 0.09))]
    seeds_b = [match_table(gt, planted_results(gt, noise, 0.1, 1.0, 30 + s))
               for s, noise in enumerate((0.05, 0.07, 0.10))]
    paired = paired_bootstrap(seeds_a, seeds_b, n=200)
    expected = np.mean([ap_from_matches(t) for t in seeds_a]) - np.mean([ap_from_matches(t) for t in seeds_b])
    assert paired.delta == pytest.approx(expected) and paired.seeds == (3, 3)
    # the spread between seeds widens the interval beyond the image-only bootstrap of the same means
    images_only = paired_bootstrap(seeds_a, seeds_b, n=200, resample_seeds=False)
    assert images_only.delta == paired.delta
    assert paired.high - paired.low > 1.2 * (images_only.high - images_only.low)
    unpaired = paired_bootstrap(seeds_a, seeds_b[:2], n=200)
    assert unpaired.seeds == (3, 2) and unpaired.low < unpaired.high
    with pytest.raises(ValueError, match="paired seeds"):
        paired_bootstrap(seeds_a, seeds_b[:2], n=10, paired_seeds=True)


def test_metric_matrix_matches_single_calls(synth):
    counts = np.random.default_rng(0).multinomial(300, np.full(300, 1 / 300), size=5)
    batch = metric_from_matches(synth["a"], counts, "AP_M")
    single = [ap_from_matches(synth["a"], np.repeat(synth["a"].image_ids, row), "AP_M") for row in counts]
    np.testing.assert_allclose(batch, single, rtol=0, atol=1e-15)


def test_verdict():
    assert verdict(0.01, 0.03) == "a > b"
    assert verdict(-0.03, -0.001) == "a < b"
    assert verdict(-0.004, 0.003) == "a ≈ b"
    assert verdict(-0.004, 0.003, margin=0.002) == "no difference beyond noise"
    assert verdict(-0.02, 0.03) == "no difference beyond noise"
