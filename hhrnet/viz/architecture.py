"""The HigherHRNet architecture drawn from a network's own modules (the book's network figure)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _architecture_columns(model: Any, input_hw: tuple[int, int]) -> tuple[list[dict], dict[int, float]]:
    """Walk a ``HigherHRNet``: one dict per drawn column (boxes per branch), and the stride of each
    branch level measured by a forward pass with hooks (so the labels are the model's own shapes)."""
    import torch  # deferred: drawing figures needs no torch until a network is walked

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

