"""Isolating diagnostics of one evaluation: which part of the network limits its AP.

The network runs once per image and test scale (``Predictor.network_outputs``); perfect outputs are made
for the same test warps (``Predictor.test_warps``); both go through ``Predictor.aggregate`` and the
aggregated heatmaps and/or tags are swapped before ``Predictor.poses`` groups them, four times:

* ``network``: nothing swapped (the model's own AP, also split into single- and multi-person images);
* ``gt_tags``: the network's heatmaps, perfect tags -> what the heatmaps alone allow (detection quality);
* ``gt_heatmaps``: perfect heatmaps, the network's tags -> what the tags alone allow (grouping quality);
* ``ceiling``: both perfect -> the AP a perfect network reaches on this split at this input size and
  output stride (heatmap quantisation, the test resize, grouping and back-projection are all that is left).

Perfect maps are rendered per network output at that output's resolution (the test warp's affine with the
output's size, as training does): heatmaps are the training targets (``hhrnet.targets``, fixed sigma
``cfg.data.sigma``), and the tag of each pixel is the value of the person owning it (``perfect_tags``).
The mirrored pass (flip test) gets the exact mirror image of those maps, left and right channels swapped.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import cv2
import numpy as np
import torch

from hhrnet.config import Config
from hhrnet.data.coco import coco_paths, read_rgb_image
from hhrnet.data.transforms import affine_matrix, warp_points
from hhrnet.evaluation import coco_results, load_ground_truth, score
from hhrnet.inference import Predictor, ScaleOutputs
from hhrnet.poses import Poses
from hhrnet.targets import fixed_sigma_heatmaps

# variant -> (where the heatmap channels come from, where the tag channels come from)
VARIANTS: dict[str, tuple[str, str]] = {
    "network": ("network", "network"),
    "gt_tags": ("network", "gt"),
    "gt_heatmaps": ("gt", "network"),
    "ceiling": ("gt", "gt"),
}


# --------------------------------------------------------------------------------------------------
# Perfect maps


def annotated_people(annotations: Iterable[Mapping[str, Any]], num_joints: int) -> np.ndarray:
    """``(P, K, 3)`` image-pixel joints of the people with at least one labelled joint (``v > 0``)."""
    people = [np.asarray(a["keypoints"], np.float64).reshape(num_joints, 3) for a in annotations
              if a.get("num_keypoints", 0) > 0]
    people = [p for p in people if (p[:, 2] > 0).any()]
    return np.stack(people) if people else np.zeros((0, num_joints, 3))


def person_count(annotations: Iterable[Mapping[str, Any]]) -> int:
    """People an image is counted with for the single/multi split: non-crowd with keypoints."""
    return sum(1 for a in annotations if a.get("num_keypoints", 0) > 0 and not a.get("iscrowd", 0))


def tag_spacing(tag_threshold: float) -> float:
    """Distance between two people's perfect tags: twice the grouping threshold (and at least 2), so no
    candidate joins another person and refine (which pays round(distance)) never looks in another's region."""
    return 2.0 * max(1.0, float(tag_threshold))


def perfect_tags(joints: np.ndarray, height: int, width: int, per_joint: bool, spacing: float) -> np.ndarray:
    """``(K or 1, height, width)`` float32: every pixel carries the tag ``spacing * (p + 1)`` of its owner ``p``.

    ``joints (P, K, 3)`` are in this map's pixels.  In channel ``k`` the owner of a pixel is the person whose
    joint ``k`` is nearest; a person without a labelled joint ``k`` in the map is represented by all its
    labelled joints (so an unlabelled, e.g. occluded, joint still belongs to the nearest body).  With one
    shared channel every labelled joint represents its person.  Positions are truncated as the training
    targets truncate them; distances are OpenCV's 5x5 chamfer approximation of Euclidean distance.
    Any peak a grouping can see therefore carries one person's tag, and the right one when it sits on
    that person's joint: given perfect heatmaps, grouping is perfect.
    """
    num_people, num_joints = joints.shape[:2]
    channels = num_joints if per_joint else 1
    planes = np.zeros((channels, height, width), np.float32)
    if num_people == 0:
        return planes
    xi, yi = np.trunc(joints[..., 0]).astype(np.int64), np.trunc(joints[..., 1]).astype(np.int64)
    inside = (joints[..., 2] > 0) & (xi >= 0) & (yi >= 0) & (xi < width) & (yi < height)
    for c in range(channels):
        own = inside  # (P, K): the joints standing for each person in this channel
        if per_joint:
            own = np.where(inside[:, c:c + 1], np.eye(num_joints, dtype=bool)[c], inside)
        person, joint = np.nonzero(own)
        if person.size == 0:
            continue
        source = np.ones((height, width), np.uint8)
        source[yi[person, joint], xi[person, joint]] = 0
        _, labels = cv2.distanceTransformWithLabels(source, cv2.DIST_L2, 5, labelType=cv2.DIST_LABEL_PIXEL)
        owner = np.zeros(int(labels.max()) + 1, np.float32)
        owner[labels[yi[person, joint], xi[person, joint]]] = spacing * (person + 1)
        planes[c] = owner[labels]
    return planes


# Far below any trained network's precision, far above float32 rounding at 1.0 (1.2e-7), and far below
# the gap between a Gaussian target's peak and its neighbours, so it only decides exact ties.
TIE_BREAK = 1e-4


def break_ties(heat: np.ndarray, seed: int) -> np.ndarray:
    """``heat`` plus seeded noise below ``TIE_BREAK`` on its non-zero pixels.

    A target peak sits exactly on a pixel, so upsampling it (bilinear, ``align_corners=False``) puts two
    (per axis) equal maxima beside it; NMS keeps every pixel equal to its neighbourhood's maximum, and
    grouping makes a person of each copy: perfect maps of a single output score four detections per
    person.  A trained network's maps never tie exactly, so the ceiling breaks the tie by noise.
    """
    noise = np.random.default_rng(seed).random(heat.shape, dtype=np.float32) * np.float32(TIE_BREAK)
    return heat + noise * (heat > 0)


def perfect_outputs(joints_image: np.ndarray, cfg: Config, size_wh: Sequence[int], center: np.ndarray,
                    scale_200: np.ndarray, scale: float, flip: bool, tag_threshold: float = 1.0) -> ScaleOutputs:
    """What a perfect network returns for one test scale: per output, target heatmaps then perfect tags.

    Output ``i`` has stride ``cfg.model.output_strides[i]`` and ``cfg.model.output_channels(i)`` channels,
    like ``HigherHRNet``; ``joints_image (P, K, 3)`` are image pixels (``annotated_people``).  Heatmaps are
    the training targets with their exact ties broken (``break_ties``).
    """
    model = cfg.model
    outputs = []
    for i, stride in enumerate(model.output_strides):
        width, height = int(size_wh[0]) // stride, int(size_wh[1]) // stride
        joints = joints_image.copy()
        joints[..., :2] = warp_points(joints_image[..., :2], affine_matrix(center, scale_200, (width, height)))
        heat = fixed_sigma_heatmaps(joints, max(width, height), cfg.data.sigma)[:, :height, :width]
        maps = [break_ties(heat, seed=i)]
        if model.output_channels(i) > model.num_joints:
            maps.append(perfect_tags(joints, height, width, model.tag_per_joint, tag_spacing(tag_threshold)))
        outputs.append(torch.from_numpy(np.ascontiguousarray(np.concatenate(maps)))[None])
    if not flip:
        return ScaleOutputs(scale, outputs)
    index = list(cfg.data.flip_index)

    def mirror(maps: torch.Tensor) -> torch.Tensor:
        heat, tags = maps[:, :model.num_joints].flip(3)[:, index], maps[:, model.num_joints:].flip(3)
        return torch.cat([heat, tags[:, index] if tags.shape[1] == model.num_joints else tags], dim=1)

    return ScaleOutputs(scale, outputs, [mirror(o) for o in outputs])


# --------------------------------------------------------------------------------------------------
# One image


def diagnose_image(predictor: Predictor, image: np.ndarray, annotations: Sequence[Mapping[str, Any]],
                   variants: Sequence[str] = tuple(VARIANTS)) -> dict[str, Poses]:
    """``{variant: Poses}`` for one RGB image and its annotations, through ``Predictor``'s own test pipeline.

    Perfect maps are swapped in for the network's outputs at ``predictor.aggregate`` (the same warps, the
    same aggregation, grouping and back-projection); the network is not run when only ``"ceiling"`` is
    asked for.  Only the substituted maps differ from ``predictor([image])``.
    """
    cfg, test = predictor.cfg, predictor.test
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        raise ValueError(f"unknown diagnostic variant(s) {sorted(unknown)}: choose from {list(VARIANTS)}")
    image_hw = image.shape[:2]
    joints = annotated_people(annotations, cfg.model.num_joints)
    perfect = [perfect_outputs(joints, cfg, w.size_wh, w.center, w.scale_200, w.scale, test.flip_test,
                               test.tag_threshold) for w in predictor.test_warps(image_hw)]
    # Aggregated heatmaps depend only on heatmap channels and tags only on tag channels, so each source
    # is aggregated once and the variants pick heatmaps from one and tags from the other.
    [gt] = predictor.aggregate(perfect, image_hw)
    maps = {"gt": gt}
    if any(VARIANTS[v] != ("gt", "gt") for v in variants):
        [maps["network"]] = predictor.aggregate(predictor.network_outputs([image]), image_hw)
        if maps["network"].heatmaps.shape != gt.heatmaps.shape or maps["network"].tags.shape != gt.tags.shape:
            raise ValueError(f"aggregated network maps {maps['network']} and perfect maps {gt} differ: check "
                             f"cfg.model (output strides, channels) against the network")
    poses = {}
    for variant in variants:
        heat_from, tags_from = VARIANTS[variant]
        swapped = dataclasses.replace(maps[heat_from], tags=maps[tags_from].tags)
        with warnings.catch_warnings():
            if heat_from == "gt":  # a person-free image has all-zero perfect heatmaps: no people, no warning
                warnings.filterwarnings("ignore", message=".*only zeros", category=RuntimeWarning)
            poses[variant] = predictor.poses(swapped)
    return poses


# --------------------------------------------------------------------------------------------------
# A split


def image_groups(gt: Any, image_ids: Sequence[int] | None = None) -> dict[str, list[int]]:
    """Image ids by annotated people (``person_count``): ``single`` (1), ``multi`` (>= 2), ``empty`` (0)."""
    gt = load_ground_truth(gt)
    image_ids = sorted(gt.getImgIds()) if image_ids is None else list(image_ids)
    groups: dict[str, list[int]] = {"single": [], "multi": [], "empty": []}
    for image_id in image_ids:
        n = person_count(gt.imgToAnns[image_id])
        groups["single" if n == 1 else "multi" if n >= 2 else "empty"].append(int(image_id))
    return groups


def diagnostic_results(predictor: Predictor, gt: Any, image_dir: str | Path, image_ids: Sequence[int] | None = None,
                       variants: Sequence[str] = tuple(VARIANTS), progress: bool = False) -> dict[str, list[dict]]:
    """COCO result entries of every variant on the given images of ``gt`` (default: all), e.g. for
    ``hhrnet.stats.match_table``."""
    from tqdm import tqdm

    gt = load_ground_truth(gt)
    image_ids = sorted(gt.getImgIds()) if image_ids is None else list(image_ids)
    results: dict[str, list[dict]] = defaultdict(list)
    for image_id in tqdm(image_ids, desc="diagnostics", unit="img", disable=not progress):
        info = gt.loadImgs(image_id)[0]
        image = read_rgb_image(Path(image_dir) / info["file_name"], (info["height"], info["width"]))
        for variant, poses in diagnose_image(predictor, image, gt.imgToAnns[image_id], variants).items():
            results[variant].extend(coco_results(image_id, poses, predictor.cfg.data.keypoint_set))
    return {v: results[v] for v in variants}


def diagnostics(predictor: Predictor, root: str | Path | None = None, split: str | None = None,
                annotation_file: str | Path | None = None, image_dir: str | Path | None = None,
                limit: int | None = None, backend: str = "pycocotools", progress: bool = False,
                return_results: bool = False) -> dict[str, Any]:
    """AP of the network, with ground-truth tags, with ground-truth heatmaps, on single- and multi-person
    images, and the perfect-map ceiling, on a COCO-format split (located as ``coco_paths`` does).

    Returns ``{"AP", "AP_gt_tags", "AP_gt_heatmaps", "AP_ceiling", "AP_single", "AP_multi", "n_images",
    "n_single", "n_multi", "n_empty"}`` (person-free images are in neither subset); with
    ``return_results`` also ``"results"``: the COCO entries of each variant.
    """
    ann_path, img_dir = coco_paths(root, split, annotation_file, image_dir)
    gt = load_ground_truth(ann_path)
    image_ids = sorted(gt.getImgIds())[:limit]
    results = diagnostic_results(predictor, gt, img_dir, image_ids, progress=progress)
    groups = image_groups(gt, image_ids)

    def ap(entries: list[dict], ids: list[int]) -> float:
        if not ids:
            return float("nan")
        keep = set(ids)
        return score(gt, [r for r in entries if r["image_id"] in keep], ids, predictor.cfg.data.keypoint_set,
                     backend=backend)["AP"]  # the protocol of the predictor's keypoint set

    out: dict[str, Any] = {
        "AP": ap(results["network"], image_ids),
        "AP_gt_tags": ap(results["gt_tags"], image_ids),
        "AP_gt_heatmaps": ap(results["gt_heatmaps"], image_ids),
        "AP_ceiling": ap(results["ceiling"], image_ids),
        "AP_single": ap(results["network"], groups["single"]),
        "AP_multi": ap(results["network"], groups["multi"]),
        "n_images": len(image_ids), "n_single": len(groups["single"]), "n_multi": len(groups["multi"]),
        "n_empty": len(groups["empty"]),
    }
    if return_results:
        out["results"] = results
    return out
