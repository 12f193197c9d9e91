"""Images per second of the whole test pipeline (warp, network, aggregation, grouping, back-mapping),
for every network path, each with its ratio to the plain fp32 eager network, in one run.

W32-512 with random weights, CPU, 640x480 images.  The weights are drawn so that activations have
a trained network's scale (``realistic_random_model``): the official N(0, 0.001) initialisation
with unit BatchNorm statistics shrinks activations to denormal floats, which makes CPU convolutions
an order of magnitude slower than with any trained checkpoint.  Rows: single scale + flip test (and
multi-scale (2, 1, 0.5) + flip test unless ``--no-multi-scale``), at each batch, for three predictors:
the plain fp32 eager network (``Predictor(fast=False)``, the official code's path), the default
``fast`` one (BatchNorm folded + channels_last) in fp32, and the same in bf16 (``test.precision``).
``ratio`` is the plain fp32 predictor's images/s over the row's (same setting and batch), ``vs fp32``
the bf16 row's over the fast fp32 row's; the network's share of the time is measured in the same run.
The header names the CPU, its bf16-relevant flags and what ``test.precision=auto`` chooses on it.

    python bench/inference.py [--repeats 3] [--batches 1 8] [--no-multi-scale]
    python bench/inference.py --checkpoint experiments/results/cpu/train/w32_512/seed0/weights.pth \
        --images <a folder of same-size images, e.g. the cpu profile's images/val>

With ``--checkpoint`` and ``--images`` the pipeline runs a trained network on real inputs (the
first images of the folder, which must share one size): the speed at the CPU study's size.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np

from hhrnet.checkpoints import load_model
from hhrnet.data.coco import read_rgb_image
from hhrnet.inference import Predictor
from hhrnet.precision import cpu_summary, resolve
from hhrnet.sections import MULTI_SCALE, TestConfig

from common import median_seconds, realistic_random_model

PREDICTORS = {"plain fp32 eager": (False, "fp32"), "fast fp32": (True, "fp32"), "fast bf16": (True, "bf16")}


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
    print(f"{cpu_summary()}; auto: {resolve('auto')}")
    print(f"{label}; median of {args.repeats} after one warm-up")
    print(f"{'setting':24s} {'predictor':17s} {'batch':>5s} {'img/s':>7s} {'s/img':>7s} {'ratio':>6s} "
          f"{'vs fp32':>7s} {'network share':>13s}")
    for name, test in settings.items():
        for batch in args.batches:
            rate: dict[str, float] = {}
            for predictor_name, (fast, precision) in PREDICTORS.items():
                predictor = Predictor(model, cfg, dataclasses.replace(test, precision=precision), batch_size=batch,
                                      fast=fast)
                forward_calls.clear()
                seconds = median_seconds(lambda: predictor(images[:batch]), args.repeats)
                network = sum(forward_calls) / (args.repeats + 1)  # per call of predictor, warm-up included
                rate[predictor_name] = batch / seconds
                versus = f"{rate[predictor_name] / rate['fast fp32']:7.2f}" if precision == "bf16" else " " * 7
                print(f"{name:24s} {predictor_name:17s} {batch:5d} {rate[predictor_name]:7.2f} {seconds / batch:7.3f} "
                      f"{rate[predictor_name] / rate['plain fp32 eager']:6.2f} {versus} {network / seconds:13.0%}",
                      flush=True)


if __name__ == "__main__":
    main()
