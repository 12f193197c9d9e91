"""Match tables reproduce pycocotools' AP exactly; intervals with image and seed noise cover a known
difference 95% of the time and call two seeds of one configuration different at most 5% of the time."""

from __future__ import annotations

import contextlib
import io
import itertools
import math

import numpy as np
import pytest
from pycocotools.coco import COCO
from scipy.stats import t as student_t

from conftest import COCO_MINI
from hhrnet.evaluation import MatchTable, evaluate_coco, load_ground_truth, match_table
from hhrnet.stats import (METRICS, OWN_SEEDS, SeedNoise, ap_from_matches, compare, image_bootstrap,
                          metric_from_matches, pooled_variance, seed_noise, seed_term)

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
# Intervals


def test_row_against_itself_is_exactly_zero(synth):
    c = compare([synth["a"]], [synth["a"]], [], n=200)
    assert (c.delta, c.low, c.high, c.sd_images, c.sd_seeds) == (0.0, 0.0, 0.0, 0.0, 0.0)


def test_planted_improvement_is_detected_both_ways(synth):
    better = compare([synth["a"]], [synth["b"]], [], n=300)
    worse = compare([synth["b"]], [synth["a"]], [], n=300)
    assert better.low > 0 and worse.high < 0
    assert better.delta == pytest.approx(ap_from_matches(synth["a"]) - ap_from_matches(synth["b"]))
    assert better.low < better.delta < better.high and better.seeds == (1, 1) and better.images == 300


def test_deterministic_with_a_seed(synth):
    one = compare([synth["a"]], [synth["b"]], [], n=200, seed=7)
    assert one == compare([synth["a"]], [synth["b"]], [], n=200, seed=7)
    other = compare([synth["a"]], [synth["b"]], [], n=200, seed=8)
    assert (one.low, one.high) != (other.low, other.high)


def test_interval_width_shrinks_like_one_over_sqrt_images():
    widths = {}
    for num_images in (60, 240):
        gt = synthetic_gt(num_images, seed=11)
        a = match_table(gt, planted_results(gt, 0.05, 0.1, 1.0, 1))
        b = match_table(gt, planted_results(gt, 0.08, 0.15, 1.0, 2))
        c = compare([a], [b], [], n=400)
        widths[num_images] = c.high - c.low
    assert 1.4 < widths[60] / widths[240] < 2.9, widths  # sqrt(4) = 2


def test_the_image_draw_is_shared_by_both_rows_and_every_seed():
    """Each row's mean over its seeds; a table given to both rows differs from itself by exactly zero."""
    gt = synthetic_gt(120, seed=5)
    seeds_a = [match_table(gt, planted_results(gt, noise, 0.1, 1.0, 20 + s)) for s, noise in enumerate((0.04, 0.06))]
    seeds_b = [match_table(gt, planted_results(gt, 0.07, 0.1, 1.0, 30))]
    delta, replicates = image_bootstrap(seeds_a, seeds_b, n=50)
    assert delta == pytest.approx(np.mean([ap_from_matches(t) for t in seeds_a]) - ap_from_matches(seeds_b[0]))
    same, zeros = image_bootstrap(seeds_a, seeds_a, n=50)
    assert same == 0.0 and not zeros.any()
    with pytest.raises(ValueError, match="same images"):
        image_bootstrap(seeds_a, [match_table(synthetic_gt(10), [])], n=5)


def test_pooled_variance_weights_each_group_by_its_degrees_of_freedom():
    pool = pooled_variance([[1.0, 3.0], [2.0, 4.0, 6.0], [5.0]])  # a one-seed group adds nothing
    assert (pool.df, pool.groups, pool.source) == (3, 2, "pooled")
    assert pool.variance == pytest.approx((2.0 * 1 + 4.0 * 2) / 3)
    assert pooled_variance([[1.0], [2.0]]) is None
    own = seed_noise([float(v) for v in range(OWN_SEEDS)], pool)
    assert own.source == "own" and own.df == OWN_SEEDS - 1
    assert own.variance == pytest.approx(np.var(range(OWN_SEEDS), ddof=1))
    assert seed_noise([1.0, 2.0], pool) is pool


def test_two_rows_on_one_pool_add_their_shares_and_keep_its_degrees_of_freedom():
    pool = SeedNoise(0.04, 6, "pooled", 6)
    assert seed_term([(pool, 1), (pool, 3)]) == (pytest.approx(0.04 * (1 + 1 / 3)), 6)
    own = SeedNoise(0.09, 4, "own")
    variance, df = seed_term([(pool, 2), (own, 5)])  # independent estimates: Welch-Satterthwaite
    assert variance == pytest.approx(0.02 + 0.018)
    assert df == pytest.approx(0.038 ** 2 / (0.02 ** 2 / 6 + 0.018 ** 2 / 4))
    assert seed_term([]) == (0.0, math.inf)


def test_seed_noise_widens_a_one_seed_comparison_beyond_seed_noise_alone(synth):
    """With one seed per row the pooled seed SD still enters: the half-width is at least t·σ·√2."""
    pool = SeedNoise(0.012 ** 2, 7, "pooled", 7)
    images_only = compare([synth["a"]], [synth["b"]], [], n=300)
    both = compare([synth["a"]], [synth["b"]], [(pool, 1), (pool, 1)], n=300)
    assert both.delta == images_only.delta and both.sd_images == images_only.sd_images
    assert both.sd_seeds == pytest.approx(0.012 * math.sqrt(2)) and both.df == 7
    half = (both.high - both.low) / 2
    assert half >= student_t.ppf(0.975, 7) * 0.012 * math.sqrt(2)
    assert half == pytest.approx(student_t.ppf(0.975, 7) * math.hypot(both.sd_images, both.sd_seeds))


# --------------------------------------------------------------------------------------------------
# Calibration by simulation: rows with a known difference, and A/A pairs

THRESHOLDS = np.linspace(0.5, 0.95, 10)


def simulated_table(quality: np.ndarray, rng: np.random.Generator) -> MatchTable:
    """One person and one detection per image: OKS = sigmoid(quality), its score a noisy quality."""
    n = len(quality)
    matched = np.broadcast_to(1 / (1 + np.exp(-quality)) > THRESHOLDS[:, None], (10, n))
    people = np.stack([np.ones(n, np.int64), np.ones(n, np.int64), np.zeros(n, np.int64)])
    return MatchTable(np.arange(n), people, np.arange(n), quality + rng.normal(0, 1.0, n), np.stack([matched] * 3),
                      np.zeros((3, 10, n), bool), THRESHOLDS, np.linspace(0.0, 1.0, 101))


@pytest.fixture(scope="module")
def simulated() -> dict:
    """80 studies of 6 configurations × 3 seeds on 100 shared images; configuration 0 is better by a
    fixed amount.  A training's quality = configuration + seed effect + image difficulty + noise."""
    rng = np.random.default_rng(0)
    configs, seeds, images = 6, 3, 100
    deltas, intervals, aa, aa_images = [], [], [], []
    for sim in range(80):
        difficulty = rng.normal(1.0, 1.5, images)
        rows = [[simulated_table(0.4 * (c == 0) + rng.normal(0, 0.25) + difficulty + rng.normal(0, 0.5, images), rng)
                 for _ in range(seeds)] for c in range(configs)]
        values = [[ap_from_matches(t) for t in row] for row in rows]
        pool, cache = pooled_variance(values), {}
        for b in range(1, configs):  # the better configuration against each of the others
            c = compare(rows[0], rows[b], [(pool, seeds), (pool, seeds)], n=100, seed=sim, cache=cache)
            deltas.append(c.delta)
            intervals.append((c.low, c.high))
        for b in range(1, configs):  # A/A: two seeds of one configuration as two one-seed rows
            others = pooled_variance(values[:b] + values[b + 1:])
            for s, t in itertools.combinations(range(seeds), 2):
                with_seeds = compare([rows[b][s]], [rows[b][t]], [(others, 1), (others, 1)], n=100, seed=sim,
                                     cache=cache)
                images_only = compare([rows[b][s]], [rows[b][t]], [], n=100, seed=sim, cache=cache)
                aa.append(with_seeds.low > 0 or with_seeds.high < 0)
                aa_images.append(images_only.low > 0 or images_only.high < 0)
    truth = float(np.mean(deltas))  # the expected difference, over 400 comparisons
    return {"truth": truth, "coverage": np.mean([low <= truth <= high for low, high in intervals]),
            "aa": float(np.mean(aa)), "aa_images": float(np.mean(aa_images)), "pairs": len(aa)}


def test_the_interval_covers_a_known_difference_95_percent_of_the_time(simulated):
    assert simulated["truth"] > 0.05  # a real difference, not a null one
    assert 0.90 <= simulated["coverage"] <= 0.98, simulated


def test_two_seeds_of_one_configuration_are_called_different_at_most_5_percent_of_the_time(simulated):
    """The A/A rate at its nominal 5% (within the simulation's error); images alone call most pairs different."""
    assert simulated["pairs"] == 80 * 5 * 3
    assert 0.01 <= simulated["aa"] <= 0.07, simulated
    assert simulated["aa_images"] > 0.3, simulated


def test_metric_matrix_matches_single_calls(synth):
    counts = np.random.default_rng(0).multinomial(300, np.full(300, 1 / 300), size=5)
    batch = metric_from_matches(synth["a"], counts, "AP_M")
    single = [ap_from_matches(synth["a"], np.repeat(synth["a"].image_ids, row), "AP_M") for row in counts]
    np.testing.assert_allclose(batch, single, rtol=0, atol=1e-15)
