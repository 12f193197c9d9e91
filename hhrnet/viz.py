"""Drawing helpers shared by the book and the CLI: skeletons, dataset grids, scale histograms.

Skeletons are drawn from a ``KeypointSet`` (``kset``, COCO's by default).  Colours: the **left** side
(joints named ``left_*``) in blue, the **right** side in orange, the rest and the links across the body
in green; a person facing the camera therefore shows blue on the image's right-hand side.  matplotlib
is imported inside the figure functions only, so importing this module never selects a backend.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import cv2
import numpy as np

from hhrnet.keypoints import COCO_17, KeypointSet

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

SIDE_COLOURS: dict[str, tuple[float, float, float]] = {
    "left": (0.12, 0.47, 0.71),
    "right": (1.0, 0.5, 0.05),
    "centre": (0.17, 0.63, 0.17),
}
COCO_AREA_BOUNDS = COCO_17.area_bounds  # kept for old imports; use ``kset.area_bounds``


def keypoint_side(name: str) -> str:
    """'left', 'right' or 'centre' for a keypoint name."""
    return name.split("_")[0] if name.startswith(("left_", "right_")) else "centre"


def _limb_side(edge: tuple[int, int], kset: KeypointSet) -> str:
    """A limb takes its joints' side when both agree (an arm), else it is a centre link (hips, shoulders)."""
    a, b = (keypoint_side(kset.names[i]) for i in edge)
    return a if a == b else "centre"


def as_poses(keypoints: Any, kset: KeypointSet = COCO_17) -> np.ndarray:
    """Any keypoint layout -> ``(N, K, 3)``: flat COCO lists (3K values), ``(K, 2|3)``, ``(N, K, 2|3)``.

    Without a visibility column every joint counts as visible.
    """
    arr = np.asarray(keypoints, np.float64)
    k = kset.num_joints
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
               joint_size: float | None = None, line_width: float | None = None, alpha: float = 1.0,
               kset: KeypointSet = COCO_17):
    """Draw skeletons on a matplotlib Axes (returned) or on an RGB uint8 image (a drawn copy returned).

    Joints with ``v >= min_visibility`` are drawn; occluded joints (``v == 1``) are hollow.
    """
    poses = as_poses(keypoints, kset)
    if isinstance(target, np.ndarray):
        return _draw_on_image(target, poses, min_visibility, joint_size, line_width, kset)
    _draw_on_axes(target, poses, min_visibility, joint_size, line_width, alpha, kset)
    return target


def _draw_on_image(image: np.ndarray, poses: np.ndarray, min_visibility: int, joint_size: float | None,
                   line_width: float | None, kset: KeypointSet) -> np.ndarray:
    out = np.ascontiguousarray(image.copy())
    radius = max(1, int(round(joint_size or max(out.shape[:2]) / 160)))
    thickness = max(1, int(round(line_width or radius / 2)))
    colour = {side: tuple(int(255 * c) for c in rgb) for side, rgb in SIDE_COLOURS.items()}
    shift = 4  # cv2 draws with 4 fractional bits, so sub-pixel keypoints land where they belong

    def fixed(x: float, y: float) -> tuple[int, int]:
        return int(round(x * (1 << shift))), int(round(y * (1 << shift)))

    for pose in poses:
        for edge in kset.skeleton:
            p, q = pose[edge[0]], pose[edge[1]]
            if min(p[2], q[2]) >= min_visibility and min(p[2], q[2]) > 0:
                cv2.line(out, fixed(*p[:2]), fixed(*q[:2]), colour[_limb_side(edge, kset)], thickness, cv2.LINE_AA,
                         shift)
        for name, (x, y, v) in zip(kset.names, pose):
            if v >= min_visibility and v > 0:
                fill = -1 if v >= 2 else max(1, thickness)
                cv2.circle(out, fixed(x, y), radius << shift, colour[keypoint_side(name)], fill, cv2.LINE_AA, shift)
    return out


def _draw_on_axes(ax: "Axes", poses: np.ndarray, min_visibility: int, joint_size: float | None,
                  line_width: float | None, alpha: float, kset: KeypointSet) -> None:
    size = joint_size or 12.0
    width = line_width or 1.5
    for pose in poses:
        for edge in kset.skeleton:
            p, q = pose[edge[0]], pose[edge[1]]
            if min(p[2], q[2]) >= min_visibility and min(p[2], q[2]) > 0:
                ax.plot([p[0], q[0]], [p[1], q[1]], color=SIDE_COLOURS[_limb_side(edge, kset)], lw=width, alpha=alpha)
        for name, (x, y, v) in zip(kset.names, pose):
            if v >= min_visibility and v > 0:
                rgb = SIDE_COLOURS[keypoint_side(name)]
                ax.scatter([x], [y], s=size, color=rgb if v >= 2 else "none", edgecolors=[rgb], linewidths=1,
                           alpha=alpha, zorder=3)


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
        image = cv2.imread(str(Path(image_dir) / record["file_name"]), cv2.IMREAD_COLOR)[..., ::-1]
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
    from hhrnet.data.synthetic import dataset_paths

    paths = dataset_paths(root)
    grid = plot_scene_grid(paths.images[split], paths.annotations[split], n=n, cols=cols, kset=kset)
    return grid, plot_person_heights({split: paths.annotations[split]}, kset=kset)


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
                     cols: int = 4, min_score: float = 0.0, scores: list[np.ndarray] | None = None,
                     kset: KeypointSet = COCO_17) -> "Figure":
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
            draw_poses(ax, kp, kset=kset)
        if titles:
            ax.set_title(titles[i], fontsize=8)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------------------
# Book figures: network diagram, heatmap overlays, tag embeddings, grouping stages, ablation bars.


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


def _architecture_columns(model: Any, input_hw: tuple[int, int]) -> tuple[list[dict], dict[int, float]]:
    """Walk a ``HigherHRNet``: one dict per drawn column (boxes per branch), and the stride of each
    branch level measured by a forward pass with hooks (so the labels are the model's own shapes)."""
    import torch

    shapes: dict[str, tuple[int, ...]] = {}
    hooks = []
    for name, module in model.named_modules():
        if name.startswith("stage") and name.count(".") == 1 or name in ("layer1", "conv2"):
            hooks.append(module.register_forward_hook(
                lambda m, i, o, name=name: shapes.__setitem__(name, [tuple(t.shape) for t in (o if isinstance(o, list) else [o])])))
    was_training = model.training
    model.eval()
    with torch.no_grad():
        outputs = model(torch.zeros(1, 3, *input_hw))
    model.train(was_training)
    for h in hooks:
        h.remove()
    strides: dict[int, float] = {}
    columns: list[dict] = [
        {"kind": "stem", "boxes": {0: f"stem\n2× conv s2\n{model.cfg.stem_channels} ch"}},
        {"kind": "layer1", "boxes": {0: f"layer1\n{len(model.layer1)}× Bottleneck\n{shapes['layer1'][0][1]} ch"}},
    ]
    for stage in (2, 3, 4):
        for m, module in enumerate(getattr(model, f"stage{stage}")):
            outs = shapes[f"stage{stage}.{m}"]
            boxes = {}
            for b, branch in enumerate(module.branches):
                channels = branch[0].conv1.out_channels
                boxes[b] = f"{channels} ch\n{len(branch)}× Basic"
            for b, shape in enumerate(outs):
                strides[b] = input_hw[0] / shape[2]
            fused = len(module.fuse_layers) if module.fuse_layers is not None else len(module.branches)
            columns.append({"kind": "module", "stage": stage, "module": m, "boxes": boxes, "fused": fused})
    head = {"kind": "head", "boxes": {}}
    head["boxes"][0] = f"final_layers.0\n1×1 conv → {model.final_layers[0].out_channels} ch"
    columns.append(head)
    for i, deconv in enumerate(model.deconv_layers):
        level = -(i + 1)
        up = deconv[0][0]
        columns.append({"kind": "deconv", "boxes": {level: f"deconv {up.kernel_size[0]}×{up.kernel_size[0]} s2\n"
                                                            f"{up.in_channels}→{up.out_channels} ch\n{len(deconv) - 1}× Basic"}})
        columns.append({"kind": "final", "boxes": {level: f"final_layers.{i + 1}\n1×1 conv → "
                                                           f"{model.final_layers[i + 1].out_channels} ch"}})
    for i, out in enumerate(outputs):
        strides[-i] = input_hw[0] / out.shape[2]
    return columns, strides


def plot_hrnet_architecture(model: Any, input_hw: tuple[int, int] = (128, 128), title: str = "",
                            compact: bool = False, fontsize: float = 6.2) -> "Figure":
    """HRNet + HigherHRNet head drawn from the model's own modules.

    Rows are resolutions (measured strides on the left), columns are the stem, ``layer1``, every
    multi-resolution module of stages 2-4 and the head.  Grey lines between consecutive modules are the
    all-to-all fusions (``fuse_layers``); red arrows are transitions that open a new, lower branch;
    the last stage-4 module fuses into the highest-resolution branch only.  ``compact`` draws a run of
    identical modules of a stage as one column marked "× N modules" (narrower, so its text is readable).
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyBboxPatch

    columns, strides = _architecture_columns(model, input_hw)
    if compact:
        merged: list[dict] = []
        for col in columns:
            last = merged[-1] if merged else None
            if (last is not None and col["kind"] == last["kind"] == "module" and col["stage"] == last["stage"]
                    and col["boxes"] == last["boxes"] and col["fused"] == last["fused"]):
                last["repeat"] = last.get("repeat", 1) + 1
            else:
                merged.append(dict(col))
        for col in merged:
            if col.get("repeat", 1) > 1:
                col["boxes"] = {lvl: f"{label}\n× {col['repeat']} modules" for lvl, label in col["boxes"].items()}
        columns = merged
    levels = sorted({lvl for c in columns for lvl in c["boxes"]})
    fig, ax = plt.subplots(figsize=(1.05 * len(columns) + 1.5, 1.05 * len(levels) + 0.8))
    stage_colour = {2: "#cfe3f5", 3: "#d7efd2", 4: "#f8e0c4"}
    colour = {"stem": "#e6e6e6", "layer1": "#e6e6e6", "head": "#f6d2d9", "deconv": "#f6d2d9", "final": "#f6d2d9"}
    prev: dict | None = None
    for x, col in enumerate(columns):
        fill = stage_colour.get(col.get("stage"), colour.get(col["kind"], "#eeeeee"))
        for lvl, label in col["boxes"].items():
            y = -lvl
            ax.add_patch(FancyBboxPatch((x - 0.42, y - 0.33), 0.84, 0.66, boxstyle="round,pad=0.02",
                                        fc=fill, ec="0.3", lw=0.8))
            ax.text(x, y, label, ha="center", va="center", fontsize=fontsize)
        if prev is not None:
            if col["kind"] in ("module", "head"):
                # fusion lines: every branch of a module into each branch it fuses into
                dst_levels = [lvl for lvl in col["boxes"] if lvl in prev["boxes"]]
                sources = list(prev["boxes"]) if prev["kind"] == "module" else [max(prev["boxes"])]
                if prev["kind"] == "module":
                    dst_levels = dst_levels[: prev.get("fused", len(dst_levels))]
                for s in sources:
                    for d in dst_levels:
                        ax.plot([x - 1 + 0.42, x - 0.42], [-s, -d], color="0.55", lw=0.6, alpha=0.8, zorder=0)
                for new in (lvl for lvl in col["boxes"] if lvl not in prev["boxes"]):
                    low = max(lvl for lvl in prev["boxes"])
                    ax.annotate("", xy=(x - 0.42, -new), xytext=(x - 1 + 0.42, -low),
                                arrowprops=dict(arrowstyle="->", color="#c0392b", lw=1.0))
            else:
                s, d = min(prev["boxes"]), min(col["boxes"])
                ax.annotate("", xy=(x - 0.42, -d), xytext=(x - 1 + 0.42, -s),
                            arrowprops=dict(arrowstyle="->", color="0.2", lw=1.0))
        prev = col
    for lvl in levels:
        stride = strides.get(lvl)
        if stride:
            ax.text(-0.75, -lvl, f"1/{stride:g}", ha="right", va="center", fontsize=9, weight="bold")
    stage_spans: dict[int, list[int]] = {}
    for x, col in enumerate(columns):
        if "stage" in col:
            stage_spans.setdefault(col["stage"], []).append(x)
    for stage, xs in stage_spans.items():
        count = sum(columns[x].get("repeat", 1) for x in xs)
        ax.text((xs[0] + xs[-1]) / 2, -max(levels) - 0.62, f"stage {stage}\n{count} module{'s' * (count > 1)}",
                ha="center", va="top", fontsize=8)
    ax.set_xlim(-1.4, len(columns) - 0.4)
    ax.set_ylim(-max(levels) - 0.95, -min(levels) + 0.5)
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=10)
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
