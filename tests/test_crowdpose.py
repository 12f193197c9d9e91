"""CrowdPose end to end: the 14-joint set, the crowd index and its splits, CrowdPose-format synthetic
crowds, the CrowdPose protocol (xtcocotools checked against a computation written from the protocol's
definition), 14 joints through targets, loss and grouping, the reader, and the checkpoint refusal."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from hhrnet.checkpoints import CheckpointError, load_model, save_checkpoint
from hhrnet.config import crowdpose_preset, preset
from hhrnet.data import synthetic as S
from hhrnet.data.coco import CocoKeypoints, DatasetError, coco_paths
from hhrnet.data.crowd import CROWD_INDEX_SPLITS, crowd_index, crowd_split, images_by_split
from hhrnet.evaluation import CROWD_METRIC_NAMES, coco_results, evaluate_crowdpose, metrics_markdown, score
from hhrnet.grouping import group
from hhrnet.inference import Poses
from hhrnet.keypoints import COCO_17, CROWDPOSE_14, keypoint_set, keypoint_set_for_names
from hhrnet.losses import MultiResolutionLoss
from hhrnet.model import HigherHRNet
from hhrnet.targets import fixed_sigma_heatmaps, joint_tag_targets

N_VAL, SIZE = 24, 96  # seed 0 gives 10 easy, 8 medium, 6 hard images


@pytest.fixture(scope="module")
def crowds(tmp_path_factory) -> S.SyntheticDataset:
    return S.generate(tmp_path_factory.mktemp("crowdpose") / "synth", 0, N_VAL, size=SIZE, seed=0,
                      config=S.CROWD_SCENES, keypoints="crowdpose", workers=1)


def _val(crowds: S.SyntheticDataset) -> dict:
    return json.loads(crowds.annotations["val"].read_text())


# --------------------------------------------------------------------------------------------------
# The keypoint set


def test_crowdpose_14_is_the_toolkit_metadata():
    kset = keypoint_set("crowdpose")
    assert kset is CROWDPOSE_14 and kset.num_joints == 14 and kset.protocol == "crowdpose"
    assert kset.names[:12] == COCO_17.names[5:] and kset.names[12:] == ("head", "neck")
    assert kset.area_bounds is None
    # the official group.py matches the first NUM_JOINTS entries of COCO's order
    assert kset.joint_order == COCO_17.joint_order[:14]
    assert keypoint_set_for_names(list(kset.names)) is kset and keypoint_set_for_names(["a"]) is None


def test_flip_index_is_an_involution_swapping_left_and_right():
    kset = CROWDPOSE_14
    flip = kset.flip_index
    assert flip == (1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 12, 13)
    for k, name in enumerate(kset.names):
        assert flip[flip[k]] == k
        mirrored = name.replace("left", "@").replace("right", "left").replace("@", "right")
        assert kset.names[flip[k]] == mirrored


def test_sigma_lookup_by_name():
    kset = CROWDPOSE_14
    toolkit = np.array([.79, .79, .72, .72, .62, .62, 1.07, 1.07, .87, .87, .89, .89, .79, .79]) / 10.0
    assert np.array_equal(np.array(kset.sigmas), toolkit)
    for name in kset.names:  # the twelve limb joints keep their COCO sigma
        if name in COCO_17.names:
            assert kset.sigma(name) == COCO_17.sigma(name)
    assert kset.sigma("head") == kset.sigma("neck") == kset.sigma("left_shoulder") == 0.079
    with pytest.raises(KeyError, match="has no joint 'nose'"):
        kset.sigma("nose")


# --------------------------------------------------------------------------------------------------
# Crowd index


def _person(points: list[tuple[float, float]], box: list[float]) -> dict:
    keypoints = [v for x, y in points for v in (x, y, 2)]
    return {"keypoints": keypoints, "bbox": box, "iscrowd": 0}


def test_crowd_index_follows_its_definition():
    # A: 2 joints, box [0, 10] x [0, 10]; B: 4 joints, two of them inside A's box; B's box holds one of A's.
    a = _person([(1, 1), (9, 9)], [0, 0, 10, 10])
    b = _person([(5, 5), (10, 10), (20, 20), (30, 30)], [8, 8, 30, 30])
    # A sees 2 of B's joints / 2 own = 1.0; B sees A's (9, 9) / 4 own = 0.25; mean 0.625
    assert crowd_index([a, b]) == pytest.approx(0.625)
    # unlabelled joints (v = 0) and crowd regions count for nobody
    hidden = {"keypoints": [5, 5, 0] * 4, "bbox": [0, 0, 10, 10], "iscrowd": 0}
    crowd = {**_person([(5, 5)], [0, 0, 10, 10]), "iscrowd": 1}
    assert crowd_index([a, b, hidden, crowd]) == pytest.approx(0.625)
    assert crowd_index([a]) == 0.0 and crowd_index([]) == 0.0


def test_crowd_index_splits():
    low, high = CROWD_INDEX_SPLITS
    assert (low, high) == (0.2, 0.8)
    assert [crowd_split(v) for v in (0.0, low - 1e-9, low, high - 1e-9, high, 2.5)] == \
        ["easy", "easy", "medium", "medium", "hard", "hard"]
    images = [{"id": i, "crowdIndex": v} for i, v in enumerate((0.1, 0.5, 0.9, 0.0))]
    assert images_by_split(images) == {"easy": [0, 3], "medium": [1], "hard": [2]}


# --------------------------------------------------------------------------------------------------
# CrowdPose-format synthetic crowds


def test_synthetic_crowds_are_crowdpose_format_with_every_split_populated(crowds):
    data = _val(crowds)
    assert data["categories"] == [CROWDPOSE_14.coco_category()] and data["info"]["keypoints"] == "crowdpose"
    by_image: dict[int, list] = {i["id"]: [] for i in data["images"]}
    for ann in data["annotations"]:
        assert len(ann["keypoints"]) == 3 * 14 and not ann["iscrowd"]
        by_image[ann["image_id"]].append(ann)
    for image in data["images"]:
        assert image["crowdIndex"] == round(crowd_index(by_image[image["id"]]), 4)
    splits = images_by_split(data["images"])
    assert {name: len(ids) for name, ids in splits.items()} == {"easy": 10, "medium": 8, "hard": 6}


def test_head_top_and_neck_come_from_the_body_and_the_images_do_not_depend_on_the_set():
    for index in range(3):
        coco = S.sample_scene(S.image_rng(0, "val", index), SIZE, SIZE, S.CROWD_SCENES)
        crowd = S.sample_scene(S.image_rng(0, "val", index), SIZE, SIZE, S.CROWD_SCENES, "crowdpose")
        assert np.array_equal(S.render_scene(coco).image, S.render_scene(crowd).image)
        for a, b in zip(coco.people, crowd.people):
            by_name = dict(zip(CROWDPOSE_14.names, b.joints))
            for name, joint in zip(COCO_17.names, a.joints):
                if name in by_name:
                    assert (by_name[name].x, by_name[name].y) == (joint.x, joint.y)
            head, neck = np.array([by_name["head"].x, by_name["head"].y]), np.array([by_name["neck"].x, by_name["neck"].y])
            shoulders = np.array([[j.x, j.y] for j in b.joints[:2]]).mean(0)
            nose = np.array([a.joints[0].x, a.joints[0].y])
            # the neck sits just above the shoulder line, the head top beyond the face, on the body's axis
            assert np.linalg.norm(neck - shoulders) < 0.05 * b.height
            assert np.linalg.norm(head - neck) > np.linalg.norm(nose - neck) * 0.8


def test_flipping_crowdpose_labels_equals_rendering_the_mirrored_scene():
    for index in range(3):
        scene = S.sample_scene(S.image_rng(1, "val", index), SIZE, SIZE, S.CROWD_SCENES, "crowdpose")
        render = S.render_scene(scene)
        mirrored = S.mirror_scene(scene)
        mirrored_render = S.render_scene(mirrored)
        assert np.array_equal(mirrored_render.image, render.image[:, ::-1])
        flipped = S.flip_annotations(S.annotate_scene(scene, render), scene.width, "crowdpose")
        expected = S.annotate_scene(mirrored, mirrored_render)
        strip = lambda anns: [{k: v for k, v in a.items() if k != "segmentation"} for a in anns]  # noqa: E731
        assert strip(flipped) == strip(expected)


# --------------------------------------------------------------------------------------------------
# The CrowdPose protocol: xtcocotools against a computation from the definition


def reference_crowdpose(dataset: dict, results: list[dict], sigmas: tuple[float, ...], max_dets: int = 20) -> dict:
    """AP / AP50 / AP75 / AR and AP of the easy / medium / hard images, written from the protocol.

    OKS with the set's sigmas over the labelled joints and 0.53 x box area as the scale (a person without
    labelled joints: the distance outside its box grown by the box size); people with ``num_keypoints`` 0
    are ignored (a detection matched to them counts for nothing); per image the 20
    best-scored detections, matched greedily by score to the best unmatched person of OKS >= t; precision
    made non-increasing and read at 101 recall points; the mean over t = 0.50:0.05:0.95.
    """
    thresholds = np.linspace(0.5, 0.95, 10)
    recall_points = np.linspace(0, 1, 101)
    var = (2 * np.asarray(sigmas)) ** 2

    def oks(det: dict, gt: dict) -> float:
        d, g = np.reshape(det["keypoints"], (-1, 3)), np.reshape(gt["keypoints"], (-1, 3))
        visible = g[:, 2] > 0
        x, y, w, h = gt["bbox"]
        if visible.any():
            delta = d[:, :2] - g[:, :2]
        else:  # no labelled joint: distance to the box grown by its size on every side (COCO's rule)
            low, high = np.array([x - w, y - h]), np.array([x + 2 * w, y + 2 * h])
            delta = np.maximum(0, low - d[:, :2]) + np.maximum(0, d[:, :2] - high)
            visible = np.ones(len(g), bool)
        e = (delta ** 2).sum(1) / var / (w * h * 0.53 + np.spacing(1)) / 2
        return float(np.exp(-e[visible]).mean())

    def curves(image_ids: list[int]) -> tuple[np.ndarray, np.ndarray]:
        records = [[] for _ in thresholds]  # (score, matched a counted person, matched an ignored one)
        counted = 0
        for image_id in image_ids:
            gts = [a for a in dataset["annotations"] if a["image_id"] == image_id]
            ignored = [bool(g["iscrowd"]) or g["num_keypoints"] == 0 for g in gts]
            counted += ignored.count(False)
            order = [i for i in range(len(gts)) if not ignored[i]] + [i for i in range(len(gts)) if ignored[i]]
            dets = sorted((r for r in results if r["image_id"] == image_id), key=lambda r: -r["score"])[:max_dets]
            table = [[oks(d, g) for g in gts] for d in dets]
            for t, threshold in enumerate(thresholds):
                taken: set[int] = set()
                for d, det in enumerate(dets):
                    best, best_oks = None, min(threshold, 1 - 1e-10)
                    for g in order:
                        if g in taken:
                            continue
                        if best is not None and not ignored[best] and ignored[g]:
                            break  # a counted person is matched; ignored ones come after
                        if table[d][g] >= best_oks:
                            best, best_oks = g, table[d][g]
                    if best is not None:
                        taken.add(best)
                    records[t].append((det["score"], best is not None and not ignored[best],
                                       best is not None and ignored[best]))
        precision = np.zeros((len(thresholds), len(recall_points)))
        recall = np.zeros(len(thresholds))
        for t, rows in enumerate(records):
            rows = sorted(rows, key=lambda r: -r[0])
            hits = np.array([r[1] for r in rows if not r[2]], bool)
            tp, fp = np.cumsum(hits), np.cumsum(~hits)
            rc = tp / counted
            pr = tp / np.maximum(tp + fp, np.spacing(1))
            pr = np.maximum.accumulate(pr[::-1])[::-1] if len(pr) else pr
            recall[t] = rc[-1] if len(rc) else 0
            picks = np.searchsorted(rc, recall_points, side="left")
            precision[t, : np.count_nonzero(picks < len(pr))] = pr[picks[picks < len(pr)]]
        return precision, recall

    every = sorted(i["id"] for i in dataset["images"])
    precision, recall = curves(every)
    out = {"AP": precision.mean(), "AP50": precision[0].mean(), "AP75": precision[5].mean(), "AR": recall.mean()}
    for name, ids in images_by_split(dataset["images"]).items():
        out[f"AP_{name}"] = round(float(curves(sorted(ids))[0].mean()), 4)
    return out


def planted_predictions(dataset: dict, seed: int = 0) -> list[dict]:
    """Ground truth disturbed by scale-relative noise, some people missed, duplicates, false positives."""
    rng = np.random.default_rng(seed)
    results = []
    for ann in dataset["annotations"]:
        if ann["num_keypoints"] == 0 or rng.random() < 0.15:
            continue
        points = np.reshape(ann["keypoints"], (-1, 3)).astype(float)
        size = np.sqrt(ann["bbox"][2] * ann["bbox"][3])
        for copy in range(1 + int(rng.random() < 0.25)):
            noisy = points.copy()
            noisy[:, :2] += rng.normal(0, size * rng.uniform(0.005, 0.12) * (1 + 2 * copy), (len(points), 2))
            noisy[:, 2] = rng.uniform(0.1, 1, len(points))
            results.append({"image_id": ann["image_id"], "category_id": 1, "keypoints": noisy.ravel().tolist(),
                            "score": float(rng.uniform(0.05, 1))})
    for image in dataset["images"]:
        for _ in range(int(rng.integers(0, 3))):
            junk = np.column_stack([rng.uniform(0, image["width"], (14, 2)), np.ones(14)])
            results.append({"image_id": image["id"], "category_id": 1, "keypoints": junk.ravel().tolist(),
                            "score": float(rng.uniform(0, 0.6))})
    return results


def test_xtcocotools_equals_the_protocol_definition_on_planted_predictions(crowds):
    data = _val(crowds)
    results = planted_predictions(data)
    metrics = evaluate_crowdpose(crowds.annotations["val"], results)
    assert list(metrics) == list(CROWD_METRIC_NAMES)
    expected = reference_crowdpose(data, results, CROWDPOSE_14.sigmas)
    for name, value in expected.items():
        assert metrics[name] == pytest.approx(value, abs=1e-12), name
    assert 0.2 < metrics["AP"] < 0.9 and metrics["AP50"] > metrics["AP75"]  # a discriminating test case
    assert len({metrics["AP_easy"], metrics["AP_medium"], metrics["AP_hard"]}) == 3
    # the dict and the COCO object give the same numbers as the file; score() picks the protocol
    assert evaluate_crowdpose(data, results) == metrics
    assert score(crowds.annotations["val"], results, keypoints=CROWDPOSE_14, backend="auto") == metrics
    with pytest.raises(ValueError, match="scored by xtcocotools"):
        score(data, results, keypoints=CROWDPOSE_14, backend="hotcoco")
    assert "AP_hard" in metrics_markdown(metrics, "crowds")


def test_perfect_predictions_score_one_on_every_split(crowds):
    data = _val(crowds)
    perfect = [{"image_id": a["image_id"], "category_id": 1, "keypoints": a["keypoints"], "score": 1.0}
               for a in data["annotations"] if a["num_keypoints"] > 0]
    metrics = evaluate_crowdpose(crowds.annotations["val"], perfect)
    assert all(metrics[name] == 1.0 for name in ("AP", "AP50", "AP75", "AR", "AP_easy", "AP_medium", "AP_hard")), metrics


def test_an_xtcocotools_that_does_not_import_is_refused_with_the_source_build(crowds, monkeypatch):
    """Its numpy-1.x wheel fails to import on numpy 2: the error names the command that rebuilds it."""
    import sys

    from hhrnet.evaluation import XTCOCOTOOLS_INSTALL

    monkeypatch.setitem(sys.modules, "xtcocotools.cocoeval", None)  # import raises ImportError
    with pytest.raises(ImportError, match="needs xtcocotools built for this numpy") as err:
        evaluate_crowdpose(crowds.annotations["val"], [])
    assert XTCOCOTOOLS_INSTALL in str(err.value) and "--no-binary xtcocotools" in XTCOCOTOOLS_INSTALL


def test_a_file_without_crowd_index_is_refused(crowds):
    data = _val(crowds)
    data["images"][0].pop("crowdIndex")
    with pytest.raises(ValueError, match="needs 'crowdIndex' on every image"):
        evaluate_crowdpose(data, [{"image_id": 1, "category_id": 1, "keypoints": [0] * 42, "score": 1.0}])


# --------------------------------------------------------------------------------------------------
# 14 joints through targets, loss and grouping


def test_fourteen_joints_through_targets_loss_grouping_and_evaluation():
    cfg = crowdpose_preset().override(**{"input_size": 128, "model.width": 8, "model.stage_modules": [1, 1, 1],
                                         "model.blocks_per_branch": 1, "model.num_basic_blocks": 1})
    assert cfg.model.num_joints == 14 and cfg.data.flip_index == CROWDPOSE_14.flip_index
    # three upright people; integer positions, so the maps lose nothing
    shape = np.array([[-8, -20], [8, -20], [-12, -8], [12, -8], [-14, 4], [14, 4], [-6, 6], [6, 6],
                      [-7, 18], [7, 18], [-7, 30], [7, 30], [0, -34], [0, -22]])
    centres = np.array([[30, 50], [66, 52], [100, 78]])
    people = np.concatenate([centres[:, None] + shape[None], np.full((3, 14, 1), 2)], axis=2).astype(np.float64)
    person_tag = np.array([-3.0, 0.0, 3.0])

    outputs, heatmaps, masks, targets = [], [], [], []
    for i, stride in enumerate(cfg.model.output_strides):
        size = 128 // stride
        joints = people.copy()
        joints[..., :2] /= stride
        heat = fixed_sigma_heatmaps(joints, size, cfg.data.sigma)
        output = heat
        if cfg.model.with_ae_loss[i]:
            tags = np.zeros_like(heat)
            for p, person in enumerate(joints.astype(int)):
                tags[np.arange(14), person[:, 1], person[:, 0]] = person_tag[p]
            output = np.concatenate([heat, tags])
        outputs.append(torch.from_numpy(output)[None])
        heatmaps.append(torch.from_numpy(heat)[None])
        masks.append(torch.ones(1, size, size))
        targets.append(torch.from_numpy(joint_tag_targets(joints, size, cfg.data.max_people))[None])
    with torch.no_grad():
        shapes = [tuple(o.shape) for o in HigherHRNet(cfg.model).eval()(torch.zeros(1, 3, 128, 128))]
    assert [tuple(o.shape) for o in outputs] == shapes == [(1, 28, 32, 32), (1, 14, 64, 64)]
    assert targets[0].shape == (1, cfg.data.max_people, 14, 2)
    terms = MultiResolutionLoss(cfg.loss, cfg.model)(outputs, heatmaps, masks, targets)
    assert terms.heatmap[0].item() == terms.heatmap[1].item() == 0 and terms.pull[0].item() == 0

    heat = fixed_sigma_heatmaps(people, 128, cfg.data.sigma)
    yy, xx = np.mgrid[:128, :128]
    distance = (xx[None, None] - people[:, :, 0, None, None]) ** 2 + (yy[None, None] - people[:, :, 1, None, None]) ** 2
    tags = person_tag[distance.argmin(axis=0)][..., None].astype(np.float32)
    [grouped] = group(heat[None], tags[None], cfg.test, cfg.data.keypoint_set)
    assert len(grouped) == 3 and grouped.joints.shape == (3, 14, 4)
    results = coco_results(1, Poses(grouped.joints[..., :3], grouped.scores, grouped.joints[..., 3:]), CROWDPOSE_14)
    annotations = [{"id": i + 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "num_keypoints": 14,
                    "keypoints": p.ravel().tolist(),
                    "bbox": [*p[:, :2].min(0).tolist(), *(p[:, :2].max(0) - p[:, :2].min(0)).tolist()]}
                   for i, p in enumerate(people)]
    gt = {"images": [{"id": 1, "width": 128, "height": 128, "file_name": "x.png",
                      "crowdIndex": crowd_index(annotations)}],
          "annotations": annotations, "categories": [CROWDPOSE_14.coco_category()]}
    assert evaluate_crowdpose(gt, results)["AP"] == 1.0


# --------------------------------------------------------------------------------------------------
# Reader, presets, checkpoints


def test_reader_finds_the_crowdpose_layout_and_keeps_the_crowd_index(crowds, tmp_path):
    root = tmp_path / "crowd_pose"
    (root / "json").mkdir(parents=True)
    shutil.copytree(crowds.images["val"], root / "images")
    shutil.copy(crowds.annotations["val"], root / "json" / "crowdpose_val.json")
    assert coco_paths(root, "val") == (root / "json" / "crowdpose_val.json", root / "images")
    cfg = crowdpose_preset().override(**{"input_size": 64, "model.width": 8})
    dataset = CocoKeypoints.from_config(cfg, train=True, root=root, split="val")
    data = _val(crowds)
    indices = {i["id"]: i["crowdIndex"] for i in data["images"]}
    assert all(r.crowd_index == indices[r.image_id] for r in dataset.records) and dataset.records
    assert dataset.records[0].joints.shape[1:] == (14, 3)
    sample = dataset[0]
    assert sample["heatmaps"][0].shape == (14, 16, 16)
    with pytest.raises(DatasetError, match=r"category has 14 joints \(crowdpose\); the config asks for 17 \(coco\)"):
        CocoKeypoints.from_config(preset("w32_512"), train=False, root=root, split="val")


def _tiny(cfg):
    return cfg.override(**{"model.width": 4, "model.stage_modules": [1, 1, 1], "model.blocks_per_branch": 1,
                           "model.num_basic_blocks": 1, "input_size": 64})


def test_a_coco_checkpoint_refuses_a_crowdpose_head_in_one_line(tmp_path):
    coco = _tiny(preset("w32_512"))
    path = save_checkpoint(tmp_path / "coco.pth", HigherHRNet(coco.model), coco)
    crowd = _tiny(crowdpose_preset())
    with pytest.raises(CheckpointError) as err:
        load_model(path, crowd)
    assert str(err.value) == f"checkpoint {path} has 17 joints (coco); the config asks for 14 (crowdpose)"
    # a bare state dict (official layout) is recognised by its joint count
    bare = tmp_path / "official.pth"
    torch.save(HigherHRNet(coco.model).state_dict(), bare)
    with pytest.raises(CheckpointError, match=r"^checkpoint .*official.pth has 17 joints \(coco\); the config "
                                              r"asks for 14 \(crowdpose\)$"):
        load_model(bare, crowd)
    # and one trained for CrowdPose loads with its own set, with or without a config
    crowd_path = tmp_path / "crowd.pth"
    torch.save(HigherHRNet(crowd.model).state_dict(), crowd_path)
    model, cfg = load_model(crowd_path)
    assert cfg.data.keypoint_set is CROWDPOSE_14 and cfg.model.num_joints == 14
    assert load_model(crowd_path, crowd)[1].data.keypoints == "crowdpose"


# The official repository's experiments/crowd_pose/higher_hrnet/w32_512_adam_lr1e-3.yaml, the fields hhrnet
# expresses (facts read from the file; its EXTRA block equals the COCO w32 network's).
OFFICIAL_CROWDPOSE_W32_512 = {
    "DATASET.SIGMA": 2, "DATASET.FLIP": 0.5, "DATASET.INPUT_SIZE": 512, "DATASET.OUTPUT_SIZE": [128, 256],
    "DATASET.MAX_NUM_PEOPLE": 30, "DATASET.MAX_ROTATION": 30, "DATASET.MAX_SCALE": 1.5, "DATASET.SCALE_TYPE": "short",
    "DATASET.MAX_TRANSLATE": 40, "DATASET.MIN_SCALE": 0.75, "DATASET.NUM_JOINTS": 14, "DATASET.ROOT": "data/crowd_pose",
    "DATASET.TEST": "val", "DATASET.TRAIN": "train",
    "LOSS.AE_LOSS_TYPE": "exp", "LOSS.WITH_AE_LOSS": [True, False], "LOSS.PUSH_LOSS_FACTOR": [0.001, 0.001],
    "LOSS.PULL_LOSS_FACTOR": [0.001, 0.001], "LOSS.WITH_HEATMAPS_LOSS": [True, True],
    "LOSS.HEATMAPS_LOSS_FACTOR": [1.0, 1.0],
    "MODEL.EXTRA.STAGE2.NUM_CHANNELS": [32, 64], "MODEL.EXTRA.STAGE4.NUM_MODULES": 3,
    "MODEL.EXTRA.DECONV.NUM_DECONVS": 1, "MODEL.EXTRA.DECONV.NUM_BASIC_BLOCKS": 4, "MODEL.TAG_PER_JOINT": True,
    "MODEL.PRETRAINED": "models/pytorch/imagenet/hrnet_w32-36af842e.pth",
    "TEST.FLIP_TEST": True, "TEST.SCALE_FACTOR": [1], "TEST.DETECTION_THRESHOLD": 0.1,
    "TEST.WITH_HEATMAPS": [True, True], "TEST.WITH_AE": [True, False], "TEST.PROJECT2IMAGE": True,
    "TEST.NMS_KERNEL": 5,
    "TRAIN.END_EPOCH": 300, "TRAIN.IMAGES_PER_GPU": 12, "TRAIN.LR": 0.001, "TRAIN.LR_FACTOR": 0.1,
    "TRAIN.LR_STEP": [200, 260], "TRAIN.OPTIMIZER": "adam",
}


def paper_crowdpose_training():
    """The `paper` profile's CrowdPose training as the study plans it from experiments/rows.yaml: its preset,
    its changes, its paper-profile changes (rows.yaml's `paper` profile changes nothing: width 1, no
    `changes`) and its CrowdPose data (the training's `data.crowdpose` over the profile's COCO)."""
    from pathlib import Path

    from hhrnet.study import Study

    study = Study.load(Path(__file__).parents[1] / "experiments")
    return study.training_config("crowdpose_w32_512", "paper"), study.spec


def test_paper_crowdpose_training_is_the_official_config_field_by_field():
    from hhrnet.hub import REGISTRY
    from hhrnet.sections import SCHEDULES

    cfg, rows = paper_crowdpose_training()
    o, d, m, t, tr = OFFICIAL_CROWDPOSE_W32_512, cfg.data, cfg.model, cfg.test, cfg.train
    mine = {
        "DATASET.SIGMA": d.sigma, "DATASET.FLIP": d.flip_prob, "DATASET.INPUT_SIZE": cfg.input_size,
        "DATASET.OUTPUT_SIZE": [cfg.input_size // s for s in m.output_strides], "DATASET.MAX_NUM_PEOPLE": d.max_people,
        "DATASET.MAX_ROTATION": d.max_rotation, "DATASET.MAX_SCALE": d.max_scale, "DATASET.SCALE_TYPE": d.scale_type,
        "DATASET.MAX_TRANSLATE": d.max_translate, "DATASET.MIN_SCALE": d.min_scale, "DATASET.NUM_JOINTS": m.num_joints,
        "DATASET.ROOT": tr.data_root, "DATASET.TEST": tr.val_split, "DATASET.TRAIN": tr.train_split,
        "LOSS.AE_LOSS_TYPE": cfg.loss.ae_type, "LOSS.WITH_AE_LOSS": list(m.with_ae_loss),
        "LOSS.PUSH_LOSS_FACTOR": list(cfg.loss.push_loss_factor), "LOSS.PULL_LOSS_FACTOR": list(cfg.loss.pull_loss_factor),
        "LOSS.WITH_HEATMAPS_LOSS": list(cfg.loss.with_heatmaps_loss),
        "LOSS.HEATMAPS_LOSS_FACTOR": list(cfg.loss.heatmaps_loss_factor),
        "MODEL.EXTRA.STAGE2.NUM_CHANNELS": list(m.branch_channels(2)), "MODEL.EXTRA.STAGE4.NUM_MODULES": m.stage_modules[2],
        "MODEL.EXTRA.DECONV.NUM_DECONVS": m.num_deconvs, "MODEL.EXTRA.DECONV.NUM_BASIC_BLOCKS": m.num_basic_blocks,
        "MODEL.TAG_PER_JOINT": m.tag_per_joint,
        "MODEL.PRETRAINED": f"models/pytorch/imagenet/{REGISTRY[tr.pretrained].filename}",
        "TEST.FLIP_TEST": t.flip_test, "TEST.SCALE_FACTOR": [int(s) for s in t.scales],
        "TEST.DETECTION_THRESHOLD": t.detection_threshold,
        "TEST.WITH_HEATMAPS": [True] * (m.num_deconvs + 1) if t.with_heatmaps is None else list(t.with_heatmaps),
        "TEST.WITH_AE": list(t.with_tags) if t.with_tags is not None else list(m.with_ae_loss),
        "TEST.PROJECT2IMAGE": t.project2image, "TEST.NMS_KERNEL": t.nms_kernel,
        "TRAIN.END_EPOCH": tr.epochs, "TRAIN.IMAGES_PER_GPU": tr.batch_size, "TRAIN.LR": tr.base_lr,
        "TRAIN.LR_FACTOR": tr.lr_gamma, "TRAIN.LR_STEP": list(tr.lr_steps), "TRAIN.OPTIMIZER": "adam",
    }
    assert mine == o
    assert SCHEDULES[tr.schedule]["warmup_iters"] == 0  # the official recipe has no warmup
    assert cfg.data.keypoint_set is CROWDPOSE_14 and cfg.model.width == 32 and tr.accumulate == 1


def test_hhrnet_evaluate_scores_a_predictor_with_the_protocol_of_its_set(crowds):
    import hhrnet
    from hhrnet.inference import Predictor

    cfg = _tiny(crowdpose_preset())
    predictor = Predictor(HigherHRNet(cfg.model).eval(), cfg)
    metrics = hhrnet.evaluate(predictor, crowds.root, "val", progress=False, limit=6)
    assert set(CROWD_METRIC_NAMES) <= set(metrics) and "AP_M" not in metrics
    assert metrics["images"] == 6 == sum(metrics[f"images_{name}"] for name in ("easy", "medium", "hard"))
    coco = _tiny(preset("w32_512"))
    with pytest.raises(DatasetError, match=r"14 joints \(crowdpose\); the config asks for 17 \(coco\)"):
        hhrnet.evaluate(Predictor(HigherHRNet(coco.model).eval(), coco), crowds.root, "val", progress=False, limit=1)


def test_diagnostics_score_with_the_crowdpose_protocol(crowds):
    """Perfect maps of 14 joints through the unchanged test pipeline: the ceiling is near 1 on crowds."""
    from hhrnet.diagnostics import diagnostics
    from hhrnet.inference import Predictor

    cfg = _tiny(crowdpose_preset()).override(**{"input_size": 128})
    out = diagnostics(Predictor(HigherHRNet(cfg.model).eval(), cfg), crowds.root, "val", limit=6)
    assert out["n_images"] == 6 and out["AP_ceiling"] > 0.8, out
