"""COCO-format keypoint datasets: real COCO, the synthetic scenes, or any folder in that format.

Reading order follows one training sample from disk to targets:

1. ``coco_paths`` finds the annotation file and the image folder (three layouts).
2. ``load_records`` reads the JSON once, at construction, through ``load_coco`` (the one validation
   path of train, evaluate, study and book): every problem that would
   otherwise surface as a wrong target or a crash inside a DataLoader worker is reported here, with
   the file and the annotation id.  Per image it keeps the joints array and the ignored regions.
3. ``CocoKeypoints.__getitem__`` decodes the image (``read_rgb_image``), builds the image-resolution
   loss mask (``hhrnet.targets.counted_mask``), draws one augmentation from a per-sample generator
   (``hhrnet.data.transforms``), and makes heatmaps and AE targets per output resolution.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch.utils.data import Dataset

from hhrnet.config import Config
from hhrnet.data import transforms
from hhrnet.io import ImageReadError, read_image, read_json, short_repr
from hhrnet.keypoints import KeypointSet, keypoint_set_for_names
from hhrnet.sections import DataConfig
from hhrnet.targets import (counted_mask, fixed_sigma_heatmaps, is_ignored_region, joint_tag_targets,
                            scale_aware_heatmaps)


class DatasetError(ValueError):
    """Bad dataset input; the message names the file and, where there is one, the annotation id."""


# --------------------------------------------------------------------------------------------------
# 1. Where the files are


def coco_paths(root: str | Path | None = None, split: str | None = None,
               annotation_file: str | Path | None = None,
               image_dir: str | Path | None = None) -> tuple[Path, Path]:
    """``(annotation_file, image_dir)`` for one of the supported layouts.

    * explicit ``annotation_file`` + ``image_dir`` (e.g. ``coco_mini``: flat ``images/``, JSONs at root);
    * ``root/images/<split>/`` + ``root/annotations/person_keypoints_<split>.json`` (hhrnet synth);
    * ``root/<split>/`` + the same annotation file (standard COCO, ``split`` = ``train2017``...);
    * ``root/json/crowdpose_<split>.json`` + every split's images in ``root/images/`` (CrowdPose).
    """
    if annotation_file is not None or image_dir is not None:
        if annotation_file is None or image_dir is None:
            raise DatasetError("give both annotation_file and image_dir, or root and split")
        return Path(annotation_file), Path(image_dir)
    if root is None or split is None:
        raise DatasetError("give root and split (or annotation_file and image_dir)")
    root = Path(root)
    crowdpose = root / "json" / f"crowdpose_{split}.json"
    if crowdpose.is_file() and (root / "images").is_dir():
        return crowdpose, root / "images"
    annotation = root / "annotations" / f"person_keypoints_{split}.json"
    for candidate in (root / "images" / split, root / split):
        if candidate.is_dir():
            return annotation, candidate
    raise DatasetError(f"no image folder for split {split!r}: neither {root / 'images' / split} "
                       f"nor {root / split} exists")


# --------------------------------------------------------------------------------------------------
# 2. Reading and validating the annotations


@dataclass(frozen=True)
class ImageRecord:
    """One image and what training needs from its annotations, prepared once.

    ``joints`` is ``(P, K, 3)`` (or ``(P, K, 4)`` with the scale-aware sigma) in image pixels for the
    supervised people (non-crowd, or crowd with keypoints, as in the reference); ``ignored`` are the
    annotations whose segmentation is masked out of the loss.  ``crowd_index``: the image's
    ``crowdIndex`` in CrowdPose-format files, else None.
    """

    image_id: int
    file: Path
    height: int
    width: int
    joints: np.ndarray
    ignored: tuple[Mapping[str, Any], ...]
    crowd_index: float | None = None


def _read_json(path: Path) -> Mapping[str, Any]:
    data = read_json(path, "annotation file", DatasetError)
    if not isinstance(data, Mapping) or not all(isinstance(data.get(k), list) for k in COCO_SECTIONS):
        raise DatasetError(f"{path}: not a COCO file (needs 'images', 'annotations' and 'categories' lists)")
    return data


COCO_SECTIONS = ("images", "annotations", "categories")


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return (isinstance(v, (int, float, np.number)) and not isinstance(v, bool)) and bool(np.isfinite(v))


def _annotation_keypoints(ann: Mapping[str, Any], num_joints: int, where: str) -> np.ndarray:
    """``(K, 3)`` keypoints of one annotation, or an error saying what is wrong with it."""
    if "keypoints" not in ann:
        raise DatasetError(f"{where}: no 'keypoints' field; this is not a COCO keypoints annotation file")
    values = ann["keypoints"]
    if not isinstance(values, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                               for v in values):
        raise DatasetError(f"{where}: 'keypoints' is not a list of numbers")
    keypoints = np.asarray(values, dtype=np.float64)
    if keypoints.size != 3 * num_joints:
        raise DatasetError(f"{where}: 'keypoints' has {keypoints.size} values, expected 3 x {num_joints} joints")
    if not np.isfinite(keypoints).all():
        raise DatasetError(f"{where}: 'keypoints' contains NaN or infinity")
    keypoints = keypoints.reshape(num_joints, 3)
    if (keypoints[:, :2] < -0.5).any():  # pixel-index coordinates: pixel 0 spans -0.5..0.5
        raise DatasetError(f"{where}: 'keypoints' contains negative coordinates outside the image (x, y < -0.5)")
    if not np.isin(keypoints[:, 2], (0, 1, 2)).all():
        raise DatasetError(f"{where}: keypoint visibility must be 0, 1 or 2, got {sorted(set(keypoints[:, 2]))}")
    return keypoints


def _check_annotation(ann: Any, path: Path, images: Mapping[int, Any], categories: set[int],
                      keypoints: KeypointSet) -> np.ndarray:
    """Everything training and both COCO scorers read from one annotation; returns its keypoints."""
    if not isinstance(ann, Mapping):
        raise DatasetError(f"{path}: an entry of 'annotations' is a {type(ann).__name__}, not an object")
    where = _where(path, ann)
    if not _is_int(ann.get("id")):
        raise DatasetError(f"{where}: 'id' must be an integer, got {short_repr(ann.get('id'))}")
    if not _is_int(ann.get("image_id")) or ann["image_id"] not in images:
        raise DatasetError(f"{where}: image_id {short_repr(ann.get('image_id'))} is not in 'images'")
    if not _is_int(ann.get("category_id")) or ann["category_id"] not in categories:
        raise DatasetError(f"{where}: category_id {short_repr(ann.get('category_id'))} is not in 'categories'")
    if ann.get("category_id") != keypoints.category_id:
        raise DatasetError(f"{where}: category_id {ann['category_id']}; hhrnet scores category "
                           f"{keypoints.category_id} ({keypoints.category}) only")
    joints = _annotation_keypoints(ann, keypoints.num_joints, where)
    if ann.get("iscrowd") not in (0, 1) or isinstance(ann.get("iscrowd"), bool):
        raise DatasetError(f"{where}: 'iscrowd' must be 0 or 1, got {short_repr(ann.get('iscrowd'))}")
    visible = int(np.count_nonzero(joints[:, 2] > 0))
    if not _is_int(ann.get("num_keypoints")) or ann["num_keypoints"] != visible:
        raise DatasetError(f"{where}: 'num_keypoints' is {short_repr(ann.get('num_keypoints'))} but {visible} keypoints are labelled")
    if not _is_number(ann.get("area")) or ann["area"] < 0:
        raise DatasetError(f"{where}: 'area' must be a number >= 0, got {short_repr(ann.get('area'))}")
    box = ann.get("bbox")
    if not isinstance(box, list) or len(box) != 4 or not all(_is_number(v) for v in box) or min(box[2:]) < 0:
        raise DatasetError(f"{where}: 'bbox' must be [x, y, w, h] with w, h >= 0, got {short_repr(box)}")
    _check_segmentation(ann.get("segmentation"), images[ann["image_id"]], where)
    return joints


def _check_segmentation(segmentation: Any, img: Mapping[str, Any], where: str) -> None:
    """A segmentation the loss mask can decode: polygons (lists of >= 3 finite x, y pairs), or an RLE
    ``{"size": [height, width] of the image, "counts": run lengths summing to height x width, or a string}``."""
    if not segmentation:
        return  # none: nothing is masked
    if isinstance(segmentation, list):
        for polygon in segmentation:
            if (not isinstance(polygon, list) or len(polygon) < 6 or len(polygon) % 2
                    or not all(_is_number(v) for v in polygon)):
                raise DatasetError(f"{where}: 'segmentation' polygons must be lists of at least 3 finite x, y "
                                   f"pairs, got {short_repr(polygon)}")
        return
    if not isinstance(segmentation, Mapping):
        raise DatasetError(f"{where}: 'segmentation' must be a list of polygons or an RLE object, "
                           f"got {short_repr(segmentation)}")
    size, counts = segmentation.get("size"), segmentation.get("counts")
    if size != [img["height"], img["width"]]:
        raise DatasetError(f"{where}: RLE 'segmentation' size {short_repr(size)} is not the image's "
                           f"[height, width] = [{img['height']}, {img['width']}]")
    if isinstance(counts, str) and counts:
        return  # compressed RLE: pycocotools' own format
    if (not isinstance(counts, list) or not all(_is_int(c) and c >= 0 for c in counts)
            or sum(counts) != img["height"] * img["width"]):
        raise DatasetError(f"{where}: RLE 'segmentation' counts must be run lengths >= 0 summing to "
                           f"{img['height']} x {img['width']} pixels, or a compressed RLE string")


def _image_index(images: list, path: Path) -> dict[int, Mapping[str, Any]]:
    index: dict[int, Mapping[str, Any]] = {}
    for img in images:
        if not isinstance(img, Mapping):
            raise DatasetError(f"{path}: an entry of 'images' is a {type(img).__name__}, not an object")
        missing = [k for k in ("id", "file_name", "height", "width") if k not in img]
        if missing:
            raise DatasetError(f"{path}: image entry {img.get('id', '?')} lacks {', '.join(missing)}")
        if not _is_int(img["id"]):
            raise DatasetError(f"{path}: image id {short_repr(img['id'])} is not an integer")
        if not isinstance(img["file_name"], str) or not img["file_name"]:
            raise DatasetError(f"{path}: image {img['id']}: 'file_name' must be a non-empty string")
        if not all(_is_int(img[k]) and img[k] > 0 for k in ("height", "width")):
            raise DatasetError(f"{path}: image {img['id']}: height and width must be positive integers, "
                               f"got {short_repr(img['height'])} x {short_repr(img['width'])}")
        if img["id"] in index:
            raise DatasetError(f"{path}: image id {img['id']} appears twice in 'images'")
        index[int(img["id"])] = img
    return index


def load_coco(annotation_file: str | Path,
              keypoints: KeypointSet | None = None) -> tuple[Mapping[str, Any], dict[int, list]]:
    """Read and check a COCO keypoints file: the one validation path of train, evaluate, study and book.

    Returns the parsed file and, per image id, its ``(annotation, keypoints (K, 3))`` pairs.  Missing
    sections, zero images or zero annotated people, malformed or duplicate entries, wrong keypoint
    lengths, non-finite or negative values and unknown image or category ids raise one ``DatasetError``
    naming the file (and the annotation id where there is one).  With ``keypoints``, a file whose category
    names another joint count or another registered set is refused first (``check_file_keypoints``);
    without, the file's category must name a registered set, which is then the one checked against.
    """
    path = Path(annotation_file)
    coco = _read_json(path)
    if keypoints is None:
        keypoints = _named_keypoint_set(coco, path)
    check_file_keypoints(coco, keypoints, path)
    images = _image_index(coco["images"], path)
    if not images:
        raise DatasetError(f"{path}: 'images' is empty; nothing to train or evaluate on")
    categories = {c.get("id") for c in coco["categories"] if isinstance(c, Mapping) and _is_int(c.get("id"))}
    by_image: dict[int, list[tuple[Mapping[str, Any], np.ndarray]]] = {i: [] for i in images}
    seen: set[int] = set()
    for ann in coco["annotations"]:
        joints = _check_annotation(ann, path, images, categories, keypoints)
        if ann["id"] in seen:
            raise DatasetError(f"{_where(path, ann)}: annotation id appears twice")
        seen.add(ann["id"])
        ann = dict(ann, num_keypoints=int(ann.get("num_keypoints", np.count_nonzero(joints[:, 2] > 0))))
        by_image[ann["image_id"]].append((ann, joints))
    if not any(not a.get("iscrowd", 0) and a["num_keypoints"] > 0 for anns in by_image.values() for a, _ in anns):
        raise DatasetError(f"{path}: no annotated person (no non-crowd annotation with labelled keypoints)")
    return coco, by_image


def validate_ground_truth(annotation_file: str | Path, image_dir: str | Path,
                          keypoints: KeypointSet | None = None) -> Mapping[str, Any]:
    """``load_coco`` plus: every image file of the split exists.  Returns the parsed file."""
    coco, by_image = load_coco(annotation_file, keypoints)
    images = {img["id"]: img for img in coco["images"]}
    missing = [i for i in images if not (Path(image_dir) / images[i]["file_name"]).is_file()]
    if missing:
        first = images[missing[0]]
        ann_ids = [a.get("id", "?") for a, _ in by_image[missing[0]]][:5]
        raise DatasetError(f"{annotation_file}: {len(missing)} image file(s) missing, first "
                           f"{Path(image_dir) / first['file_name']} (image {first['id']}, annotations {ann_ids})")
    return coco


def _person_sigma(ann: Mapping[str, Any], data: DataConfig, base_size: int, where: str) -> float:
    """Scale-aware sigma from the box: ``max(w, h) / base_size · base_sigma`` (must be > 0)."""
    box = ann.get("bbox")
    if not isinstance(box, (list, tuple)) or len(box) != 4:
        raise DatasetError(f"{where}: scale-aware sigma needs a 'bbox' [x, y, w, h], got {short_repr(box)}")
    sigma = max(float(box[2]), float(box[3])) / base_size * data.base_sigma
    if not sigma > 0:
        raise DatasetError(f"{where}: zero-area person (bbox {box}) gives sigma {sigma}; fix or drop it")
    return sigma


def _where(annotation_file: Path, ann: Mapping[str, Any]) -> str:
    """How error messages name an annotation: its file and its id."""
    return f"{annotation_file}: annotation {ann.get('id', '?')}"


def file_keypoint_set(coco: Mapping[str, Any]) -> KeypointSet | None:
    """The registered keypoint set a COCO-format file's category names (its ``keypoints`` list), or None."""
    names = [c.get("keypoints") for c in coco.get("categories") or [] if isinstance(c, Mapping) and c.get("keypoints")]
    return keypoint_set_for_names(names[0]) if len(names) == 1 else None


def _named_keypoint_set(coco: Mapping[str, Any], path: Path) -> KeypointSet:
    """The registered set the file's category names, for a reader given no set; else one line saying so."""
    found = file_keypoint_set(coco)
    if found is None:
        raise DatasetError(f"{path}: the file's category names no registered keypoint set; give the set "
                           "(data.keypoints) it is annotated with")
    return found


def check_file_keypoints(coco: Mapping[str, Any], keypoints: KeypointSet, path: Path | str) -> None:
    """Refuse, in one line, a file whose category has another joint count than ``keypoints``, or names
    another registered set; a custom file with its own names for as many joints passes."""
    names = [c.get("keypoints") for c in coco.get("categories") or [] if isinstance(c, Mapping) and c.get("keypoints")]
    if len(names) != 1:
        return
    found = file_keypoint_set(coco)
    if len(names[0]) != keypoints.num_joints or (found is not None and found is not keypoints):
        what = found.name if found else ", ".join(names[0][:3]) + ", ..."
        raise DatasetError(f"{path}: the file's category has {len(names[0])} joints ({what}); the config asks "
                           f"for {keypoints.num_joints} ({keypoints.name}): set data.keypoints to the file's set")


def load_records(annotation_file: Path, image_dir: Path, data: DataConfig,
                 base_size: int, train: bool) -> list[ImageRecord]:
    """Validate the whole file and build one ``ImageRecord`` per used image, in file order.

    Training keeps images with at least one annotation (the reference's rule, crowd-only included:
    they teach "no person here" outside the crowd); evaluation keeps every image.  Missing image files
    are reported here, for all used images, rather than when a worker reaches them.
    """
    coco, by_image = load_coco(annotation_file, data.keypoint_set)
    images = {int(img["id"]): img for img in coco["images"]}

    records = []
    for image_id in images:
        anns = by_image[image_id]
        if train and not anns:
            continue
        people = [(a, k) for a, k in anns if not a.get("iscrowd", 0) or a["num_keypoints"] > 0]
        joints = np.zeros((len(people), data.num_joints, 4 if data.scale_aware_sigma else 3))
        for p, (ann, keypoints) in enumerate(people):
            joints[p, :, :3] = keypoints
            if data.scale_aware_sigma:
                joints[p, :, 3] = _person_sigma(ann, data, base_size, _where(annotation_file, ann))
        img = images[image_id]
        records.append(ImageRecord(image_id=image_id, file=image_dir / img["file_name"],
                                   height=int(img["height"]), width=int(img["width"]), joints=joints,
                                   ignored=tuple(a for a, _ in anns if is_ignored_region(a)),
                                   crowd_index=float(img["crowdIndex"]) if "crowdIndex" in img else None))
    _check_files_exist(records, by_image)
    return records


def _check_files_exist(records: list[ImageRecord], by_image: Mapping[int, list]) -> None:
    missing = [r for r in records if not r.file.is_file()]
    if missing:
        first = missing[0]
        ann_ids = [a.get("id", "?") for a, _ in by_image[first.image_id]][:5]
        raise DatasetError(f"{len(missing)} image file(s) missing, first {first.file} (image {first.image_id}, "
                           f"annotations {ann_ids})")


# --------------------------------------------------------------------------------------------------
# 3. From a record to a sample


def read_rgb_image(path: Path, expected_hw: tuple[int, int] | None = None) -> np.ndarray:
    """8-bit RGB ``(H, W, 3)`` (``hhrnet.io.read_image``); a bad file is a ``DatasetError`` naming it."""
    try:
        return read_image(path, expected_hw)
    except ImageReadError as err:
        raise DatasetError(str(err)) from None


class CocoKeypoints(Dataset):
    """COCO-format person keypoints, for training (augmented targets) or evaluation (raw images).

    Training samples are dicts ``image`` (3, S, S) float32 normalised, and per output resolution
    lists ``heatmaps`` (K, r, r), ``masks`` (r, r) with 1 = counted, ``joints`` (max_people, K, 2)
    int64 AE targets; plus ``image_id``.  Evaluation samples are ``image`` (H, W, 3) uint8 RGB,
    ``image_id`` and ``file``.  The augmentation of sample ``i`` depends only on ``(seed, epoch, i)``,
    so results do not depend on the number of workers; call ``set_epoch`` once per epoch.
    """

    def __init__(self, annotation_file: str | Path, image_dir: str | Path, *, train: bool,
                 input_size: int = 512, output_sizes: tuple[int, ...] = (128, 256),
                 data: DataConfig = DataConfig(), tag_per_joint: bool = True, seed: int = 0) -> None:
        self.annotation_file, self.image_dir = Path(annotation_file), Path(image_dir)
        self.train, self.input_size, self.output_sizes = train, input_size, tuple(output_sizes)
        self.data, self.num_joints, self.tag_per_joint = data, data.num_joints, tag_per_joint
        self.seed, self.epoch = seed, 0
        self.records = load_records(self.annotation_file, self.image_dir, data,
                                    data.scale_aware_base_size(input_size), train)

    @classmethod
    def from_config(cls, cfg: Config, *, train: bool, root: str | Path | None = None, split: str | None = None,
                    annotation_file: str | Path | None = None, image_dir: str | Path | None = None,
                    seed: int = 0) -> "CocoKeypoints":
        """The dataset a run's configuration asks for: sizes from ``input_size`` and the output strides."""
        annotation_file, image_dir = coco_paths(root, split, annotation_file, image_dir)
        return cls(annotation_file, image_dir, train=train, input_size=cfg.input_size,
                   output_sizes=tuple(cfg.input_size // s for s in cfg.model.output_strides), data=cfg.data,
                   tag_per_joint=cfg.model.tag_per_joint, seed=seed)

    def set_epoch(self, epoch: int) -> None:
        """Choose the augmentation stream of this epoch (each epoch sees new random crops)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any]:
        record = self.records[index]
        image = read_rgb_image(record.file, (record.height, record.width))
        if not self.train:
            return {"image": image, "image_id": record.image_id, "file": str(record.file)}
        return self.training_sample(record, image, np.random.default_rng((self.seed, self.epoch, index)))

    def training_sample(self, record: ImageRecord, image: np.ndarray, rng: np.random.Generator) -> dict[str, Any]:
        """Augment one decoded image and build its targets at every output resolution."""
        mask = counted_mask(record.ignored, record.height, record.width)
        params = transforms.draw_augmentation(rng, (record.height, record.width), self.data)
        sample = transforms.augment(image, mask, record.joints, params, self.input_size, self.output_sizes,
                                    self.data.flip_index)
        heatmaps, tags = [], []
        for size, joints in zip(self.output_sizes, sample.joints):
            if self.data.scale_aware_sigma:
                heatmaps.append(scale_aware_heatmaps(joints, size))
            else:
                heatmaps.append(fixed_sigma_heatmaps(joints, size, self.data.sigma))
            tags.append(joint_tag_targets(joints, size, self.data.max_people, self.tag_per_joint))
        return {
            "image": torch.from_numpy(transforms.normalize_image(sample.image, self.data.mean, self.data.std)),
            "heatmaps": [torch.from_numpy(h) for h in heatmaps],
            "masks": [torch.from_numpy(m) for m in sample.masks],
            "joints": [torch.from_numpy(t) for t in tags],
            "image_id": record.image_id,
        }
