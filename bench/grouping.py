"""Grouping cost per image beside the network's forward pass on the same image (W32-512, CPU).

Scene: base maps of 512 x 768 (a 4:3 landscape image at input size 512), 17 joints, flip-test tags
(T = 2), shaped like a trained network's output: each person's tag covers its body region in every
joint's tag map, a Gaussian peak per visible joint, about 15% of the joints missing (so refine has
work), a faint noisy background.  ``8 people``: a typical image; ``tags only at the joints``: the
same, but a joint's tag map carries the person's tag only around that joint (so the tiles near a
person tell refine little and its tag bounds must do the work); ``30 people``: a crowd that fills
the 30 candidates x 17 joints of the top-k.  Prints per-stage medians, the whole ``group`` (adjust
+ refine) median, the forward-pass median and the ratios (goal: < 2%).

    python bench/grouping.py [--repeats 20] [--no-forward]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from hhrnet.grouping import adjust, group, match_by_tag, person_scores, refine, top_candidates
from hhrnet.sections import TestConfig

from common import median_seconds, realistic_random_model

HEIGHT, WIDTH, JOINTS, CELL = 512, 768, 17, 85


def paint_peak(heatmaps: np.ndarray, joint: int, x: int, y: int, value: float, sigma: float = 2.0) -> None:
    """A Gaussian peak (combined by max with what is there), 13x13 support."""
    ys, xs = np.mgrid[max(0, y - 6):min(HEIGHT, y + 7), max(0, x - 6):min(WIDTH, x + 7)]
    blob = value * np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * sigma**2))
    window = (joint, slice(ys[0, 0], ys[-1, 0] + 1), slice(xs[0, 0], xs[0, -1] + 1))
    heatmaps[window] = np.maximum(heatmaps[window], blob)


def scene(people: int, seed: int = 0, body_tags: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """``(1, K, H, W)`` heatmaps and ``(1, K, H, W, 2)`` tags of ``people`` planted people.

    People stand in distinct cells of an 85-pixel grid (so bodies do not overlap); tags are 1.3 apart,
    over the whole body in every joint's map, or (``body_tags=False``) in a 13 x 13 window around each joint.
    """
    rng = np.random.default_rng(seed)
    heatmaps = rng.normal(0.0, 0.005, (JOINTS, HEIGHT, WIDTH)).astype(np.float32)
    tags = rng.normal(0.0, 0.2, (JOINTS, HEIGHT, WIDTH, 2)).astype(np.float32)
    cells = rng.permutation((HEIGHT // CELL) * (WIDTH // CELL))[:people]
    for person, cell in enumerate(cells):
        cy, cx = (cell // (WIDTH // CELL)) * CELL + CELL // 2, (cell % (WIDTH // CELL)) * CELL + CELL // 2
        tag = np.full(2, (person - people / 2) * 1.3, np.float32)
        body = (slice(None), slice(cy - 40, cy + 40), slice(cx - 40, cx + 40))
        if body_tags:
            tags[body] = tag + rng.normal(0.0, 0.1, tags[body].shape).astype(np.float32)
        for joint in range(JOINTS):
            if rng.random() < 0.85:
                x, y = cx + int(rng.integers(-35, 35)), cy + int(rng.integers(-35, 35))
                paint_peak(heatmaps, joint, x, y, rng.uniform(0.3, 0.9))
                if not body_tags:
                    window = (joint, slice(y - 6, y + 7), slice(x - 6, x + 7))
                    tags[window] = tag + rng.normal(0.0, 0.1, tags[window].shape).astype(np.float32)
    planes = np.ascontiguousarray(np.moveaxis(tags, -1, 1))  # (K, T, H, W) in memory, as ``aggregate`` returns
    return heatmaps[None], np.moveaxis(planes, 1, -1)[None]



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--no-forward", action="store_true", help="skip the network forward pass")
    args = parser.parse_args()
    test = TestConfig()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; maps {JOINTS}x{HEIGHT}x{WIDTH}, T=2")

    forward = None
    if not args.no_forward:

        model, _ = realistic_random_model()
        x = torch.randn(1, 3, HEIGHT, WIDTH)
        with torch.no_grad():
            forward = median_seconds(lambda: model(x), max(3, args.repeats // 4))
        print(f"forward W32 (1x3x{HEIGHT}x{WIDTH}), one pass: {forward * 1e3:8.1f} ms")

    for people, body_tags in ((8, True), (8, False), (30, True)):
        heatmaps, tags = scene(people, body_tags=body_tags)
        cand = top_candidates(heatmaps, tags, test.max_people, floor=test.detection_threshold)
        values, xy, ctags = cand.values[0], cand.xy[0], cand.tags[0]
        matched = match_by_tag(values, xy, ctags, test)
        adjusted = adjust(matched, heatmaps[0])
        stages = {
            "nms + top-k": lambda: top_candidates(heatmaps, tags, test.max_people, floor=test.detection_threshold),
            "match": lambda: match_by_tag(values, xy, ctags, test),
            "adjust + score": lambda: person_scores(adjust(matched, heatmaps[0])),
            "refine": lambda: refine(adjusted, heatmaps[0], tags[0]),
            "group (all)": lambda: group(heatmaps, tags, test),
        }
        missing = int((adjusted[..., 2] == 0).sum())
        print(f"\n{people} people{'' if body_tags else ', tags only at the joints'}: {int((values > test.detection_threshold).sum())} candidates above threshold, "
              f"{len(matched)} people, {missing} missing joints to refine")
        for stage, fn in stages.items():
            seconds = median_seconds(fn, args.repeats)
            ratio = f"   {100 * seconds / forward:5.2f}% of one forward" if forward else ""
            print(f"  {stage:15s} {seconds * 1e3:8.2f} ms{ratio}")
        if forward:
            print(f"  group / flip-test forward (two passes): {100 * seconds / (2 * forward):.2f}%")


if __name__ == "__main__":
    main()
