"""Poses for files on disk: images, folders, glob patterns and videos, as ``python -m hhrnet predict`` runs them.

Outputs mirror the input names below ``out_dir`` (``a/pic.jpg`` and ``b/pic.jpg`` stay apart):

* ``predictions.json``: COCO result entries for every image (``image_id`` in input order, plus
  ``file_name`` and the network's ``precision``), readable by pycocotools' ``loadRes``;
* ``<input name>``: the image with the people scoring at least ``min_score`` drawn (same name and format);
* for a video ``<name>``: the annotated video under the same name and ``<name>.json`` with the people
  of every frame.

Nothing is overwritten without ``overwrite``.  A bad input (unreadable, corrupt, too large) is reported
and skipped; every other input still completes.  Images stream through the predictor in batches.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import cv2
import numpy as np
from tqdm import tqdm

from .io import (ImageReadError, atomic_write, atomic_write_json, check_image_size, glob_files, read_image,
                 refuse_overlap, walk_files)
from .keypoints import COCO_17
from .viz.skeleton import MIN_SCORE, draw_found

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"}
RESULTS = "predictions.json"


class PredictError(ValueError):
    """Inputs that cannot be predicted on at all (nothing found, outputs already present)."""


@dataclass(frozen=True)
class Input:
    path: Path   # as found on disk
    name: Path   # relative name mirrored below the output folder

    @property
    def is_video(self) -> bool:
        return self.path.suffix.lower() in VIDEO_SUFFIXES


@dataclass
class Report:
    """What one ``predict_inputs`` call did: outputs written and inputs that failed (one line each)."""

    out_dir: Path
    min_score: float = MIN_SCORE
    network: str = ""
    images: int = 0
    videos: int = 0
    people: int = 0
    drawn: int = 0
    failures: list[str] = field(default_factory=list)

    def summary(self) -> str:
        failed = f"; {len(self.failures)} input(s) failed" if self.failures else ""
        by = f" by {self.network}" if self.network else ""
        return (f"wrote {self.out_dir / RESULTS}: {self.people} people in {self.images} image(s)"
                f"{f' and {self.videos} video(s)' if self.videos else ''}{by}; {self.drawn} drawn "
                f"(score >= {self.min_score:g}){failed}")


# --------------------------------------------------------------------------------------------------
# Inputs and their output names


def expand_inputs(items: Sequence[str | Path], exclude: Path | None = None) -> tuple[list[Input], list[str]]:
    """Files, folders (recursively: images and videos) and glob patterns → inputs with mirrored names.

    Returns the inputs and one message per item that named nothing.
    """
    found: list[Path] = []
    problems: list[str] = []
    for item in items:
        text = str(item)
        path = Path(text).expanduser()
        if path.is_file():
            found.append(path)
        elif path.is_dir():
            files, unreadable = walk_files(path, IMAGE_SUFFIXES | VIDEO_SUFFIXES)
            files = [p for p in files if exclude is None or not _inside(p, exclude)]
            found += files
            problems += unreadable
            if not files:
                problems.append(f"{path}: folder holds no image or video files")
        elif glob.has_magic(text):
            files, unreadable = glob_files(text)
            found += files
            problems += unreadable
            if not files:
                problems.append(f"{text}: pattern matches no file")
        else:
            problems.append(f"{path}: no such file or folder")
    unique: dict[Path, Path] = {}
    for p in found:
        unique.setdefault(p.resolve(), p)
    if not unique:
        return [], problems
    base = Path(os.path.commonpath([str(r.parent) for r in unique]))
    return [Input(p, r.relative_to(base)) for r, p in unique.items()], problems


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


def planned_outputs(inputs: Sequence[Input], out_dir: Path, draw: bool) -> list[Path]:
    outputs = [out_dir / RESULTS]
    for item in inputs:
        if item.is_video:
            outputs.append(out_dir / f"{item.name}.json")
        if draw:
            outputs.append(out_dir / item.name)
    return outputs


# --------------------------------------------------------------------------------------------------
# Running


def predict_inputs(predictor: Any, items: Sequence[str | Path], out_dir: str | Path, overwrite: bool = False,
                   min_score: float = MIN_SCORE, progress: bool = True, draw: bool = True) -> Report:
    """Predict every input; write the COCO results JSON, drawings and per-video outputs (see the module)."""
    out_dir = Path(out_dir)
    inputs, problems = expand_inputs(items, exclude=out_dir)
    if not inputs:
        raise PredictError("; ".join(problems) or "no inputs")
    refuse_overlap([out_dir], [item.path for item in inputs], "--out")
    existing = [p for p in planned_outputs(inputs, out_dir, draw) if p.exists()]
    if existing and not overwrite:
        more = f" and {len(existing) - 1} more" if len(existing) > 1 else ""
        raise PredictError(f"{existing[0]} already exists{more}; use --overwrite to replace")
    report = Report(out_dir, min_score, getattr(predictor, "name", ""), failures=list(problems))
    results: list[dict[str, Any]] = []
    images = [item for item in inputs if not item.is_video]
    batch = max(1, getattr(predictor, "batch_size", 1))
    with tqdm(total=len(inputs), desc="predict", unit="file", disable=not progress) as bar:
        for start in range(0, len(images), batch):
            chunk = images[start:start + batch]
            for index, item, image, poses in _predict_chunk(predictor, chunk, report):
                entries = _entries(start + index, poses, getattr(predictor, "keypoints", None))
                results += [dict(e, file_name=item.name.as_posix(), **_precision(predictor)) for e in entries]
                report.images += 1
                report.people += len(entries)
                if draw:
                    _write_drawing(out_dir / item.name, image, poses, min_score, getattr(predictor, "keypoints", None))
                    report.drawn += int((np.asarray(poses.scores) >= min_score).sum())
            bar.update(len(chunk))
        for item in (i for i in inputs if i.is_video):
            try:
                people, drawn = _predict_video(predictor, item, out_dir, min_score, draw)
                report.people += people
                report.drawn += drawn
                report.videos += 1
            except (ImageReadError, OSError, ValueError) as err:
                report.failures.append(str(err))
            bar.update(1)
    atomic_write_json(out_dir / RESULTS, results)
    return report


def _predict_chunk(predictor: Any, chunk: Sequence[Input], report: Report) -> Iterator[tuple[int, Input, np.ndarray, Any]]:
    """``(index, input, image, poses)`` for each readable image of a batch; failures go to the report."""
    loaded = []
    for index, item in enumerate(chunk):
        try:
            loaded.append((index, item, read_image(item.path)))
        except ImageReadError as err:
            report.failures.append(str(err))
    try:
        all_poses = predictor([image for _, _, image in loaded]) if loaded else []
    except Exception:  # find the input at fault: one by one
        all_poses = []
        for _, item, image in loaded:
            try:
                all_poses.append(predictor([image])[0])
            except Exception as err:
                report.failures.append(f"{item.path}: prediction failed ({type(err).__name__}: {err})")
                all_poses.append(None)
    for (index, item, image), poses in zip(loaded, all_poses):
        if poses is not None:
            yield index, item, image, poses


def _precision(predictor: Any) -> dict[str, str]:
    """``{"precision": fp32 | bf16}`` of the predictor's network, for every result written ({} for a bare callable)."""
    choice = getattr(predictor, "precision", None)
    return {"precision": choice.name} if choice is not None else {}


def _entries(image_id: int, poses: Any, kset: Any = None) -> list[dict[str, Any]]:
    """COCO result entries of one image, in the category of ``kset`` (the predictor's set; COCO's without one)."""
    category = (kset if kset is not None else COCO_17).category_id
    return [{"image_id": image_id, "category_id": category, "keypoints": np.round(k, 3).reshape(-1).tolist(),
             "score": round(float(s), 6)} for k, s in zip(poses.keypoints, poses.scores)]


def _drawn(image: np.ndarray, poses: Any, min_score: float, kset: Any = None) -> np.ndarray:
    """The people scoring ``min_score`` or more drawn with ``kset``'s skeleton (the predictor's set)."""
    return draw_found(image, poses.keypoints, poses.scores, min_score, kset=kset if kset is not None else COCO_17)


def _write_drawing(path: Path, image: np.ndarray, poses: Any, min_score: float, kset: Any = None) -> None:
    suffix = path.suffix.lower() if path.suffix.lower() in IMAGE_SUFFIXES else ".png"
    ok, data = cv2.imencode(suffix, cv2.cvtColor(_drawn(image, poses, min_score, kset), cv2.COLOR_RGB2BGR))
    if not ok:
        raise ImageReadError(f"{path}: OpenCV cannot encode {suffix}")
    atomic_write(path, data.tobytes())


def _frames(path: Path, batch: int) -> Iterator[list[np.ndarray]]:
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise ImageReadError(f"{path}: not a readable video (corrupt or unsupported format)")
    try:
        frames: list[np.ndarray] = []
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            check_image_size(path, frame.shape[:2])
            frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
            if len(frames) == batch:
                yield frames
                frames = []
        if frames:
            yield frames
    finally:
        capture.release()


def _predict_video(predictor: Any, item: Input, out_dir: Path, min_score: float, draw: bool) -> tuple[int, int]:
    """Annotated video (written aside, renamed when complete) and per-frame JSON; returns the people found and drawn."""
    fps = cv2.VideoCapture(str(item.path)).get(cv2.CAP_PROP_FPS) or 25.0
    target = out_dir / item.name
    partial = target.with_name(f".{target.name}.partial{target.suffix}")
    writer, frames, people, drawn, count = None, [], 0, 0, 0
    try:
        for batch in _frames(item.path, max(1, getattr(predictor, "batch_size", 1))):
            for image, poses in zip(batch, predictor(batch)):
                entries = _entries(count, poses, getattr(predictor, "keypoints", None))
                frames.append({"frame": count, "people": [{"keypoints": e["keypoints"], "score": e["score"]}
                                                          for e in entries]})
                people += len(entries)
                count += 1
                if draw:
                    if writer is None:
                        partial.parent.mkdir(parents=True, exist_ok=True)
                        fourcc = cv2.VideoWriter_fourcc(*("MJPG" if target.suffix.lower() == ".avi" else "mp4v"))
                        writer = cv2.VideoWriter(str(partial), fourcc, fps, (image.shape[1], image.shape[0]))
                    writer.write(cv2.cvtColor(_drawn(image, poses, min_score, getattr(predictor, "keypoints", None)),
                                              cv2.COLOR_RGB2BGR))
                    drawn += int((np.asarray(poses.scores) >= min_score).sum())
        if count == 0:
            raise ImageReadError(f"{item.path}: video has no readable frame")
        if writer is not None:
            writer.release()
            writer = None
            os.replace(partial, target)
    finally:
        if writer is not None:
            writer.release()
        partial.unlink(missing_ok=True)
    atomic_write_json(out_dir / f"{item.name}.json", {"file": item.name.as_posix(), "fps": fps,
                                                        **_precision(predictor), "frames": frames})
    return people, drawn


def predict_images(predictor: Any, paths: Iterable[str | Path]) -> list[Any]:
    """Poses for image files (no outputs written); a bad file raises ``ImageReadError`` naming it."""
    return predictor([read_image(p) for p in paths])
