"""Network forward speed on CPU: plain eager vs. BatchNorm folding vs. folding + channels_last.

    python bench/forward.py [--repeats 5] [--compile]

``--compile`` adds ``torch.compile`` of the fastest eager path and prints its compile time.

Same weights, same input, measured one after the other in this run; prints medians and the ratio
to the plain eager path (``torch.inference_mode`` in every case).
"""

from __future__ import annotations

import argparse
import time

import torch

from hhrnet.config import preset
from hhrnet.model import fuse_for_inference

from common import median_seconds, realistic_random_model

SIZES = {"w32_512": ("w32_512", {}), "w16_256 (cpu study)": ("w32_512", {"input_size": 256, "model.width": 16})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (slow to compile)")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, median of {args.repeats}")
    print(f"{'model':22s} {'path':24s} {'s/forward':>10s} {'images/s':>9s} {'ratio':>6s}")
    for label, (name, changes) in SIZES.items():
        cfg = preset(name).override(**changes)
        plain, _ = realistic_random_model(cfg)
        fused = fuse_for_inference(plain)
        x = torch.randn(args.batch, 3, cfg.input_size, cfg.input_size)
        paths = {
            "plain eager": (plain, x),
            "BN folded": (fused, x),
            "BN folded + channels_last": (fused.to(memory_format=torch.channels_last),
                                          x.contiguous(memory_format=torch.channels_last)),
        }
        if args.compile:
            model, inp = paths["BN folded + channels_last"]
            compiled = torch.compile(model)
            start = time.perf_counter()
            with torch.inference_mode():
                compiled(inp)
            print(f"{label:22s} torch.compile: {time.perf_counter() - start:.0f} s to compile")
            paths["... + torch.compile"] = (compiled, inp)
        base = None
        for path, (model, inp) in paths.items():
            with torch.inference_mode():
                t = median_seconds(lambda: model(inp), args.repeats)
            base = base or t
            print(f"{label:22s} {path:24s} {t:10.3f} {args.batch / t:9.2f} {base / t:6.2f}")


if __name__ == "__main__":
    main()
