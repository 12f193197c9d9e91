"""From finished runs to the study's table, verdicts and readings: ``gather``, ``summary_rows``,
``family_verdicts``, ``family_reading``.

``gather`` publishes only results that are readable and stamped by the driver; every file it leaves
out is named (in the log and in ``summary.json``), so a failed or hand-edited run never enters the
table silently.
"""

from __future__ import annotations

import csv
import io
import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from ..io import atomic_write, atomic_write_json
from .errors import StudyError

if TYPE_CHECKING:
    from .plan import Study
    from .spec import FamilySpec, PublishedSource, StudySpec

# COCO rows carry AP_M / AP_L (area), CrowdPose rows AP_easy / AP_medium / AP_hard (crowd index,
# hhrnet.evaluation.CROWD_METRIC_NAMES); a row without a key has None there
METRIC_KEYS = ("AP", "AP50", "AP75", "AP_M", "AP_L", "AR", "AR50", "AP_easy", "AP_medium", "AP_hard")

# ``hhrnet.diagnostics`` values of an evaluation with ``diagnostics: true``, prefixed so they never collide with
# the evaluation's own keys: APs averaged over seeds like METRIC_KEYS (null when a subset has no image), counts
# of the split (the same for every seed)
DIAGNOSTIC_PREFIX = "diag_"
DIAGNOSTIC_KEYS = tuple(DIAGNOSTIC_PREFIX + k for k in ("AP", "AP_gt_tags", "AP_gt_heatmaps", "AP_ceiling",
                                                        "AP_single", "AP_multi"))
DIAGNOSTIC_COUNTS = tuple(DIAGNOSTIC_PREFIX + k for k in ("n_images", "n_single", "n_multi", "n_empty"))


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
    bad = [k for k in METRIC_KEYS if k in metrics and not isinstance(metrics[k], (int, float))]
    bad += [k for k in DIAGNOSTIC_KEYS if metrics.get(k) is not None and not isinstance(metrics[k], (int, float))]
    if bad:
        return None, f"non-numeric {', '.join(bad)}"
    return metrics, None


def gather(study: "Study", profile: str, log: Callable[[str], Any] = print) -> Path:
    """``summary.csv`` / ``summary.json``: one row per evaluation (mean ± std over seeds)."""
    results = study.results_dir(profile)
    rows, skipped = [], []
    for name, ev in study.evaluations(profile).items():
        per_seed = []
        for seed in study.eval_seeds(name, profile):
            path = results / "eval" / name / f"seed{seed}" / "metrics.json"
            metrics, reason = read_result(path)
            if metrics is not None:
                per_seed.append(metrics)
            elif reason != "missing":
                skipped.append({"file": str(path.relative_to(study.root)), "reason": reason})
                log(f"gather: skipped {path}: {reason}")
        if not per_seed:
            continue
        row: dict[str, Any] = {"evaluation": name, "training": ev.training or ev.checkpoint, "seeds": len(per_seed)}
        for key in METRIC_KEYS + DIAGNOSTIC_KEYS:
            values = [m[key] for m in per_seed if m.get(key) is not None]
            row[key] = statistics.fmean(values) if values else None
            row[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else None
        first = per_seed[0]
        for key in ("parameters", "gflops", "train_seconds", "train_images_per_s", "seconds_per_image",
                    *DIAGNOSTIC_COUNTS):
            row[key] = first.get(key)
        rows.append(row)
    summary = {"profile": profile, "rows": rows, "families": family_intervals(study, profile, log)}
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


def summary_rows(study: "Study", profile: str) -> dict[str, dict[str, Any]]:
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
# Claims -> verdicts (the ablations page and the study's closing table)

NOISE_TOLERANCE = 0.005  # half an AP point: a smaller difference is noise even with a single seed


@dataclass(frozen=True)
class Expectation:
    """One comparison a claim implies: ``a > b`` (higher AP), ``a ≥ b`` (not lower beyond noise), ``a ≈ b``.

    A side may name another metric of the summary row: ``crowdpose_w32_512_ss.AP_easy >
    crowdpose_w32_512_ss.AP_hard`` compares two metrics of one row (``metric_a``, ``metric_b``).
    """

    a: str
    op: str
    b: str
    metric_a: str = "AP"
    metric_b: str = "AP"

    @classmethod
    def parse(cls, text: str) -> "Expectation":
        parts = text.split()
        if len(parts) != 3 or parts[1] not in (">", "≥", "≈"):
            raise ValueError(f"expectation {text!r} is not 'evaluation >|≥|≈ evaluation'")
        (a, ma), (b, mb) = (_side(parts[0], text), _side(parts[2], text))
        return cls(a, parts[1], b, ma, mb)

    @property
    def text(self) -> str:
        def side(name: str, metric: str) -> str:
            return name if metric == "AP" else f"{name}.{metric}"
        return f"{side(self.a, self.metric_a)} {self.op} {side(self.b, self.metric_b)}"

    def check(self, rows: dict[str, dict[str, Any]], tolerance: float = NOISE_TOLERANCE) -> dict[str, Any]:
        """The measured AP difference, whether it holds, and whether it is within noise.

        Noise is the larger of ``tolerance`` and twice the seeds' standard deviation of either row.
        """
        ra, rb = rows.get(self.a), rows.get(self.b)
        ma, mb, text = self.metric_a, self.metric_b, self.text
        if not ra or not rb or ra.get(ma) is None or rb.get(mb) is None:
            return {"comparison": text, "ΔAP": None, "holds": None, "within noise": None, "both zero": None}
        diff = ra[ma] - rb[mb]
        noise = max(tolerance, 2 * max(ra.get(f"{ma}_std") or 0, rb.get(f"{mb}_std") or 0))
        holds = {">": diff > 0, "≥": diff > -noise, "≈": abs(diff) <= noise}[self.op]
        return {"comparison": text, "ΔAP": round(100 * diff, 2), "holds": bool(holds),
                "within noise": abs(diff) <= noise, "both zero": ra[ma] == 0 and rb[mb] == 0}


def _side(side: str, text: str) -> tuple[str, str]:
    """``evaluation`` (its AP) or ``evaluation.METRIC`` (a key of ``METRIC_KEYS``)."""
    name, _, metric = side.partition(".")
    if metric and metric not in METRIC_KEYS:
        raise ValueError(f"expectation {text!r}: unknown metric {metric!r} (metrics: {', '.join(METRIC_KEYS)})")
    return name, metric or "AP"


def verdict(checks: list[dict[str, Any]]) -> str:
    """A family's verdict from its checked expectations (see the ablations chapter for the rules)."""
    measured = [c for c in checks if c["holds"] is not None]
    if not measured:
        return "not measured in this profile"
    if all(c["both zero"] for c in measured):
        return "inconclusive: AP is zero for every row (the networks are not trained enough to find people)"
    ops = [c["comparison"].split()[1] for c in measured]
    if ">" in ops and all(c["within noise"] for c in measured):
        return "inconclusive: every difference is within noise"  # "≥"/"≈" alone are met by noise
    held = sum(c["holds"] for c in measured)
    noisy = sum(c["within noise"] for c, op in zip(measured, ops) if op != "≈")
    note = f" ({noisy} of {len(measured)} differences within noise)" if noisy else ""
    if held == len(measured):
        return "reproduces in direction" + note
    return ("partly reproduces" if held else "does not reproduce at this scale") + note


def family_verdicts(study: "Study", profile: str) -> dict[str, tuple[list[dict[str, Any]], str]]:
    """``{family: (checked expectations, verdict)}`` for every family of ``rows.yaml``."""
    rows = summary_rows(study, profile)
    result = {}
    for name, family in study.definition.families.items():
        checks = [e.check(rows) for e in family.expect]
        result[name] = (checks, verdict(checks))
    return result


# --------------------------------------------------------------------------------------------------
# Claims -> intervals: paired bootstrap over validation images and seeds (``hhrnet.stats``)

OUTCOMES = ("holds", "contradicted", "undecided")  # what an interval says of a comparison (rows.yaml ``reading`` keys)


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


def family_outcome(outcomes: list[str]) -> str:
    """A family's verdict from its comparisons' outcomes ('not measured' when none has intervals)."""
    if not outcomes:
        return "not measured in this profile"
    if all(o == "holds" for o in outcomes):
        return "reproduces: every comparison decided by its 95% interval"
    if all(o == "contradicted" for o in outcomes):
        return "contradicted: every comparison decided against the claim"
    counts = ", ".join(f"{outcomes.count(o)} {o}" for o in OUTCOMES if o in outcomes)
    return f"mixed: {counts}"


def family_intervals(study: "Study", profile: str, log: Callable[[str], Any] = print) -> dict[str, Any]:
    """Per family, each expectation's ΔAP with its paired 95% interval over the seeds both rows have
    ``matches.npz`` for (paired seed by seed, and image by image within a seed)."""
    from ..evaluation import MATCHES
    from ..stats import MatchTable, paired_bootstrap

    results = study.results_dir(profile)
    evaluations = study.evaluations(profile)

    def tables(name: str) -> dict[int, MatchTable]:
        if name not in evaluations:
            return {}
        paths = {seed: results / "eval" / name / f"seed{seed}" / MATCHES for seed in study.eval_seeds(name, profile)}
        return {seed: MatchTable.load(p) for seed, p in paths.items() if p.exists()}

    families = {}
    for name, family in study.definition.families.items():
        checks = []
        # the paired bootstrap resamples whole-set AP; comparisons of other metrics have no interval here
        claims = [e for e in family.expect if (e.metric_a, e.metric_b) == ("AP", "AP")]
        for e in claims:
            a, b = tables(e.a), tables(e.b)
            seeds = sorted(a.keys() & b.keys())  # a study still running: the seeds both rows have so far
            if not seeds:
                continue
            try:
                c = paired_bootstrap([a[s] for s in seeds], [b[s] for s in seeds], margin=NOISE_TOLERANCE)
            except ValueError as err:  # e.g. rows evaluated on different images
                log(f"gather: no interval for {e.text}: {err}")
                continue
            checks.append({"comparison": e.text, "delta": c.delta, "low": c.low, "high": c.high,
                           "p_le_0": c.p_le_0, "seeds": list(c.seeds), "images": c.images,
                           "outcome": expectation_outcome(e.op, c.low, c.high)})
        verdict = family_outcome([c["outcome"] for c in checks])
        if 0 < len(checks) < len(claims):  # a study still running: say how much of the claim is measured
            verdict += f" ({len(checks)} of {len(claims)} comparisons measured so far)"
        families[name] = {"checks": checks, "verdict": verdict}
    return families


# --------------------------------------------------------------------------------------------------
# Intervals -> a family's reading: the measured numbers, then the hand-written text of each outcome measured

OUTCOME_VERBS = {"holds": "holds", "contradicted": "is contradicted", "undecided": "is undecided"}
READING_HEADINGS = {"holds": "What it shows", "contradicted": "Why it may differ at this scale",
                    "undecided": "Why it may be undecided at this scale"}


def published_rows(family: "FamilySpec",
                   published: Mapping[str, "PublishedSource"]) -> list[tuple[str, Mapping[str, Any]]]:
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


def published_agreement(definition: "StudySpec", family: str,
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


def published_difference(family: "FamilySpec", a: str, b: str,
                         published: Mapping[str, "PublishedSource"]) -> str | None:
    """The published AP(a) − AP(b) beside a family, e.g. ``+0.6 AP (paper, Table 5, (d) − (c))``; None
    unless both have a row.  An evaluation with several rows is read from its first (rows.yaml's order)."""
    first: dict[str, tuple[str, Mapping[str, Any]]] = {}
    for source, row in published_rows(family, published):
        first.setdefault(row.get("evaluation", ""), (source, row))
    if a not in first or b not in first:
        return None
    (source_a, row_a), (source_b, row_b) = first[a], first[b]
    tag_a, tag_b = (row.get("row", row["evaluation"]) for row in (row_a, row_b))
    where = f"{source_a}, {tag_a} − {tag_b}" if source_a == source_b else f"{source_a} {tag_a} − {source_b} {tag_b}"
    return f"{100 * (row_a['AP'] - row_b['AP']):+.1f} AP ({where})"


def comparison_sentence(family: "FamilySpec", check: Mapping[str, Any], published: Mapping[str, "PublishedSource"],
                        interval: Callable[[Mapping[str, Any]], str]) -> str:
    """One measured comparison in words: its ΔAP and 95% interval (``interval``: the book's number format),
    its outcome, and the published difference when rows.yaml has one."""
    e = Expectation.parse(check["comparison"])
    sentence = (f"`{e.a}` − `{e.b}`: {interval(check)} AP points (95% interval), so `{e.text}` "
                f"{OUTCOME_VERBS[check['outcome']]}")
    known = published_difference(family, e.a, e.b, published)
    return sentence + (f"; published: {known}." if known else ".")


def family_reading(family: "FamilySpec", measured: Mapping[str, Any] | None, published: Mapping[str, "PublishedSource"],
                   profile: str, interval: Callable[[Mapping[str, Any]], str]) -> str:
    """A family's reading (Markdown): every comparison ``gather`` gave an interval, in numbers, then the
    hand-written text (rows.yaml ``reading``) of each outcome measured, so the words always match the numbers.

    ``measured`` is the family's entry of ``summary.json``'s ``families``.
    """
    checks = (measured or {}).get("checks") or []
    if not checks:
        return f"*Not measured in the `{profile}` profile: no comparison of this family has a 95% interval yet.*"
    numbers = "\n".join(f"* {comparison_sentence(family, c, published, interval)}" for c in checks)
    measured_outcomes = [o for o in OUTCOMES if any(c["outcome"] == o for c in checks)]
    texts = [f"*{READING_HEADINGS[o]}.* {family.reading[o]}" for o in measured_outcomes]
    return "\n\n".join([numbers, *texts])


# --------------------------------------------------------------------------------------------------
# Diagnostics -> which half of a network limits it (the results chapter)


def diagnostic_reading(name: str, row: Mapping[str, Any], points: Callable[[Mapping[str, Any], str], str]) -> str:
    """One evaluation's diagnostics in words (Markdown; ``points(row, key)``: the book's AP format).

    Perfect tags leave only the network's heatmaps to blame and perfect heatmaps only its tags, so the
    smaller of the two single-substitution APs names the weaker half; a difference within noise (as the
    verdicts count it: ``Expectation.check``) names neither.
    """
    check = Expectation(name, "≈", name, "diag_AP_gt_tags", "diag_AP_gt_heatmaps").check({name: row})
    numbers = (f"`{name}` scores {points(row, 'diag_AP')} AP; with perfect tags (its own heatmaps) "
               f"{points(row, 'diag_AP_gt_tags')}, with perfect heatmaps (its own tags) "
               f"{points(row, 'diag_AP_gt_heatmaps')}, with both {points(row, 'diag_AP_ceiling')} (the ceiling). ")
    weaker = "" if check["ΔAP"] is None else _weaker_half(check["ΔAP"], check["within noise"]) + " "
    reached = ceiling_share(row)
    share = f"It reaches {reached:.0f}% of the ceiling of its output resolution. " if reached is not None else ""
    subsets = (f"On single-person images it scores {points(row, 'diag_AP_single')} AP, "
               f"on multi-person images {points(row, 'diag_AP_multi')}.")
    return numbers + weaker + share + subsets


def ceiling_share(row: Mapping[str, Any]) -> float | None:
    """The network's AP as a percentage of its perfect-map ceiling (None without diagnostics)."""
    ap, ceiling = row.get("diag_AP"), row.get("diag_AP_ceiling")
    return 100 * ap / ceiling if ap is not None and ceiling else None


def _weaker_half(delta: float, within_noise: bool) -> str:
    """The sentence naming the weaker half from AP(GT tags) − AP(GT heatmaps), in AP points."""
    gap = f"{abs(delta):.1f} AP points"
    if within_noise:
        return f"Neither half limits it clearly more: the two substitutions differ by {gap}, within noise."
    if delta < 0:
        return (f"Its heatmaps are the weaker half: given perfect tags they reach {gap} less than its tags given "
                "perfect heatmaps.")
    return (f"Its tags (the grouping) are the weaker half: given perfect heatmaps they reach {gap} less than its "
            "heatmaps given perfect tags.")
