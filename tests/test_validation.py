"""Ground truth is checked before anything is scored: a mutated COCO file is refused (naming the file) or
scored identically by both COCO backends."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import COCO_MINI
from hhrnet.data.coco import DatasetError, load_coco, validate_ground_truth
from hhrnet.evaluation import available_backends, evaluate_coco

GT_FILE = COCO_MINI / "person_keypoints_val2017.json"
IMAGES = COCO_MINI / "images"
ORIGINAL = json.loads(GT_FILE.read_text())


def _detections(coco: dict) -> list[dict]:
    """The original people, shifted by a few pixels and scored in file order (AP well below 1)."""
    rng = np.random.default_rng(0)
    out = []
    for i, ann in enumerate(a for a in coco["annotations"] if not a["iscrowd"] and a["num_keypoints"] > 0):
        k = np.asarray(ann["keypoints"], np.float64).reshape(-1, 3)
        k[:, :2] += rng.normal(0, 4, size=(len(k), 2))
        k[:, 2] = 1.0
        out.append({"image_id": ann["image_id"], "category_id": 1, "keypoints": k.reshape(-1).tolist(),
                    "score": 1.0 - 0.005 * i})
    return out


DETECTIONS = _detections(ORIGINAL)
ODD_VALUES = [None, math.nan, math.inf, -1, -0.5, 0, 1e12, "x", "", [], {}, True, [1, 2], 3.5]
SECTIONS = ["images", "annotations", "categories"]


class Mutant(tuple):
    """(coco, description) shown by its description alone (the file is 200 kB)."""

    def __repr__(self) -> str:
        return f"Mutant({self[1]!r})"


@st.composite
def mutants(draw) -> Mutant:
    return Mutant(draw(_mutation()))


@st.composite
def _mutation(draw) -> tuple[dict, str]:
    coco = copy.deepcopy(ORIGINAL)
    kind = draw(st.sampled_from(["drop_section", "empty_section", "annotation_field", "keypoint_value",
                                 "keypoint_length", "image_field", "duplicate", "drop_field"]))
    if kind in ("drop_section", "empty_section"):
        section = draw(st.sampled_from(SECTIONS))
        coco.pop(section) if kind == "drop_section" else coco.__setitem__(section, [])
        return coco, f"{kind} {section}"
    ann = draw(st.sampled_from(coco["annotations"]))
    img = draw(st.sampled_from(coco["images"]))
    if kind == "annotation_field":
        key = draw(st.sampled_from(["id", "image_id", "category_id", "iscrowd", "num_keypoints", "area", "bbox",
                                    "keypoints"]))
        ann[key] = draw(st.sampled_from(ODD_VALUES + [999999999]))
        return coco, f"annotation {ann['id'] if key != 'id' else '?'} {key}={ann[key]!r}"
    if kind == "keypoint_value":
        j = draw(st.integers(0, len(ann["keypoints"]) - 1))
        ann["keypoints"][j] = draw(st.sampled_from([math.nan, -3.0, 1e9, 3, 7, 0.5, 600.0]))
        return coco, f"annotation {ann['id']} keypoints[{j}]={ann['keypoints'][j]!r}"
    if kind == "keypoint_length":
        n = draw(st.sampled_from([0, 3, 48, 54]))
        ann["keypoints"] = (ann["keypoints"] * 2)[:n]
        return coco, f"annotation {ann['id']} {n} keypoint values"
    if kind == "image_field":
        key = draw(st.sampled_from(["id", "file_name", "height", "width"]))
        img[key] = draw(st.sampled_from(ODD_VALUES + ["missing.jpg"]))
        return coco, f"image {key}={img[key]!r}"
    if kind == "duplicate":
        section, entry = draw(st.sampled_from([("annotations", ann), ("images", img)]))
        coco[section].append(copy.deepcopy(entry))
        return coco, f"duplicate {section} entry"
    entry = draw(st.sampled_from([ann, img]))
    key = draw(st.sampled_from(sorted(entry)))
    entry.pop(key)
    return coco, f"drop {key}"


def _stats(path, backend):
    return evaluate_coco(path, DETECTIONS, backend=backend)


@pytest.mark.skipif("hotcoco" not in available_backends(), reason="hotcoco is not installed")
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mutant=mutants())
def test_every_mutant_is_refused_or_scored_identically_by_both_backends(tmp_path, mutant):
    coco, what = mutant
    path = tmp_path / "mutant.json"
    path.write_text(json.dumps(coco))
    try:
        validate_ground_truth(path, IMAGES)
    except DatasetError as err:
        message = str(err)
        assert str(path) in message and "\n" not in message, (what, message)
        return
    assert _stats(path, "pycocotools") == _stats(path, "hotcoco"), what


def test_the_unmutated_file_passes_and_is_scored_identically(tmp_path):
    coco = validate_ground_truth(GT_FILE, IMAGES)
    assert len(coco["images"]) == 47
    a, b = _stats(GT_FILE, "pycocotools"), _stats(GT_FILE, "hotcoco")
    assert a == b and 0.3 < a["AP"] < 1.0


@pytest.mark.parametrize("change, message", [
    (lambda c: c.pop("annotations"), r"not a COCO file"),
    (lambda c: c.__setitem__("images", []), r"'images' is empty"),
    (lambda c: c.__setitem__("annotations", [a for a in c["annotations"] if a["iscrowd"]]), r"no annotated person"),
    (lambda c: c["annotations"][0].__setitem__("keypoints", c["annotations"][0]["keypoints"][:48]),
     r"annotation \d+: 'keypoints' has 48 values"),
    (lambda c: c["annotations"][0]["keypoints"].__setitem__(0, math.nan), r"annotation \d+: 'keypoints' contains NaN"),
    (lambda c: c["annotations"][0]["keypoints"].__setitem__(0, -4), r"annotation \d+: 'keypoints' contains negative"),
    (lambda c: c["annotations"][0].__setitem__("image_id", 12345), r"annotation \d+: image_id 12345 is not in"),
    (lambda c: c["images"][0].__setitem__("file_name", "gone.jpg"), r"1 image file\(s\) missing, first .*gone\.jpg"),
])
def test_issue_21_probes_are_refused_with_the_file_name(tmp_path, change, message):
    """The probes of issue #21 that evaluate used to score (AP -100, AP 0, AP 1.0 with one backend)."""
    coco = copy.deepcopy(ORIGINAL)
    change(coco)
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(coco))
    with pytest.raises(DatasetError, match=str(path).replace(".", r"\.") + ": " + message if "missing" not in message
                       else message) as err:
        validate_ground_truth(path, IMAGES)
    assert str(path) in str(err.value)


def test_training_reads_through_the_same_validation(tmp_path):
    coco = copy.deepcopy(ORIGINAL)
    coco["annotations"][3]["keypoints"][3] = -1  # the x of joint 1
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(coco))
    with pytest.raises(DatasetError, match="contains negative"):
        load_coco(path)
    from hhrnet.data.coco import CocoKeypoints

    with pytest.raises(DatasetError, match="contains negative"):
        CocoKeypoints(path, IMAGES, train=True, input_size=64, output_sizes=(16, 32))


def test_joints_inside_the_first_pixel_are_valid(tmp_path):
    """Pixel-index coordinates: pixel 0 spans -0.5..0.5, so x = -0.375 is in the image (the synthetic
    generator writes such border joints); x = -0.6 is not."""
    coco = copy.deepcopy(ORIGINAL)
    ann = next(a for a in coco["annotations"] if a["keypoints"][2] == 2)
    path = tmp_path / "gt.json"
    ann["keypoints"][0] = -0.375
    path.write_text(json.dumps(coco))
    load_coco(path)
    ann["keypoints"][0] = -0.6
    path.write_text(json.dumps(coco))
    with pytest.raises(DatasetError, match="outside the image"):
        load_coco(path)


@pytest.mark.parametrize("segmentation, message", [
    ("abc", r"'segmentation' must be a list of polygons or an RLE object, got 'abc'"),
    ([[10, 10, 20, 20]], r"'segmentation' polygons must be lists of at least 3 finite x, y pairs"),
    ([[10, 10, 20, "x", 30, 30]], r"'segmentation' polygons must be lists"),
    ([[10, 10, 20, math.inf, 30, 30]], r"'segmentation' polygons must be lists"),
    ({"size": [1, 1], "counts": [1]}, r"RLE 'segmentation' size \[1, 1\] is not the image's"),
    ({"size": "HW", "counts": "abc"}, r"RLE 'segmentation' size 'HW' is not the image's"),
    ("SIZED", r"RLE 'segmentation' counts must be run lengths >= 0 summing to"),
    ({"counts": "x" * 10_000}, r"RLE 'segmentation' size None"),
])
def test_a_malformed_segmentation_is_refused_when_the_dataset_is_opened(tmp_path, segmentation, message):
    """The loss mask decodes segmentations only when an image is sampled: every form is checked at open,
    naming the file, the annotation id and the field (the message quotes at most a short value)."""
    coco = copy.deepcopy(ORIGINAL)
    ann = next(a for a in coco["annotations"] if a["iscrowd"])  # a crowd region: its mask is decoded
    image = next(i for i in coco["images"] if i["id"] == ann["image_id"])
    if segmentation == "SIZED":
        segmentation = {"size": [image["height"], image["width"]], "counts": [5, 7]}
    ann["segmentation"] = segmentation
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(coco))
    with pytest.raises(DatasetError, match=rf"{path}: annotation {ann['id']}: {message}") as err:
        load_coco(path)
    assert len(str(err.value)) < 300


def test_json_nested_past_the_recursion_limit_names_the_file(tmp_path):
    path = tmp_path / "gt.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(DatasetError, match=rf"{path}: not valid JSON \(nested too deeply"):
        load_coco(path)
