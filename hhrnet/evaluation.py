"""Keypoint AP/AR of predicted poses, with the protocol of the keypoint set (COCO or CrowdPose).

``coco_results`` turns one image's ``Poses`` into COCO result entries (one per person, as the reference
writes them); ``evaluate_coco`` scores a list of entries with ``COCOeval(gt, dt, "keypoints")``, using
the OKS sigmas and area ranges of the keypoint set; ``evaluate_crowdpose`` scores them with the
CrowdPose protocol (xtcocotools' ``keypoints_crowd``: no area ranges, AP of the easy / medium / hard
images by crowd index); ``score`` picks the protocol of the set; ``evaluate`` runs a predictor over a
whole split.  ``match_table`` keeps what ``COCOeval.evaluate`` matched, per detection, so that
``hhrnet.stats`` can recompute AP for any resampling of the images.

pycocotools is the reference.  ``backend="hotcoco"`` uses the faster Rust re-implementation ``hotcoco``
(optional dependency), which the tests check gives the same ten numbers on our data; ``"auto"`` picks
hotcoco when it is installed.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from tqdm import tqdm

from hhrnet.data.coco import coco_paths, read_rgb_image, validate_ground_truth
from hhrnet.data.crowd import SPLIT_NAMES, images_by_split
from hhrnet.io import atomic_write, atomic_write_json, refuse_overlap
from hhrnet.keypoints import COCO_17, CROWDPOSE_14, KeypointSet

# COCOeval's ten summary numbers, in its order: the one list of metric names.
METRIC_NAMES: tuple[str, ...] = ("AP", "AP50", "AP75", "AP_M", "AP_L", "AR", "AR50", "AR75", "AR_M", "AR_L")
# The CrowdPose evaluator's nine numbers, in its order: the last three are the published AP(E), AP(M),
# AP(H), the AP of the easy / medium / hard images (named in full: COCO's AP_M is medium *area*).
CROWD_METRIC_NAMES: tuple[str, ...] = ("AP", "AP50", "AP75", "AR", "AR50", "AR75", "AP_easy", "AP_medium", "AP_hard")


def metric_names(keypoints: KeypointSet = COCO_17) -> tuple[str, ...]:
    """The summary numbers of the set's protocol."""
    return CROWD_METRIC_NAMES if keypoints.protocol == "crowdpose" else METRIC_NAMES


def coco_results(image_id: int, poses: Any, keypoints: KeypointSet = COCO_17) -> list[dict[str, Any]]:
    """COCO result entries for one image: ``keypoints`` (x, y, value per joint), ``score``, the set's category.

    ``poses`` is a ``hhrnet.inference.Poses`` (anything with ``keypoints (P, K, 3)`` and ``scores (P,)``).
    The value column does not enter OKS; the score orders the detections (maxDets = 20 per image).
    """
    return [
        {"image_id": int(image_id), "category_id": keypoints.category_id,
         "keypoints": [float(v) for v in np.asarray(person, np.float64)[:, :3].reshape(-1)],
         "score": float(score)}
        for person, score in zip(poses.keypoints, poses.scores)
    ]


def load_ground_truth(gt: Any) -> Any:
    """A pycocotools ``COCO`` from a path (or the object itself), without its loading chatter."""
    if isinstance(gt, (str, Path)):
        with contextlib.redirect_stdout(io.StringIO()):
            return COCO(str(gt))
    return gt


AREAS: tuple[str, ...] = ("all", "medium", "large")  # COCOeval keypoint areaRngLbl, in its order
MAX_DETS = 20  # COCOeval keypoint params: maxDets = [20]


def _area_ranges(keypoints: KeypointSet) -> list[list[float]]:
    """COCOeval's keypoint area ranges (all, medium, large) from the set's sqrt(area) bounds."""
    if keypoints.area_bounds is None:  # no area ranges: every range is "all"
        return [[0 ** 2, 1e5 ** 2]] * 3
    low, high = keypoints.area_bounds
    return [[0 ** 2, 1e5 ** 2], [low ** 2, high ** 2], [high ** 2, 1e5 ** 2]]


def matched_cocoeval(gt: Any, results: list[dict[str, Any]], image_ids: Sequence[int], keypoints: KeypointSet,
                     dt: Any = None) -> Any:
    """pycocotools' ``COCOeval`` for keypoints with the set's sigmas and areas, after ``evaluate()``.

    ``dt`` replaces ``gt.loadRes(results)`` (e.g. an empty result set, which ``loadRes`` refuses).
    """
    with contextlib.redirect_stdout(io.StringIO()):
        if dt is None:
            dt = gt.loadRes(copy.deepcopy(results))  # loadRes adds fields to the entries it is given
        ev = COCOeval(gt, dt, "keypoints")
        ev.params.imgIds = list(image_ids)
        ev.params.kpt_oks_sigmas = np.array(keypoints.sigmas)
        ev.params.areaRng = _area_ranges(keypoints)
        ev.evaluate()
    return ev


# --------------------------------------------------------------------------------------------------
# The match table: what COCOeval matched, kept for intervals (``hhrnet.stats``)


@dataclass
class MatchTable:
    """Everything AP needs from one evaluation, per detection and per image.

    ``image_ids (I,)``: the evaluated images (sorted); ``people (A, I)``: non-ignored GT people per area;
    ``det_image (D,)``: index into ``image_ids``; ``det_score (D,)``; ``matched`` and ``ignored``
    ``(A, T, D)`` bool (``COCOeval`` ``dtMatches != 0`` and ``dtIgnore``); ``iou_thrs (T,)``,
    ``rec_thrs (R,)``.  Detections are each image's top 20 in image order, best first, as in ``evalImgs``.
    """

    image_ids: np.ndarray
    people: np.ndarray
    det_image: np.ndarray
    det_score: np.ndarray
    matched: np.ndarray
    ignored: np.ndarray
    iou_thrs: np.ndarray
    rec_thrs: np.ndarray

    def save(self, path: str | Path) -> Path:
        """Write a compressed ``.npz`` (flags bit-packed); ``MatchTable.load`` reads it back."""
        path = Path(path)
        arrays = asdict(self)
        shape = np.array(self.matched.shape)
        arrays["matched"] = np.packbits(self.matched.reshape(-1))
        arrays["ignored"] = np.packbits(self.ignored.reshape(-1))
        atomic_write(path, lambda f: np.savez_compressed(f, flags_shape=shape, **arrays))
        return path

    @classmethod
    def load(cls, path: str | Path) -> "MatchTable":
        with np.load(Path(path)) as z:
            shape = tuple(int(s) for s in z["flags_shape"])
            size = int(np.prod(shape))
            flags = {k: np.unpackbits(z[k], count=size).astype(bool).reshape(shape) for k in ("matched", "ignored")}
            return cls(z["image_ids"], z["people"], z["det_image"], z["det_score"], flags["matched"],
                       flags["ignored"], z["iou_thrs"], z["rec_thrs"])

    def counts(self, image_ids: Iterable[int] | None = None) -> np.ndarray:
        """``(I,)`` multiplicity of each table image in a list of image ids (repeats allowed)."""
        if image_ids is None:
            return np.ones(len(self.image_ids), np.int64)
        ids = np.asarray(list(image_ids), np.int64)
        index = np.searchsorted(self.image_ids, ids)
        if ids.size and (index.max() >= len(self.image_ids) or np.any(self.image_ids[index] != ids)):
            unknown = sorted(set(ids.tolist()) - set(self.image_ids.tolist()))
            raise ValueError(f"image ids not in the match table: {unknown[:10]}")
        return np.bincount(index, minlength=len(self.image_ids)).astype(np.int64)


def _empty_results(gt: Any) -> Any:
    """A results ``COCO`` with no detections (``loadRes`` cannot take an empty list)."""
    dt = COCO()
    dt.dataset = {"images": list(gt.dataset["images"]), "categories": copy.deepcopy(gt.dataset["categories"]),
                  "annotations": []}
    with contextlib.redirect_stdout(io.StringIO()):
        dt.createIndex()
    return dt


def match_table(gt: Any, results: Sequence[dict[str, Any]], image_ids: Sequence[int] | None = None,
                keypoints: KeypointSet = COCO_17) -> MatchTable:
    """Run ``COCOeval.evaluate()`` exactly as ``evaluate_coco`` does and keep its matches.

    ``gt``: a pycocotools ``COCO`` or an annotation file; ``results``: COCO keypoint result entries;
    ``image_ids``: the evaluated images (default: every image of ``gt``).
    """
    gt = load_ground_truth(gt)
    results = list(results)
    image_ids = sorted(gt.getImgIds()) if image_ids is None else list(image_ids)
    ev = matched_cocoeval(gt, results, image_ids, keypoints, dt=None if results else _empty_results(gt))
    p = ev.params
    if len(p.catIds) != 1 or list(p.maxDets) != [MAX_DETS] or tuple(p.areaRngLbl) != AREAS:
        raise ValueError(f"match_table handles one category, maxDets [20] and areas {AREAS}; got categories "
                         f"{p.catIds}, maxDets {p.maxDets}, areas {p.areaRngLbl}")
    num_images, num_thrs = len(p.imgIds), len(p.iouThrs)
    people = np.zeros((len(AREAS), num_images), np.int64)
    det_image, det_score, matched, ignored = [], [], [[] for _ in AREAS], [[] for _ in AREAS]
    for a in range(len(AREAS)):
        for i in range(num_images):
            e = ev.evalImgs[a * num_images + i]  # one category: evalImgs is ordered [area][image]
            if e is None:
                continue
            people[a, i] = int(np.count_nonzero(np.asarray(e["gtIgnore"]) == 0))
            scores = np.asarray(e["dtScores"][:MAX_DETS], np.float64)
            if a == 0:
                det_image.append(np.full(len(scores), i, np.int64))
                det_score.append(scores)
            matched[a].append(np.asarray(e["dtMatches"])[:, :MAX_DETS].reshape(num_thrs, -1) != 0)
            ignored[a].append(np.asarray(e["dtIgnore"])[:, :MAX_DETS].reshape(num_thrs, -1).astype(bool))

    def cat(parts: list, dtype: Any, shape: tuple) -> np.ndarray:
        return np.concatenate(parts, axis=-1).astype(dtype) if parts else np.zeros(shape, dtype)

    return MatchTable(
        image_ids=np.asarray(p.imgIds, np.int64), people=people,
        det_image=cat(det_image, np.int64, (0,)), det_score=cat(det_score, np.float64, (0,)),
        matched=np.stack([cat(m, bool, (num_thrs, 0)) for m in matched]),
        ignored=np.stack([cat(g, bool, (num_thrs, 0)) for g in ignored]),
        iou_thrs=np.asarray(p.iouThrs, np.float64), rec_thrs=np.asarray(p.recThrs, np.float64))



# --------------------------------------------------------------------------------------------------
# The protocols' summary numbers


def _pycocotools_stats(gt: Any, results: list[dict[str, Any]], image_ids: Sequence[int],
                       keypoints: KeypointSet) -> np.ndarray:
    ev = matched_cocoeval(gt, results, image_ids, keypoints)
    with contextlib.redirect_stdout(io.StringIO()):
        ev.accumulate()
        ev.summarize()
    return np.asarray(ev.stats, np.float64)


def _hotcoco_stats(gt: Any, results: list[dict[str, Any]], image_ids: Sequence[int],
                   keypoints: KeypointSet) -> np.ndarray:
    import hotcoco  # an optional dependency: imported only when asked for

    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.filterwarnings("ignore", "hotcoco: kpt_oks_sigmas differ")  # other sets: on purpose
        hot_gt = hotcoco.COCO(gt.dataset)
        dt = hot_gt.loadRes(copy.deepcopy(results))
        ev = hotcoco.COCOeval(hot_gt, dt, "keypoints")
        ev.params.img_ids = list(image_ids)
        ev.params.kpt_oks_sigmas = list(keypoints.sigmas)
        ev.params.area_rng = [[float(v) for v in r] for r in _area_ranges(keypoints)]
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
                  backend: str = "pycocotools", keypoints: KeypointSet = COCO_17) -> dict[str, float]:
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
    stats = (_hotcoco_stats if backend == "hotcoco" else _pycocotools_stats)(gt, results, image_ids, keypoints)
    return {name: float(v) for name, v in zip(METRIC_NAMES, stats)}


XTCOCOTOOLS_INSTALL = ("pip install numpy cython setuptools && pip install --force-reinstall --no-deps "
                       "--no-build-isolation --no-binary xtcocotools 'xtcocotools>=1.14'")


def _xtcocotools() -> tuple[Any, Any]:
    """xtcocotools' ``COCO`` and ``COCOeval``, or an ImportError that says how to install it.

    Its published wheels are compiled against numpy 1.x and fail to import on numpy 2 ("dtype size
    changed"); built from source against the installed numpy it works (``XTCOCOTOOLS_INSTALL``).
    """
    try:
        from xtcocotools.coco import COCO as CrowdCOCO  # its import fails on some builds: only when scoring CrowdPose
        from xtcocotools.cocoeval import COCOeval as CrowdCOCOeval
    except (ImportError, ValueError) as err:
        raise ImportError(f"CrowdPose evaluation needs xtcocotools built for this numpy ({err}); install it "
                          f"with: {XTCOCOTOOLS_INSTALL}") from None
    return CrowdCOCO, CrowdCOCOeval


def _dataset_of(gt: Any) -> dict[str, Any]:
    if isinstance(gt, (str, Path)):
        return json.loads(Path(gt).read_text())
    return gt.dataset if hasattr(gt, "dataset") else gt


def evaluate_crowdpose(gt: Any, results: Iterable[dict[str, Any]], image_ids: Sequence[int] | None = None,
                       keypoints: KeypointSet = CROWDPOSE_14) -> dict[str, float]:
    """``{"AP", "AP50", "AP75", "AR", "AR50", "AR75", "AP_easy", "AP_medium", "AP_hard"}``, CrowdPose's protocol.

    ``gt``: a CrowdPose-format annotation file (images carry ``crowdIndex``), its dict or a COCO object.
    xtcocotools' ``keypoints_crowd`` with the set's sigmas and ``use_area=False``: OKS uses 0.53 × the
    box area, people are ignored when ``num_keypoints`` is 0, at most 20 detections per image count, and
    AP_easy/medium/hard are the AP of the images whose crowd index is below 0.2, below 0.8, or above
    (``hhrnet.data.crowd``; the evaluator rounds them to 4 decimals).  The evaluator re-reads the ground
    truth from a file to split it, so the images of ``image_ids`` are written to a temporary one.
    """
    CrowdCOCO, CrowdCOCOeval = _xtcocotools()
    dataset = _dataset_of(gt)
    image_ids = sorted(int(i["id"]) for i in dataset["images"]) if image_ids is None else sorted(image_ids)
    results = list(results)
    if not results:
        return dict.fromkeys(CROWD_METRIC_NAMES, 0.0)
    missing = [i["id"] for i in dataset["images"] if "crowdIndex" not in i][:3]
    if missing:
        raise ValueError(f"CrowdPose evaluation needs 'crowdIndex' on every image; images {missing} have none "
                         "(hhrnet.data.crowd.crowd_index computes it from the annotations)")
    wanted = set(image_ids)
    subset = {**dataset, "images": [i for i in dataset["images"] if int(i["id"]) in wanted],
              "annotations": [a for a in dataset["annotations"] if int(a["image_id"]) in wanted]}
    with tempfile.TemporaryDirectory(prefix="hhrnet_crowdpose_") as tmp:
        path = Path(tmp) / "ground_truth.json"
        path.write_text(json.dumps(subset))
        with contextlib.redirect_stdout(io.StringIO()):
            coco_gt = CrowdCOCO(str(path))
            dt = coco_gt.loadRes(copy.deepcopy(results))
            ev = CrowdCOCOeval(coco_gt, dt, "keypoints_crowd", sigmas=np.array(keypoints.sigmas), use_area=False)
            ev.params.imgIds = image_ids
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
    return {name: float(v) for name, v in zip(CROWD_METRIC_NAMES, ev.stats)}


def score(gt: Any, results: Iterable[dict[str, Any]], image_ids: Sequence[int] | None = None,
          keypoints: KeypointSet = COCO_17, backend: str = "pycocotools") -> dict[str, float]:
    """The summary numbers of ``results`` with the protocol of ``keypoints`` (COCO or CrowdPose).

    ``backend`` chooses the COCO evaluator; CrowdPose is always xtcocotools (``hotcoco`` is refused).
    """
    if keypoints.protocol == "crowdpose":
        if backend not in ("pycocotools", "auto", "xtcocotools"):
            raise ValueError(f"backend {backend!r} has no CrowdPose protocol; CrowdPose is scored by xtcocotools")
        return evaluate_crowdpose(gt, results, image_ids, keypoints)
    return evaluate_coco(gt, results, image_ids, backend=backend, keypoints=keypoints)


def metrics_markdown(metrics: dict[str, Any], title: str = "COCO keypoints") -> str:
    """A one-row markdown table of the protocol's numbers (in percent), for summaries and the book."""
    names = METRIC_NAMES if all(n in metrics for n in METRIC_NAMES) else CROWD_METRIC_NAMES
    header = "| " + " | ".join(names) + " |"
    rule = "|" + "---|" * len(names)
    row = "| " + " | ".join(f"{100 * metrics[name]:.1f}" for name in names) + " |"
    return f"### {title}\n\n{header}\n{rule}\n{row}\n"


MATCHES = "matches.npz"  # per-detection COCOeval matches of an evaluation (``MatchTable``)
OUTPUTS = ("results.json", "metrics.json", "metrics.md", MATCHES)  # what ``evaluate`` writes in ``out_dir``


def evaluate(predictor: Any, root: str | Path | None = None, split: str | None = None,
             annotation_file: str | Path | None = None, image_dir: str | Path | None = None,
             out_dir: str | Path | None = None, backend: str = "pycocotools", progress: bool = True,
             limit: int | None = None) -> dict[str, Any]:
    """Keypoint AP of a ``Predictor`` on a COCO-format split (every image of it, as the reference).

    The split is ``root`` + ``split`` or an ``annotation_file`` + ``image_dir`` (``hhrnet.data.coco_paths``);
    the keypoint set is the predictor's config's and must be the file's (its category's joint names);
    its protocol decides the numbers (``score``).  With ``out_dir``: writes ``results.json`` (COCO result
    entries), ``metrics.json``, ``metrics.md`` and ``matches.npz`` (for ``hhrnet.stats`` intervals).  Returns
    the metrics plus ``images``, ``people``, ``seconds_per_image`` and the network's ``precision``
    (CrowdPose: also ``images_easy``, ``images_medium``, ``images_hard``).
    """
    keypoints = predictor.cfg.data.keypoint_set
    ann_path, img_dir = coco_paths(root, split, annotation_file, image_dir)
    if out_dir is not None:  # an input is never an output
        refuse_overlap([Path(out_dir) / name for name in OUTPUTS], [ann_path], "output")
    validate_ground_truth(ann_path, img_dir, keypoints)  # never score unchecked ground truth
    gt = load_ground_truth(ann_path)
    image_ids = sorted(gt.getImgIds())[:limit]
    results = []
    start = time.perf_counter()
    for image_id in tqdm(image_ids, desc="evaluate", unit="img", disable=not progress):
        info = gt.loadImgs(image_id)[0]
        image = read_rgb_image(img_dir / info["file_name"], (info["height"], info["width"]))
        results.extend(coco_results(image_id, predictor.predict([image])[0], keypoints))
    seconds = (time.perf_counter() - start) / max(1, len(image_ids))
    metrics: dict[str, Any] = score(gt if keypoints.protocol == "coco" else ann_path, results, image_ids,
                                    keypoints=keypoints, backend=backend)
    metrics.update(images=len(image_ids), people=len(results), seconds_per_image=seconds,
                   precision=predictor.precision.name)
    if keypoints.protocol == "crowdpose":
        chosen = set(image_ids)
        splits = images_by_split(i for i in gt.dataset["images"] if i["id"] in chosen)
        metrics.update({f"images_{name}": len(splits[name]) for name in SPLIT_NAMES})
    if out_dir is not None:
        out = Path(out_dir)
        atomic_write_json(out / "results.json", results, indent=None)
        atomic_write_json(out / "metrics.json", metrics, indent=2)
        atomic_write(out / "metrics.md", metrics_markdown(metrics, title=f"{predictor.cfg.name} on {ann_path.name}"))
        match_table(gt, results, image_ids, keypoints).save(out / MATCHES)  # for paired intervals later
    return metrics
