"""The procedural COCO dataset: COCO-valid, deterministic, flip-exact, scale-varied, well-labelled."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from hhrnet import keypoints as keypoints_module
from hhrnet.data import synthetic as S
from hhrnet.keypoints import keypoint_set

N_TRAIN, N_VAL, SIZE = 40, 10, 256


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> S.SyntheticDataset:
    return S.generate(tmp_path_factory.mktemp("synth") / "a", N_TRAIN, N_VAL, size=SIZE, seed=0, workers=1)


def _annotations(dataset: S.SyntheticDataset, split: str = "train") -> list[dict]:
    return json.loads(dataset.annotations[split].read_text())["annotations"]


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _scenes(seed: int, count: int):
    for index in range(count):
        scene = S.sample_scene(S.image_rng(seed, "train", index), SIZE, SIZE)
        yield scene, S.render_scene(scene)


@pytest.mark.parametrize("split", ["train", "val"])
def test_ground_truth_as_detections_scores_ap_one(dataset, split):
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(dataset.annotations[split]))
        detections = [{"image_id": a["image_id"], "category_id": 1, "keypoints": a["keypoints"], "score": 1.0}
                      for a in gt.dataset["annotations"] if not a["iscrowd"] and a["num_keypoints"] > 0]
        evaluator = COCOeval(gt, gt.loadRes(detections), "keypoints")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    assert evaluator.stats[0] == pytest.approx(1.0)
    categories = gt.dataset["categories"]
    assert categories[0]["keypoints"] == list(S.KEYPOINTS.names)
    assert categories[0]["skeleton"][0] == [16, 14] and len(categories[0]["skeleton"]) == 19
    record = gt.dataset["images"][0]
    assert (dataset.images[split] / record["file_name"]).is_file()
    assert {record["width"], record["height"]} == {SIZE}


def test_records_are_well_formed(dataset):
    for ann in _annotations(dataset):
        kp = np.asarray(ann["keypoints"], float).reshape(17, 3)
        assert ann["num_keypoints"] == int((kp[:, 2] > 0).sum())
        assert np.all(kp[kp[:, 2] == 0, :2] == 0)  # v=0 -> x=y=0, as COCO
        inside = kp[kp[:, 2] > 0]
        assert np.all((inside[:, :2] > -0.5) & (inside[:, :2] < SIZE - 0.5))
        assert ann["area"] > 0 and ann["bbox"][2] > 0 and ann["bbox"][3] > 0


def test_same_seed_is_byte_identical_for_any_worker_count(dataset, tmp_path):
    again = S.generate(tmp_path / "b", N_TRAIN, N_VAL, size=SIZE, seed=0, workers=2)
    assert _tree_bytes(again.root) == _tree_bytes(dataset.root)
    other = S.generate(tmp_path / "c", 4, 0, size=SIZE, seed=1, workers=1)
    first = sorted(other.images["train"].iterdir())[0]
    assert first.read_bytes() != (dataset.images["train"] / first.name).read_bytes()
    assert other.annotations["train"].read_bytes() != dataset.annotations["train"].read_bytes()


def test_manifest_makes_generation_idempotent_and_detects_changes(tmp_path):
    root = tmp_path / "d"
    paths = S.generate(root, 3, 1, size=64, seed=0, workers=1)
    stamp = paths.annotations["train"].stat().st_mtime_ns
    S.generate(root, 3, 1, size=64, seed=0, workers=1)
    assert paths.annotations["train"].stat().st_mtime_ns == stamp  # complete and unchanged: kept
    paths.manifest.unlink()  # as after an interrupted run
    S.generate(root, 2, 1, size=64, seed=0, workers=1)
    assert json.loads(paths.manifest.read_text())["n_train"] == 2
    assert len(list(paths.images["train"].iterdir())) == 2  # stale images of the bigger run removed
    S.generate(root, 2, 1, size=64, seed=0, workers=1, config=S.SyntheticConfig(max_people=2))
    assert json.loads(paths.manifest.read_text())["config"]["max_people"] == 2


def test_visible_joints_lie_on_their_person(dataset):
    checked = 0
    for scene, render in _scenes(seed=3, count=15):
        people = [i for i, p in enumerate(scene.people) if not p.crowd and render.person_mask(i).any()]
        anns = [a for a in S.annotate_scene(scene, render) if not a["iscrowd"]]
        assert len(anns) == len(people)
        for person, ann in zip(people, anns):
            mask = render.person_mask(person)
            assert ann["area"] == mask.sum()
            for x, y, v in np.asarray(ann["keypoints"]).reshape(17, 3):
                if v == 2:
                    assert mask[int(np.floor(y + 0.5)), int(np.floor(x + 0.5))]
                    checked += 1
    assert checked > 100


def _without_polygons(annotations: list[dict]) -> list[dict]:
    return [{k: v for k, v in a.items() if not (k == "segmentation" and not a["iscrowd"])} for a in annotations]


def test_flipping_image_and_labels_equals_rendering_the_mirrored_scene():
    seen_crowd = False
    for scene, render in _scenes(seed=5, count=12):
        mirrored = S.mirror_scene(scene)
        mirrored_render = S.render_scene(mirrored)
        assert np.array_equal(mirrored_render.image, render.image[:, ::-1])
        assert np.array_equal(mirrored_render.person, render.person[:, ::-1])
        labels = S.annotate_scene(scene, render)
        flipped = S.flip_annotations(labels, scene.width)
        assert _without_polygons(flipped) == _without_polygons(S.annotate_scene(mirrored, mirrored_render))
        seen_crowd |= any(a["iscrowd"] for a in labels)
    assert seen_crowd  # the crowd RLE went through the flip too


def test_person_scales_span_coco_area_ranges(dataset):
    people = [a for a in _annotations(dataset) if not a["iscrowd"] and a["num_keypoints"] > 0]
    heights = np.array([a["bbox"][3] for a in people])
    assert heights.max() / heights.min() >= 10
    areas = np.array([a["area"] for a in people])
    assert ((areas >= 32**2) & (areas < 96**2)).sum() >= 5  # COCO medium
    assert (areas >= 96**2).sum() >= 5  # COCO large


def test_crowd_regions_and_unlabelled_people_are_well_formed(dataset):
    anns = _annotations(dataset)
    crowds = [a for a in anns if a["iscrowd"]]
    assert crowds and any(not a["iscrowd"] and a["num_keypoints"] == 0 for a in anns)
    for ann in crowds:
        assert ann["num_keypoints"] == 0 and not any(ann["keypoints"])
        assert isinstance(ann["segmentation"]["counts"], list)  # uncompressed RLE, as COCO crowds
        mask = mask_utils.decode(mask_utils.frPyObjects(ann["segmentation"], SIZE, SIZE))
        assert mask.sum() == ann["area"]
        x, y, w, h = ann["bbox"]
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        assert (x, y, w, h) == (cols[0], rows[0], cols[-1] - cols[0] + 1, rows[-1] - rows[0] + 1)


def test_mask_to_rle_round_trips_through_pycocotools():
    rng = np.random.default_rng(0)
    for mask in (rng.random((7, 5)) > 0.5, np.ones((4, 3), bool), np.zeros((3, 3), bool)):
        rle = S.mask_to_rle(mask)
        assert np.array_equal(mask_utils.decode(mask_utils.frPyObjects(rle, *mask.shape)), mask)


def test_figures_for_the_book(dataset):
    import matplotlib.pyplot as plt

    from hhrnet import viz

    grid, heights = viz.plot_dataset_overview(dataset.root, n=4, cols=2)
    assert len(grid.axes) == 4 and len(heights.axes) == 2
    image = np.zeros((32, 32, 3), np.uint8)
    drawn = viz.draw_poses(image, _annotations(dataset)[0]["keypoints"])
    assert drawn.shape == image.shape and not np.shares_memory(drawn, image)
    plt.close("all")


@pytest.mark.parametrize("front_facing_prob, low, high", [(1.0, 0.95, 1.0), (0.0, 0.3, 0.7)])
def test_people_mostly_face_the_camera_as_configured(front_facing_prob, low, high):
    """A frontal person has the left shoulder on the image's right; with the facing prior (the default
    0.85 of the CPU profiles, 1.0 here) nearly everyone does, with uniform yaw about half."""
    cfg = S.SyntheticConfig(front_facing_prob=front_facing_prob, crowd_prob=0.0, lying_prob=0.0)
    left_on_right = [person.joints[5].x > person.joints[6].x
                     for index in range(60)
                     for person in S.sample_scene(S.image_rng(1, "train", index), SIZE, SIZE, cfg).people]
    assert len(left_on_right) > 100
    assert low <= np.mean(left_on_right) <= high


def test_generated_content_is_pinned(tmp_path):
    """Annotation bytes and decoded pixels of a small set (crowds included) equal those of the generator
    before it became a package (``hhrnet/data/synthetic.py``, 944 lines); a change to what is
    generated must change this digest on purpose (and ``FORMAT_VERSION`` with it)."""
    import hashlib

    import cv2

    paths = S.generate(tmp_path, 4, 2, size=64, seed=5, workers=1, config=S.SyntheticConfig(crowd_prob=0.5))
    digest = hashlib.sha256()
    for split in ("train", "val"):
        digest.update(paths.annotations[split].read_bytes())
        for image in sorted(paths.images[split].glob("*.png")):
            digest.update(image.name.encode() + cv2.imread(str(image), cv2.IMREAD_UNCHANGED).tobytes())
    assert digest.hexdigest() == "f2b54705f3e0fc9cab677f9eed2e5fa69e3540b3a2dd426e5ea573ce5112f555"


def test_labels_come_from_the_keypoint_set():
    from hhrnet.keypoints import COCO_17

    assert S.KEYPOINTS is COCO_17 and S.coco_categories() == [COCO_17.coco_category()]
    assert S.coco_categories()[0]["skeleton"][0] == [16, 14]  # 1-based, as COCO writes


def test_generated_splits_pass_the_ground_truth_validation(tmp_path):
    """What train and evaluate read is checked on one path; the generator's files must pass it, border
    joints in the first pixel (pixel-index x or y in [-0.5, 0)) included."""
    from hhrnet.data.coco import load_coco

    scenes = S.SyntheticConfig(max_people=3, height_range=(0.3, 1.0), crowd_prob=0.0, lying_prob=0.0,
                               clutter_shapes=(0, 2), occluder_prob=0.1, noise_sigma_max=2.0, blur_prob=0.1,
                               front_facing_prob=0.85)
    data = S.generate(tmp_path / "s", 54, 1, size=256, seed=0, config=scenes, workers=1)
    joints = np.concatenate([np.reshape(a["keypoints"], (-1, 3)) for a in _annotations(data)])
    assert ((joints[:, :2] < 0) & (joints[:, 2:] > 0)).any()  # seed 0's image 53 has one
    for split in ("train", "val"):
        load_coco(data.annotations[split])


def test_annotations_carry_the_category_of_their_keypoint_set(monkeypatch):
    """The category id comes from the keypoint set (one place), not a literal 1."""
    kset = dataclasses.replace(keypoint_set("coco"), name="coco_as_category_7", category_id=7)
    monkeypatch.setitem(keypoints_module._REGISTRY, kset.name, kset)
    scene = S.sample_scene(np.random.default_rng(3), 96, 96, S.SyntheticConfig(), kset.name)
    annotations = S.annotate_scene(scene, S.render_scene(scene))
    assert annotations and {a["category_id"] for a in annotations} == {7}
    assert S.coco_categories(kset)[0]["id"] == 7
