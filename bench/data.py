"""Training data pipeline throughput on the real coco_mini images: is data loading a bottleneck?

Measures samples/s of decode + augmentation + masks + targets at input 512 and 256, in one process and
through a 2-worker DataLoader, and prints the median over repeated passes, plus where one process
spends its time.  For scale: a W32 forward + backward at 512 takes seconds per image on a 2-core CPU.

    python bench/data.py [--repeats 3] [--coco-mini PATH]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from hhrnet.config import preset
from hhrnet.data import CocoKeypoints, read_rgb_image
from hhrnet.data import transforms
from hhrnet.targets import counted_mask, fixed_sigma_heatmaps, joint_tag_targets

DEFAULT_MINI = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "coco_mini"


def mini_dataset(root: Path, input_size: int) -> CocoKeypoints:
    cfg = preset("w32_512").override(input_size=input_size)
    return CocoKeypoints.from_config(cfg, train=True, annotation_file=root / "person_keypoints.json",
                                     image_dir=root / "images")


def pass_rates(ds: CocoKeypoints, workers: int, repeats: int) -> list[float]:
    """samples/s of ``repeats`` timed passes (batch 1); workers are started and warmed up first."""
    source = ds
    if workers:
        source = torch.utils.data.DataLoader(ds, batch_size=1, num_workers=workers, persistent_workers=True)
        sum(1 for _ in source)  # start-up and first touch of the files are not what we measure
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        count = sum(1 for _ in source)
        rates.append(count / (time.perf_counter() - start))
    return rates


def stage_milliseconds(ds: CocoKeypoints) -> dict[str, float]:
    """Mean per-sample time of each stage, in one process."""
    totals = dict.fromkeys(("decode", "mask", "augment", "heatmaps", "tags", "normalise"), 0.0)
    rng = np.random.default_rng(0)
    for record in ds.records:
        t0 = time.perf_counter()
        image = read_rgb_image(record.file)
        t1 = time.perf_counter()
        mask = counted_mask(record.ignored, record.height, record.width)
        t2 = time.perf_counter()
        params = transforms.draw_augmentation(rng, image.shape[:2], ds.data)
        sample = transforms.augment(image, mask, record.joints, params, ds.input_size, ds.output_sizes,
                                    ds.data.flip_index)
        t3 = time.perf_counter()
        for size, joints in zip(ds.output_sizes, sample.joints):
            fixed_sigma_heatmaps(joints, size, ds.data.sigma)
        t4 = time.perf_counter()
        for size, joints in zip(ds.output_sizes, sample.joints):
            joint_tag_targets(joints, size, ds.data.max_people)
        t5 = time.perf_counter()
        transforms.normalize_image(sample.image, ds.data.mean, ds.data.std)
        t6 = time.perf_counter()
        for key, dt in zip(totals, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t6 - t5)):
            totals[key] += dt
    return {k: 1000 * v / len(ds) for k, v in totals.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--coco-mini", type=Path, default=DEFAULT_MINI)
    args = parser.parse_args()
    torch.set_num_threads(1)
    for input_size in (512, 256):
        ds = mini_dataset(args.coco_mini, input_size)
        for workers in (0, 2):
            rates = pass_rates(ds, workers, args.repeats)
            print(f"input {input_size}  workers {workers}: {statistics.median(rates):7.1f} samples/s "
                  f"(median of {args.repeats} passes over {len(ds)} images)")
        stages = stage_milliseconds(ds)
        print(f"input {input_size}  per-sample ms: " + ", ".join(f"{k} {v:.2f}" for k, v in stages.items()))


if __name__ == "__main__":
    main()
