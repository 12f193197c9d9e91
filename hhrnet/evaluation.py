"""COCO keypoint AP/AR of predicted poses.

``coco_results`` turns one image's ``Poses`` into COCO result entries (one per person, as the reference
writes them); ``evaluate_coco`` scores a list of entries with ``COCOeval(gt, dt, "keypoints")``.

pycocotools is the reference.  ``backend="hotcoco"`` uses the Rust re-implementation ``hotcoco`` (about
100x faster; optional dependency), which the tests check gives the same ten numbers on our data;
``"auto"`` picks hotcoco when it is installed.
"""

from __future__ import annotations

import contextlib
import copy
import io
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

METRIC_NAMES: tuple[str, ...] = ("AP", "AP50", "AP75", "AP_M", "AP_L", "AR", "AR50", "AR75", "AR_M", "AR_L")
PERSON_CATEGORY = 1


def coco_results(image_id: int, poses: Any) -> list[dict[str, Any]]:
    """COCO result entries for one image: ``keypoints`` (x, y, value per joint, 51 floats for COCO), ``score``.

    ``poses`` is a ``hhrnet.inference.Poses`` (anything with ``keypoints (P, K, 3)`` and ``scores (P,)``).
    The value column does not enter OKS; the score orders the detections (maxDets = 20 per image).
    """
    return [
        {"image_id": int(image_id), "category_id": PERSON_CATEGORY,
         "keypoints": [float(v) for v in np.asarray(keypoints, np.float64)[:, :3].reshape(-1)],
         "score": float(score)}
        for keypoints, score in zip(poses.keypoints, poses.scores)
    ]


def load_ground_truth(gt: Any) -> Any:
    """A pycocotools ``COCO`` from a path (or the object itself), without its loading chatter."""
    if isinstance(gt, (str, Path)):
        from pycocotools.coco import COCO

        with contextlib.redirect_stdout(io.StringIO()):
            return COCO(str(gt))
    return gt


def _pycocotools_stats(gt: Any, results: list[dict[str, Any]], image_ids: Sequence[int]) -> np.ndarray:
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(copy.deepcopy(results))  # loadRes adds fields to the entries it is given
        ev = COCOeval(gt, dt, "keypoints")
        ev.params.imgIds = list(image_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return np.asarray(ev.stats, np.float64)


def _hotcoco_stats(gt: Any, results: list[dict[str, Any]], image_ids: Sequence[int]) -> np.ndarray:
    import hotcoco

    with contextlib.redirect_stdout(io.StringIO()):
        hot_gt = hotcoco.COCO(gt.dataset)
        dt = hot_gt.loadRes(copy.deepcopy(results))
        ev = hotcoco.COCOeval(hot_gt, dt, "keypoints")
        ev.params.img_ids = list(image_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return np.asarray(ev.stats, np.float64)


def available_backends() -> tuple[str, ...]:
    """``pycocotools`` always; ``hotcoco`` when it can be imported."""
    try:
        import hotcoco  # noqa: F401
    except ImportError:
        return ("pycocotools",)
    return ("pycocotools", "hotcoco")


def evaluate_coco(gt: Any, results: Iterable[dict[str, Any]], image_ids: Sequence[int] | None = None,
                  backend: str = "pycocotools") -> dict[str, float]:
    """``{"AP", "AP50", ..., "AR_L"}`` of ``results`` against ``gt`` (a ``COCO`` or a JSON path).

    ``image_ids``: the images that were predicted on (default: all of ``gt``); detections count as false
    positives on person-free images, as in COCO val.  No results at all gives zeros (pycocotools
    itself would crash on an empty list).
    """
    gt = load_ground_truth(gt)
    results = list(results)
    image_ids = sorted(gt.getImgIds()) if image_ids is None else list(image_ids)
    if backend == "auto":
        backend = available_backends()[-1]
    if backend not in ("pycocotools", "hotcoco"):
        raise ValueError(f"unknown COCO evaluation backend {backend!r}: use pycocotools, hotcoco or auto")
    if not results:
        return dict.fromkeys(METRIC_NAMES, 0.0)
    stats = (_hotcoco_stats if backend == "hotcoco" else _pycocotools_stats)(gt, results, image_ids)
    return {name: float(v) for name, v in zip(METRIC_NAMES, stats)}


def metrics_markdown(metrics: dict[str, Any], title: str = "COCO keypoints") -> str:
    """A one-row markdown table of the ten COCO numbers (in percent), for summaries and the book."""
    header = "| " + " | ".join(METRIC_NAMES) + " |"
    rule = "|" + "---|" * len(METRIC_NAMES)
    row = "| " + " | ".join(f"{100 * metrics[name]:.1f}" for name in METRIC_NAMES) + " |"
    return f"### {title}\n\n{header}\n{rule}\n{row}\n"
