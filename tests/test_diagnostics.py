"""Isolating diagnostics on real images: the ceiling is high, each substitution isolates what it should."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import COCO_MINI
from hhrnet.config import preset
from hhrnet.data.coco import read_rgb_image
from hhrnet.diagnostics import (VARIANTS, annotated_people, diagnose_image, diagnostic_results, diagnostics,
                                image_groups, perfect_outputs, perfect_tags)
from hhrnet.evaluation import coco_results, evaluate_coco, load_ground_truth
from hhrnet.inference import Predictor, ScaleOutputs
from hhrnet.model import HigherHRNet

VAL_JSON = COCO_MINI / "person_keypoints_val2017.json"
IMAGES = COCO_MINI / "images"


def tiny_config(input_size: int):
    return preset("w32_512").override(**{
        "model.width": 4, "model.stage_modules": (1, 1, 1), "model.blocks_per_branch": 1, "model.num_basic_blocks": 1,
        "model.layer1_blocks": 1, "model.stem_channels": 8, "model.layer1_planes": 8, "input_size": input_size})


@pytest.fixture(scope="module")
def gt():
    return load_ground_truth(VAL_JSON)


@pytest.fixture(scope="module")
def sample_ids(gt):
    """A few single-person, multi-person and person-free images (portrait and landscape among them)."""
    groups = image_groups(gt)
    return sorted(groups["single"][:2] + groups["multi"][:3] + groups["empty"][:1])


def load(gt, image_id):
    info = gt.loadImgs(image_id)[0]
    return read_rgb_image(IMAGES / info["file_name"], (info["height"], info["width"]))


class StubNetwork(Predictor):
    """A ``Predictor`` whose network returns ground-truth maps for one image, optionally spoiled."""

    def __init__(self, cfg, annotations, spoil: str | None = None):
        super().__init__(torch.nn.Identity(), cfg, device="cpu")
        self.annotations, self.spoil = annotations, spoil

    def run_network(self, images, scale, size_wh, center, scale_200) -> ScaleOutputs:
        joints = annotated_people(self.annotations, self.cfg.model.num_joints)
        item = perfect_outputs(joints, self.cfg, size_wh, center, scale_200, scale, self.test.flip_test)
        k = self.cfg.model.num_joints

        def spoil(o: torch.Tensor) -> torch.Tensor:
            o = o.clone()
            if self.spoil == "tags":      # collapsed embedding: one tag for everybody
                o[:, k:] = 0
            elif self.spoil == "heatmaps":  # heatmaps shifted by 3 pixels and halved
                o[:, :k] = 0.5 * torch.roll(o[:, :k], shifts=3, dims=3)
            return o

        return ScaleOutputs(scale, [spoil(o) for o in item.outputs],
                            None if item.flipped is None else [spoil(o) for o in item.flipped])


def stub_results(gt, ids, cfg, spoil=None) -> dict[str, list]:
    results = {v: [] for v in VARIANTS}
    for image_id in ids:
        stub = StubNetwork(cfg, gt.imgToAnns[image_id], spoil)
        for variant, poses in diagnose_image(stub, load(gt, image_id), gt.imgToAnns[image_id]).items():
            results[variant] += coco_results(image_id, poses)
    return results


def test_perfect_tags_give_each_pixel_its_owner():
    joints = np.zeros((2, 3, 3))
    joints[0, :, :] = [[2, 2, 2], [3, 5, 2], [2, 8, 2]]
    joints[1, :, :] = [[12, 2, 2], [0, 0, 0], [12, 8, 2]]  # joint 1 not labelled: its body stands for it
    planes = perfect_tags(joints, 10, 16, per_joint=True, spacing=2.0)
    assert planes.shape == (3, 10, 16) and set(np.unique(planes)) == {2.0, 4.0}
    assert planes[0, 2, 2] == 2.0 and planes[0, 2, 12] == 4.0 and planes[0, 2, 6] == 2.0 and planes[0, 2, 8] == 4.0
    assert planes[1, 5, 3] == 2.0 and planes[1, 5, 12] == 4.0 and planes[1, 8, 12] == 4.0
    shared = perfect_tags(joints, 10, 16, per_joint=False, spacing=2.0)
    assert shared.shape == (1, 10, 16) and shared[0, 5, 14] == 4.0 and shared[0, 5, 1] == 2.0
    assert not perfect_tags(joints[:0], 10, 16, per_joint=True, spacing=2.0).any()


def test_ceiling_is_high_at_input_256(gt, sample_ids):
    cfg = tiny_config(256)
    stub = StubNetwork(cfg, [])  # the network is not run for the ceiling
    results = diagnostic_results(stub, gt, IMAGES, sample_ids, variants=("ceiling",))["ceiling"]
    assert evaluate_coco(gt, results, sample_ids)["AP"] >= 0.9


@pytest.fixture(scope="module")
def perfect_results(gt, sample_ids) -> dict[str, list]:
    return stub_results(gt, sample_ids, tiny_config(128))


@pytest.mark.filterwarnings("ignore:image 0 of the batch")  # the stub's heatmaps of a person-free image
def test_a_perfect_network_scores_the_ceiling_in_every_variant(gt, sample_ids, perfect_results):
    results = perfect_results
    for variant in VARIANTS:
        assert results[variant] == results["ceiling"], variant
    assert evaluate_coco(gt, results["ceiling"], sample_ids)["AP"] > 0.7


@pytest.mark.filterwarnings("ignore:image 0 of the batch")  # the stub's heatmaps of a person-free image
def test_each_substitution_isolates_its_half(gt, sample_ids, perfect_results):
    cfg = tiny_config(128)
    ceiling = evaluate_coco(gt, perfect_results["ceiling"], sample_ids)["AP"]
    multi = [i for i in sample_ids if i in set(image_groups(gt)["multi"])]
    bad_tags = stub_results(gt, sample_ids, cfg, spoil="tags")
    ap = {v: evaluate_coco(gt, bad_tags[v], sample_ids)["AP"] for v in VARIANTS}
    assert bad_tags["gt_tags"] == bad_tags["ceiling"] and bad_tags["gt_heatmaps"] == bad_tags["network"]
    assert ap["network"] < ceiling - 0.1  # collapsed tags merge the people of multi-person images
    assert evaluate_coco(gt, bad_tags["network"], multi)["AP"] < evaluate_coco(gt, bad_tags["ceiling"], multi)["AP"]
    bad_heat = stub_results(gt, sample_ids, cfg, spoil="heatmaps")
    assert bad_heat["gt_heatmaps"] == bad_heat["ceiling"] and bad_heat["gt_tags"] == bad_heat["network"]
    assert evaluate_coco(gt, bad_heat["network"], sample_ids)["AP"] < ceiling - 0.1


def test_network_variant_is_the_predictor(gt, sample_ids):
    cfg = tiny_config(128)
    torch.manual_seed(0)
    predictor = Predictor(HigherHRNet(cfg.model), cfg)
    for image_id in sample_ids[:3]:
        image = load(gt, image_id)
        mine = diagnose_image(predictor, image, gt.imgToAnns[image_id], variants=("network",))["network"]
        reference = predictor([image])[0]
        np.testing.assert_array_equal(mine.keypoints, reference.keypoints)
        np.testing.assert_array_equal(mine.scores, reference.scores)


def test_diagnostics_of_a_random_model_are_complete_and_deterministic(gt):
    cfg = tiny_config(128)
    torch.manual_seed(0)
    predictor = Predictor(HigherHRNet(cfg.model), cfg)
    first = diagnostics(predictor, annotation_file=VAL_JSON, image_dir=IMAGES, limit=8)
    assert set(first) == {"AP", "AP_gt_tags", "AP_gt_heatmaps", "AP_ceiling", "AP_single", "AP_multi",
                          "n_images", "n_single", "n_multi", "n_empty"}
    assert first["n_images"] == 8 and first["n_single"] + first["n_multi"] + first["n_empty"] == 8
    assert first["n_single"] > 0 and first["n_multi"] > 0
    assert first["AP_ceiling"] > 0.6 and first["AP_ceiling"] >= max(first["AP_gt_tags"], first["AP"])
    assert first == diagnostics(predictor, annotation_file=VAL_JSON, image_dir=IMAGES, limit=8)


def test_image_groups_partition_the_split(gt):
    groups = image_groups(gt)
    ids = [i for g in groups.values() for i in g]
    assert sorted(ids) == sorted(gt.getImgIds()) and len(set(ids)) == len(ids)
    for image_id in groups["single"]:
        assert sum(a["num_keypoints"] > 0 and not a["iscrowd"] for a in gt.imgToAnns[image_id]) == 1


@pytest.mark.parametrize("changes", [{"model.num_deconvs": 0}, {"test.with_heatmaps": (False, True)}],
                         ids=["hrnet_1_4_only", "higher_1_2_only"])
def test_a_single_outputs_perfect_maps_give_one_detection_per_person(gt, sample_ids, changes):
    """Upsampling a target's exact peak makes equal twin maxima; unbroken, each became a person (4 per person)."""
    cfg = tiny_config(256).override(**changes)
    stub = StubNetwork(cfg, [])
    results = diagnostic_results(stub, gt, IMAGES, sample_ids, variants=("ceiling",))["ceiling"]
    people = sum(len(annotated_people(gt.imgToAnns[i], cfg.model.num_joints)) for i in sample_ids)
    assert len(results) <= people + 1, (len(results), people)
    assert evaluate_coco(gt, results, sample_ids)["AP"] >= 0.7
