"""The failure classification (``hhrnet/failures.py``, the results chapter's figure) on tiny scenes whose
answer is known by hand."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest

import hhrnet.failures as failures

from hhrnet.inference import Poses
from hhrnet.keypoints import COCO_17

K = COCO_17.num_joints
AREA = 100.0 ** 2


def standing(x: float, y: float = 50.0) -> np.ndarray:
    """A labelled person (K, 3): joints spread over a 100 px tall body whose left side is at image right."""
    rng = np.random.default_rng(int(x))
    xy = np.c_[x + rng.uniform(-20, 20, K), y + np.linspace(0, 100, K)]
    return np.c_[xy, np.full(K, 2.0)]


def detected(joints: np.ndarray) -> np.ndarray:
    """A detection of exactly these joints (value 0.9 each)."""
    return np.c_[joints[:, :2], np.full(len(joints), 0.9)]


def scene(people: list[np.ndarray], detections: list[np.ndarray], matched: list[int], oks: list[list[float]]) -> failures.SceneMatch:
    d = len(detections)
    return failures.SceneMatch(1, np.array(people), np.full(len(people), AREA), np.array(detections).reshape(d, K, 3),
                         np.linspace(0.9, 0.5, d), np.array(oks, float).reshape(d, len(people)), np.array(matched, int),
                         np.arange(d), np.ones((d, K), bool))


A, B = standing(100), standing(400)


def test_exact_detection_is_found_and_a_missed_person_is_reported():
    s = scene([A, B], [detected(A)], matched=[0], oks=[[1.0, 0.0]])
    assert failures.detection_kind(s, failures.joint_owners(s, COCO_17), 0) == "found"
    assert [(c.kind, c.people) for c in failures.failure_cases(s, COCO_17)] == [("missed", (1,))]


def test_a_detection_with_joints_of_two_people_is_merged():
    mix = detected(np.r_[A[:9], B[9:]])
    s = scene([A, B], [mix], matched=[-1], oks=[[0.4, 0.3]])
    [merged] = [c for c in failures.failure_cases(s, COCO_17) if c.detection == 0]
    assert merged.kind == "merged" and merged.people == (0, 1)  # 9 joints of A, 8 of B: most first


def test_a_second_detection_on_a_found_person_is_split_and_its_second_peaks_are_named():
    head = np.zeros((K, 3))
    head[:5] = detected(A[:5] + 1.0)[:5]
    s = scene([A], [detected(A), head], matched=[0, -1], oks=[[1.0], [0.3]])
    [split] = failures.failure_cases(s, COCO_17)
    assert (split.kind, split.detection, split.people) == ("split", 1, (0,))


def test_a_detection_on_nobody_is_a_false_positive_and_a_lone_bad_one_poor_localisation():
    far = detected(standing(700))
    shifted = detected(A + [8.0, 0.0, 0.0])  # every joint a little off: on A, but OKS below 0.75
    s = scene([A], [far, shifted], matched=[-1, 0], oks=[[0.0], [0.6]])
    kinds = {c.detection: c.kind for c in failures.failure_cases(s, COCO_17)}
    assert kinds == {0: "false positive", 1: "poor localisation"}


def test_a_person_seen_from_behind_predicted_mirrored_is_still_on_that_person():
    mirrored = detected(A[list(COCO_17.flip_index)])
    s = scene([A], [mirrored], matched=[-1], oks=[[0.2]])
    assert failures.people_on(failures.joint_owners(s, COCO_17)[0]) == [0]
    assert failures.mirrored_oks(mirrored, A, AREA, COCO_17) == pytest.approx(1.0)


def test_most_costly_takes_the_highest_scoring_detection_and_the_farthest_miss():
    cases = [failures.Case("false positive", 1, 0, (), 0.0, 0.3), failures.Case("false positive", 1, 1, (), 0.0, 0.8),
             failures.Case("missed", 1, None, (0,), 0.4, float("nan")), failures.Case("missed", 1, None, (1,), 0.1, float("nan"))]
    chosen = failures.most_costly(cases)
    assert list(chosen) == ["missed", "false positive"]
    assert chosen["false positive"].score == 0.8 and chosen["missed"].people == (1,)


def test_match_scene_reads_pycocotools_oks_and_matching():
    """OKS and found/missed come from COCOeval; the per-joint terms average to the same OKS."""
    from pycocotools.coco import COCO

    gt = COCO()
    anns = [{"id": i + 1, "image_id": 7, "category_id": 1, "iscrowd": 0, "area": AREA, "num_keypoints": K,
             "bbox": [0, 0, 100, 100], "keypoints": person.ravel().tolist()} for i, person in enumerate((A, B))]
    gt.dataset = {"images": [{"id": 7, "width": 800, "height": 300}], "annotations": anns,
                  "categories": [{"id": 1, "name": "person"}]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
    near_a = detected(A + [3.0, 0.0, 0.0])
    stray = detected(standing(700))
    poses = Poses(np.array([stray, near_a]), np.array([0.2, 0.9]), np.ones((2, K, 1)))
    s = failures.match_scene(gt, 7, poses, COCO_17)
    assert s.index.tolist() == [1, 0]  # best score first, as COCO reads them
    assert s.matched.tolist() == [0, -1] and s.found().tolist() == [True, False]
    terms = failures.joint_similarity(s.detections, s.people, s.areas, COCO_17.sigmas)
    assert np.allclose(terms.mean(axis=2), s.oks)
    assert [c.kind for c in failures.failure_cases(s, COCO_17)] == ["missed", "false positive"]


def test_joint_oks_averages_each_joints_term_over_found_people_only():
    """One found person with its nose off by one OKS standard deviation (term exp(-1/2)) and its left eye
    not detected; an unmatched detection elsewhere does not count; unlabelled joints are left out."""
    person = A.copy()
    person[16, 2] = 0  # right ankle not labelled
    found = detected(person)
    found[0, 0] += 2 * COCO_17.sigmas[0] * np.sqrt(AREA)  # nose: d = 2σ·sqrt(area) -> exp(-1/2)
    found[1, 2] = 0  # left eye not detected
    stray = detected(B) + 50.0
    terms = failures.joint_oks([scene([person], [found, stray], [0, -1], [[0.8], [0.0]])], COCO_17)
    assert terms[0] == pytest.approx(np.exp(-0.5))
    assert terms[1] == 0.0 and terms[16] == 0.0  # missed joint scores 0; an unlabelled one has no term
    assert terms[2:16] == pytest.approx(1.0)
    assert failures.joint_oks([scene([person], [stray], [-1], [[0.0]])], COCO_17) == pytest.approx(np.zeros(K))
