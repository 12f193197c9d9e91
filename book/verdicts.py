"""The words of the ablations chapter: each family's claim and readings, and the sentences built from
the study's numbers (``summary.json``), so the package computes and the book writes.

``FAMILIES`` holds, per family of ``experiments/rows.yaml``, the claim in words and one reading per
outcome a comparison's 95% interval can have (holds, contradicted, undecided): why comparisons of this
family come out so at this scale, without measured numbers.  ``family_reading`` prints the measured
numbers, then the reading of each outcome measured, so the words always match the numbers.
``BEYOND_AP`` says why AP(M), AP(L) or AP75 can move against AP; ``diagnostic_reading`` names the
weaker half of a network from its diagnostics.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

import matplotlib.pyplot as plt
import numpy as np

from hhrnet.study.claims import Expectation
from hhrnet.study.results import NOISE_TOLERANCE, ceiling_share, published_difference
from hhrnet.study.spec import FamilySpec, PublishedSource


@dataclass(frozen=True)
class Words:
    """A family's claim and its reading for each outcome of a comparison."""

    claim: str
    holds: str
    contradicted: str
    undecided: str

    def reading(self, outcome: str) -> str:
        return getattr(self, outcome)


FAMILIES: dict[str, Words] = {
    "table": Words(
        claim=("Wider (W48) and larger-input (640) networks score higher; multi-scale test adds "
               "about 2-3 AP."),
        holds=("Where the table's order is reproduced, it is for the published reasons: a wider "
               "network has more capacity to fit the scenes, a larger input gives every person more "
               "output pixels, and averaging the heatmaps over three test scales removes part of the "
               "localisation noise of a single pass."),
        contradicted=("At CPU scale every network gets the same number of iterations from scratch "
                      "(no ImageNet backbone), so the wider and the larger-input networks, which "
                      "have more to fit, end further from convergence than the small W32 and cannot "
                      "cash in their capacity. Multi-scale test can hurt too: at the 0.5 scale a 128 "
                      "px input leaves 1/4 heatmaps 16 px wide, and at 2x the people are larger than "
                      "anything the light scale augmentation of the CPU recipe showed in training."),
        undecided=("At CPU scale the published networks shrink to a fraction of their width and are "
                   "trained for minutes on scenes of 1-3 large people, so extra width or input size "
                   "adds capacity the short training barely uses, and multi-scale averaging adds "
                   "little where one scale already finds the large people; the remaining difference "
                   "is within the noise of the seeds run so far."),
    ),
    "higher_resolution": Words(
        claim=("Predicting heatmaps at 1/2 resolution improves AP, most of all for medium (small) "
               "people."),
        holds=("The 1/2 output localises joints on a grid twice as fine as HRNet's 1/4 output, so "
               "the quantisation of the heatmap peaks shrinks relative to the OKS tolerance; at CPU "
               "scale that step is large for everyone (at a 128 px input the 1/4 heatmaps are 32 px "
               "wide), which is why the finer output pays off even though the synthetic people are "
               "large."),
        contradicted=("The deconvolution module, its extra residual blocks and the second heatmap "
                      "loss have to be learnt from scratch in a few thousand iterations by a half- "
                      "width network, and an undertrained 1/2 head can be noisier than a well-fitted "
                      "1/4 head. The synthetic people are also large (0.3-1.0 of the image height), "
                      "the case where the paper itself gains least (its AP(L) barely moves)."),
        undecided=("The paper's gain comes mostly from medium-sized people, and the synthetic CPU "
                   "scenes hold few small people: at 0.3-1.0 of the image height most people cover "
                   "many 1/4-output pixels already. What is left is a small difference beside the "
                   "noise of networks trained for minutes from scratch, which the seeds run so far "
                   "cannot resolve."),
    ),
    "deconv_modules": Words(
        claim=("One deconv module is best; a second (1/1 output) does not help further."),
        holds=("One module is the sweet spot the paper found: going from the 1/4 to the 1/2 output "
               "removes most of the quantisation error, while a second module to a 1/1 output costs "
               "compute and adds a loss whose sigma-2 Gaussians are narrow relative to the person at "
               "that resolution, targets that are harder to fit without moving the peaks OKS scores."),
        contradicted=("The comparison against the claim says which effect wins at CPU scale. If "
                      "HRNet's 1/4 output beats one module, the added deconvolution stage is not "
                      "trained enough in the short from-scratch budget; if two modules beat one, "
                      "quantisation still dominates: at a 128 px input even the 1/2 output is only "
                      "64 px wide, so the 1/1 grid keeps paying off, unlike at 512 px where the 1/2 "
                      "output is already 256 px wide."),
        undecided=("The three networks differ only in their heads. With people of 0.3-1.0 of the "
                   "image height every output grid is fine enough for most of them, and the 1/1 "
                   "output's finer grid and its narrow sigma-2 targets pull in opposite directions; "
                   "networks trained for minutes from scratch are too noisy to separate effects this "
                   "small without more seeds."),
    ),
    "heatmap_aggregation": Words(
        claim=("Averaging the upsampled 1/4 and the 1/2 heatmaps is better than either alone."),
        holds=("Averaging helps where the two resolutions make different errors: the upsampled 1/4 "
               "heatmaps are smooth but coarse, the 1/2 heatmaps sharper but noisier, and their mean "
               "keeps the sharp peak while suppressing isolated false responses. The three rows are "
               "test-time settings of one trained network, so each comparison is paired image by "
               "image and isolates the aggregation."),
        contradicted=("One resolution alone beats the average when the other is much worse: in a "
                      "network trained briefly from scratch, the 1/4 heatmaps (32 px wide at a 128 "
                      "px input in the cpu profile) are coarse enough that averaging them in blurs "
                      "the 1/2 peaks instead of denoising them. The paper's networks are trained to "
                      "convergence, where both resolutions are good enough to add information."),
        undecided=("When the average is not clearly better than one resolution alone, that "
                   "resolution already carries what the average would add: averaging the finer 1/2 "
                   "heatmaps with the coarser upsampled 1/4 ones moves a peak by less than the OKS "
                   "tolerance of the large synthetic people. The paper's own gain of the average "
                   "over the 1/2 heatmaps alone is small (Table 5 above), so it is not expected to "
                   "show at this scale."),
    ),
    "multires_supervision": Words(
        claim=("Supervising every output resolution (each with its own Gaussian targets) improves "
               "AP."),
        holds=("Supervising the 1/4 heatmaps as well gives the backbone an intermediate target that "
               "shapes the features the deconvolution module upsamples, and it lets the test average "
               "two trained heatmaps; without it only the 1/2 heatmaps can be scored, since the 1/4 "
               "heatmaps of that network are never trained."),
        contradicted=("In a half-width network trained for a few thousand iterations, the 1/4 "
                      "heatmap loss competes with the 1/2 loss for a handful of channels; dropping "
                      "it lets the network spend its capacity on the output that is scored. The "
                      "second loss pays off only through aggregation, which is itself small at this "
                      "scale (see the heatmap aggregation family)."),
        undecided=("Both networks keep the associative-embedding loss on the 1/4 output, so the "
                   "backbone is supervised at 1/4 either way and only the heatmap term there "
                   "differs. With large synthetic people and a short training, its effect on the 1/2 "
                   "heatmaps is smaller than the interval can resolve."),
    ),
    "input_size": Words(
        claim=("A larger training input improves AP, with diminishing returns."),
        holds=("A larger input gives every person more output pixels, which shrinks the quantisation "
               "of the peaks relative to the person and helps the smaller people most; at CPU scale "
               "the smallest input (128 px) puts the 1/2 heatmaps on a 64 px grid, so a larger one "
               "has a lot to gain."),
        contradicted=("Every input size gets the same number of iterations, so the larger inputs are "
                      "fitted in the same budget although their people span more pixels than the "
                      "receptive field of the CPU recipe's shallower stages covers; without an "
                      "ImageNet backbone and with light scale augmentation, the network can fit the "
                      "small input better in minutes than the large one."),
        undecided=("The paper's gain from a larger input comes mostly from medium-sized people; the "
                   "synthetic people are large relative to the image, so even at the smallest CPU "
                   "input most of them cover many output pixels, and the remaining gain is within "
                   "the noise of networks trained briefly from scratch."),
    ),
    "scale_aware_sigma": Words(
        claim=("Per-person sigma is at most marginally better than a fixed sigma of 2."),
        holds=("As in the paper, giving each person a Gaussian width proportional to its box changes "
               "little: the peak sits at the same place either way, and OKS already scales the "
               "tolerance with the person's size. In the CPU scenes people's heights vary by a "
               "factor of about three, so the per-person sigmas stay within a small factor of the "
               "fixed sigma 2."),
        contradicted=("A clear difference means the target width matters at this scale: scale-aware "
                      "sigma widens the targets of large people (easier for a briefly trained "
                      "network to fit) and narrows those of small people on an already coarse grid "
                      "(peaks harder to find), and in the large-person CPU scenes either effect can "
                      "win. The paper's COCO networks, trained to convergence, are insensitive to "
                      "it."),
        undecided=("The interval is too wide to call the two equivalent: scale-aware sigma only "
                   "changes the width of the training targets, an effect smaller than the seed-to- "
                   "seed noise of networks trained for minutes, and the narrow scale range of the "
                   "synthetic scenes keeps the per-person sigmas close to the fixed one."),
    ),
    "test_time": Words(
        claim=("Flip test and multi-scale test each add AP; their gains add up."),
        holds=("Flip test and multi-scale test average several estimates of the same heatmaps; an "
               "undertrained network's heatmaps are noisy, so averaging helps it at least as much as "
               "a converged one, and the flip pass also cancels left-right asymmetric errors. The "
               "rows are test-time settings of one trained network, so every comparison is paired "
               "image by image."),
        contradicted=("Multi-scale test can hurt at CPU scale: at the 0.5 scale a 128 px input "
                      "becomes 64 px, where the 1/4 output is 16 px wide and small people vanish, "
                      "and at 2x people are larger than anything the CPU recipe's light scale "
                      "augmentation showed in training, so the added scales put wrong peaks into the "
                      "average. Flip test hurts only if the network has not learnt the mirror "
                      "symmetry of the joints."),
        undecided=("Averaging removes noise only where the passes disagree; where the network is "
                   "already consistent under mirroring, or where the extra scales add as many wrong "
                   "peaks as they remove noise, the net gain is smaller than the interval."),
    ),
    "ae_loss": Words(
        claim=("The exp push loss (HigherHRNet's default) groups at least as well as the max (hinge) "
               "form."),
        holds=("Grouping only needs different people's tags to be separated beyond the grouping "
               "threshold, and both push forms achieve that: exp(-Δ²) keeps a smoothly decaying push "
               "at any distance, the max (hinge) form stops at a margin of one. The exp form groups "
               "at least as well, as the published default assumes."),
        contradicted=("At CPU scale the AE loss factors are ten times the published ones (so tags "
                      "separate within minutes), and there the hinge's constant push inside its "
                      "margin separates close tags faster than exp(-Δ²), whose gradient vanishes "
                      "both at zero distance and far away; within a short budget the max form can "
                      "then group better."),
        undecided=("The push term matters only when different people's tags are close, and with 1-3 "
                   "mostly separated people per synthetic image tags rarely collide; both forms then "
                   "group nearly every person alike, and the difference stays below what the "
                   "interval can resolve."),
    ),
    "published_weights": Words(
        claim=("hhrnet's evaluation of mmpose's own weights gives mmpose's published AP to within "
               "about 0.1 (its inference and grouping are the official ones, which mmpose 0.x ported "
               "line by line), and keeps the table's order: multi-scale above single scale for every "
               "network."),
        holds=("With mmpose's own weights the network is fixed, so the order of the published table "
               "follows from hhrnet's test-time pipeline (resize, flip test, multi-scale averaging, "
               "grouping), which is the official one; agreement here checks the evaluation, not "
               "training."),
        contradicted=("With fixed published weights a reversed order points at the evaluation: a "
                      "difference from mmpose 0.x in the test resize, the flip index, the multi- "
                      "scale projection or the grouping thresholds; the per-row comparison with "
                      "mmpose's AP above shows which rows are off."),
        undecided=("With fixed weights an undecided comparison means the evaluated images are too "
                   "few to resolve the published gap (a partial val2017), or part of the gain is "
                   "lost in hhrnet's multi-scale or grouping steps; the per-row comparison with "
                   "mmpose's AP tells the two apart."),
    ),
    "crowds": Words(
        claim=("Bottom-up grouping is tested hardest in crowds: AP falls from the easy to the medium "
               "to the hard images (published: 73.3 / 66.5 / 57.9 single-scale), and multi-scale "
               "test adds AP."),
        holds=("Multi-scale test helps in crowds for the same reason as elsewhere, averaged heatmaps "
               "are less noisy, and also because the 2x scale enlarges the small, overlapping people "
               "whose joints merge on a coarse grid. The easy, medium and hard splits are metrics of "
               "one row and have no interval (see the crowds chapter)."),
        contradicted=("Multi-scale test can hurt in crowds: the 0.5 scale merges neighbouring "
                      "people's joints on a coarse grid and the 2x scale shows people larger than in "
                      "training, so the averaged heatmaps carry peaks between people that grouping "
                      "attaches to the wrong person."),
        undecided=("In crowds the scale averaging trades less noise on isolated people against "
                   "merged peaks between overlapping ones, and in the CPU crowds of up to six people "
                   "the two effects can cancel to a difference the interval cannot resolve."),
    ),
}

METRIC_NAMES = {"AP": "AP", "AP_M": "AP(M)", "AP_L": "AP(L)", "AP75": "AP75"}

# Why a secondary metric can move against AP, at this scale: per (family, metric) where the family's
# rows explain it, else per metric.
BEYOND_AP: dict[tuple[str, str], str] = {
    ("test_time", "AP_L"): (
        "Multi-scale test averages the heatmaps of the 2×, 1× and 0.5× passes. At the CPU input of 128 px "
        "the 2× pass shows a large person bigger than anything the light scale augmentation of the CPU "
        "recipe (0.85-1.2) showed in training, and the 0.5× pass puts it on 1/4 heatmaps 16 px wide, so "
        "the average blurs the large people's joints while the 2× pass sharpens the medium ones: AP(M) "
        "rises and AP(L) falls. The paper, trained on COCO with 0.75-1.5 scale augmentation, gains on "
        "both (official README: AP(L) 76.1 → 77.0)."),
    ("table", "AP_L"): (
        "The multi-scale rows average a 2× pass that enlarges large people beyond the scales seen in "
        "training and a 0.5× pass on a 16 px-wide 1/4 grid; the medium people gain, the large ones lose "
        "(see the flip and multi-scale family)."),
    ("crowds", "AP75"): (
        "Averaging scales moves peaks between overlapping people: more people are found (AP50), but their "
        "joints are placed less tightly (AP75)."),
}
BEYOND_AP_ANY: dict[str, str] = {
    "AP_M": ("Medium people (COCO area 32²-96² px) cover few output pixels; a change that helps the large "
             "people by smoothing or enlarging the maps can cost the medium ones their peaks."),
    "AP_L": ("Large people span more of the input than the receptive field of the CPU recipe's shallow stages "
             "and are rarer in the synthetic scenes; a change that helps the medium people (a finer grid, an "
             "enlarged test scale) can split or blur the large people's joints."),
    "AP75": ("AP75 counts only tight matches (OKS ≥ 0.75): a change that finds more people while placing their "
             "joints less precisely raises AP and lowers AP75."),
}


def beyond_ap(family: str, checks: list[Mapping[str, Any]], interval: Callable[[Mapping[str, Any]], str]) -> str:
    """The metrics that move against AP beyond noise (each check's ``against_AP``): their numbers, then
    once per metric why that can happen at this scale; empty when none does."""
    moved: dict[str, list[str]] = {}
    for check in checks:
        e = Expectation.parse(check["comparison"])
        for metric in check.get("against_AP", []):
            moved.setdefault(metric, []).append(f"`{e.a}` − `{e.b}`: AP {interval(check)}, but "
                                                f"{METRIC_NAMES[metric]} {interval(check['metrics'][metric])}")
    return " ".join(f"{'; '.join(numbers)} (points, 95% intervals). "
                    f"{BEYOND_AP.get((family, metric), BEYOND_AP_ANY[metric])}" for metric, numbers in moved.items())


OUTCOME_VERBS = {"holds": "holds", "contradicted": "is contradicted", "undecided": "is undecided"}
READING_HEADINGS = {"holds": "What it shows", "contradicted": "Why it may differ at this scale",
                    "undecided": "Why it may be undecided at this scale"}
OUTCOMES = tuple(OUTCOME_VERBS)


def comparison_sentence(family: FamilySpec, check: Mapping[str, Any], published: Mapping[str, PublishedSource],
                        interval: Callable[[Mapping[str, Any]], str]) -> str:
    """One measured comparison in words: its ΔAP and 95% interval (``interval``: the book's number format),
    its outcome, and the published difference when rows.yaml has one."""
    e = Expectation.parse(check["comparison"])
    sentence = (f"`{e.a}` − `{e.b}`: {interval(check)} AP points (95% interval), so `{e.text}` "
                f"{OUTCOME_VERBS[check['outcome']]}")
    known = published_difference(family, e.a, e.b, published)
    return sentence + (f"; published: {100 * known[0]:+.1f} AP ({known[1]})." if known else ".")


def needs(measured: Mapping[str, Any]) -> str:
    """What an unmeasured family's comparisons need, one line each (from ``summary.json``'s reasons)."""
    return "\n".join(f"* `{c['comparison']}`: {c['reason']}." for c in measured.get("unmeasured", []))


def family_reading(name: str, family: FamilySpec, measured: Mapping[str, Any] | None,
                   published: Mapping[str, PublishedSource], profile: str,
                   interval: Callable[[Mapping[str, Any]], str]) -> str:
    """A family's reading (Markdown): every comparison with an interval, in numbers, what moves against AP,
    then the reading of each outcome measured; a family without any says what it needs.

    ``measured`` is the family's entry of ``summary.json``'s ``families``.
    """
    checks = (measured or {}).get("checks") or []
    if not checks:
        missing = needs(measured or {})
        return (f"*Not measured in the `{profile}` profile: no comparison of this family has a 95% interval yet.*"
                + (f" It needs:\n\n{missing}" if missing else ""))
    numbers = "\n".join(f"* {comparison_sentence(family, c, published, interval)}" for c in checks)
    against = beyond_ap(name, checks, interval)
    parts = [numbers] + ([f"*Beyond AP.* {against}"] if against else [])
    words = FAMILIES[name]
    measured = [o for o in OUTCOMES if any(c["outcome"] == o for c in checks)]
    parts += [f"*{READING_HEADINGS[o]}.* {words.reading(o)}" for o in measured]
    return "\n\n".join(parts)


def verdict_tally(families: Mapping[str, Mapping[str, Any]], specs: Mapping[str, FamilySpec], profile: str) -> str:
    """The study's verdicts in one sentence (Markdown): comparisons with an interval and their outcomes, the
    families that reproduce and those with nothing measured, counted from ``summary.json``'s ``families``
    against the comparisons rows.yaml expects (``specs``)."""
    outcomes = {name: [c["outcome"] for c in (families.get(name) or {}).get("checks") or []] for name in specs}
    every = [o for measured in outcomes.values() for o in measured]
    reproduce = [n for n, measured in outcomes.items()
                 if len(measured) == len(specs[n].expect) and set(measured) == {"holds"}]
    empty = [n for n, measured in outcomes.items() if not measured]
    counts = ", ".join(f"{every.count(o)} {o}" for o in OUTCOMES)
    return (f"In the `{profile}` profile, {len(every)} of the {sum(len(f.expect) for f in specs.values())} "
            f"expected comparisons of the {len(specs)} families have an interval ({counts}; a comparison that "
            f"two families share counts in each). Families that reproduce, every comparison measured and "
            f"holding: {_names(reproduce)}. Families with no comparison measured yet: {_names(empty)}.")


def _names(group: list[str]) -> str:
    """Family names as the page writes them, with their number ("none" for an empty group)."""
    return f"{len(group)} (" + ", ".join(f"`{n}`" for n in group) + ")" if group else "none"


def plot_intervals(families: Mapping[str, Mapping[str, Any]], metrics: tuple[str, ...] = ("AP", "AP_M", "AP_L", "AP75"),
                   ax: Any = None) -> Any:
    """Every measured comparison's Δ with its 95% interval, in points, one row per comparison and a marker
    per metric (AP first), grouped by family."""
    rows = [(name, c) for name, f in families.items() for c in f.get("checks", [])]
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 0.45 * len(rows) + 1.0))
    offsets = np.linspace(-0.25, 0.25, len(metrics))
    for j, metric in enumerate(metrics):
        for i, (_, c) in enumerate(rows):
            m = c if metric == "AP" else c.get("metrics", {}).get(metric)
            if m is None:
                continue
            error = [[100 * (m["delta"] - m["low"])], [100 * (m["high"] - m["delta"])]]
            ax.errorbar(100 * m["delta"], i + offsets[j], xerr=error, fmt="o", color=f"C{j}", ms=4, capsize=2,
                        label=METRIC_NAMES[metric] if i == 0 else None)
    ax.axvline(0, color="k", lw=0.8)
    ax.set_yticks(range(len(rows)), [f"{name}: {c['comparison']}" for name, c in rows], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("Δ = a − b (points), 95% interval: images and seeds")
    ax.legend(fontsize=8, loc="lower right")
    ax.figure.tight_layout()
    return ax


# --------------------------------------------------------------------------------------------------
# Diagnostics -> which half of a network limits it (the results chapter)


def diagnostic_reading(name: str, row: Mapping[str, Any], points: Callable[[Mapping[str, Any], str], str]) -> str:
    """One evaluation's diagnostics in words (Markdown; ``points(row, key)``: the book's AP format).

    Perfect tags leave only the network's heatmaps to blame and perfect heatmaps only its tags, so the
    smaller of the two single-substitution APs names the weaker half; a difference within noise (the
    larger of half an AP point and twice either value's seed SD) names neither.
    """
    numbers = (f"`{name}` scores {points(row, 'diag_AP')} AP; with perfect tags (its own heatmaps) "
               f"{points(row, 'diag_AP_gt_tags')}, with perfect heatmaps (its own tags) "
               f"{points(row, 'diag_AP_gt_heatmaps')}, with both {points(row, 'diag_AP_ceiling')} (the ceiling). ")
    tags, heatmaps = row.get("diag_AP_gt_tags"), row.get("diag_AP_gt_heatmaps")
    weaker = ""
    if tags is not None and heatmaps is not None:
        spread = max(row.get("diag_AP_gt_tags_std") or 0, row.get("diag_AP_gt_heatmaps_std") or 0)
        noise = max(NOISE_TOLERANCE, 2 * spread)
        weaker = _weaker_half(100 * (tags - heatmaps), abs(tags - heatmaps) <= noise) + " "
    reached = ceiling_share(row)
    share = f"It reaches {reached:.0f}% of the ceiling of its output resolution. " if reached is not None else ""
    subsets = (f"On single-person images it scores {points(row, 'diag_AP_single')} AP, "
               f"on multi-person images {points(row, 'diag_AP_multi')}.")
    return numbers + weaker + share + subsets


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
