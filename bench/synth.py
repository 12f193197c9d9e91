"""Synthetic dataset generation speed: images/s (median of runs) with 1 and 2 worker processes.

    python bench/synth.py [--images 200] [--runs 3] [--size 256] [--full]

``--full`` also times the book's profile, 1000 train + 200 val images, with 2 workers.  Every run writes
a fresh dataset to a temporary folder (PNG files and JSON included), so the numbers are end to end.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from hhrnet.data.synthetic import generate


def time_generation(n_train: int, n_val: int, size: int, workers: int) -> float:
    """Seconds to generate one dataset from scratch."""
    with tempfile.TemporaryDirectory(prefix="hhrnet-synth-bench-") as tmp:
        start = time.perf_counter()
        generate(Path(tmp) / "data", n_train, n_val, size=size, seed=0, workers=workers, force=True)
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=200, help="train images per run")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--full", action="store_true", help="also time 1000 train + 200 val")
    args = parser.parse_args()
    rates = {}
    for workers in (1, 2):
        seconds = [time_generation(args.images, 0, args.size, workers) for _ in range(args.runs)]
        rates[workers] = args.images / statistics.median(seconds)
        print(f"workers={workers}: {rates[workers]:7.1f} images/s (median of {args.runs} runs of {args.images} "
              f"images at {args.size}px)")
    print(f"speed-up 2 vs 1 workers: {rates[2] / rates[1]:.2f}x")
    if args.full:
        seconds = time_generation(1000, 200, args.size, workers=2)
        print(f"1000 train + 200 val at {args.size}px, 2 workers: {seconds:.1f} s")


if __name__ == "__main__":
    main()
