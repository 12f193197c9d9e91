"""Network forward speed on CPU: every path's ratio to the plain fp32 eager network, in one run.

    python bench/forward.py [--repeats 5] [--batches 1 4] [--sizes w32_512 "w16_256 (cpu study)"] [--compile]

Paths, on the same weights and input, one after the other (``torch.inference_mode``; medians over
``--repeats`` after a warm-up): the plain eager network (the official code's path), BatchNorm folded,
folded + channels_last, bf16 autocast + channels_last, folded + channels_last + bf16 autocast (what
``Predictor`` runs for ``test.precision=bf16``), and the same with the weights stored in bf16.  At
each larger batch: the plain path and the fastest fp32 and bf16 paths of the first batch.  ``ratio``
is the plain path's seconds per image at the same batch over the path's; ``max err`` the largest
output difference to the plain path, relative to the largest output (with random weights bf16's can be
large: a random deep network amplifies rounding; on trained weights tests/test_precision.py
guards the accuracy that matters, AP and joint positions).  ``--compile`` adds
``torch.compile`` of the fastest fp32 path (and prints its compile time).

The header names the CPU, its bf16-relevant flags (``hhrnet.precision.REPORTED_FLAGS``) and what
``test.precision=auto`` chooses on it.  Without bf16 matrix units (AMX, AVX-512 BF16) bf16 runs on
emulation, about ten times slower: keep ``--repeats`` small there.
"""

from __future__ import annotations

import argparse
import copy
import time
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from hhrnet.config import preset
from hhrnet.model import HigherHRNet, fuse_for_inference
from hhrnet.precision import autocast, cpu_summary, resolve

from common import median_seconds, realistic_random_model

SIZES = {"w32_512": ("w32_512", {}), "w16_256 (cpu study)": ("w32_512", {"input_size": 256, "model.width": 16})}
CL = torch.channels_last


@dataclass
class Variant:
    """One way to run the network: a module, the input's layout and dtype, and the autocast precision."""

    model: torch.nn.Module
    layout: torch.memory_format = torch.contiguous_format
    precision: str = "fp32"
    input_dtype: torch.dtype = torch.float32

    def runner(self, x: Tensor) -> Callable[[], list[Tensor]]:
        """A call of the network on ``x`` as this path takes it."""
        x = x.to(self.input_dtype).contiguous(memory_format=self.layout)

        def run() -> list[Tensor]:
            with autocast(self.precision):
                return self.model(x)
        return run


def paths(plain: HigherHRNet) -> dict[str, Variant]:
    """Every path, each with its own copy of the network."""
    folded_cl = fuse_for_inference(plain).to(memory_format=CL)
    return {
        "plain eager": Variant(plain),
        "BN folded": Variant(fuse_for_inference(plain)),
        "BN folded + channels_last": Variant(folded_cl, CL),
        "bf16 autocast + channels_last": Variant(copy.deepcopy(plain).to(memory_format=CL), CL, "bf16"),
        "folded + cl + bf16 autocast": Variant(folded_cl, CL, "bf16"),
        "folded + cl + bf16 weights": Variant(copy.deepcopy(folded_cl).to(torch.bfloat16), CL, "fp32", torch.bfloat16),
    }


def relative_error(outputs: list[Tensor], reference: list[Tensor]) -> float:
    """Largest |difference| over the largest |reference| value, over every output."""
    return max(float((o.float() - r).abs().max() / r.abs().max()) for o, r in zip(outputs, reference))


def is_bf16(path: Variant) -> bool:
    return path.precision == "bf16" or path.input_dtype == torch.bfloat16


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--sizes", nargs="+", choices=list(SIZES), default=list(SIZES))
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (slow to compile)")
    args = parser.parse_args()
    print(f"{cpu_summary()}; auto: {resolve('auto')}")
    print(f"median of {args.repeats} after one warm-up; ratio = plain eager s/image at the same batch / the path's")
    print(f"{'model':20s} {'path':30s} {'batch':>5s} {'s/forward':>10s} {'images/s':>9s} {'ratio':>6s} {'max err':>8s}")
    for label in args.sizes:
        name, changes = SIZES[label]
        cfg = preset(name).override(**changes)
        plain, _ = realistic_random_model(cfg)
        every = paths(plain)
        if args.compile:
            start = time.perf_counter()
            compiled = Variant(torch.compile(every["BN folded + channels_last"].model), CL)
            with torch.inference_mode():
                compiled.runner(torch.randn(1, 3, cfg.input_size, cfg.input_size))()
            print(f"{label:20s} torch.compile: {time.perf_counter() - start:.0f} s to compile")
            every["folded + cl + torch.compile"] = compiled
        chosen = list(every)
        for batch in args.batches:
            x = torch.randn(batch, 3, cfg.input_size, cfg.input_size)
            seconds: dict[str, float] = {}
            with torch.inference_mode():
                reference = every["plain eager"].runner(x)()
                for path_name in chosen:
                    run = every[path_name].runner(x)
                    seconds[path_name] = median_seconds(run, args.repeats)
                    ratio = seconds["plain eager"] / seconds[path_name]
                    error = relative_error(run(), reference)
                    print(f"{label:20s} {path_name:30s} {batch:5d} {seconds[path_name]:10.3f} "
                          f"{batch / seconds[path_name]:9.2f} {ratio:6.2f} {error:8.1e}", flush=True)
            fastest = {kind: min((n for n in seconds if n != "plain eager" and is_bf16(every[n]) == kind),
                                 key=seconds.__getitem__) for kind in (False, True)}
            chosen = ["plain eager", fastest[False], fastest[True]]


if __name__ == "__main__":
    main()
