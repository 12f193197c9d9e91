"""Intervals for comparisons: COCO keypoint AP from a per-image match table, and a paired bootstrap.

pycocotools' ``COCOeval`` matches every detection of an image to the ground truth once (``evaluate``);
AP is then a function of those matches alone (``accumulate``).  ``match_table`` runs the first step with
the same parameters as ``hhrnet.evaluation`` and keeps, per detection, its image, score and per-OKS-threshold
"matched" / "ignored" flags (for the areas all / medium / large), and per image the number of counted
(non-ignored) people.  ``ap_from_matches`` redoes the second step for any multiset of images: a repeated
image adds its detections and its people again.  On the evaluated set it equals pycocotools' numbers.

``paired_bootstrap`` resamples validation images (the same draw for both rows and every seed) and
seeds (paired by index when both rows come from the same seeds) and returns the interval of
ΔAP = AP(a) − AP(b); ``verdict`` turns an interval into a sentence.  "≈" is an equivalence claim: the
whole 95% interval (not the estimate) inside ±0.005 AP, i.e. two one-sided tests at 2.5% each (conservative).
"""

from __future__ import annotations

import contextlib
import copy
import io
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from hhrnet.evaluation import load_ground_truth, matched_cocoeval
from hhrnet.io import atomic_write
from hhrnet.keypoints import COCO_17, KeypointSet

AREAS: tuple[str, ...] = ("all", "medium", "large")  # COCOeval keypoint areaRngLbl, in its order
METRICS: dict[str, tuple[str, int | None]] = {  # name -> (area, OKS threshold index or None = mean of all)
    "AP": ("all", None), "AP50": ("all", 0), "AP75": ("all", 5), "AP_M": ("medium", None), "AP_L": ("large", None),
}
MAX_DETS = 20          # COCOeval keypoint params: maxDets = [20]
_EPS = np.spacing(1)   # the precision denominator's epsilon in COCOeval.accumulate


# --------------------------------------------------------------------------------------------------
# The match table


@dataclass
class MatchTable:
    """Everything AP needs from one evaluation, per detection and per image.

    ``image_ids (I,)``: the evaluated images (sorted); ``people (A, I)``: non-ignored GT people per area;
    ``det_image (D,)``: index into ``image_ids``; ``det_score (D,)``; ``matched`` and ``ignored``
    ``(A, T, D)`` bool (``COCOeval`` ``dtMatches != 0`` and ``dtIgnore``); ``iou_thrs (T,)``,
    ``rec_thrs (R,)``.  Detections are each image's top 20 in image order, best first, as in ``evalImgs``.
    """

    image_ids: np.ndarray
    people: np.ndarray
    det_image: np.ndarray
    det_score: np.ndarray
    matched: np.ndarray
    ignored: np.ndarray
    iou_thrs: np.ndarray
    rec_thrs: np.ndarray

    def save(self, path: str | Path) -> Path:
        """Write a compressed ``.npz`` (flags bit-packed); ``MatchTable.load`` reads it back."""
        path = Path(path)
        arrays = asdict(self)
        shape = np.array(self.matched.shape)
        arrays["matched"] = np.packbits(self.matched.reshape(-1))
        arrays["ignored"] = np.packbits(self.ignored.reshape(-1))
        atomic_write(path, lambda f: np.savez_compressed(f, flags_shape=shape, **arrays))
        return path

    @classmethod
    def load(cls, path: str | Path) -> "MatchTable":
        with np.load(Path(path)) as z:
            shape = tuple(int(s) for s in z["flags_shape"])
            size = int(np.prod(shape))
            flags = {k: np.unpackbits(z[k], count=size).astype(bool).reshape(shape) for k in ("matched", "ignored")}
            return cls(z["image_ids"], z["people"], z["det_image"], z["det_score"], flags["matched"],
                       flags["ignored"], z["iou_thrs"], z["rec_thrs"])

    def counts(self, image_ids: Iterable[int] | None = None) -> np.ndarray:
        """``(I,)`` multiplicity of each table image in a list of image ids (repeats allowed)."""
        if image_ids is None:
            return np.ones(len(self.image_ids), np.int64)
        ids = np.asarray(list(image_ids), np.int64)
        index = np.searchsorted(self.image_ids, ids)
        if ids.size and (index.max() >= len(self.image_ids) or np.any(self.image_ids[index] != ids)):
            unknown = sorted(set(ids.tolist()) - set(self.image_ids.tolist()))
            raise ValueError(f"image ids not in the match table: {unknown[:10]}")
        return np.bincount(index, minlength=len(self.image_ids)).astype(np.int64)


def _empty_results(gt: Any) -> Any:
    """A results ``COCO`` with no detections (``loadRes`` cannot take an empty list)."""
    from pycocotools.coco import COCO

    dt = COCO()
    dt.dataset = {"images": list(gt.dataset["images"]), "categories": copy.deepcopy(gt.dataset["categories"]),
                  "annotations": []}
    with contextlib.redirect_stdout(io.StringIO()):
        dt.createIndex()
    return dt


def match_table(gt: Any, results: Sequence[dict[str, Any]], image_ids: Sequence[int] | None = None,
                keypoints: KeypointSet = COCO_17) -> MatchTable:
    """Run ``COCOeval.evaluate()`` exactly as ``evaluate_coco`` does and keep its matches.

    ``gt``: a pycocotools ``COCO`` or an annotation file; ``results``: COCO keypoint result entries;
    ``image_ids``: the evaluated images (default: every image of ``gt``).
    """
    gt = load_ground_truth(gt)
    results = list(results)
    image_ids = sorted(gt.getImgIds()) if image_ids is None else list(image_ids)
    ev = matched_cocoeval(gt, results, image_ids, keypoints, dt=None if results else _empty_results(gt))
    p = ev.params
    if len(p.catIds) != 1 or list(p.maxDets) != [MAX_DETS] or tuple(p.areaRngLbl) != AREAS:
        raise ValueError(f"match_table handles one category, maxDets [20] and areas {AREAS}; got categories "
                         f"{p.catIds}, maxDets {p.maxDets}, areas {p.areaRngLbl}")
    num_images, num_thrs = len(p.imgIds), len(p.iouThrs)
    people = np.zeros((len(AREAS), num_images), np.int64)
    det_image, det_score, matched, ignored = [], [], [[] for _ in AREAS], [[] for _ in AREAS]
    for a in range(len(AREAS)):
        for i in range(num_images):
            e = ev.evalImgs[a * num_images + i]  # one category: evalImgs is ordered [area][image]
            if e is None:
                continue
            people[a, i] = int(np.count_nonzero(np.asarray(e["gtIgnore"]) == 0))
            scores = np.asarray(e["dtScores"][:MAX_DETS], np.float64)
            if a == 0:
                det_image.append(np.full(len(scores), i, np.int64))
                det_score.append(scores)
            matched[a].append(np.asarray(e["dtMatches"])[:, :MAX_DETS].reshape(num_thrs, -1) != 0)
            ignored[a].append(np.asarray(e["dtIgnore"])[:, :MAX_DETS].reshape(num_thrs, -1).astype(bool))

    def cat(parts: list, dtype: Any, shape: tuple) -> np.ndarray:
        return np.concatenate(parts, axis=-1).astype(dtype) if parts else np.zeros(shape, dtype)

    return MatchTable(
        image_ids=np.asarray(p.imgIds, np.int64), people=people,
        det_image=cat(det_image, np.int64, (0,)), det_score=cat(det_score, np.float64, (0,)),
        matched=np.stack([cat(m, bool, (num_thrs, 0)) for m in matched]),
        ignored=np.stack([cat(g, bool, (num_thrs, 0)) for g in ignored]),
        iou_thrs=np.asarray(p.iouThrs, np.float64), rec_thrs=np.asarray(p.recThrs, np.float64))


# --------------------------------------------------------------------------------------------------
# AP of weighted image sets


def _needed_true_positives(rec_thrs: np.ndarray, people: np.ndarray) -> np.ndarray:
    """``(B, R)`` the least integer m with ``m / people >= rec_thrs[k]`` in float64, as COCOeval compares."""
    need = np.ceil(rec_thrs[None, :] * people[:, None])
    with np.errstate(invalid="ignore", divide="ignore"):
        for _ in range(2):  # the float product can be one off either way; settle on the exact boundary
            need = np.where((need > 0) & ((need - 1) / people[:, None] >= rec_thrs), need - 1, need)
            need = np.where(need / people[:, None] < rec_thrs, need + 1, need)
    return need


def _ap_per_threshold(table: MatchTable, counts: np.ndarray, area: str = "all", chunk: int = 250) -> np.ndarray:
    """``(B, T)`` AP per OKS threshold (mean of the 101-point interpolated precision) for ``counts (B, I)``.

    COCOeval.accumulate with every image weighted by its count (a detection of weight w is w adjacent
    copies, which leaves the interpolated precision of the collapsed sequence unchanged).  Only true
    positives are visited: the interpolated precision at recall r is the largest precision among
    positions with recall >= r, and a non-TP position never exceeds the TP position before it.  For
    each r the first TP position reaching it comes from one search on the integer TP counts.
    Replicates without any counted person give -1, as COCOeval does.
    """
    a = AREAS.index(area)
    counts = np.atleast_2d(np.asarray(counts, np.int64))
    num_rep, num_thrs, num_rec = len(counts), len(table.iou_thrs), len(table.rec_thrs)
    out = np.zeros((num_rep, num_thrs))
    order = np.argsort(-table.det_score, kind="mergesort")  # COCOeval's global order (stable on ties)
    det_image = table.det_image[order]
    ignored = table.ignored[a][:, order]
    tp_flag = table.matched[a][:, order] & ~ignored
    people = counts @ table.people[a].astype(np.int64)  # (B,) counted people of each replicate
    need_all = _needed_true_positives(table.rec_thrs, people.astype(np.float64))
    for start in range(0, num_rep, chunk):
        c = counts[start:start + chunk].astype(np.int32)
        n = len(c)
        rows = np.arange(n, dtype=np.int64)[:, None]
        w = c[:, det_image]                       # (n, D) detection weights
        seen = np.cumsum(w, axis=1, dtype=np.int32)  # weight of all detections up to each position
        need = need_all[start:start + n].astype(np.int64)
        for t in range(num_thrs):
            pos = np.flatnonzero(tp_flag[t])
            if pos.size == 0:
                continue
            tp = np.cumsum(w[:, pos], axis=1, dtype=np.int32)  # (n, P) true positives up to each TP position
            valid = seen[:, pos]                  # every non-ignored detection up to there: TP + FP
            ign = np.flatnonzero(ignored[t])
            if ign.size:
                ign_cum = np.concatenate([np.zeros((n, 1), np.int32), np.cumsum(w[:, ign], axis=1, dtype=np.int32)], 1)
                valid = valid - ign_cum[:, np.searchsorted(ign, pos, side="right")]
            pr = tp / (valid.astype(np.float64) + _EPS)  # = tp / (fp + tp + eps), the integers exact
            interp = np.maximum.accumulate(pr[:, ::-1], axis=1)[:, ::-1]  # best precision here or later
            # first TP position whose count reaches the needed TPs, one search over all rows at once
            span = int(max(tp[:, -1].max(), need.max())) + 2
            keys = (tp + rows * span).ravel()
            first = np.searchsorted(keys, (need + rows * span).ravel(), side="left").reshape(n, num_rec)
            first -= rows * pos.size
            hit = first < pos.size
            q = np.where(hit, np.take_along_axis(interp, np.minimum(first, pos.size - 1), axis=1), 0.0)
            out[start:start + n, t] = q.mean(axis=1)
    out[people <= 0] = -1.0
    return out


def metric_from_matches(table: MatchTable, counts: np.ndarray, metric: str = "AP") -> np.ndarray:
    """``(B,)`` one of ``METRICS`` (AP, AP50, AP75, AP_M, AP_L) for image multiplicities ``counts (B, I)``."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}: choose one of {list(METRICS)}")
    area, thr = METRICS[metric]
    per_thr = _ap_per_threshold(table, counts, area)
    values = per_thr.mean(axis=1) if thr is None else per_thr[:, thr]
    return np.where(per_thr[:, 0] < 0, -1.0, values)


def ap_from_matches(table: MatchTable, image_ids: Iterable[int] | None = None, metric: str = "AP") -> float:
    """AP (or AP50, AP75, AP_M, AP_L) of a multiset of the table's images (default: each once).

    On the evaluated set this is pycocotools' number; a repeated image contributes its detections and
    its people once per repeat.
    """
    return float(metric_from_matches(table, table.counts(image_ids)[None], metric)[0])


# --------------------------------------------------------------------------------------------------
# Paired bootstrap


@dataclass
class Comparison:
    """ΔAP = a − b: the observed difference, its percentile interval, P(Δ ≤ 0) and the verdict."""

    metric: str
    delta: float
    low: float
    high: float
    p_le_0: float
    level: float
    replicates: int
    images: int
    seeds: tuple[int, int]
    verdict: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def verdict(low: float, high: float, margin: float = 0.005) -> str:
    """``a > b`` / ``a < b`` if the interval excludes 0; ``a ≈ b`` if all of it is inside ±margin; else none."""
    if low > 0:
        return "a > b"
    if high < 0:
        return "a < b"
    if -margin < low and high < margin:
        return "a ≈ b"
    return "no difference beyond noise"


def _check_same_images(tables: Sequence[MatchTable]) -> np.ndarray:
    ids = tables[0].image_ids
    for t in tables[1:]:
        if not np.array_equal(t.image_ids, ids):
            raise ValueError("all match tables must be evaluated on the same images (a paired comparison)")
    return ids


def paired_bootstrap(tables_a: Sequence[MatchTable], tables_b: Sequence[MatchTable], n: int = 2000,
                     seed: int = 0, level: float = 0.95, metric: str = "AP", margin: float = 0.005,
                     paired_seeds: bool | None = None, resample_seeds: bool = True) -> Comparison:
    """Interval of Δ = mean-over-seeds metric(a) − metric(b), one match table per trained seed.

    Each replicate draws the validation images with replacement (one draw shared by both rows and all
    seeds) and the seeds with replacement (one draw of indices for both rows when ``paired_seeds``,
    default: when both rows have as many seeds, i.e. the same trainings' seeds).  With one seed per row
    it is the image bootstrap; ``resample_seeds=False`` keeps every seed once (images only).  ``delta``
    is the observed difference; the interval is the percentile one.
    """
    tables_a, tables_b = list(tables_a), list(tables_b)
    if not tables_a or not tables_b:
        raise ValueError("each row needs at least one match table (one per seed)")
    ids = _check_same_images(tables_a + tables_b)
    paired_seeds = len(tables_a) == len(tables_b) if paired_seeds is None else paired_seeds
    if paired_seeds and len(tables_a) != len(tables_b):
        raise ValueError(f"paired seeds need as many tables in both rows, got {len(tables_a)} and {len(tables_b)}")
    rng = np.random.default_rng(seed)
    num_images = len(ids)
    counts = rng.multinomial(num_images, np.full(num_images, 1.0 / num_images), size=n)  # (n, I) image draws

    def seed_weights(num_seeds: int) -> np.ndarray:  # (n, S) how often each seed is drawn
        if not resample_seeds:
            return np.full((n, num_seeds), 1.0 / num_seeds)
        return rng.multinomial(num_seeds, np.full(num_seeds, 1.0 / num_seeds), size=n) / num_seeds

    weights_a = seed_weights(len(tables_a))
    weights_b = weights_a if paired_seeds else seed_weights(len(tables_b))
    full = np.ones((1, num_images))
    observed = [np.mean([metric_from_matches(t, full, metric)[0] for t in tables]) for tables in (tables_a, tables_b)]
    cache: dict[int, np.ndarray] = {}  # a table given to both rows (or twice) is computed once

    def per_seed(tables: list[MatchTable]) -> np.ndarray:  # (n, S) the metric of every seed and replicate
        for t in tables:
            if id(t) not in cache:
                cache[id(t)] = metric_from_matches(t, counts, metric)
        return np.stack([cache[id(t)] for t in tables], axis=1)

    per_a, per_b = per_seed(tables_a), per_seed(tables_b)
    deltas = (per_a * weights_a).sum(axis=1) - (per_b * weights_b).sum(axis=1)
    deltas = deltas[(per_a[:, 0] >= 0) & (per_b[:, 0] >= 0)]  # a draw without any counted person has no AP
    tail = (1.0 - level) / 2.0
    low, high = (float(v) for v in np.quantile(deltas, [tail, 1.0 - tail]))
    return Comparison(metric=metric, delta=float(observed[0] - observed[1]), low=low, high=high,
                      p_le_0=float(np.mean(deltas <= 0)), level=level, replicates=len(deltas), images=num_images,
                      seeds=(len(tables_a), len(tables_b)), verdict=verdict(low, high, margin))
