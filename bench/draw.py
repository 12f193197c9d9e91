"""What ``predict`` draws: the committed cpu network on validation scenes of its training distribution.

Generates the scenes with ``synth --like`` (run from the repository root: the committed weights predate
the training-data record, so their scene settings come from ``experiments/rows.yaml``), runs
``python -m hhrnet predict`` on them and writes one PNG: each scene as given (top) and as drawn
(bottom).  Prints, per scene, the people reported, the people drawn (score >= ``MIN_SCORE``) and the
share of their found joints whose pixel the drawing changed.

    python bench/draw.py [--scenes 4] [--out bench/draw.png]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import cv2
import numpy as np

from hhrnet.cli import main
from hhrnet.io import read_image
from hhrnet.viz import MIN_SCORE

WEIGHTS = Path("experiments/results/cpu/train/w32_512/seed0/weights.pth")


def joints_changed(original: np.ndarray, drawn: np.ndarray, keypoints: list[float]) -> float:
    """Share of a person's found joints (value > 0, inside the image) whose pixel the drawing changed."""
    joints = np.asarray(keypoints).reshape(-1, 3)
    x, y = np.round(joints[joints[:, 2] > 0, :2]).astype(int).T
    inside = (x >= 0) & (y >= 0) & (x < original.shape[1]) & (y < original.shape[0])
    return float((drawn[y[inside], x[inside]] != original[y[inside], x[inside]]).any(axis=-1).mean())


def run(scenes: int, out: Path) -> None:
    with tempfile.TemporaryDirectory() as work:
        data, drawn_dir = Path(work) / "scenes", Path(work) / "drawn"
        main(["synth", "--like", str(WEIGHTS), "--out", str(data), "--train", "1", "--val", str(scenes)])
        files = sorted((data / "images" / "val").glob("*.png"))
        main(["predict", *map(str, files), "--out", str(drawn_dir), "--checkpoint", str(WEIGHTS), "--no-progress"])
        entries = json.loads((drawn_dir / "predictions.json").read_text())
        top, bottom = [], []
        for path in files:
            original, drawn = read_image(path), read_image(drawn_dir / path.name)
            people = [e for e in entries if e["file_name"] == path.name]
            shown = [e for e in people if e["score"] >= MIN_SCORE]
            changed = [joints_changed(original, drawn, e["keypoints"]) for e in shown]
            print(f"{path.name}: {len(people)} reported, {len(shown)} drawn (score >= {MIN_SCORE:g}); "
                  f"joint pixels changed per drawn person: {', '.join(f'{c:.0%}' for c in changed) or '-'}")
            top.append(original)
            bottom.append(drawn)
    cv2.imwrite(str(out), cv2.cvtColor(np.vstack([np.hstack(top), np.hstack(bottom)]), cv2.COLOR_RGB2BGR))
    print(f"wrote {out}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=4)
    parser.add_argument("--out", type=Path, default=Path("bench/draw.png"))
    args = parser.parse_args()
    run(args.scenes, args.out)
