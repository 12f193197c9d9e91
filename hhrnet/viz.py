"""Drawing helpers shared by the book and the CLI: skeletons, dataset grids, scale histograms.

Colour convention for skeletons: the person's **left** side in blue, the **right** side in orange, the
face and the links across the body in green.  A person facing the camera therefore shows blue on the
image's right-hand side.  matplotlib is imported inside the figure functions only, so importing this
module never selects a backend.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import cv2
import numpy as np

from hhrnet.data.synthetic import COCO_KEYPOINT_NAMES, COCO_SKELETON

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

SIDE_COLOURS: dict[str, tuple[float, float, float]] = {
    "left": (0.12, 0.47, 0.71),
    "right": (1.0, 0.5, 0.05),
    "centre": (0.17, 0.63, 0.17),
}
COCO_AREA_BOUNDS = (32.0, 96.0)  # sqrt(area) limits of COCO's small / medium / large


def keypoint_side(name: str) -> str:
    """'left', 'right' or 'centre' for a keypoint name."""
    return name.split("_")[0] if name.startswith(("left_", "right_")) else "centre"


def _limb_side(edge: tuple[int, int]) -> str:
    """A limb takes its joints' side when both agree (an arm), else it is a centre link (hips, shoulders)."""
    a, b = (keypoint_side(COCO_KEYPOINT_NAMES[i - 1]) for i in edge)
    return a if a == b else "centre"


def as_poses(keypoints: Any) -> np.ndarray:
    """Any keypoint layout -> ``(N, 17, 3)``: flat COCO lists (51 values), ``(17, 2|3)``, ``(N, 17, 2|3)``.

    Without a visibility column every joint counts as visible.
    """
    arr = np.asarray(keypoints, np.float64)
    k = len(COCO_KEYPOINT_NAMES)
    if arr.size == 0:
        return np.zeros((0, k, 3))
    if arr.ndim == 1 or (arr.ndim == 2 and arr.shape[-1] == 3 * k):
        arr = arr.reshape(-1, k, 3)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.shape[-1] == 2:
        arr = np.concatenate([arr, np.full(arr.shape[:-1] + (1,), 2.0)], axis=-1)
    return arr


def draw_poses(target: "Axes | np.ndarray", keypoints: Any, min_visibility: int = 1,
               joint_size: float | None = None, line_width: float | None = None, alpha: float = 1.0):
    """Draw COCO skeletons on a matplotlib Axes (returned) or on an RGB uint8 image (a drawn copy returned).

    Joints with ``v >= min_visibility`` are drawn; occluded joints (``v == 1``) are hollow.
    """
    poses = as_poses(keypoints)
    if isinstance(target, np.ndarray):
        return _draw_on_image(target, poses, min_visibility, joint_size, line_width)
    _draw_on_axes(target, poses, min_visibility, joint_size, line_width, alpha)
    return target


def _draw_on_image(image: np.ndarray, poses: np.ndarray, min_visibility: int, joint_size: float | None,
                   line_width: float | None) -> np.ndarray:
    out = np.ascontiguousarray(image.copy())
    radius = max(1, int(round(joint_size or max(out.shape[:2]) / 160)))
    thickness = max(1, int(round(line_width or radius / 2)))
    colour = {side: tuple(int(255 * c) for c in rgb) for side, rgb in SIDE_COLOURS.items()}
    shift = 4  # cv2 draws with 4 fractional bits, so sub-pixel keypoints land where they belong

    def fixed(x: float, y: float) -> tuple[int, int]:
        return int(round(x * (1 << shift))), int(round(y * (1 << shift)))

    for pose in poses:
        for edge in COCO_SKELETON:
            p, q = pose[edge[0] - 1], pose[edge[1] - 1]
            if min(p[2], q[2]) >= min_visibility and min(p[2], q[2]) > 0:
                cv2.line(out, fixed(*p[:2]), fixed(*q[:2]), colour[_limb_side(edge)], thickness, cv2.LINE_AA, shift)
        for name, (x, y, v) in zip(COCO_KEYPOINT_NAMES, pose):
            if v >= min_visibility and v > 0:
                fill = -1 if v >= 2 else max(1, thickness)
                cv2.circle(out, fixed(x, y), radius << shift, colour[keypoint_side(name)], fill, cv2.LINE_AA, shift)
    return out


def _draw_on_axes(ax: "Axes", poses: np.ndarray, min_visibility: int, joint_size: float | None,
                  line_width: float | None, alpha: float) -> None:
    size = joint_size or 12.0
    width = line_width or 1.5
    for pose in poses:
        for edge in COCO_SKELETON:
            p, q = pose[edge[0] - 1], pose[edge[1] - 1]
            if min(p[2], q[2]) >= min_visibility and min(p[2], q[2]) > 0:
                ax.plot([p[0], q[0]], [p[1], q[1]], color=SIDE_COLOURS[_limb_side(edge)], lw=width, alpha=alpha)
        for name, (x, y, v) in zip(COCO_KEYPOINT_NAMES, pose):
            if v >= min_visibility and v > 0:
                rgb = SIDE_COLOURS[keypoint_side(name)]
                ax.scatter([x], [y], s=size, color=rgb if v >= 2 else "none", edgecolors=[rgb], linewidths=1,
                           alpha=alpha, zorder=3)


def _load_coco(annotations: str | Path | Mapping) -> Mapping:
    return annotations if isinstance(annotations, Mapping) else json.loads(Path(annotations).read_text())


def plot_scene_grid(image_dir: str | Path, annotations: str | Path | Mapping, n: int = 8, cols: int = 4,
                    tile_inches: float = 3.0) -> "Figure":
    """The first ``n`` images of a COCO keypoint dataset with their ground truth drawn.

    Skeletons follow the left/right colours above; people without keypoints get a dashed box and crowd
    regions a red tint.  Works for real COCO folders as well as ``hhrnet.data.synthetic`` output.
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle
    from pycocotools import mask as mask_utils

    coco = _load_coco(annotations)
    images = coco["images"][:n]
    rows = max(1, -(-len(images) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * tile_inches, rows * tile_inches), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, record in zip(axes.ravel(), images):
        image = cv2.imread(str(Path(image_dir) / record["file_name"]), cv2.IMREAD_COLOR)[..., ::-1]
        anns = [a for a in coco["annotations"] if a["image_id"] == record["id"]]
        for ann in (a for a in anns if a.get("iscrowd")):
            rle = mask_utils.frPyObjects(ann["segmentation"], record["height"], record["width"])
            crowd = mask_utils.decode(rle).astype(bool)
            image = np.where(crowd[..., None], (0.5 * image + [127, 0, 0]).astype(np.uint8), image)
        ax.imshow(image)
        people = [a for a in anns if not a.get("iscrowd")]
        draw_poses(ax, [a["keypoints"] for a in people if a["num_keypoints"] > 0], joint_size=6, line_width=1)
        for ann in (a for a in people if a["num_keypoints"] == 0):
            x, y, w, h = ann["bbox"]
            ax.add_patch(Rectangle((x, y), w, h, fill=False, ls="--", lw=0.8, color="white"))
        labelled = sum(a["num_keypoints"] > 0 for a in people)
        ax.set_title(f"id {record['id']}: {labelled} labelled, {len(people) - labelled} unlabelled", fontsize=8)
    fig.tight_layout()
    return fig


def plot_person_heights(datasets: Mapping[str, str | Path | Mapping], bins: int = 30) -> "Figure":
    """Scale histograms of non-crowd people, one line per dataset: box heights, and sqrt(area) against
    COCO's small/medium/large limits (which decide AP(M) and AP(L))."""
    import matplotlib.pyplot as plt

    fig, (ax_h, ax_a) = plt.subplots(1, 2, figsize=(10, 3.5))
    for label, annotations in datasets.items():
        people = [a for a in _load_coco(annotations)["annotations"] if not a.get("iscrowd")]
        heights = np.array([a["bbox"][3] for a in people if a["num_keypoints"] > 0], float)
        sides = np.sqrt([a["area"] for a in people if a["num_keypoints"] > 0])
        if heights.size == 0:
            continue
        edges_h = np.geomspace(max(1.0, heights.min()), heights.max() + 1, bins + 1)
        ax_h.hist(heights, bins=edges_h, histtype="step", lw=1.5, label=f"{label} (n={heights.size})")
        counts = np.histogram(sides, bins=[0, *COCO_AREA_BOUNDS, np.inf])[0]
        edges_a = np.geomspace(max(1.0, sides.min()), sides.max() + 1, bins + 1)
        ax_a.hist(sides, bins=edges_a, histtype="step", lw=1.5, label=f"{label}: S/M/L = {'/'.join(map(str, counts))}")
    for bound in COCO_AREA_BOUNDS:
        ax_a.axvline(bound, color="grey", ls=":", lw=1)
    ax_h.set(xscale="log", xlabel="person box height (px)", ylabel="people with keypoints",
             title="Person heights")
    ax_a.set(xscale="log", xlabel="sqrt(area) (px); COCO limits 32 and 96", title="COCO area ranges")
    ax_h.legend(fontsize=8)
    ax_a.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_dataset_overview(root: str | Path, split: str = "train", n: int = 8,
                          cols: int = 4) -> tuple["Figure", "Figure"]:
    """Grid + scale histogram of an ``hhrnet.data.synthetic`` dataset folder (the book's data figure)."""
    from hhrnet.data.synthetic import dataset_paths

    paths = dataset_paths(root)
    grid = plot_scene_grid(paths.images[split], paths.annotations[split], n=n, cols=cols)
    return grid, plot_person_heights({split: paths.annotations[split]})


__all__ = (
    "SIDE_COLOURS", "keypoint_side", "as_poses", "draw_poses", "plot_scene_grid", "plot_person_heights",
    "plot_dataset_overview",
)


def plot_training_curves(rows: list[Mapping[str, Any]], title: str = "") -> "Figure":
    """Loss terms per resolution (log scale) and the learning rate against the iteration."""
    import matplotlib.pyplot as plt

    rows = [r for r in rows if "total" in r]
    iters = [r["iter"] for r in rows]
    fig, (ax_loss, ax_lr) = plt.subplots(1, 2, figsize=(10, 3.4), gridspec_kw={"width_ratios": [3, 1]})
    for key in sorted({k for r in rows for k in r if k.startswith(("heatmap", "push", "pull"))} | {"total"}):
        values = [r.get(key) for r in rows]
        if any(v for v in values):
            ax_loss.plot(iters, values, label=key, lw=2 if key == "total" else 1)
    ax_loss.set(yscale="log", xlabel="iteration", ylabel="loss (factored)", title=title or "training loss")
    ax_loss.legend(fontsize=7, ncol=3)
    ax_lr.plot(iters, [r["lr"] for r in rows], color="k")
    ax_lr.set(xlabel="iteration", ylabel="learning rate", title="schedule")
    ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
    fig.tight_layout()
    return fig


def plot_predictions(images: list[np.ndarray], poses: list[np.ndarray], titles: list[str] | None = None,
                     cols: int = 4, min_score: float = 0.0, scores: list[np.ndarray] | None = None) -> "Figure":
    """A grid of images with predicted skeletons (people scoring below ``min_score`` left out)."""
    import matplotlib.pyplot as plt

    rows = max(1, -(-len(images) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3 * rows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= len(images):
            continue
        ax.imshow(images[i])
        keep = np.ones(len(poses[i]), bool) if scores is None else np.asarray(scores[i]) >= min_score
        if keep.any():
            kp = np.asarray(poses[i])[keep].copy()
            kp[..., 2] = np.where(kp[..., 2] > 0, 2, 0)  # draw every found joint as visible
            draw_poses(ax, kp)
        if titles:
            ax.set_title(titles[i], fontsize=8)
    fig.tight_layout()
    return fig
