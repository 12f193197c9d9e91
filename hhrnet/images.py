"""What ``Predictor`` accepts as images, turned into the one form the network reads: RGB uint8 ``(H, W, 3)``.

One image is a file path (``str`` or ``Path``, read by ``hhrnet.io.read_image``), a PIL image, or an
array: ``(H, W)`` grayscale, ``(H, W, 1)``, ``(H, W, 3)`` colour or ``(H, W, 4)`` with alpha (dropped),
of ``uint8`` (0-255) or float in [0, 1].  Arrays are RGB unless told otherwise (``rgb=False`` or
``bgr=True``: what ``cv2.imread`` returns).  Several images are a list/tuple of those or an
``(N, H, W, C)`` array.  Anything else is one ``ValueError`` naming the input and the expected form.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from hhrnet.io import read_image

EXPECTED = "a file path, a PIL image, or an (H, W) / (H, W, 1|3|4) array of uint8 or float in [0, 1]"


def is_one_image(item: Any) -> bool:
    """True for a single image (path, PIL image, 2-D or 3-D array), False for a collection of them."""
    return isinstance(item, (str, Path)) or _is_pil(item) or (isinstance(item, np.ndarray) and item.ndim in (2, 3))


def as_images(images: Any, rgb: bool = True, bgr: bool = False) -> list[np.ndarray]:
    """One image or a collection -> a list of RGB uint8 ``(H, W, 3)`` arrays (see the module)."""
    if is_one_image(images):
        return [as_rgb(images, rgb, bgr)]
    if isinstance(images, np.ndarray) and images.ndim == 4:
        return [as_rgb(image, rgb, bgr, f"image {i}") for i, image in enumerate(images)]
    if isinstance(images, (list, tuple)):
        return [as_rgb(image, rgb, bgr, f"image {i}") for i, image in enumerate(images)]
    raise ValueError(f"images: got {_what(images)}; expected one image ({EXPECTED}) or a list of them")


def as_rgb(image: Any, rgb: bool = True, bgr: bool = False, name: str = "image") -> np.ndarray:
    """One image -> RGB uint8 ``(H, W, 3)``; ``rgb=False`` / ``bgr=True``: an array's channels are B, G, R."""
    if isinstance(image, (str, Path)):
        return read_image(image)
    if _is_pil(image):
        return np.asarray(image.convert("RGB"))
    if not isinstance(image, np.ndarray):
        raise ValueError(f"{name}: got {_what(image)}; expected {EXPECTED}")
    pixels = _as_uint8(image, name)
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    if pixels.ndim != 3 or pixels.shape[2] not in (1, 3, 4) or min(pixels.shape[:2]) < 1:
        raise ValueError(f"{name}: got an array of shape {image.shape}; expected {EXPECTED}")
    if pixels.shape[2] == 1:
        return np.ascontiguousarray(np.repeat(pixels, 3, axis=2))
    colour = pixels[..., :3]
    return np.ascontiguousarray(colour[..., ::-1] if bgr or not rgb else colour)


def _as_uint8(image: np.ndarray, name: str) -> np.ndarray:
    if image.dtype == np.uint8:
        return image
    if image.dtype.kind == "f":
        finite = np.isfinite(image).all()
        low, high = (float(image.min()), float(image.max())) if image.size and finite else (0.0, 0.0)
        if not finite or low < 0 or high > 1:
            raise ValueError(f"{name}: float values must lie in [0, 1], got "
                             f"{'non-finite values' if not finite else f'{low:g}..{high:g}'}; "
                             f"scale it to [0, 1] or pass uint8 (0-255)")
        return (image * 255.0 + 0.5).astype(np.uint8)
    raise ValueError(f"{name}: got an array of dtype {image.dtype}; expected uint8 (0-255) or float in [0, 1]")


def _is_pil(item: Any) -> bool:
    return type(item).__module__.startswith("PIL.") and hasattr(item, "convert")


def _what(item: Any) -> str:
    if isinstance(item, np.ndarray):
        return f"an array of shape {item.shape} and dtype {item.dtype}"
    return f"a {type(item).__name__}"
