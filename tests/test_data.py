"""The COCO-format dataset on real coco_mini images, its layouts, bad input, and determinism."""

from __future__ import annotations

import dataclasses
import json
import os
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from conftest import COCO_MINI
from hhrnet.config import preset
from hhrnet.data import CocoKeypoints, DatasetError, coco_paths, read_rgb_image
from hhrnet.data.transforms import augment, draw_augmentation
from hhrnet.io import ImageReadError, read_image
from hhrnet.predict import expand_inputs
from hhrnet.sections import DataConfig
from hhrnet.targets import counted_mask, segmentation_rle

MINI_JSON, MINI_IMAGES = COCO_MINI / "person_keypoints.json", COCO_MINI / "images"
CROWDED_IMAGE = 129648  # 9 people with keypoints and one crowd region (RLE)


@pytest.fixture(scope="module")
def mini() -> CocoKeypoints:
    return CocoKeypoints(MINI_JSON, MINI_IMAGES, train=True, input_size=512, output_sizes=(128, 256))


def _record_index(ds: CocoKeypoints, image_id: int) -> int:
    return next(i for i, r in enumerate(ds.records) if r.image_id == image_id)


# --------------------------------------------------------------------------------------------------
# Real images


def test_coco_mini_loads_in_both_modes(mini):
    assert len(mini) == 76  # images with at least one annotation (README: 76 of 82)
    evaluation = CocoKeypoints(MINI_JSON, MINI_IMAGES, train=False)
    assert len(evaluation) == 82  # evaluation keeps person-free images
    sample = evaluation[0]
    record = evaluation.records[0]
    expected = cv2.cvtColor(cv2.imread(str(record.file)), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(sample["image"], expected)
    assert sample["image_id"] == record.image_id


def test_training_sample_shapes_and_types(mini):
    s = mini[0]
    assert s["image"].shape == (3, 512, 512) and s["image"].dtype == torch.float32
    assert [h.shape for h in s["heatmaps"]] == [(17, 128, 128), (17, 256, 256)]
    assert [m.shape for m in s["masks"]] == [(128, 128), (256, 256)]
    assert [j.shape for j in s["joints"]] == [(30, 17, 2), (30, 17, 2)] and s["joints"][0].dtype == torch.int64


def _oracle_matrix(params, size: int) -> np.ndarray:
    """Image -> output map, built independently with cv2's rotation matrix."""
    matrix = cv2.getRotationMatrix2D(params.center, params.rotation, size / (200 * params.scale_200))
    matrix[:, 2] += (size / 2 - params.center[0], size / 2 - params.center[1])
    return matrix


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_augmented_joints_land_on_heatmap_peaks_and_crowd_is_masked(mini, seed):
    record = mini.records[_record_index(mini, CROWDED_IMAGE)]
    image = read_rgb_image(record.file)
    params = draw_augmentation(np.random.default_rng(seed), image.shape[:2], mini.data)
    sample = mini.training_sample(record, image, np.random.default_rng(seed))
    crowd = next(a for a in record.ignored if a["iscrowd"])
    inside = mask_utils.decode(segmentation_rle(crowd["segmentation"], record.height, record.width))
    inside = cv2.erode(inside, np.ones((17, 17), np.uint8))  # away from the edge bilinear blurs
    crowd_yx = np.argwhere(inside)[::50]
    checked = 0
    for size, heatmaps, mask in zip((128, 256), sample["heatmaps"], sample["masks"]):
        heatmaps, mask = heatmaps.numpy(), mask.numpy()
        matrix = _oracle_matrix(params, size)
        xy = cv2.transform(record.joints[None, :, :, :2].reshape(1, -1, 2), matrix).reshape(-1, 17, 2)
        crowd_xy = cv2.transform(crowd_yx[None, :, ::-1].astype(np.float64), matrix)[0]
        visible = record.joints[..., 2] > 0
        if params.flip:  # channel k now holds the mirrored joint flip_index[k]
            xy, visible = xy[:, list(mini.data.flip_index)], visible[:, list(mini.data.flip_index)]
            xy[..., 0] = size - 1 - xy[..., 0]
            crowd_xy[:, 0] = size - 1 - crowd_xy[:, 0]
        for (p, k) in np.argwhere(visible):
            x, y = int(xy[p, k, 0]), int(xy[p, k, 1])
            if 0 <= x < size and 0 <= y < size:
                window = heatmaps[k, max(y - 1, 0):y + 2, max(x - 1, 0):x + 2]
                assert window.max() == 1.0, (size, p, k)
                checked += 1
        cols, rows = np.trunc(crowd_xy).astype(int).T
        keep = (cols >= 0) & (rows >= 0) & (cols < size) & (rows < size)
        assert not mask[rows[keep], cols[keep]].any()
        assert mask.any()  # the people are still supervised
    assert checked >= 20  # a good part of the 9 people's visible joints, at two resolutions


def test_flip_maps_left_joints_to_right_on_a_real_image(mini):
    record = mini.records[_record_index(mini, CROWDED_IMAGE)]
    image = read_rgb_image(record.file)
    params = dataclasses.replace(draw_augmentation(np.random.default_rng(5), image.shape[:2], mini.data), flip=False)
    plain = augment(image, np.ones(image.shape[:2], np.uint8), record.joints, params, 512, (128, 256),
                    mini.data.flip_index)
    flipped = augment(image, np.ones(image.shape[:2], np.uint8), record.joints, dataclasses.replace(params, flip=True),
                      512, (128, 256), mini.data.flip_index)
    np.testing.assert_array_equal(flipped.image, plain.image[:, ::-1])
    for size, a, b in zip((128, 256), plain.joints, flipped.joints):
        for left, right in ((5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16), (1, 2), (3, 4)):
            np.testing.assert_allclose(b[:, left, 0], size - 1 - a[:, right, 0])
            np.testing.assert_array_equal(b[:, left, 1:], a[:, right, 1:])


def test_mask_is_zero_on_every_crowd_region_of_coco_mini(mini):
    crowds = [(r, a) for r in mini.records for a in r.ignored if a["iscrowd"]]
    assert len(crowds) == 5
    for record, ann in crowds:
        region = mask_utils.decode(segmentation_rle(ann["segmentation"], record.height, record.width)).astype(bool)
        mask = counted_mask(record.ignored, record.height, record.width)
        assert region.any() and not mask[region].any(), ann["id"]


def test_scale_aware_sigma_comes_from_the_box():
    data = DataConfig(scale_aware_sigma=True)
    ds = CocoKeypoints(MINI_JSON, MINI_IMAGES, train=True, input_size=256, output_sizes=(64, 128), data=data)
    coco = json.loads(MINI_JSON.read_text())
    record = ds.records[0]
    first = next(a for a in coco["annotations"] if a["image_id"] == record.image_id
                 and (not a["iscrowd"] or a["num_keypoints"] > 0))
    assert record.joints[0, 0, 3] == pytest.approx(max(first["bbox"][2:]) / 128 * 2)
    assert ds[0]["heatmaps"][0].shape == (17, 64, 64)


# --------------------------------------------------------------------------------------------------
# Determinism and workers


def test_same_seed_same_sample_and_new_epoch_new_sample():
    a = CocoKeypoints(MINI_JSON, MINI_IMAGES, train=True, input_size=128, output_sizes=(32, 64), seed=7)
    b = CocoKeypoints(MINI_JSON, MINI_IMAGES, train=True, input_size=128, output_sizes=(32, 64), seed=7)
    first, again = a[3], b[3]
    assert torch.equal(first["image"], again["image"])
    for key in ("heatmaps", "masks", "joints"):
        assert all(torch.equal(x, y) for x, y in zip(first[key], again[key]))
    b.set_epoch(1)
    assert not torch.equal(first["image"], b[3]["image"])


def test_two_workers_give_the_same_batches_as_one_process():
    ds = CocoKeypoints(MINI_JSON, MINI_IMAGES, train=True, input_size=128, output_sizes=(32, 64), seed=3)
    subset = torch.utils.data.Subset(ds, range(4))
    single = list(torch.utils.data.DataLoader(subset, batch_size=2))
    multi = list(torch.utils.data.DataLoader(subset, batch_size=2, num_workers=2))
    for x, y in zip(single, multi):
        assert torch.equal(x["image"], y["image"]) and torch.equal(x["heatmaps"][1], y["heatmaps"][1])


# --------------------------------------------------------------------------------------------------
# Layouts


def _person(ann_id: int, image_id: int, keypoints: list[float] | None = None, **extra) -> dict:
    keypoints = keypoints if keypoints is not None else [30.0, 40.0, 2] * 17
    return {"id": ann_id, "image_id": image_id, "category_id": 1, "iscrowd": 0, "bbox": [10, 10, 50, 80],
            "area": 4000.0, "num_keypoints": sum(v > 0 for v in keypoints[2::3]), "keypoints": keypoints,
            "segmentation": [[10, 10, 60, 10, 60, 90, 10, 90]], **extra}


def _write_set(ann_file: Path, image_dir: Path, annotations: list[dict] | None = None,
               image: np.ndarray | None = None) -> None:
    """One 100x120 JPEG ``a.jpg`` (image id 1) and its annotation file."""
    image_dir.mkdir(parents=True, exist_ok=True)
    ann_file.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(image_dir / "a.jpg"), image if image is not None else np.full((100, 120, 3), 90, np.uint8))
    coco = {"images": [{"id": 1, "file_name": "a.jpg", "height": 100, "width": 120}],
            "annotations": annotations if annotations is not None else [_person(11, 1)],
            "categories": [{"id": 1, "name": "person"}]}
    ann_file.write_text(json.dumps(coco))


@pytest.mark.parametrize("image_folder", ["images/train", "train"])
def test_root_and_split_layouts(tmp_path, image_folder):
    _write_set(tmp_path / "annotations" / "person_keypoints_train.json", tmp_path / image_folder)
    ann, images = coco_paths(tmp_path, "train")
    assert images == tmp_path / image_folder
    ds = CocoKeypoints.from_config(preset("w32_512").override(input_size=128), train=True, root=tmp_path, split="train")
    assert len(ds) == 1 and ds[0]["heatmaps"][1].shape == (17, 64, 64)


def test_missing_layout_is_explained(tmp_path):
    with pytest.raises(DatasetError, match="no image folder for split 'val'"):
        coco_paths(tmp_path, "val")


# --------------------------------------------------------------------------------------------------
# Bad input


def _dataset(tmp_path: Path, **kwargs) -> CocoKeypoints:
    return CocoKeypoints(tmp_path / "ann.json", tmp_path / "img", train=True, input_size=64, output_sizes=(16, 32),
                         **kwargs)


def test_missing_image_file_names_file_image_and_annotation(tmp_path):
    _write_set(tmp_path / "ann.json", tmp_path / "img")
    (tmp_path / "img" / "a.jpg").unlink()
    with pytest.raises(DatasetError, match=r"a\.jpg.*image 1.*annotations \[11\]"):
        _dataset(tmp_path)


@pytest.mark.parametrize("content", [b"this is not a jpeg", "truncated"])
def test_corrupt_jpeg_names_the_file(tmp_path, content):
    _write_set(tmp_path / "ann.json", tmp_path / "img")
    path = tmp_path / "img" / "a.jpg"
    path.write_bytes(path.read_bytes()[:300] if content == "truncated" else content)
    ds = _dataset(tmp_path)
    with pytest.raises(DatasetError, match=r"a\.jpg: (not a readable image|truncated JPEG)"):
        ds[0]


def test_image_size_different_from_json_is_an_error(tmp_path):
    _write_set(tmp_path / "ann.json", tmp_path / "img", image=np.zeros((50, 120, 3), np.uint8))
    with pytest.raises(DatasetError, match=r"a\.jpg: image is 50x120 .* says 100x120"):
        _dataset(tmp_path)[0]


@pytest.mark.parametrize("change, message", [
    (lambda a: a.pop("keypoints"), r"annotation 11: no 'keypoints' field"),
    (lambda a: a.update(keypoints=[1.0, 2.0, 2] * 16), r"annotation 11: 'keypoints' has 48 values, expected 3 x 17"),
    (lambda a: a.update(keypoints=["a"] * 51), r"annotation 11: 'keypoints' is not a list of numbers"),
    (lambda a: a.update(image_id=5), r"annotation 11: image_id 5 is not in 'images'"),
])
def test_malformed_annotations_name_file_and_id(tmp_path, change, message):
    ann = _person(11, 1)
    change(ann)
    _write_set(tmp_path / "ann.json", tmp_path / "img", [ann])
    with pytest.raises(DatasetError, match=r"ann\.json: " + message):
        _dataset(tmp_path)


@pytest.mark.parametrize("text", ["{not json", json.dumps({"images": []}), json.dumps([1, 2])])
def test_files_that_are_not_coco_name_the_file(tmp_path, text):
    (tmp_path / "img").mkdir()
    (tmp_path / "ann.json").write_text(text)
    with pytest.raises(DatasetError, match=r"ann\.json: not (valid JSON|a COCO file)"):
        _dataset(tmp_path)


def test_zero_area_person_with_scale_aware_sigma_names_the_annotation(tmp_path):
    _write_set(tmp_path / "ann.json", tmp_path / "img", [_person(11, 1), _person(12, 1, bbox=[5, 5, 0, 0])])
    with pytest.raises(DatasetError, match=r"ann\.json: annotation 12: zero-area person"):
        _dataset(tmp_path, data=DataConfig(scale_aware_sigma=True))
    assert len(_dataset(tmp_path)) == 1  # fixed sigma never reads the box: like the reference, no error


def test_keypoints_outside_the_image_fall_out_of_the_maps(tmp_path):
    far = [900.0, 900.0, 2] * 17  # negative coordinates are refused by the validation
    _write_set(tmp_path / "ann.json", tmp_path / "img", [_person(11, 1, far)])
    sample = _dataset(tmp_path, data=DataConfig(max_rotation=0, min_scale=1, max_scale=1))[0]
    assert all(h.max() == 0 for h in sample["heatmaps"]) and all(not j.any() for j in sample["joints"])
    assert all(m.any() for m in sample["masks"])


@pytest.mark.parametrize("kind", ["gray", "rgba", "uint16"])
def test_other_image_formats_become_8bit_rgb(tmp_path, kind):
    rgb = np.zeros((4, 5, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 200, 100, 30  # R, G, B
    if kind == "gray":
        stored, expected = rgb[..., 0], np.repeat(rgb[..., :1], 3, axis=2)
    elif kind == "rgba":
        stored, expected = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGRA), rgb
    else:
        stored, expected = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR).astype(np.uint16) * 257, rgb
    path = tmp_path / f"{kind}.png"
    cv2.imwrite(str(path), stored)
    image = read_rgb_image(path, (4, 5))
    assert image.dtype == np.uint8 and image.shape == (4, 5, 3)
    np.testing.assert_array_equal(image, expected)


# --------------------------------------------------------------------------------------------------
# Hostile files and folders (issue 27): bounded work, nothing skipped silently


def _png_header(width: int, height: int) -> bytes:
    """A PNG claiming ``width`` x ``height``: its IHDR chunk, then the start of the pixel data (one IDAT chunk)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    return b"\x89PNG\r\n\x1a\n" + header + chunk(b"IDAT", zlib.compress(bytes(1000)))


def test_an_image_whose_header_claims_too_many_pixels_is_refused_before_decoding(tmp_path):
    """Pillow's own decompression-bomb refusal (> 179 Mpx) surfaces as one error naming the file, as does
    hhrnet's 50 Mpx limit: neither image is decoded."""
    for side, message in ((25_000, "header claims too many pixels"), (8_000, "64 Mpx, more than the 50 Mpx")):
        path = tmp_path / f"bomb{side}.png"
        path.write_bytes(_png_header(side, side))
        with pytest.raises(ImageReadError, match=rf"{path}: image (header claims too many pixels|is 8000x8000 = 64 Mpx)"):
            read_image(path)


def test_a_symlink_cycle_is_searched_once_and_named(tmp_path):
    """A folder or ``**`` pattern through a symlink back up the tree ends, finds each file once, and says so."""
    (tmp_path / "a" / "b").mkdir(parents=True)
    for name in ("a/one.jpg", "a/b/two.jpg"):
        cv2.imwrite(str(tmp_path / name), np.zeros((8, 8, 3), np.uint8))
    os.symlink(tmp_path / "a", tmp_path / "a" / "b" / "loop")
    for item in (tmp_path / "a", f"{tmp_path}/a/**/*.jpg"):
        inputs, problems = expand_inputs([item])
        assert sorted(i.path.resolve() for i in inputs) == [tmp_path / "a/b/two.jpg", tmp_path / "a/one.jpg"]
        assert len(problems) == 1 and "a/b/loop: a symlink leads back to a folder already searched" in problems[0]


def test_an_unreadable_subfolder_is_named_not_skipped_silently(tmp_path, monkeypatch):
    (tmp_path / "ok").mkdir()
    (tmp_path / "locked").mkdir()
    for name in ("ok/one.jpg", "locked/two.jpg"):
        cv2.imwrite(str(tmp_path / name), np.zeros((8, 8, 3), np.uint8))
    scandir = os.scandir

    def locked(path="."):  # chmod 000 does not stop root, who runs these tests: refuse the folder here
        if Path(path).name == "locked":
            raise PermissionError(13, "Permission denied", str(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", locked)
    for item in (tmp_path, f"{tmp_path}/**/*.jpg"):
        inputs, problems = expand_inputs([item])
        assert [i.path.name for i in inputs] == ["one.jpg"]
        assert problems == [f"{tmp_path / 'locked'}: cannot read folder (Permission denied); its files were not processed"]
