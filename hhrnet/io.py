"""Files in and out, written once: atomic writes, JSON lines, image reading, the checkpoint payload.

Every result hhrnet writes (checkpoints, metrics, summaries, predictions, synthetic images) goes
through ``atomic_write``: a temporary file in the same folder, flushed and fsynced, then renamed over
the target.  A crash leaves either the old file or the new one, never half of one; the temporary
file is removed on failure, and ``remove_stale_temps`` sweeps those a killed process left behind.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

TEMP_SUFFIX = ".tmp"
HHRNET_FORMAT = "hhrnet"
MAX_IMAGE_PIXELS = 50_000_000  # larger images are refused before decoding (memory stays bounded)
MAX_ASPECT_RATIO = 8.0         # the network input grows with the aspect ratio: a 1000:1 strip is refused


class ImageReadError(ValueError):
    """An image file that cannot be used; the message names the file."""


# --------------------------------------------------------------------------------------------------
# Atomic writes


def atomic_write(path: str | Path, write: Callable[[Any], None] | bytes | str, mode: str = "wb") -> Path:
    """Write ``path`` through a temporary file in its folder (fsync + rename); returns the path.

    ``write`` is the content (bytes or str) or a function that writes to the open file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(write, str):
        write, mode = write.encode("utf-8"), "wb"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            if isinstance(write, (bytes, bytearray, memoryview)):
                f.write(write)
            else:
                write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_json(path: str | Path, obj: Any, indent: int | None = 1, **kwargs: Any) -> Path:
    """``json.dumps(obj)`` written atomically (NaN refused: it is not JSON)."""
    return atomic_write(path, json.dumps(obj, indent=indent, allow_nan=False, **kwargs) + "\n")


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` written atomically."""
    import torch

    return atomic_write(path, lambda f: torch.save(obj, f))


def remove_stale_temps(folder: str | Path) -> list[Path]:
    """Delete the temporary files of interrupted atomic writes in ``folder``; returns what was removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = [p for p in folder.glob(f".*{TEMP_SUFFIX}") if p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


# --------------------------------------------------------------------------------------------------
# JSON lines


def append_jsonl(path: str | Path, row: dict[str, Any]) -> None:
    """Append one whole line (a single ``write`` of line + newline, flushed)."""
    line = json.dumps(row) + "\n"
    with open(path, "a", encoding="utf-8") as f:
        f.write(line)
        f.flush()


def read_jsonl(path: str | Path, warn: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Every row of a JSON-lines file; a torn last line (a crash mid-write) is skipped and reported.

    A malformed line anywhere else is an error naming the file and line.
    """
    path = Path(path)
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    rows = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                if warn is not None:
                    warn(f"{path}: skipped a torn last line ({len(line)} characters)")
                break
            raise ValueError(f"{path}: line {i + 1} is not JSON") from None
        if not isinstance(row, dict):
            raise ValueError(f"{path}: line {i + 1} is not a JSON object")
        rows.append(row)
    return rows


def write_jsonl(path: str | Path, rows: Iterable[dict[str, Any]]) -> Path:
    """Replace a JSON-lines file atomically."""
    return atomic_write(path, "".join(json.dumps(r) + "\n" for r in rows))


def read_json(path: str | Path, what: str = "JSON file") -> Any:
    """``json.load`` with one error naming the file (missing, unreadable or malformed)."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise ValueError(f"{path}: {what} not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    except OSError as err:
        raise ValueError(f"{path}: cannot read ({err.strerror or err})") from None


# --------------------------------------------------------------------------------------------------
# Images


def image_size(path: Path, data: np.ndarray) -> tuple[int, int] | None:
    """``(height, width)`` from the file header without decoding the pixels (None if unknown)."""
    try:
        from PIL import Image

        with Image.open(path) as im:
            w, h = im.size
        return h, w
    except Exception:  # not every format OpenCV reads is known to Pillow; decode decides then
        return None


def read_image(path: str | Path, expected_hw: tuple[int, int] | None = None,
               max_pixels: int = MAX_IMAGE_PIXELS, max_aspect: float = MAX_ASPECT_RATIO) -> np.ndarray:
    """8-bit RGB ``(H, W, 3)`` from any image OpenCV reads, or one ``ImageReadError`` naming the file.

    ``IMREAD_COLOR`` makes 3 channels and 8 bits; EXIF orientation is ignored as in the official code
    (COCO coordinates refer to the stored pixels).  Empty, corrupt and truncated files, images larger
    than ``max_pixels`` or more elongated than ``max_aspect``, and a size other than ``expected_hw``
    are refused; the size checks read the header first, so a huge image is never decoded.
    """
    import cv2

    path = Path(path)
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as err:
        raise ImageReadError(f"{path}: cannot read image ({err.strerror or err})") from None
    if data.size == 0:
        raise ImageReadError(f"{path}: empty file, not an image")
    header = image_size(path, data)
    if header is not None:
        check_image_size(path, header, max_pixels, max_aspect)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if image is None:
        raise ImageReadError(f"{path}: not a readable image (corrupt or unsupported format)")
    if data[:2].tobytes() == b"\xff\xd8" and data.tobytes().rfind(b"\xff\xd9") < 0:
        raise ImageReadError(f"{path}: truncated JPEG (no end-of-image marker)")
    check_image_size(path, image.shape[:2], max_pixels, max_aspect)
    if expected_hw is not None and image.shape[:2] != tuple(expected_hw):
        raise ImageReadError(f"{path}: image is {image.shape[0]}x{image.shape[1]} (HxW) but the annotation "
                             f"file says {expected_hw[0]}x{expected_hw[1]}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def check_image_size(path: Path, hw: tuple[int, int], max_pixels: int = MAX_IMAGE_PIXELS,
                     max_aspect: float = MAX_ASPECT_RATIO) -> None:
    """Refuse an image larger than ``max_pixels`` or more elongated than ``max_aspect`` (one line naming it)."""
    h, w = int(hw[0]), int(hw[1])
    if h < 1 or w < 1:
        raise ImageReadError(f"{path}: image has no pixels ({h}x{w})")
    if h * w > max_pixels:
        raise ImageReadError(f"{path}: image is {h}x{w} = {h * w / 1e6:.0f} Mpx, more than the "
                             f"{max_pixels / 1e6:.0f} Mpx hhrnet reads; downscale it first")
    if max(h, w) / min(h, w) > max_aspect:
        raise ImageReadError(f"{path}: image is {h}x{w}, an aspect ratio of {max(h, w) / min(h, w):.0f}:1 "
                             f"(at most {max_aspect:g}:1); crop it into pieces first")


# --------------------------------------------------------------------------------------------------
# Checkpoints


def checkpoint_payload(cfg: Any, model_state: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """The one layout of an hhrnet checkpoint: format tag, config as a plain dict, state dict, extras."""
    from .config import to_dict

    return {"format": HHRNET_FORMAT, "config": to_dict(cfg), "model": model_state, **extra}

