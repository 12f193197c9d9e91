"""Writing a dataset: images and COCO JSON per split, in parallel, idempotent, byte-identical per seed."""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import re
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from hhrnet.data.crowd import crowd_index
from hhrnet.data.synthetic.annotate import annotate_scene, coco_categories
from hhrnet.data.synthetic.config import FORMAT_VERSION, KEYPOINTS, SPLITS, SyntheticConfig
from hhrnet.data.synthetic.render import render_scene
from hhrnet.data.synthetic.sampler import sample_scene
from hhrnet.io import atomic_write
from hhrnet.keypoints import KeypointSet, keypoint_set

_SPLIT_ID_OFFSET = {"train": 0, "val": 100_000_000}  # disjoint image ids, as in COCO train/val
MARKER = ".hhrnet-synth"  # written first into a folder synth creates: only such a folder is ever rewritten
_IMAGE_NAME = re.compile(r"\d{12}\.(png|jpg)")  # the names synth gives its images (``_Job.file_name``)


@dataclass(frozen=True)
class SyntheticDataset:
    """Where a generated dataset lives; ``images[split]`` and ``annotations[split]`` as COCO expects."""

    root: Path
    images: dict[str, Path]
    annotations: dict[str, Path]
    manifest: Path


def dataset_paths(out_dir: str | Path) -> SyntheticDataset:
    root = Path(out_dir)
    return SyntheticDataset(
        root=root,
        images={s: root / "images" / s for s in SPLITS},
        annotations={s: root / "annotations" / f"person_keypoints_{s}.json" for s in SPLITS},
        manifest=root / "manifest.json",
    )


def image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """Per-image generator from (seed, split, index): results do not depend on the worker count."""
    return np.random.default_rng(np.random.SeedSequence([seed, SPLITS.index(split), index]))


def _write_json(path: Path, obj: Any) -> None:
    atomic_write(path, json.dumps(obj, separators=(",", ":")).encode())


def _encode_image(image_rgb: np.ndarray, image_format: str, cfg: SyntheticConfig) -> bytes:
    params = [cv2.IMWRITE_JPEG_QUALITY, cfg.jpeg_quality] if image_format == "jpg" else [cv2.IMWRITE_PNG_COMPRESSION, 1]
    ok, buffer = cv2.imencode(f".{image_format}", np.ascontiguousarray(image_rgb[..., ::-1]), params)
    if not ok:
        raise RuntimeError(f"OpenCV could not encode a {image_format} image")
    return buffer.tobytes()


@dataclass(frozen=True)
class _Job:
    images_dir: Path
    split: str
    index: int
    size: int
    seed: int
    image_format: str
    cfg: SyntheticConfig
    keypoints: str = KEYPOINTS.name

    @property
    def image_id(self) -> int:
        return _SPLIT_ID_OFFSET[self.split] + self.index + 1

    @property
    def file_name(self) -> str:
        return f"{self.image_id:012d}.{self.image_format}"


def _make_example(job: _Job) -> tuple[dict, list[dict]]:
    """Sample, render, write one image; return its COCO image record and annotations (ids added later).

    A set with the CrowdPose protocol adds the image's ``crowdIndex``, as CrowdPose's files carry it.
    """
    scene = sample_scene(image_rng(job.seed, job.split, job.index), job.size, job.size, job.cfg, job.keypoints)
    render = render_scene(scene)
    atomic_write(job.images_dir / job.file_name, _encode_image(render.image, job.image_format, job.cfg))
    record = {"id": job.image_id, "file_name": job.file_name, "width": job.size, "height": job.size}
    annotations = annotate_scene(scene, render, job.cfg.min_visible_keypoints)
    if keypoint_set(job.keypoints).protocol == "crowdpose":
        record["crowdIndex"] = round(crowd_index(annotations), 4)
    return record, annotations


def _worker_init() -> None:
    cv2.setNumThreads(1)  # the pool is the parallelism; OpenCV threads would only oversubscribe


def _run_jobs(jobs: list[_Job], workers: int) -> list[tuple[dict, list[dict]]]:
    """Run the jobs in order, in a forked process pool when ``workers > 1`` (results keep job order).

    Forking is cheap (no re-import of torch), but a child inherits OpenCV's thread pool without its
    threads and hangs in the first parallel OpenCV call; OpenCV is therefore single-threaded while the
    children are forked, and the caller's setting is restored afterwards.
    """
    if workers <= 1 or len(jobs) <= 1:
        return [_make_example(job) for job in jobs]
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    opencv_threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_worker_init) as pool:
            return list(pool.map(_make_example, jobs, chunksize=max(1, len(jobs) // (8 * workers))))
    finally:
        cv2.setNumThreads(opencv_threads)


def _coco_document(records: list[tuple[dict, list[dict]]], spec: dict, keypoints: str = KEYPOINTS.name) -> dict:
    images, annotations = [], []
    for record, anns in records:
        images.append(record)
        for ann in anns:
            annotations.append({"id": len(annotations) + 1, "image_id": record["id"], **ann})
    info = {"description": "hhrnet procedural multi-person keypoints (hhrnet.data.synthetic)", **spec}
    return {"info": info, "licenses": [], "images": images, "annotations": annotations,
            "categories": coco_categories(keypoints)}


def _remove_stale_images(images_dir: Path, keep: set[str]) -> None:
    """Drop synth's images of an earlier, different generation so the folder matches its annotations."""
    for path in images_dir.glob("*"):
        if _IMAGE_NAME.fullmatch(path.name) and path.name not in keep:
            path.unlink()


def _claim_folder(paths: SyntheticDataset) -> None:
    """Refuse to write into a folder synth did not create (no ``MARKER``, no synth manifest, not empty);
    mark a new or empty one as synth's, before anything else is written."""
    root = paths.root
    if (root / MARKER).is_file() or _synth_manifest(paths.manifest):
        return
    if root.exists() and not root.is_dir():
        raise ValueError(f"{root}: not a folder; --out names the dataset folder synth creates")
    if root.exists() and any(root.iterdir()):
        raise ValueError(f"{root}: holds files that hhrnet synth did not write (no {MARKER} in it); synth only "
                         "replaces a dataset it created: give a new or empty folder")
    atomic_write(root / MARKER, "written by hhrnet synth: this folder's images and annotations may be regenerated\n")


def _synth_manifest(path: Path) -> dict | None:
    """The settings in a manifest synth wrote (one holding ``format_version``), else None."""
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and "format_version" in manifest else None


def generate(out_dir: str | Path, n_train: int, n_val: int, size: int = 256, seed: int = 0,
             workers: int | None = None, image_format: str = "png", config: SyntheticConfig | None = None,
             force: bool = False, keypoints: str | KeypointSet = KEYPOINTS) -> SyntheticDataset:
    """Write ``out_dir/images/{train,val}/*`` and ``out_dir/annotations/person_keypoints_{train,val}.json``.

    ``keypoints``: the joints each person carries (COCO's 17 by default; ``"crowdpose"`` writes
    CrowdPose-format files: 14 joints and a ``crowdIndex`` per image).  The images do not depend on it.

    Only a folder synth created (``MARKER``, or a synth ``manifest.json``) or a new or empty one is written:
    an existing dataset of someone else is refused untouched.  Idempotent: if ``out_dir/manifest.json``
    (written last, after every image and JSON) records the same settings, nothing is redone.  Otherwise the manifest is removed first, so an interrupted run never
    looks complete.  The output is byte-identical for a given (seed, settings), whatever ``workers`` is
    (default: all CPUs).
    """
    if image_format not in ("png", "jpg"):
        raise ValueError(f"image_format must be 'png' or 'jpg', got {image_format!r}")
    if max(n_train, n_val) >= _SPLIT_ID_OFFSET["val"] or min(n_train, n_val) < 0 or size < 32:
        raise ValueError(f"need 0 <= n_train, n_val < 1e8 and size >= 32, got {n_train}, {n_val}, {size}")
    cfg = config or SyntheticConfig()
    kset = keypoint_set(keypoints)
    paths = dataset_paths(out_dir)
    spec = {"format_version": FORMAT_VERSION, "n_train": n_train, "n_val": n_val, "size": size, "seed": seed,
            "image_format": image_format, "config": dataclasses.asdict(cfg)}
    if kset.name != KEYPOINTS.name:  # COCO files stay byte-identical to those written before keypoint sets
        spec["keypoints"] = kset.name
    spec = json.loads(json.dumps(spec))  # tuples -> lists, as they come back from disk
    _claim_folder(paths)
    if not force and _synth_manifest(paths.manifest) == spec:
        return paths
    paths.manifest.unlink(missing_ok=True)
    workers = workers or os.cpu_count() or 1
    for split, count in (("train", n_train), ("val", n_val)):
        paths.images[split].mkdir(parents=True, exist_ok=True)
        jobs = [_Job(paths.images[split], split, i, size, seed, image_format, cfg, kset.name) for i in range(count)]
        records = _run_jobs(jobs, workers)
        _write_json(paths.annotations[split], _coco_document(records, spec, kset.name))
        _remove_stale_images(paths.images[split], {job.file_name for job in jobs})
    _write_json(paths.manifest, spec)
    return paths
