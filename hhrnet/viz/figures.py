"""The book's and the notebooks' figures: dataset grids, scale histograms, predictions, heatmap overlays,
tag embeddings, training curves and ablation bars.  matplotlib is imported inside the figure functions
only, so importing this module never selects a backend.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import cv2
import numpy as np

from hhrnet.data.synthetic import dataset_paths
from hhrnet.io import read_image
from hhrnet.keypoints import COCO_17, KeypointSet
from hhrnet.viz.skeleton import MIN_SCORE, draw_found, draw_poses

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


def _load_coco(annotations: str | Path | Mapping) -> Mapping:
    return annotations if isinstance(annotations, Mapping) else json.loads(Path(annotations).read_text())


def plot_scene_grid(image_dir: str | Path, annotations: str | Path | Mapping, n: int = 8, cols: int = 4,
                    tile_inches: float = 3.0, kset: KeypointSet = COCO_17) -> "Figure":
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
        image = read_image(Path(image_dir) / record["file_name"])
        anns = [a for a in coco["annotations"] if a["image_id"] == record["id"]]
        for ann in (a for a in anns if a.get("iscrowd")):
            rle = mask_utils.frPyObjects(ann["segmentation"], record["height"], record["width"])
            crowd = mask_utils.decode(rle).astype(bool)
            image = np.where(crowd[..., None], (0.5 * image + [127, 0, 0]).astype(np.uint8), image)
        ax.imshow(image)
        people = [a for a in anns if not a.get("iscrowd")]
        draw_poses(ax, [a["keypoints"] for a in people if a["num_keypoints"] > 0], joint_size=6, line_width=1,
                   kset=kset)
        for ann in (a for a in people if a["num_keypoints"] == 0):
            x, y, w, h = ann["bbox"]
            ax.add_patch(Rectangle((x, y), w, h, fill=False, ls="--", lw=0.8, color="white"))
        labelled = sum(a["num_keypoints"] > 0 for a in people)
        ax.set_title(f"id {record['id']}: {labelled} labelled, {len(people) - labelled} unlabelled", fontsize=8)
    fig.tight_layout()
    return fig


def plot_person_heights(datasets: Mapping[str, str | Path | Mapping], bins: int = 30,
                        kset: KeypointSet = COCO_17) -> "Figure":
    """Scale histograms of non-crowd people, one line per dataset: box heights, and sqrt(area) against
    the small/medium/large limits of the keypoint set (which decide AP(M) and AP(L))."""
    import matplotlib.pyplot as plt

    low, high = kset.area_bounds or COCO_17.area_bounds  # a set without area ranges: COCO's, for reference

    fig, (ax_h, ax_a) = plt.subplots(1, 2, figsize=(10, 3.5))
    for label, source in datasets.items():
        people = [a for a in _load_coco(source)["annotations"] if not a.get("iscrowd")]
        heights = np.array([a["bbox"][3] for a in people if a["num_keypoints"] > 0], float)
        sides = np.sqrt([a["area"] for a in people if a["num_keypoints"] > 0])
        if heights.size == 0:
            continue
        edges_h = np.geomspace(max(1.0, heights.min()), heights.max() + 1, bins + 1)
        ax_h.hist(heights, bins=edges_h, histtype="step", lw=1.5, label=f"{label} (n={heights.size})")
        counts = np.histogram(sides, bins=[0, low, high, np.inf])[0]
        edges_a = np.geomspace(max(1.0, sides.min()), sides.max() + 1, bins + 1)
        ax_a.hist(sides, bins=edges_a, histtype="step", lw=1.5, label=f"{label}: S/M/L = {'/'.join(map(str, counts))}")
    for bound in (low, high):
        ax_a.axvline(bound, color="grey", ls=":", lw=1)
    ax_h.set(xscale="log", xlabel="person box height (px)", ylabel="people with keypoints",
             title="Person heights")
    ax_a.set(xscale="log", xlabel=f"sqrt(area) (px); limits {low:g} and {high:g}", title="Area ranges")
    ax_h.legend(fontsize=8)
    ax_a.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_dataset_overview(root: str | Path, split: str = "train", n: int = 8,
                          cols: int = 4, kset: KeypointSet = COCO_17) -> tuple["Figure", "Figure"]:
    """Grid + scale histogram of an ``hhrnet.data.synthetic`` dataset folder (the book's data figure)."""
    paths = dataset_paths(root)
    grid = plot_scene_grid(paths.images[split], paths.annotations[split], n=n, cols=cols, kset=kset)
    return grid, plot_person_heights({split: paths.annotations[split]}, kset=kset)


def plot_training_curves(rows: list[Mapping[str, Any]], title: str = "") -> "Figure":
    """Loss terms per resolution (log scale), the validation AP where the run validated, and the learning
    rate, against the iteration."""
    import matplotlib.pyplot as plt

    val = [r for r in rows if "val_AP" in r]
    rows = [r for r in rows if "total" in r]
    iters = [r["iter"] for r in rows]
    widths = [3, 1.5, 1] if val else [3, 1]
    fig, axes = plt.subplots(1, len(widths), figsize=(2.5 * sum(widths), 3.4), gridspec_kw={"width_ratios": widths})
    ax_loss, ax_lr = axes[0], axes[-1]
    if val:
        axes[1].plot([r["iter"] for r in val], [100 * r["val_AP"] for r in val], "o-", color="C3")
        axes[1].set(xlabel="iteration", ylabel="AP (%)", title="validation", ylim=(0, None))
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


def plot_predictions(images: list[np.ndarray], poses: list[Any], titles: list[str] | None = None,
                     cols: int = 4, min_score: float = MIN_SCORE, scores: list[np.ndarray] | None = None,
                     kset: KeypointSet = COCO_17) -> "Figure":
    """A grid of images with the people found in each (``draw_found``: those scoring ``min_score`` or more).

    ``poses`` holds one ``Poses`` per image, or its ``keypoints (P, K, 3)`` with ``scores`` beside them.
    """
    import matplotlib.pyplot as plt

    rows = max(1, -(-len(images) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3 * rows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= len(images):
            continue
        ax.imshow(images[i])
        keypoints = getattr(poses[i], "keypoints", poses[i])
        found = getattr(poses[i], "scores", None) if scores is None else scores[i]
        draw_found(ax, keypoints, np.ones(len(keypoints)) if found is None else found, min_score, kset=kset)
        if titles:
            ax.set_title(titles[i], fontsize=8)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------------------
# Book figures: heatmap overlays, training samples, tag embeddings, ablation bars.


def denormalize(image: Any, mean: Any, std: Any) -> np.ndarray:
    """A normalised ``(3, H, W)`` float image (tensor or array) back to RGB uint8 ``(H, W, 3)``."""
    arr = np.asarray(image.detach().cpu() if hasattr(image, "detach") else image, np.float32)
    rgb = arr.transpose(1, 2, 0) * np.asarray(std, np.float32) + np.asarray(mean, np.float32)
    return np.clip(rgb * 255 + 0.5, 0, 255).astype(np.uint8)


def overlay_heatmaps(ax: "Axes", image: np.ndarray, heatmaps: np.ndarray, alpha: float = 0.65,
                     cmap: str = "magma", title: str | None = None) -> "Axes":
    """The maximum over joints of ``heatmaps (K, h, w)`` (or one map ``(h, w)``), stretched over the image.

    The map is drawn with ``extent`` covering the image, so a map of any stride lines up with it without
    resampling: one heatmap pixel shows as one block.
    """
    heat = np.asarray(heatmaps, np.float32)
    heat = heat.max(axis=0) if heat.ndim == 3 else heat
    height, width = image.shape[:2]
    ax.imshow(image, extent=(0, width, height, 0))
    ax.imshow(np.ma.masked_less(heat, 0.02), cmap=cmap, alpha=alpha, vmin=0, vmax=max(1e-6, float(heat.max())),
              extent=(0, width, height, 0), interpolation="nearest")
    ax.set(xlim=(0, width), ylim=(height, 0))
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=9)
    return ax


def plot_training_sample(sample: Mapping[str, Any], mean: Any, std: Any) -> "Figure":
    """One ``CocoKeypoints`` training sample: the augmented input, then per output resolution the
    heatmaps (max over joints) and the loss mask (ignored pixels hatched in red)."""
    import matplotlib.pyplot as plt

    image = denormalize(sample["image"], mean, std)
    res = len(sample["heatmaps"])
    fig, axes = plt.subplots(1, 1 + 2 * res, figsize=(3.1 * (1 + 2 * res), 3.3))
    axes[0].imshow(image)
    axes[0].set_title(f"augmented input {image.shape[1]}×{image.shape[0]}", fontsize=9)
    axes[0].axis("off")
    for i, (heat, mask) in enumerate(zip(sample["heatmaps"], sample["masks"])):
        heat, mask = np.asarray(heat), np.asarray(mask)
        size = heat.shape[-1]
        overlay_heatmaps(axes[1 + 2 * i], image, heat, title=f"targets {size}×{size} (stride {image.shape[0] // size})")
        ax = axes[2 + 2 * i]
        small = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
        ax.imshow(small, extent=(0, size, size, 0))
        ax.imshow(np.ma.masked_greater(mask, 0.5), cmap="Reds", vmin=-1, vmax=1, alpha=0.75,
                  extent=(0, size, size, 0), interpolation="nearest")
        ax.set_title(f"loss mask {size}×{size}: {int((mask < 0.5).sum())} px ignored", fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    return fig


def plot_tag_embedding(person_tags: list[np.ndarray], labels: list[str] | None = None,
                       ax: "Axes | None" = None, title: str = "") -> "Axes":
    """The 1-D associative embedding of people: each row a person, each dot one joint's tag, the
    bar that person's mean tag; on the bottom row everything on one number line, as grouping sees it."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(7, 0.45 * len(person_tags) + 1.4))
    cmap = plt.get_cmap("tab10" if len(person_tags) <= 10 else "tab20")
    bottom = -1
    for p, tags in enumerate(person_tags):
        tags = np.asarray(tags, np.float64).ravel()
        if tags.size == 0:
            continue
        c = cmap(p % cmap.N)
        ax.scatter(tags, np.full(tags.size, p), s=14, color=c, zorder=3)
        ax.plot([tags.mean()] * 2, [p - 0.35, p + 0.35], color=c, lw=2)
        ax.scatter(tags, np.full(tags.size, bottom), s=14, color=c, alpha=0.7, zorder=3)
    ax.axhline(bottom + 0.5, color="0.7", lw=0.8)
    names = labels or [f"person {p}" for p in range(len(person_tags))]
    ax.set_yticks([bottom, *range(len(person_tags))], ["all together", *names], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("tag value")
    ax.grid(axis="x", alpha=0.3)
    if title:
        ax.set_title(title, fontsize=10)
    return ax


def plot_ablation(rows: list[Mapping[str, Any]], metrics: tuple[str, ...] = ("AP", "AP_M", "AP_L"),
                  title: str = "", published: Mapping[str, float] | None = None) -> "Figure":
    """Grouped bars of COCO metrics (in percent) per evaluation, with ± one standard deviation over seeds
    where a row has ``<metric>_std``; ``published`` AP values (if given) are drawn as black ticks."""
    import matplotlib.pyplot as plt

    names = [r["evaluation"] for r in rows]
    fig, ax = plt.subplots(figsize=(1.3 * len(rows) * len(metrics) / 2 + 2.5, 3.0))
    width = 0.8 / len(metrics)
    x = np.arange(len(rows))
    for j, metric in enumerate(metrics):
        values = np.array([100 * (r.get(metric) or 0.0) for r in rows])
        errors = np.array([100 * (r.get(f"{metric}_std") or 0.0) for r in rows])
        ax.bar(x + (j - (len(metrics) - 1) / 2) * width, values, width, yerr=errors if errors.any() else None,
               capsize=3, label=metric)
    if published:
        for i, name in enumerate(names):
            if name in published:
                ax.plot([i - 0.45, i + 0.45], [100 * published[name]] * 2, color="k", lw=1.5)
    ax.set_xticks(x, names, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("COCO metric (%)")
    ax.legend(fontsize=8, ncol=len(metrics))
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig
