"""Keypoint sets: COCO_17 carries the official metadata, and a new set is one definition that flows
through config, targets, loss, grouping, evaluation, inference and drawing (a 5-joint star)."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import Params

from hhrnet.config import preset
from hhrnet.evaluation import available_backends, coco_results, evaluate_coco
from hhrnet.grouping import group
from hhrnet.inference import Poses, Predictor
from hhrnet.keypoints import COCO_17, KeypointSet, keypoint_set, register
from hhrnet.losses import MultiResolutionLoss
from hhrnet.model import HigherHRNet
from hhrnet.targets import fixed_sigma_heatmaps, joint_tag_targets
from hhrnet.viz import draw_poses

STAR = register(KeypointSet(
    name="test_star5", names=("head", "left_hand", "right_hand", "left_foot", "right_foot"),
    skeleton=((0, 1), (0, 2), (0, 3), (0, 4)), flip_pairs=((1, 2), (3, 4)), sigmas=(0.08, 0.06, 0.06, 0.07, 0.07),
    joint_order=(0, 3, 4, 1, 2), category="star", category_id=3,
))
SIZE = 128  # image = network input, so map pixels are image pixels divided by the output stride


def test_coco_17_is_the_official_metadata():
    assert COCO_17.flip_index == (0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15)
    assert COCO_17.joint_order == (0, 1, 2, 3, 4, 5, 6, 11, 12, 7, 8, 9, 10, 13, 14, 15, 16)
    assert np.array_equal(np.array(COCO_17.sigmas), Params("keypoints").kpt_oks_sigmas)
    assert keypoint_set("coco") is COCO_17 and keypoint_set(COCO_17) is COCO_17
    category = COCO_17.coco_category()
    assert (category["id"], category["name"], len(category["keypoints"]), category["skeleton"][0]) == \
        (1, "person", 17, [16, 14])


@pytest.mark.parametrize("change,message", [
    ({"sigmas": (0.1,) * 4}, "4 sigmas for 5 joints"),
    ({"flip_pairs": ((1, 2), (2, 3))}, "disjoint pairs"),
    ({"joint_order": (0, 1, 2, 3, 3)}, "not a permutation"),
    ({"skeleton": ((0, 5),)}, "index outside 0..4"),
])
def test_inconsistent_sets_are_refused(change, message):
    fields = dict(name="bad", names=STAR.names, skeleton=STAR.skeleton, flip_pairs=STAR.flip_pairs, sigmas=STAR.sigmas)
    with pytest.raises(ValueError, match=message):
        KeypointSet(**{**fields, **change})
    with pytest.raises(KeyError, match="unknown keypoint set 'nope'"):
        keypoint_set("nope")


def star_people() -> np.ndarray:
    """Three labelled stars ``(3, 5, 3)`` in image pixels (integers: no sub-pixel loss in the maps)."""
    shape = np.array([[0, -20], [-18, -4], [18, -4], [-12, 20], [12, 20]])
    centres = np.array([[30, 40], [90, 45], [60, 95]])
    xy = centres[:, None] + shape[None]
    return np.concatenate([xy, np.full((3, 5, 1), 2)], axis=2).astype(np.float64)


def star_ground_truth(people: np.ndarray) -> COCO:
    annotations = []
    for i, person in enumerate(people):
        (x0, y0), (x1, y1) = person[:, :2].min(0), person[:, :2].max(0)
        annotations.append({"id": i + 1, "image_id": 1, "category_id": STAR.category_id, "iscrowd": 0,
                            "keypoints": person.reshape(-1).tolist(), "num_keypoints": 5,
                            "bbox": [x0, y0, x1 - x0, y1 - y0], "area": float((x1 - x0) * (y1 - y0))})
    gt = COCO()
    gt.dataset = {"images": [{"id": 1, "width": SIZE, "height": SIZE, "file_name": "stars.png"}],
                  "annotations": annotations, "categories": [STAR.coco_category()]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
    return gt


def test_a_five_joint_set_runs_end_to_end():
    """Targets -> loss (zero on perfect outputs) -> grouping -> COCO AP 1.0, with no joint count anywhere."""
    cfg = preset("w32_512").override(**{
        "data.keypoints": STAR.name, "input_size": SIZE, "model.width": 8, "model.stage_modules": [1, 1, 1],
        "model.blocks_per_branch": 1, "model.num_basic_blocks": 1})
    assert cfg.model.num_joints == 5 and cfg.data.flip_index == (0, 2, 1, 4, 3) and cfg.data.keypoint_set is STAR
    people = star_people()
    person_tag = np.array([-3.0, 0.0, 3.0])

    # targets and the loss of perfect outputs, at every output resolution
    model = HigherHRNet(cfg.model).eval()
    with torch.no_grad():
        shapes = [tuple(o.shape) for o in model(torch.zeros(1, 3, SIZE, SIZE))]
    outputs, heatmaps, masks, tag_targets = [], [], [], []
    for i, stride in enumerate(cfg.model.output_strides):
        size = SIZE // stride
        joints = people.copy()
        joints[..., :2] /= stride
        heat = fixed_sigma_heatmaps(joints, size, cfg.data.sigma)
        targets = joint_tag_targets(joints, size, cfg.data.max_people)
        output = heat
        if cfg.model.with_ae_loss[i]:
            tags = np.zeros_like(heat)
            for p, person in enumerate(joints.astype(int)):
                tags[np.arange(5), person[:, 1], person[:, 0]] = person_tag[p]
            output = np.concatenate([heat, tags])
        outputs.append(torch.from_numpy(output)[None])
        heatmaps.append(torch.from_numpy(heat)[None])
        masks.append(torch.ones(1, size, size))
        tag_targets.append(torch.from_numpy(targets)[None])
    assert [tuple(o.shape) for o in outputs] == shapes == [(1, 10, 32, 32), (1, 5, 64, 64)]
    terms = MultiResolutionLoss(cfg.loss, cfg.model)(outputs, heatmaps, masks, tag_targets)
    assert terms.heatmap[0].item() == terms.heatmap[1].item() == 0 and terms.pull[0].item() == 0
    assert terms.total.item() < 1e-5  # only the push of tags 3 apart: 0.001 * exp(-9)

    # perfect full-resolution maps: each pixel's tag is that of the person whose joint is nearest
    heat = fixed_sigma_heatmaps(people, SIZE, cfg.data.sigma)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    distance = (xx[None, None] - people[:, :, 0, None, None]) ** 2 + (yy[None, None] - people[:, :, 1, None, None]) ** 2
    tags = person_tag[distance.argmin(axis=0)][..., None].astype(np.float32)  # (5, H, W, 1)
    [grouped] = group(heat[None], tags[None], cfg.test, cfg.data.keypoint_set)
    assert len(grouped) == 3 and grouped.joints.shape == (3, 5, 4)
    poses = Poses(grouped.joints[..., :3], grouped.scores, grouped.joints[..., 3:])
    results = coco_results(1, poses, STAR)
    assert {r["category_id"] for r in results} == {3} and len(results[0]["keypoints"]) == 15
    for backend in available_backends():
        assert evaluate_coco(star_ground_truth(people), results, backend=backend, keypoints=STAR)["AP"] == 1.0
    drawn = draw_poses(np.zeros((SIZE, SIZE, 3), np.uint8), poses.keypoints, kset=STAR)
    assert drawn.any()

    # the predictor takes maps, flip index and matching order from the config's set
    predictor = Predictor(model, cfg)
    image = np.random.default_rng(0).integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)
    [maps] = predictor.maps([image])
    assert maps.heatmaps.shape == (5, SIZE, SIZE) and maps.tags.shape == (5, SIZE, SIZE, 2)  # projected to the input
    [found] = predictor.predict([image])
    assert found.keypoints.shape[1:] == (5, 3)


class Poison:
    """Stands in for a piece of COCO's metadata: any use of it fails the test, naming what was reached."""

    def __init__(self, what: str) -> None:
        self.what = what

    def _reached(self, *_: object) -> None:
        raise AssertionError(f"a CrowdPose run reached COCO's {self.what}")

    __iter__ = __len__ = __getitem__ = __eq__ = __hash__ = __bool__ = __array__ = _reached


@pytest.fixture
def poisoned_coco(monkeypatch):
    """COCO_17's sigmas, flip pairs (so its flip index) and matching order, and the module-level copies of
    them, poisoned in place: whatever reaches them through the set, a registry lookup or a copy fails."""
    import hhrnet.config
    import hhrnet.grouping

    for name in ("sigmas", "flip_pairs", "joint_order"):
        monkeypatch.setitem(vars(COCO_17), name, Poison(f"{name} (hhrnet.keypoints.COCO_17)"))
    monkeypatch.setattr(hhrnet.config, "COCO_FLIP_INDEX", Poison("flip index (hhrnet.config.COCO_FLIP_INDEX)"))
    monkeypatch.setattr(hhrnet.grouping, "COCO_JOINT_ORDER", Poison("joint order (hhrnet.grouping)"))
    with pytest.raises(AssertionError, match="reached COCO's sigmas"):
        list(keypoint_set("coco").sigmas)  # the poison works


def test_a_crowdpose_run_never_reaches_coco_sigmas_or_flip_pairs(poisoned_coco, tmp_path):
    """Generate CrowdPose crowds, train a step, load the checkpoint, predict with flip test (aggregate,
    group), evaluate with the CrowdPose protocol: all with COCO's sigmas, flip pairs and order poisoned."""
    from hhrnet.checkpoints import load_model
    from hhrnet.config import crowdpose_preset
    from hhrnet.data import synthetic as S
    from hhrnet.engine import train
    from hhrnet.evaluation import evaluate

    crowds = S.generate(tmp_path / "crowds", 4, 4, size=64, seed=0, config=S.CROWD_SCENES, keypoints="crowdpose",
                        workers=1)
    cfg = crowdpose_preset().override(**{
        "model.width": 4, "model.stage_modules": [1, 1, 1], "model.blocks_per_branch": 1, "model.num_basic_blocks": 1,
        "input_size": 64, "train.data_root": str(crowds.root), "train.batch_size": 2, "train.workers": 0,
        "train.max_iters": 1, "train.amp": "off", "test.detection_threshold": 0.0})
    assert cfg.test.flip_test and cfg.data.keypoint_set.name == "crowdpose"
    checkpoint = train(cfg, tmp_path / "run", progress=False)
    model, trained = load_model(checkpoint)
    assert trained.data.keypoint_set.name == "crowdpose" and trained.model.num_joints == 14
    predictor = Predictor(model.eval(), trained)
    metrics = evaluate(predictor, crowds.root, "val", progress=False)
    assert metrics["images"] == 4 and "AP_hard" in metrics
    image = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    [found] = predictor.predict([image])
    assert found.keypoints.shape[1:] == (14, 3)
    coco = trained.override(**{"data.keypoints": "coco"})  # the same call on a COCO config does reach them
    with pytest.raises(AssertionError, match="reached COCO's flip_pairs"):
        Predictor(HigherHRNet(coco.model).eval(), coco).predict([image])
