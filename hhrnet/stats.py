"""Intervals for comparisons of trained networks: AP of resampled image sets, plus the seeds' variance.

AP is a function of ``COCOeval``'s matches alone (``hhrnet.evaluation.MatchTable``): ``ap_from_matches``
redoes ``COCOeval.accumulate`` for any multiset of the evaluated images (a repeated image adds its
detections and its people again); on the evaluated set it equals pycocotools' numbers.

A difference Δ = metric(a) − metric(b), each row the mean over its seeds, has two sources of noise
(the book's ablations chapter gives the formula and the reasons):

* which validation images: ``image_bootstrap`` resamples them, one draw shared by both rows and every
  seed (the rows are scored on the same images), each row's seeds kept fixed;
* which training seeds: ``SeedNoise``, the seed-to-seed variance of a row's metric (two different
  trainings) or of the per-seed difference (two test settings of one network), the row's own when it
  has ``OWN_SEEDS`` seeds or more, else ``pooled_variance`` over the study's evaluations.

``compare`` adds the two variances and returns Δ ± t·sd, with the Welch–Satterthwaite degrees of
freedom of the seed term (the image term is taken as exact).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
from scipy.stats import t as student_t

from hhrnet.evaluation import AREAS, MatchTable

METRICS: dict[str, tuple[str, int | None]] = {  # name -> (area, OKS threshold index or None = mean of all)
    "AP": ("all", None), "AP50": ("all", 0), "AP75": ("all", 5), "AP_M": ("medium", None), "AP_L": ("large", None),
}
OWN_SEEDS = 5          # a row with fewer seeds borrows the study's pooled seed variance (its own has < 4 df)
_EPS = np.spacing(1)   # the precision denominator's epsilon in COCOeval.accumulate


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
# Seed noise


@dataclass(frozen=True)
class SeedNoise:
    """The seed-to-seed variance of one quantity and where it was measured.

    ``df``: degrees of freedom of the estimate (Σ seeds − 1 over the groups it pools); ``source``: ``own``
    (the row's own seeds) or ``pooled`` (``groups`` evaluations of the study).
    """

    variance: float
    df: int
    source: str
    groups: int = 1

    @property
    def sd(self) -> float:
        return math.sqrt(self.variance)


def pooled_variance(groups: Iterable[Sequence[float]]) -> SeedNoise | None:
    """Σ (n − 1) s² / Σ (n − 1) over the groups with two or more values; None when none has."""
    usable = [np.asarray(g, np.float64) for g in groups if len(g) > 1]
    if not usable:
        return None
    df = sum(len(g) - 1 for g in usable)
    variance = sum(float(np.var(g, ddof=1)) * (len(g) - 1) for g in usable) / df
    return SeedNoise(variance, df, "pooled", len(usable))


def seed_noise(values: Sequence[float], pooled: SeedNoise | None) -> SeedNoise | None:
    """The variance of one row's per-seed values: its own with ``OWN_SEEDS`` or more, else the pool's."""
    if len(values) >= OWN_SEEDS:
        return SeedNoise(float(np.var(np.asarray(values, np.float64), ddof=1)), len(values) - 1, "own")
    return pooled


def seed_term(parts: Sequence[tuple[SeedNoise, int]]) -> tuple[float, float]:
    """Variance of Δ's seed part and its degrees of freedom, from ``(noise, seeds)`` of each mean in Δ.

    Means sharing one estimate (both rows on the pool) add their shares of it, ``σ² (1/n_a + 1/n_b)``,
    with its df; independent estimates combine by Welch–Satterthwaite.
    """
    share: dict[int, float] = defaultdict(float)
    noises = {}
    for noise, seeds in parts:
        share[id(noise)] += 1.0 / seeds
        noises[id(noise)] = noise
    terms = [(noises[k].variance * w, noises[k].df) for k, w in share.items()]
    variance = sum(v for v, _ in terms)
    if variance == 0:
        return 0.0, math.inf
    return variance, variance ** 2 / sum(v ** 2 / df for v, df in terms)


# --------------------------------------------------------------------------------------------------
# Image noise and the interval


def _check_same_images(tables: Sequence[MatchTable]) -> np.ndarray:
    ids = tables[0].image_ids
    for t in tables[1:]:
        if not np.array_equal(t.image_ids, ids):
            raise ValueError("all match tables must be evaluated on the same images (a paired comparison)")
    return ids


Replicates = dict[tuple[int, str, int, int], tuple[float, np.ndarray]]  # (table id, metric, n, seed) -> values


def image_bootstrap(tables_a: Sequence[MatchTable], tables_b: Sequence[MatchTable], n: int = 1000,
                    seed: int = 0, metric: str = "AP", cache: Replicates | None = None) -> tuple[float, np.ndarray]:
    """Δ = mean-over-seeds metric(a) − metric(b) on the evaluated images, and ``(n,)`` replicates of it
    over images drawn with replacement (one draw for both rows and every seed; draws without any
    counted person, which have no AP, are left out).

    ``cache`` keeps each table's values between calls (the draw depends only on ``n``, ``seed`` and the
    number of images), for a caller that compares one table many times and keeps the tables alive.
    """
    tables_a, tables_b = list(tables_a), list(tables_b)
    if not tables_a or not tables_b:
        raise ValueError("each row needs at least one match table (one per seed)")
    num_images = len(_check_same_images(tables_a + tables_b))
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(num_images, np.full(num_images, 1.0 / num_images), size=n)  # (n, I) image draws
    full = np.ones((1, num_images), np.int64)
    cache = {} if cache is None else cache  # a table in both rows (or twice) is computed once

    def per_seed(tables: list[MatchTable]) -> tuple[np.ndarray, np.ndarray]:
        keys = [(id(t), metric, n, seed) for t in tables]
        for t, key in zip(tables, keys):
            if key not in cache:
                cache[key] = (float(metric_from_matches(t, full, metric)[0]), metric_from_matches(t, counts, metric))
        return np.array([cache[k][0] for k in keys]), np.stack([cache[k][1] for k in keys], axis=1)

    (obs_a, rep_a), (obs_b, rep_b) = per_seed(tables_a), per_seed(tables_b)
    defined = (rep_a >= 0).all(axis=1) & (rep_b >= 0).all(axis=1)
    return float(obs_a.mean() - obs_b.mean()), (rep_a.mean(axis=1) - rep_b.mean(axis=1))[defined]


@dataclass
class Comparison:
    """Δ = a − b with its interval from both noises: ``sd_images`` (bootstrap), ``sd_seeds`` (``seed_term``)."""

    metric: str
    delta: float
    low: float
    high: float
    level: float
    sd_images: float
    sd_seeds: float
    df: float
    images: int
    seeds: tuple[int, int]


def interval(delta: float, image_variance: float, seed_variance: float, df: float,
             level: float = 0.95) -> tuple[float, float]:
    """Δ ± t_df · √(image variance + seed variance) (df infinite: the normal quantile)."""
    half = float(student_t.ppf(0.5 + level / 2, df)) * math.sqrt(image_variance + seed_variance)
    return delta - half, delta + half


def compare(tables_a: Sequence[MatchTable], tables_b: Sequence[MatchTable], seed_parts: Sequence[tuple[SeedNoise, int]],
            metric: str = "AP", level: float = 0.95, n: int = 1000, seed: int = 0,
            cache: Replicates | None = None) -> Comparison:
    """The interval of Δ = metric(a) − metric(b): images resampled (``image_bootstrap``), seeds' variance
    from ``seed_parts`` (``seed_term``: each row's noise for two trainings, the per-seed difference's
    for two test settings of one network)."""
    delta, replicates = image_bootstrap(tables_a, tables_b, n, seed, metric, cache)
    image_variance = float(np.var(replicates, ddof=1)) if len(replicates) > 1 else 0.0
    seed_variance, df = seed_term(seed_parts)
    low, high = interval(delta, image_variance, seed_variance, df, level)
    return Comparison(metric, delta, low, high, level, math.sqrt(image_variance), math.sqrt(seed_variance), df,
                      len(tables_a[0].image_ids), (len(tables_a), len(tables_b)))
