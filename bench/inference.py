"""Images per second of the whole test pipeline (warp, network, aggregation, grouping, back-mapping).

W32-512 with random weights, CPU, 640x480 images.  The weights are drawn so that activations have
a trained network's scale (``realistic_random_model``): the official N(0, 0.001) initialisation
with unit BatchNorm statistics shrinks activations to denormal floats, which makes CPU convolutions
an order of magnitude slower than with any trained checkpoint.  Rows: single scale + flip test and
multi-scale (2, 1, 0.5) + flip test, at batch 1 and batch 8.  The network's share of the time is
printed beside each row, measured in the same run.

    python bench/inference.py [--repeats 3] [--batches 1 8] [--no-multi-scale]
    python bench/inference.py --checkpoint experiments/cache/runs/cpu/w32_512/seed0/last.pth \
        --images experiments/cache/data/<the cpu profile's folder>/images/val

With ``--checkpoint`` and ``--images`` the pipeline runs a trained network on real inputs (the
first images of the folder, which must share one size): the speed at the CPU study's size.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from hhrnet.checkpoints import load_model
from hhrnet.config import MULTI_SCALE, TestConfig
from hhrnet.data.coco import read_rgb_image
from hhrnet.inference import Predictor

from common import median_seconds, realistic_random_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--no-multi-scale", action="store_true")
    parser.add_argument("--checkpoint", help="a trained hhrnet checkpoint instead of random W32-512 weights")
    parser.add_argument("--images", help="folder of same-size images (with --checkpoint)")
    args = parser.parse_args()
    if bool(args.checkpoint) != bool(args.images):
        parser.error("--checkpoint and --images go together")
    count = max(args.batches)
    if args.checkpoint:
        model, cfg = load_model(args.checkpoint)
        files = sorted(Path(args.images).glob("*.*"))[:count]
        images = [read_rgb_image(f) for f in files]
        label = f"{args.checkpoint} (width {cfg.model.width}, input {cfg.input_size}), {len(images)} images of {args.images}"
    else:
        model, cfg = realistic_random_model()
        images = list(np.random.default_rng(0).integers(0, 255, (count, 480, 640, 3), dtype=np.uint8))
        label = "W32-512 (random weights), 640x480 images"
    forward_calls: list[float] = []

    def timed_forward(module, inputs, output):  # the network's own time, for the share column
        forward_calls.append(time.perf_counter() - module._started)

    model.register_forward_pre_hook(lambda module, inputs: setattr(module, "_started", time.perf_counter()))
    model.register_forward_hook(timed_forward)
    settings = {"single scale + flip": TestConfig()}
    if not args.no_multi_scale:
        settings["scales 2, 1, 0.5 + flip"] = TestConfig(scales=MULTI_SCALE)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {label}")
    print(f"{'setting':28s} {'batch':>5s} {'img/s':>8s} {'s/img':>8s} {'network share':>14s}")
    for name, test in settings.items():
        for batch in args.batches:
            predictor = Predictor(model, cfg, test, batch_size=batch)
            forward_calls.clear()
            seconds = median_seconds(lambda: predictor(images[:batch]), args.repeats)
            network = sum(forward_calls) / (args.repeats + 1)  # per call of predictor, warm-up included
            print(f"{name:28s} {batch:5d} {batch / seconds:8.2f} {seconds / batch:8.3f} {network / seconds:13.0%}")


if __name__ == "__main__":
    main()
