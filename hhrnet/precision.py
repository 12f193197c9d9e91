"""Which float precision the network runs in: fp32, or bf16 where the processor multiplies bf16 fast.

``resolve(requested, device)`` turns a requested ``fp32 | bf16 | auto`` (``sections.PRECISIONS``) into the
``Choice`` that runs (``fp32`` or ``bf16``, with the reason); ``autocast(precision, device)`` applies it
around a forward pass.  On a CPU, ``auto`` is bf16 only where the processor has bf16 matrix units (AMX
or AVX-512 BF16: ``bf16_units``) *and* a one-off measurement on this machine shows bf16 faster: one
3×3 convolution timed in fp32 and under bf16 autocast (``measured_speedup``), cached in
``precision.json`` of the cache folder (``hhrnet.hub.cache_root``: ``$HHRNET_CACHE``, else
``$XDG_CACHE_HOME/hhrnet``, else ``~/.cache/hhrnet``) per CPU model and torch version.  Without the units bf16 autocast runs about ten
times slower (reference kernels), so nothing is measured there.  On CUDA ``auto`` stays fp32.

Training (``train.amp``) asks ``training_dtype``: on a CPU ``bf16`` is honoured with a warning where
``auto`` would not choose it, and refused only where bf16 convolutions cannot run at all.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import platform
import statistics
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .hub import cache_root
from .io import atomic_write_json
from .sections import PRECISIONS

BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # /proc/cpuinfo flags of bf16 matrix units
REPORTED_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16")  # what benchmarks print
CACHE_FILE = "precision.json"


class PrecisionError(ValueError):
    """A precision that is not one of ``PRECISIONS``, or bf16 on a CPU where it cannot run."""


@dataclass(frozen=True)
class Choice:
    """What runs (``name``: fp32 or bf16) for what was asked (``requested``), and why."""

    requested: str
    name: str
    reason: str

    def __str__(self) -> str:
        return f"precision {self.name} (asked {self.requested}: {self.reason})"


# --------------------------------------------------------------------------------------------------
# The processor


def _cpuinfo_field(name: str) -> str:
    """The first ``name`` line of /proc/cpuinfo ("" where there is none, e.g. not Linux)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == name:
                    return value.strip()
    except OSError:
        pass
    return ""


@functools.lru_cache(maxsize=1)
def cpu_model() -> str:
    """The processor's name, as the cache key and benchmark headers give it."""
    return _cpuinfo_field("model name") or platform.processor() or platform.machine() or "unknown CPU"


def machine() -> dict[str, Any]:
    """The processor, threads and torch a result was measured with: its clocks mean nothing without them."""
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "threads": torch.get_num_threads(), "torch": torch.__version__}


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The processor's feature flags: /proc/cpuinfo's, else (not Linux) the bf16 units torch detects."""
    flags = set(_cpuinfo_field("flags").split())
    if not flags:  # private torch.cpu queries (torch >= 2.3); every AMX processor has the bf16 tile unit
        if getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)():
            flags.add("avx512_bf16")
        if getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)():
            flags |= {"amx_tile", "amx_bf16"}
    return frozenset(flags)


def bf16_units() -> tuple[str, ...]:
    """The bf16 matrix units of this CPU (``BF16_FLAGS`` it has); empty where bf16 is emulated."""
    return tuple(flag for flag in BF16_FLAGS if flag in cpu_flags())


def cpu_summary() -> str:
    """One line for benchmark headers: the CPU model and which of ``REPORTED_FLAGS`` it has."""
    flags = " ".join(f"{'+' if f in cpu_flags() else '-'}{f}" for f in REPORTED_FLAGS)
    return f"{cpu_model()} [{flags}], torch {torch.__version__}, {torch.get_num_threads()} threads"


# --------------------------------------------------------------------------------------------------
# The one-off measurement


def cache_path() -> Path:
    """Where the measurement is kept (see the module docstring)."""
    return cache_root() / CACHE_FILE


def machine_key() -> str:
    """What the measurement depends on: the CPU model and the torch build."""
    return f"{cpu_model()} | torch {torch.__version__}"


def time_conv(dtype: torch.dtype | None, repeats: int = 5) -> float:
    """Median seconds of one 3×3 convolution (64 channels, 64², channels_last), under ``dtype`` autocast."""
    conv = torch.nn.Conv2d(64, 64, 3, padding=1).eval().to(memory_format=torch.channels_last)
    x = torch.randn(1, 64, 64, 64).contiguous(memory_format=torch.channels_last)
    times = []
    with torch.inference_mode(), torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
        conv(x)
        for _ in range(repeats):
            start = time.perf_counter()
            conv(x)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def _read_cache(path: Path) -> dict:
    """The cache's entries; an unreadable or malformed cache counts as empty (it is rewritten)."""
    try:
        entries = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return entries if isinstance(entries, dict) else {}


def measure() -> dict:
    """fp32 and bf16 seconds of the probe convolution (``bf16_s`` None where bf16 cannot run)."""
    fp32 = time_conv(None)
    try:
        bf16: float | None = time_conv(torch.bfloat16)
    except RuntimeError:
        bf16 = None
    return {"fp32_s": fp32, "bf16_s": bf16}


def measured_speedup() -> float:
    """fp32 time / bf16 time of the probe on this machine (0 where bf16 cannot run), measured once."""
    path = cache_path()
    key = machine_key()
    entries = _read_cache(path)
    entry = entries.get(key)
    if not (isinstance(entry, dict) and isinstance(entry.get("fp32_s"), float)
            and (entry.get("bf16_s") is None or isinstance(entry.get("bf16_s"), float))):
        entry = measure()
        try:
            atomic_write_json(path, {**entries, key: entry}, indent=1)
        except OSError as err:  # a read-only home still runs; it measures again next time
            warnings.warn(f"{path}: cannot keep the bf16 measurement ({err})", RuntimeWarning, stacklevel=2)
    return 0.0 if entry["bf16_s"] is None else entry["fp32_s"] / entry["bf16_s"]


# --------------------------------------------------------------------------------------------------
# Choosing and applying


@functools.lru_cache(maxsize=None)
def resolve(requested: str, device: str | torch.device = "cpu") -> Choice:
    """The precision that runs for ``requested`` on ``device`` (see the module docstring)."""
    if requested not in PRECISIONS:
        raise PrecisionError(f"precision must be one of {', '.join(PRECISIONS)}, got {requested!r}")
    if requested != "auto":
        return Choice(requested, requested, "as asked")
    if torch.device(device).type != "cpu":
        return Choice(requested, "fp32", f"{torch.device(device).type}: auto keeps fp32")
    units = bf16_units()
    if not units:
        return Choice(requested, "fp32", f"{cpu_model()} has no bf16 matrix units ({', '.join(BF16_FLAGS)})")
    speedup = measured_speedup()
    if speedup > 1.0:
        return Choice(requested, "bf16", f"{', '.join(units)}; bf16 measured {speedup:.2f}x faster")
    return Choice(requested, "fp32", f"{', '.join(units)}, but bf16 measured {speedup:.2f}x fp32's speed")


def autocast(precision: str, device: str | torch.device = "cpu") -> contextlib.AbstractContextManager:
    """Autocast to bf16 for ``precision == "bf16"``, nothing for fp32 (a resolved ``Choice.name``)."""
    if precision not in ("fp32", "bf16"):
        raise PrecisionError(f"autocast takes a resolved precision (fp32 or bf16), got {precision!r}")
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=precision == "bf16")


def training_dtype(amp: str) -> torch.dtype | None:
    """The CPU autocast dtype of ``train.amp``: bf16 for ``bf16`` (warned once where it is slower than
    fp32, refused where it cannot run), None otherwise (``auto`` leaves CPU training in fp32)."""
    if amp != "bf16":
        return None
    choice = resolve("auto", "cpu")
    if choice.name == "bf16":
        return torch.bfloat16
    if not _bf16_runs():
        raise PrecisionError(f"train.amp=bf16: bf16 convolutions do not run on {cpu_model()}; use train.amp=off")
    _warn_slow(choice.reason)
    return torch.bfloat16


@functools.lru_cache(maxsize=1)
def _bf16_runs() -> bool:
    """Whether a bf16 convolution runs here at all (emulated or not)."""
    try:
        time_conv(torch.bfloat16, repeats=1)
    except RuntimeError:
        return False
    return True


@functools.lru_cache(maxsize=None)
def _warn_slow(reason: str) -> None:
    """Once per process and reason: bf16 training was asked where it is slower."""
    warnings.warn(f"train.amp=bf16 on this CPU is slower than fp32 ({reason}); it runs as asked",
                  RuntimeWarning, stacklevel=3)


def precision_of(dtype: torch.dtype | None) -> str:
    """The name a run records for its autocast dtype (None: fp32)."""
    return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]

