"""What a trained network gets wrong: which labelled people it misses and what is wrong with its other
detections, each case with a sentence from the data and a drawing (the results chapter's failure figure).

OKS and the found/missed matching are pycocotools' own (``hhrnet.evaluation.matched_cocoeval``), so a
"missed" person is exactly a false negative of AP50; the kinds of detection errors are read off the
per-joint OKS terms (which labelled person each detected joint sits on).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np

from hhrnet.evaluation import coco_results, matched_cocoeval

MATCH_OKS = 0.5  # COCO's loosest threshold (AP50): a person without a detection at this OKS is missed
GOOD_OKS = 0.75  # AP75's threshold: a match below it counts at the loose thresholds only
ON_JOINT = 0.5  # per-joint OKS term from which a detected joint sits on a labelled joint
MIN_JOINTS_ON = 2  # joints a detection needs on a person to count as being on that person (1 can be chance)
FAILURE_KINDS: tuple[str, ...] = ("missed", "merged", "split", "false positive", "poor localisation")


@dataclass
class SceneMatch:
    """One image scored the COCO way.

    ``people (P, K, 3)`` and ``areas (P,)``: the labelled people COCO scores (not crowd, with keypoints);
    ``detections (D, K, 3)`` and ``scores (D,)``: the detections COCO reads (at most 20), best score first;
    ``oks (D, P)``: pycocotools' OKS; ``matched (D,)``: the person each detection is matched to at
    OKS 0.5 by COCO's greedy matching, -1 for none; ``index (D,)``: each detection's row in the input;
    ``grouped (D, K)``: the joints tag matching gave it (the others were filled in by refine or not found).
    """

    image_id: int
    people: np.ndarray
    areas: np.ndarray
    detections: np.ndarray
    scores: np.ndarray
    oks: np.ndarray
    matched: np.ndarray
    index: np.ndarray
    grouped: np.ndarray

    def found(self) -> np.ndarray:
        """``(P,)`` whether each person has a detection at OKS ≥ 0.5."""
        return np.isin(np.arange(len(self.people)), self.matched)


def match_scene(gt: Any, image_id: int, poses: Any, keypoints: Any) -> SceneMatch:
    """Score one image's ``poses`` (a ``hhrnet.poses.Poses``) against ``gt`` (a pycocotools ``COCO``)
    with pycocotools' ``COCOeval``, so OKS and found/missed are exactly what COCO AP counts."""
    cat = keypoints.category_id
    anns = [a for a in gt.loadAnns(gt.getAnnIds(imgIds=[image_id], catIds=[cat]))
            if not a.get("iscrowd") and a.get("num_keypoints", 0) > 0]  # COCOeval's non-ignored people
    k = keypoints.num_joints
    people = np.array([np.asarray(a["keypoints"], np.float64).reshape(k, 3) for a in anns]).reshape(-1, k, 3)
    areas = np.array([a["area"] for a in anns], np.float64)
    empty = np.zeros((0, len(anns)))
    if len(poses) == 0:
        return SceneMatch(image_id, people, areas, np.zeros((0, k, 3)), np.zeros(0), empty, np.zeros(0, int),
                          np.zeros(0, int), np.zeros((0, k), bool))
    ev = matched_cocoeval(gt, coco_results(image_id, poses, keypoints), [image_id], keypoints)
    evaluated = ev.evalImgs[0]  # one image, one category: the first entry is the area range "all"
    rows = np.asarray(evaluated["dtIds"], int) - 1  # loadRes numbers the results 1, 2, ... in input order
    gt_ids = [g["id"] for g in ev._gts[image_id, cat]]  # the OKS matrix's columns
    columns = [gt_ids.index(a["id"]) for a in anns]
    ious = np.asarray(ev.ious[image_id, cat]).reshape(len(rows), len(gt_ids))
    counted = ~np.asarray(evaluated["dtIgnore"][0], bool)  # matched to a crowd: COCO does not count them
    person = {a["id"]: p for p, a in enumerate(anns)}
    matched = np.array([person.get(int(g), -1) for g in evaluated["dtMatches"][0]], int)
    rows, detections = rows[counted], poses.keypoints[rows][counted]
    grouped = (detections[..., 2] > 0) & np.any(poses.tags[rows] != 0, axis=-1)  # refine leaves tags at 0
    return SceneMatch(image_id, people, areas, detections, poses.scores[rows], ious[counted][:, columns],
                      matched[counted], rows, grouped)


def joint_similarity(detections: np.ndarray, people: np.ndarray, areas: np.ndarray,
                     sigmas: Any) -> np.ndarray:
    """``(D, P, K)`` pycocotools' per-joint OKS terms ``exp(-d² / (2 · area · (2σ)²))``, 0 where the joint is
    not detected (value 0) or not labelled.  OKS is their mean over a person's labelled joints; kept per
    joint they say which person each detected joint sits on."""
    variances = (2 * np.asarray(sigmas, np.float64)) ** 2
    d2 = ((detections[:, None, :, :2] - people[None, :, :, :2]) ** 2).sum(-1)
    terms = np.exp(-d2 / variances / (areas[None, :, None] + np.spacing(1)) / 2)
    return np.where((detections[:, None, :, 2] > 0) & (people[None, :, :, 2] > 0), terms, 0.0)


def joint_oks(scenes: Iterable[SceneMatch], keypoints: Any) -> np.ndarray:
    """``(K,)`` each joint's mean OKS term over the people found (each labelled person with the detection
    COCO matched to it at OKS ≥ 0.5), over the joints labelled; a joint not detected scores 0.  A person's
    OKS is the mean of these terms, so the low ones are where the localisation of found people loses AP75."""
    total, labelled = np.zeros(keypoints.num_joints), np.zeros(keypoints.num_joints)
    for scene in scenes:
        for d, p in enumerate(scene.matched):
            if p < 0:
                continue
            terms = joint_similarity(scene.detections[[d]], scene.people[[p]], scene.areas[[p]], keypoints.sigmas)
            seen = scene.people[p, :, 2] > 0
            total += np.where(seen, terms[0, 0], 0.0)
            labelled += seen
    return total / np.maximum(labelled, 1)


def joint_owners(scene: SceneMatch, keypoints: Any) -> np.ndarray:
    """``(D, K)``: the person each detected joint sits on (the best per-joint OKS, if ≥ ``ON_JOINT``), -1
    for none.  A detection's owners tell a merge (two people) from a stray (nobody).  A joint also sits on
    its mirror joint (a left wrist on the right wrist): a person seen from behind, predicted facing the
    camera, is still that person."""
    owners = np.full(scene.detections.shape[:2], -1)
    if len(scene.people) == 0:
        return owners
    terms = joint_similarity(scene.detections, scene.people, scene.areas, keypoints.sigmas)
    mirrored = joint_similarity(scene.detections, scene.people[:, list(keypoints.flip_index)], scene.areas,
                                keypoints.sigmas)
    terms = np.maximum(terms, mirrored)
    return np.where(terms.max(axis=1) >= ON_JOINT, terms.argmax(axis=1), owners)


def mirrored_oks(detection: np.ndarray, person: np.ndarray, area: float, keypoints: Any) -> float:
    """The OKS ``detection (K, 3)`` would have with ``person (K, 3)`` if left and right were exchanged: far
    above its OKS means the network saw the person mirrored (from behind, taken as facing the camera)."""
    swapped = person[list(keypoints.flip_index)]
    terms = joint_similarity(np.c_[detection[:, :2], np.ones(len(detection))][None], swapped[None],
                             np.array([area]), keypoints.sigmas)[0, 0]
    return float(terms[swapped[:, 2] > 0].mean())


def people_on(owners: np.ndarray) -> list[int]:
    """The people holding at least ``MIN_JOINTS_ON`` joints of one detection (``owners (K,)``), most first."""
    people, counts = np.unique(owners[owners >= 0], return_counts=True)
    return [int(p) for p, c in sorted(zip(people, counts), key=lambda pc: -pc[1]) if c >= MIN_JOINTS_ON]


def detection_kind(scene: SceneMatch, owners: np.ndarray, d: int) -> str:
    """What detection ``d`` is: ``found`` (matched at OKS ≥ 0.75), ``poor localisation`` (on one person, OKS
    below 0.75), ``merged`` (joints on two or more people), ``split`` (unmatched, on a person another
    detection is matched to) or ``false positive`` (on nobody).

    A match is judged first, since COCO counts it as a true positive whatever else it holds."""
    match = scene.matched[d]
    if match >= 0:
        return "found" if scene.oks[d, match] >= GOOD_OKS else "poor localisation"
    on = people_on(owners[d])
    if len(on) >= 2:
        return "merged"
    if not on:
        return "false positive"
    return "split" if on[0] in scene.matched else "poor localisation"


@dataclass(frozen=True)
class Case:
    """One failure: its ``kind`` (one of ``FAILURE_KINDS``), the ``detection`` (row of the scene, None for a
    missed person), the labelled ``people`` involved (most joints first), and the OKS and score it had."""

    kind: str
    image_id: int
    detection: int | None
    people: tuple[int, ...]
    oks: float
    score: float


def failure_cases(scene: SceneMatch, keypoints: Any) -> list[Case]:
    """Every failure of one scene: each missed person, then each detection that is not a good match."""
    owners = joint_owners(scene, keypoints)
    cases = [Case("missed", scene.image_id, None, (int(p),), float(scene.oks[:, p].max(initial=0.0)), float("nan"))
             for p in np.flatnonzero(~scene.found())]
    for d in range(len(scene.detections)):
        kind = detection_kind(scene, owners, d)
        if kind == "found":
            continue
        match = int(scene.matched[d])
        people = (match,) if match >= 0 else tuple(people_on(owners[d]))
        oks = float(scene.oks[d, match]) if match >= 0 else float(scene.oks[d].max(initial=0.0))
        cases.append(Case(kind, scene.image_id, d, people, oks, float(scene.scores[d])))
    return cases


def most_costly(cases: list[Case]) -> dict[str, Case]:
    """One case per kind, the one that costs COCO AP most: the highest-scoring wrong detection (it ranks
    above true ones), and the missed person farthest from any detection (the clearest miss)."""
    def cost(case: Case) -> float:
        return -case.oks if case.kind == "missed" else case.score

    chosen: dict[str, Case] = {}
    for case in cases:
        if case.kind not in chosen or cost(case) > cost(chosen[case.kind]):
            chosen[case.kind] = case
    return {kind: chosen[kind] for kind in FAILURE_KINDS if kind in chosen}


def at_joints(maps: Any, planes: np.ndarray, joints: np.ndarray) -> np.ndarray:
    """``(K,)`` the value of each joint's own plane (``planes (K, H, W)``: heatmaps or one pass's tags) at that
    joint (image pixels, ``joints (K, 3)``) in ``maps``' frame (a ``hhrnet.poses.Maps``); NaN where the
    joint is unlabelled or outside the maps."""
    height, width = planes.shape[1:]
    x, y = np.rint(maps.from_image(joints[:, :2])).astype(int).T
    inside = (joints[:, 2] > 0) & (x >= 0) & (y >= 0) & (x < width) & (y < height)
    out = np.full(len(joints), np.nan)
    out[inside] = planes[np.flatnonzero(inside), y[inside], x[inside]]
    return out


def _names(joints: np.ndarray, keypoints: Any, most: int = 3) -> str:
    """Up to ``most`` joint names, 'left_wrist' written 'left wrist', and how many more."""
    names = [keypoints.names[k].replace("_", " ") for k in joints]
    return ", ".join(names[:most]) + (f" and {len(names) - most} more" if len(names) > most else "")


def explain(case: Case, scene: SceneMatch, maps: Any, keypoints: Any, test: Any) -> str:
    """One sentence (Markdown) on why ``case`` failed, from the data: the joints involved, the person's size,
    OKS, and the network's heatmap and tag values at the labelled joints (``maps``: the image's ``Maps``;
    ``test``: the ``TestConfig`` with the detection and tag thresholds grouping used)."""
    sigmas, tags = keypoints.sigmas, maps.tags[..., 0]
    owners = joint_owners(scene, keypoints)
    person = scene.people[case.people[0]] if case.people else None
    who = f"person {case.people[0] + 1}" if case.people else ""
    if case.kind == "missed":
        heat = at_joints(maps, maps.heatmaps, person)
        strong = np.nan_to_num(heat) > test.detection_threshold
        why = (f"{int(strong.sum())} of its {int((person[:, 2] > 0).sum())} labelled joints are above the "
               f"detection threshold {test.detection_threshold:g} in the heatmaps (mean {np.nanmean(heat):.2f})")
        holders = [d for d in range(len(owners)) if case.people[0] in people_on(owners[d])]
        if holders:
            kinds = sorted({detection_kind(scene, owners, d) for d in holders})
            why += (f"; {len(holders)} detection{'s' * (len(holders) > 1)} hold some of its joints, classed "
                    + " and ".join(kinds))
        elif strong.sum() >= MIN_JOINTS_ON:
            why += "; no detection holds two of its joints"
        return (f"**Missed.** {who.capitalize()} (√area {np.sqrt(scene.areas[case.people[0]]):.0f} px) has no "
                f"detection with OKS ≥ {MATCH_OKS} (best {case.oks:.2f}): {why}.")
    if case.kind == "merged":
        first, second = case.people[:2]
        parts = [np.flatnonzero(owners[case.detection] == p) for p in (first, second)]
        means = [np.nanmean(at_joints(maps, tags, scene.people[p])) for p in (first, second)]
        gap = abs(means[0] - means[1])
        return (f"**Merged.** One detection (score {case.score:.2f}) holds {len(parts[0])} joints of person "
                f"{first + 1} ({_names(parts[0], keypoints)}) and {len(parts[1])} of person {second + 1} "
                f"({_names(parts[1], keypoints)}). The network tags the two people {means[0]:.2f} and "
                f"{means[1]:.2f} on average, {gap:.2f} apart: "
                + (f"less than the tag threshold {test.tag_threshold:g}, so matching cannot tell them apart."
                   if gap < test.tag_threshold else
                   f"more than the tag threshold {test.tag_threshold:g}, yet single joints' tags stray across."))
    if case.kind == "split":
        return _explain_split(case, scene, owners, maps, keypoints, test)
    detection = scene.detections[case.detection]
    if case.kind == "false positive":
        strongest = np.argsort(-detection[:, 2])[:2]
        return (f"**False positive.** A detection with score {case.score:.2f} and "
                f"{int((detection[:, 2] > 0).sum())} joints lies on no labelled person (best OKS {case.oks:.2f}); "
                f"its strongest joints, " + " and ".join(f"{keypoints.names[k].replace('_', ' ')} ({detection[k, 2]:.2f})"
                                                         for k in strongest)
                + ", are heatmap peaks where nobody is labelled.")
    terms = joint_similarity(detection[None], person[None], scene.areas[[case.people[0]]], sigmas)[0, 0]
    labelled = np.flatnonzero(person[:, 2] > 0)
    worst = labelled[np.argsort(terms[labelled])[:2]]
    off = np.linalg.norm(detection[worst, :2] - person[worst, :2], axis=1)
    area = scene.areas[case.people[0]]
    mirror = mirrored_oks(detection, person, area, keypoints)
    return (f"**Poor localisation.** {'Matched to' if scene.matched[case.detection] >= 0 else 'On'} {who} "
            f"(√area {np.sqrt(area):.0f} px) with OKS {case.oks:.2f}: its worst joints are "
            + " and ".join(f"the {keypoints.names[k].replace('_', ' ')}, {d:.0f} px off (joint OKS {terms[k]:.2f})"
                           for k, d in zip(worst, off))
            + (f". With left and right exchanged its OKS would be {mirror:.2f}: the network took a person seen "
               "from behind for one facing the camera." if mirror > case.oks + 0.2 else "."))


def _explain_split(case: Case, scene: SceneMatch, owners: np.ndarray, maps: Any, keypoints: Any, test: Any) -> str:
    """A second detection on a person: are its grouped joints second peaks of joint types the other
    detection already holds (a person takes one candidate per type, so a second peak starts a new
    person), or joints the tags sent elsewhere?"""
    person = case.people[0]
    grouped = np.flatnonzero(scene.grouped[case.detection] & (owners[case.detection] == person))
    taken = scene.grouped[scene.matched == person].any(axis=0)
    second = grouped[taken[grouped]]
    person_tags = at_joints(maps, maps.tags[..., 0], scene.people[person])
    span = np.nanmax(person_tags) - np.nanmin(person_tags)
    lead = (f"**Split.** Person {person + 1} is found, but a second detection (score {case.score:.2f}, OKS "
            f"{case.oks:.2f}) is on it too: tag matching gave it {len(grouped)} of the person's joints"
            + (f" ({_names(grouped, keypoints)})" if len(grouped) else "")
            + f" and refine filled in {int((owners[case.detection] == person).sum()) - len(grouped)} more. ")
    if len(grouped) and len(second) == len(grouped):
        return lead + (f"{'Each is a second heatmap peak' if len(second) > 1 else 'It is a second heatmap peak'} "
                       "of a joint type the matched detection already holds: a person takes one candidate per "
                       "joint type, so a second peak starts a new person.")
    return lead + (f"The tags at this person's labelled joints span {span:.2f}, "
                   f"{'more than' if span > test.tag_threshold else 'within'} the tag threshold "
                   f"{test.tag_threshold:g}.")


def draw_skeleton(ax: Any, joints: np.ndarray, keypoints: Any, colour: Any, dashed: bool = False,
                  width: float = 1.6, size: float = 10.0) -> None:
    """One person in one colour (``hhrnet.viz.draw_poses`` colours by body side, which cannot tell two
    people apart); ``dashed`` for ground truth.  Joints with value/visibility 0 are not drawn."""
    seen = joints[:, 2] > 0
    for a, b in keypoints.skeleton:
        if seen[a] and seen[b]:
            ax.plot(joints[[a, b], 0], joints[[a, b], 1], color=colour, lw=width, ls="--" if dashed else "-")
    ax.scatter(joints[seen, 0], joints[seen, 1], s=size, color="none" if dashed else colour, edgecolors=[colour],
               linewidths=1, zorder=3)


def draw_case(ax: Any, image: np.ndarray, case: Case, scene: SceneMatch, keypoints: Any) -> None:
    """One failure on its image, cropped to what it involves: the labelled people involved dashed (one colour
    each) and the case's detection in red."""
    import matplotlib.pyplot as plt  # deferred: importing hhrnet never selects a matplotlib backend

    ax.imshow(image)
    colours = plt.get_cmap("tab10").colors[1:]
    shown = [scene.people[p] for p in case.people]
    for p, person in zip(case.people, shown):
        draw_skeleton(ax, person, keypoints, colours[p % len(colours)], dashed=True)
    if case.detection is not None:
        shown.append(scene.detections[case.detection])
        draw_skeleton(ax, scene.detections[case.detection], keypoints, "red", width=2.0, size=14)
    points = np.concatenate([s[s[:, 2] > 0, :2] for s in shown])
    low, high = points.min(axis=0), points.max(axis=0)
    pad = 0.15 * (high - low).max() + 10
    height, width = image.shape[:2]
    ax.set(xlim=(max(low[0] - pad, 0), min(high[0] + pad, width)), ylim=(min(high[1] + pad, height), max(low[1] - pad, 0)))
    ax.set_title(f"{case.kind}: scene {case.image_id}", fontsize=9)
    ax.axis("off")
