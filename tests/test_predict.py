"""``hhrnet.predict``: videos in, annotated video and per-frame JSON out; inputs and their mirrored names."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest
import torch

from conftest import COCO_MINI
from hhrnet.config import TestConfig
from hhrnet.inference import Poses, Predictor
from hhrnet.model import HigherHRNet
from hhrnet.predict import PredictError, expand_inputs, predict_inputs
from test_cli import TINY
from test_keypoints import STAR


@pytest.fixture(scope="module")
def predictor():
    torch.manual_seed(0)
    return Predictor(HigherHRNet(TINY.model), TINY, TestConfig(flip_test=False), batch_size=2)


def test_a_video_gives_an_annotated_video_and_per_frame_json(predictor, tmp_path):
    frame = cv2.resize(cv2.imread(str(COCO_MINI / "images" / "000000000785.jpg")), (160, 128))
    writer = cv2.VideoWriter(str(tmp_path / "clip.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10, (160, 128))
    for i in range(5):
        writer.write(np.roll(frame, 4 * i, axis=1))
    writer.release()
    report = predict_inputs(predictor, [tmp_path / "clip.avi"], tmp_path / "out", progress=False)
    assert report.failures == [] and report.videos == 1
    frames = json.loads((tmp_path / "out" / "clip.avi.json").read_text())["frames"]
    assert [f["frame"] for f in frames] == [0, 1, 2, 3, 4]
    check = cv2.VideoCapture(str(tmp_path / "out" / "clip.avi"))
    assert int(check.get(cv2.CAP_PROP_FRAME_COUNT)) == 5
    assert not list((tmp_path / "out").glob(".*"))  # no partial file left


def test_inputs_mix_files_folders_and_globs_and_stay_apart(tmp_path):
    for sub in ("a", "b/c"):
        (tmp_path / sub).mkdir(parents=True)
        shutil.copy(COCO_MINI / "images" / "000000000785.jpg", tmp_path / sub / "pic.jpg")
    shutil.copy(COCO_MINI / "images" / "000000000785.jpg", tmp_path / "a" / "pic.png")
    inputs, problems = expand_inputs([tmp_path / "a", str(tmp_path / "b" / "*" / "*.jpg"), tmp_path / "a" / "pic.jpg",
                                      tmp_path / "missing.jpg"])
    assert sorted(i.name.as_posix() for i in inputs) == ["a/pic.jpg", "a/pic.png", "b/c/pic.jpg"]  # deduplicated
    assert problems == [f"{tmp_path / 'missing.jpg'}: no such file or folder"]


def test_nothing_to_predict_is_one_error(predictor, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(PredictError, match="empty: folder holds no image or video files"):
        predict_inputs(predictor, [tmp_path / "empty"], tmp_path / "out", progress=False)


def test_results_and_drawings_follow_the_predictors_keypoint_set(tmp_path):
    """A 5-joint predictor: JSON entries in its set's category with 5 joints each, drawn with its skeleton."""

    class StarPredictor:
        keypoints, batch_size = STAR, 1

        def __call__(self, images):
            joints = np.array([[[40, 20, 1], [20, 40, 1], [60, 40, 1], [30, 70, 1], [50, 70, 1]]], np.float32)
            return [Poses(joints, np.array([0.9], np.float32), np.zeros((1, 5, 1), np.float32)) for _ in images]

    cv2.imwrite(str(tmp_path / "blank.png"), np.zeros((96, 96, 3), np.uint8))
    report = predict_inputs(StarPredictor(), [tmp_path / "blank.png"], tmp_path / "out", progress=False)
    assert report.failures == [] and report.people == 1
    [entry] = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert entry["category_id"] == STAR.category_id == 3 and len(entry["keypoints"]) == 15
    assert cv2.imread(str(tmp_path / "out" / "blank.png")).any()  # the star was drawn
