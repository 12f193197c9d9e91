"""From finished runs to the study's table and verdicts: ``gather``, ``summary_rows``, ``family_intervals``.

``gather`` publishes only results that are readable and stamped by the driver; every file it leaves
out is named (in the log and in ``summary.json``), so a failed or hand-edited run never enters the
table silently.  Each family's comparisons get a 95% interval with both noises (``hhrnet.stats``: the
validation images and the training seeds), and ``calibration`` measures how often that interval
calls a difference between two seeds of one configuration (an A/A test).
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
import statistics
from pathlib import Path
from typing import Any, Callable, Mapping

from ..evaluation import MATCHES, MatchTable
from ..io import atomic_write, atomic_write_json, check_finite_numbers
from ..stats import Comparison, Replicates, SeedNoise, compare, pooled_variance, seed_noise
from .claims import METRIC_KEYS, Expectation
from .errors import StudyError
from .plan import Study
from .spec import FamilySpec, PublishedSource, StudySpec

# ``hhrnet.diagnostics`` values of an evaluation with ``diagnostics: true``, prefixed so they never collide with
# the evaluation's own keys: APs averaged over seeds like METRIC_KEYS (null when a subset has no image), counts
# of the split (the same for every seed)
DIAGNOSTIC_PREFIX = "diag_"
DIAGNOSTIC_KEYS = tuple(DIAGNOSTIC_PREFIX + k for k in ("AP", "AP_gt_tags", "AP_gt_heatmaps", "AP_ceiling",
                                                        "AP_single", "AP_multi"))
DIAGNOSTIC_COUNTS = tuple(DIAGNOSTIC_PREFIX + k for k in ("n_images", "n_single", "n_multi", "n_empty"))

NOISE_TOLERANCE = 0.005  # half an AP point: the margin of "≥" and "≈"
SECONDARY = ("AP_M", "AP_L", "AP75")  # every verdict also reads these: where they move against AP beyond noise
OUTCOMES = ("holds", "contradicted", "undecided")  # what an interval says of a comparison
FIXED_WEIGHTS = SeedNoise(0.0, 1, "fixed weights")  # published weights: no training noise, the network is given


def diagnostic_metrics(values: Mapping[str, Any]) -> dict[str, Any]:
    """``hhrnet.diagnostics.diagnostics`` output as ``metrics.json`` keys (``diag_AP_gt_tags``, ...)."""
    return {key: values[key.removeprefix(DIAGNOSTIC_PREFIX)] for key in DIAGNOSTIC_KEYS + DIAGNOSTIC_COUNTS}


def read_result(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """``(metrics, None)`` for a readable, stamped ``metrics.json``; ``(None, reason)`` otherwise."""
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, "missing"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        return None, f"unreadable ({str(err).splitlines()[0]})"
    if not isinstance(metrics, dict):
        return None, "not a JSON object"
    if not metrics.get("stamp"):
        return None, "not stamped by the study driver (an interrupted or hand-made result)"
    check_finite_numbers(path, metrics, METRIC_KEYS + DIAGNOSTIC_KEYS)  # a stamped result with NaN or true is refused
    return metrics, None


PerSeed = dict[str, dict[int, dict[str, Any]]]  # evaluation -> seed -> its metrics.json


def read_results(study: Study, profile: str, log: Callable[[str], Any] = print,
                 leave_out: Mapping[str, str] | None = None) -> tuple[PerSeed, list[dict[str, str]]]:
    """Every published result of the profile by evaluation and seed, and the files left out (with why):
    unreadable or unstamped ones, and the runs ``leave_out`` names (``eval/<name>/seed<n>``: its reason)."""
    results = study.results_dir(profile)
    found: PerSeed = {}
    skipped = []
    for name in study.evaluations(profile):
        for seed in study.eval_seeds(name, profile):
            run = f"eval/{name}/seed{seed}"
            path = results / run / "metrics.json"
            metrics, reason = read_result(path)
            if metrics is not None and run in (leave_out or {}):
                metrics, reason = None, leave_out[run]
            if metrics is not None:
                found.setdefault(name, {})[seed] = metrics
            elif reason != "missing":
                skipped.append({"file": str(path.relative_to(study.root)), "reason": reason})
                log(f"gather: skipped {path}: {reason}")
    return found, skipped


def summary_row(study: Study, profile: str, name: str, per_seed: Mapping[int, Mapping[str, Any]]) -> dict[str, Any]:
    """One evaluation's row: mean ± std over its measured seeds, and what the first seed records."""
    ev = study.evaluations(profile)[name]
    runs = list(per_seed.values())
    row: dict[str, Any] = {"evaluation": name, "training": ev.training or ev.checkpoint, "seeds": len(runs)}
    for key in METRIC_KEYS + DIAGNOSTIC_KEYS:
        values = [m[key] for m in runs if m.get(key) is not None]
        row[key] = statistics.fmean(values) if values else None
        row[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else None
    for key in ("parameters", "gflops", "train_seconds", "train_images_per_s", "seconds_per_image",
                *DIAGNOSTIC_COUNTS):
        row[key] = runs[0].get(key)
    return row


def gather(study: Study, profile: str, log: Callable[[str], Any] = print,
           leave_out: Mapping[str, str] | None = None) -> Path:
    """``summary.csv`` / ``summary.json``: one row per evaluation (mean ± std over seeds), the study's seed
    noise, its A/A calibration and every family's comparisons with their intervals (``leave_out``: runs
    named in ``skipped`` with their reason instead)."""
    results = study.results_dir(profile)
    per_seed, skipped = read_results(study, profile, log, leave_out)
    rows = [summary_row(study, profile, name, seeds) for name, seeds in per_seed.items()]
    evidence = Evidence(study, profile, per_seed)
    summary: dict[str, Any] = {"profile": profile, "rows": rows, "seed_noise": evidence.noise_record(),
                               "calibration": calibration(evidence),
                               "families": family_intervals(evidence, log)}
    if skipped:
        summary["skipped"] = skipped
    atomic_write_json(results / "summary.json", summary)
    target = results / "summary.csv"
    if rows:
        text = io.StringIO(newline="")
        writer = csv.DictWriter(text, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
        atomic_write(target, text.getvalue())
    return target


def summary_rows(study: Study, profile: str) -> dict[str, dict[str, Any]]:
    """The gathered ``summary.json`` of a profile, by evaluation name (empty before any run)."""
    path = study.results_dir(profile) / "summary.json"
    if not path.exists():
        return {}
    try:
        return {r["evaluation"]: r for r in json.loads(path.read_text(encoding="utf-8"))["rows"]}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as err:
        raise StudyError(f"{path}: not a study summary ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); "
                         f"re-create it with python -m hhrnet study --profile {profile}") from None


# --------------------------------------------------------------------------------------------------
# The evidence: per-seed metrics, match tables and the study's pooled seed noise


class Evidence:
    """What the intervals of a profile are computed from: each evaluation's per-seed metrics and match
    tables, and the seed variance pooled over the profile's evaluations (``pools``)."""

    def __init__(self, study: Study, profile: str, per_seed: PerSeed) -> None:
        self.study, self.profile, self.per_seed = study, profile, per_seed
        self.evaluations = study.evaluations(profile)
        self._tables: dict[str, dict[int, MatchTable]] = {}
        self.replicates: Replicates = {}  # every table's bootstrap values, computed once (the tables stay loaded)

    def tables(self, name: str) -> dict[int, MatchTable]:
        """The evaluation's ``matches.npz`` by seed, for the seeds with a published result."""
        if name not in self._tables:
            folder = self.study.results_dir(self.profile) / "eval" / name
            paths = {seed: folder / f"seed{seed}" / MATCHES for seed in self.per_seed.get(name, {})}
            self._tables[name] = {seed: MatchTable.load(p) for seed, p in paths.items() if p.exists()}
        return self._tables[name]

    def values(self, name: str, metric: str, seeds: list[int] | None = None) -> list[float] | None:
        """The metric of each seed (None when a seed lacks it, e.g. AP_M of a CrowdPose row)."""
        runs = self.per_seed.get(name, {})
        found = [runs[s].get(metric) for s in (sorted(runs) if seeds is None else seeds)]
        return None if any(v is None for v in found) else [float(v) for v in found]

    def trained(self, name: str) -> bool:
        return self.evaluations[name].training is not None

    def pool_between(self, metric: str, leave_out: str | None = None) -> SeedNoise | None:
        """The seed variance of one row's metric, pooled over every trained evaluation with two or more seeds."""
        return pooled_variance(v for name in self.per_seed if self.trained(name) and name != leave_out
                               and (v := self.values(name, metric)) is not None)

    def pool_within(self, metric: str) -> SeedNoise | None:
        """The seed variance of the per-seed difference between two evaluations of one training, pooled
        over every such pair with two or more common seeds."""
        groups = []
        for a, b in itertools.combinations([n for n in self.per_seed if self.trained(n)], 2):
            if self.evaluations[a].training != self.evaluations[b].training:
                continue
            seeds = sorted(self.per_seed[a].keys() & self.per_seed[b].keys())
            va, vb = self.values(a, metric, seeds), self.values(b, metric, seeds)
            if va is not None and vb is not None:
                groups.append([x - y for x, y in zip(va, vb)])
        return pooled_variance(groups)

    def trainings_with_seeds(self) -> list[str]:
        """The trainings whose evaluations have two or more seeds: what the pools are measured on."""
        return sorted({self.evaluations[n].training for n, seeds in self.per_seed.items()
                       if self.trained(n) and len(seeds) > 1})

    def noise_record(self) -> dict[str, Any]:
        """The pooled seed SDs per metric, and what they pool (for ``summary.json`` and the book)."""
        def record(pool: SeedNoise | None) -> dict[str, Any] | None:
            return None if pool is None else {"sd": pool.sd, "df": pool.df, "groups": pool.groups}
        metrics = ("AP", *SECONDARY)
        return {"between_trainings": {m: record(self.pool_between(m)) for m in metrics},
                "one_network": {m: record(self.pool_within(m)) for m in metrics},
                "trainings": self.trainings_with_seeds()}


def claim_comparison(evidence: Evidence, a: str, b: str, metric: str = "AP") -> tuple[Comparison | None, str]:
    """Δ = metric(a) − metric(b) with its 95% interval, and where its seed noise comes from (or, without
    an interval, why: the reason names what is missing)."""
    ev = evidence.evaluations
    for name in (a, b):
        if name not in ev:
            return None, f"{name} is not part of the {evidence.profile} profile"
        if name not in evidence.per_seed:
            return None, f"{name} not run"
    one_network = ev[a].training is not None and ev[a].training == ev[b].training
    seeds_a, seeds_b = sorted(evidence.per_seed[a]), sorted(evidence.per_seed[b])
    if one_network:  # paired seed by seed: the seeds both rows have
        seeds_a = seeds_b = sorted(set(seeds_a) & set(seeds_b))
    ta, tb = evidence.tables(a), evidence.tables(b)
    missing = [n for n, t, seeds in ((a, ta, seeds_a), (b, tb, seeds_b)) if not seeds or any(s not in t for s in seeds)]
    if missing:
        return None, f"{', '.join(missing)} has no {MATCHES} for every seed (re-run its evaluation)"
    values_a, values_b = evidence.values(a, metric, seeds_a), evidence.values(b, metric, seeds_b)
    if values_a is None or values_b is None:
        return None, f"no {metric} in both rows"
    if one_network:  # the seeds' noise is the spread of the per-seed differences
        noises = [seed_noise([x - y for x, y in zip(values_a, values_b)], evidence.pool_within(metric))]
        parts, kind = [(noises[0], len(seeds_a))], "one network"
    else:  # each row's mean carries its own seeds' noise
        noises = [seed_noise(v, evidence.pool_between(metric)) if evidence.trained(n) else FIXED_WEIGHTS
                  for n, v in ((a, values_a), (b, values_b))]
        parts, kind = [(noises[0], len(seeds_a)), (noises[1], len(seeds_b))], "two trainings"
    if any(n is None for n in noises):
        return None, "no seed noise yet: no evaluation has two seeds (a second seed of any training measures it)"
    c = compare([ta[s] for s in seeds_a], [tb[s] for s in seeds_b], parts, metric=metric, cache=evidence.replicates)
    return c, f"{kind}; seed noise {' and '.join(dict.fromkeys(n.source for n in noises))}"


def expectation_outcome(op: str, low: float, high: float, margin: float = NOISE_TOLERANCE) -> str:
    """``holds``, ``contradicted`` or ``undecided``: what a 95% interval of Δ = a − b says of ``a op b``.

    ``>`` holds when the interval lies above 0; ``≥`` (not lower beyond noise) when it lies above
    −margin; ``≈`` when it lies inside ±margin.  ``>``/``≥`` are contradicted when it lies below 0,
    ``≈`` when it excludes 0.
    """
    if op == ">":
        return "holds" if low > 0 else "contradicted" if high < 0 else "undecided"
    if op == "≥":
        return "holds" if low > -margin else "contradicted" if high < 0 else "undecided"
    return "holds" if -margin < low and high < margin else "contradicted" if low > 0 or high < 0 else "undecided"


def check(evidence: Evidence, e: Expectation) -> dict[str, Any]:
    """One expectation decided by its interval, with AP(M), AP(L) and AP75 beside it: ``against_AP`` lists
    those whose interval excludes 0 on the other side of ΔAP.  Without an interval: ``reason``."""
    if not e.of_ap:
        return {"comparison": e.text,
                "reason": "compares two metrics of one row, on different images: no paired interval"}
    try:
        c, how = claim_comparison(evidence, e.a, e.b)
    except ValueError as err:  # e.g. rows evaluated on different images
        return {"comparison": e.text, "reason": str(err)}
    if c is None:
        return {"comparison": e.text, "reason": how}
    found: dict[str, Any] = {"comparison": e.text, "delta": c.delta, "low": c.low, "high": c.high,
                             "sd_images": c.sd_images, "sd_seeds": c.sd_seeds,
                             "df": c.df if math.isfinite(c.df) else None, "seeds": list(c.seeds),
                             "images": c.images, "noise": how, "outcome": expectation_outcome(e.op, c.low, c.high)}
    secondary = {}
    for metric in SECONDARY:
        m, _ = claim_comparison(evidence, e.a, e.b, metric)
        if m is not None:
            secondary[metric] = {"delta": m.delta, "low": m.low, "high": m.high}
    found["metrics"] = secondary
    found["against_AP"] = [k for k, m in secondary.items()
                           if (m["low"] > 0 or m["high"] < 0) and (m["delta"] > 0) != (c.delta > 0)]
    return found


def family_verdict(outcomes: list[str], expected: int) -> str:
    """A family's verdict: ``reproduces`` only when all of its comparisons are measured and hold."""
    measured = len(outcomes)
    counts = ", ".join(f"{outcomes.count(o)} {o}" for o in OUTCOMES if o in outcomes)
    if measured == 0:
        return f"not measured: 0 of {expected} comparisons"
    if measured < expected:
        return f"{measured} of {expected} measured: {counts}"
    if all(o == "holds" for o in outcomes):
        return f"reproduces: every comparison holds ({measured} of {expected})"
    if all(o == "contradicted" for o in outcomes):
        return f"contradicted: every comparison is ({measured} of {expected})"
    return f"{measured} of {expected} measured: {counts}"


def family_intervals(evidence: Evidence, log: Callable[[str], Any] = print) -> dict[str, Any]:
    """Per family: every expectation with its interval (``checks``), those without one and why
    (``unmeasured``), how many of them are measured, and the verdict."""
    families = {}
    for name, family in evidence.study.definition.families.items():
        decided = [check(evidence, e) for e in family.expect]
        checks = [c for c in decided if "outcome" in c]
        unmeasured = [c for c in decided if "outcome" not in c]
        verdict = family_verdict([c["outcome"] for c in checks], len(decided))
        families[name] = {"checks": checks, "unmeasured": unmeasured, "measured": len(checks),
                          "expected": len(decided), "verdict": verdict}
    return families


def calibration(evidence: Evidence) -> dict[str, Any]:
    """The A/A test: every pair of seeds of one evaluation compared as two one-seed rows of different
    trainings (the seed noise pooled over the *other* evaluations), and how often the interval excludes 0
    — a false "holds" or "contradicted" of any ``>`` claim between them."""
    pairs, false = 0, 0
    trainings = set()
    for name, runs in evidence.per_seed.items():
        if not evidence.trained(name) or len(runs) < 2:
            continue
        tables = evidence.tables(name)
        seeds = [s for s in sorted(runs) if s in tables]
        pool = evidence.pool_between("AP", leave_out=name)
        if len(seeds) < 2 or pool is None:
            continue
        trainings.add(evidence.evaluations[name].training)
        for s, t in itertools.combinations(seeds, 2):
            c = compare([tables[s]], [tables[t]], [(pool, 1), (pool, 1)], cache=evidence.replicates)
            pairs += 1
            false += c.low > 0 or c.high < 0
    return {"pairs": pairs, "false_positive_rate": false / pairs if pairs else None, "trainings": sorted(trainings)}


# --------------------------------------------------------------------------------------------------
# Published rows beside a family


def published_rows(family: FamilySpec, published: Mapping[str, PublishedSource]) -> list[tuple[str, Mapping[str, Any]]]:
    """``(source, row)`` published beside a family: the paper's ablation rows for it, else the official
    README rows of its evaluations (when two or more, since one row alone compares nothing)."""
    paper = published.get("paper_ablations")
    rows = [(f"paper, {r['table']}", r) for r in (paper.rows if paper else ()) if r.get("family") == family.name]
    if rows:
        return rows
    official = published.get("official")
    rows = [("official README", r) for r in (official.rows if official else ())
            if r.get("evaluation") in family.evaluations]
    return rows if len(rows) > 1 else []


def published_difference(family: FamilySpec, a: str, b: str,
                         published: Mapping[str, PublishedSource]) -> tuple[float, str] | None:
    """The published AP(a) − AP(b) beside a family and where it is from (e.g. ``paper, Table 5, (d) − (c)``);
    None unless both have a row.  An evaluation with several rows is read from its first (rows.yaml's order)."""
    first: dict[str, tuple[str, Mapping[str, Any]]] = {}
    for source, row in published_rows(family, published):
        first.setdefault(row.get("evaluation", ""), (source, row))
    if a not in first or b not in first:
        return None
    (source_a, row_a), (source_b, row_b) = first[a], first[b]
    tag_a, tag_b = (row.get("row", row["evaluation"]) for row in (row_a, row_b))
    where = f"{source_a}, {tag_a} − {tag_b}" if source_a == source_b else f"{source_a} {tag_a} − {source_b} {tag_b}"
    return row_a["AP"] - row_b["AP"], where


def published_agreement(definition: StudySpec, family: str,
                        rows: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """A family's ``compare_published`` check (rows.yaml): each of its measured evaluations beside the row of
    ``compare_published.source`` it reproduces (its ``published`` key), with AP(hhrnet) − AP(published) and
    whether that is within ``tolerance_AP``.  For published weights the network is fixed, so a difference
    beyond the tolerance is a difference in evaluation."""
    spec = definition.families[family]
    source = spec.compare_published.get("source")
    if not source:
        return []
    tolerance = float(spec.compare_published.get("tolerance_AP", 0.0))
    by_label = {r.get("evaluation") or r.get("label"): r for r in definition.published[source].rows}
    out = []
    for name in spec.evaluations:
        label = definition.evaluations[name].published.get(source)
        if name not in rows or label not in by_label:
            continue
        delta = rows[name]["AP"] - by_label[label]["AP"]
        out.append({"evaluation": name, "published row": f"{source} {label}", "AP": rows[name]["AP"],
                    "published AP": by_label[label]["AP"], "ΔAP": delta, "within": abs(delta) <= tolerance + 1e-12,
                    "tolerance": tolerance})
    return out


def ceiling_share(row: Mapping[str, Any]) -> float | None:
    """The network's AP as a percentage of its perfect-map ceiling (None without diagnostics)."""
    ap, ceiling = row.get("diag_AP"), row.get("diag_AP_ceiling")
    return 100 * ap / ceiling if ap is not None and ceiling else None
