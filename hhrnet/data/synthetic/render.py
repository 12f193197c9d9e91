"""Rasterizer: signed distances at pixel centres, composited back to front (mirror-exact)."""

from __future__ import annotations

import math

import numpy as np

from hhrnet.data.synthetic.scene import Primitive, Render, Scene


def _local_frame(p: Primitive, xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Pixel centres in the primitive frame: (signed across, along) and the a-b length."""
    ex, ey = p.b[0] - p.a[0], p.b[1] - p.a[1]
    length = math.hypot(ex, ey)
    ux, uy = (ex / length, ey / length) if length > 0 else (0.0, 1.0)
    dx = xs - np.float32(p.a[0])
    dy = ys - np.float32(p.a[1])
    across = dx * np.float32(uy) - dy * np.float32(ux)
    along = dx * np.float32(ux) + dy * np.float32(uy)
    return across, along, length


def _signed_distance(p: Primitive, xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, ...]:
    """Signed distance (negative inside), texture coordinates (along, |across|) and the local half width."""
    across, along, length = _local_frame(p, xs, ys)
    q = np.abs(across)
    r0, r1 = np.float32(p.r0), np.float32(p.r1)
    if p.kind == "ellipse":
        d = (np.sqrt(np.square(across / r0) + np.square(along / r1)) - 1) * min(r0, r1)
        half_width = np.broadcast_to(r0, d.shape)
    else:
        t = np.clip(along / np.float32(length), 0, 1) if length > 0 else np.zeros_like(along)
        half_width = r0 + t * (r1 - r0)
        if p.kind == "capsule":
            d = np.sqrt(np.square(across) + np.square(along - t * np.float32(length))) - half_width
        else:  # trapezoid
            slope = np.float32(length / math.hypot(length, p.r1 - p.r0)) if length > 0 else np.float32(1)
            d = np.maximum(np.maximum(-along, along - np.float32(length)), (q - half_width) * slope)
    if p.clip is not None:
        d = np.maximum(d, _signed_distance(p.clip, xs, ys)[0])
    return d, along, q, half_width


def _pattern(texture: str, along: np.ndarray, q: np.ndarray, period: float) -> np.ndarray | None:
    """Second-colour weight of a clothing texture (None for flat); floor-based, so mirror exact."""
    if texture == "flat":
        return None
    period32 = np.float32(period)
    bands = (np.floor(along / period32) % 2).astype(np.float32)
    stripes = (np.floor(q / period32 + np.float32(0.5)) % 2).astype(np.float32)
    if texture == "bands":
        return bands
    if texture == "stripes":
        return stripes
    return np.abs(bands - stripes)  # checks


def _roi(p: Primitive, width: int, height: int) -> tuple[int, int, int, int] | None:
    """Pixel window that contains every pixel centre the primitive can touch (coverage > 0)."""
    pts = [p.a] if p.kind == "ellipse" else [p.a, p.b]
    # ellipse distances are scaled by the short semi-axis, so coverage reaches further along the long one
    reach = max(p.r0, p.r1) * (1 + 0.5 / min(p.r0, p.r1) if p.kind == "ellipse" else 1) + 1.0
    x0 = max(0, math.floor(min(q[0] for q in pts) - reach))
    x1 = min(width, math.ceil(max(q[0] for q in pts) + reach) + 1)
    y0 = max(0, math.floor(min(q[1] for q in pts) - reach))
    y1 = min(height, math.ceil(max(q[1] for q in pts) + reach) + 1)
    return None if x0 >= x1 or y0 >= y1 else (x0, x1, y0, y1)


def _paint(canvas: np.ndarray, owner: np.ndarray, p: Primitive, index: int) -> None:
    """Alpha-composite one primitive (coverage = clip(0.5 - distance)) and claim the pixels it covers."""
    height, width = owner.shape
    window = _roi(p, width, height)
    if window is None:
        return
    x0, x1, y0, y1 = window
    xs = np.arange(x0, x1, dtype=np.float32)[None, :]
    ys = np.arange(y0, y1, dtype=np.float32)[:, None]
    d, along, q, half_width = _signed_distance(p, xs, ys)
    alpha = np.clip(np.float32(0.5) - d, 0, 1)
    if not alpha.any():
        return
    shade = 1 - np.float32(p.shade) * np.square(np.minimum(q / half_width, 1))
    colour = np.asarray(p.colour, np.float32)
    weight = _pattern(p.texture, along, q, p.period)
    if weight is None:
        fill = colour * shade[..., None]
    else:
        fill = (colour + weight[..., None] * (np.asarray(p.colour2, np.float32) - colour)) * shade[..., None]
    patch = canvas[y0:y1, x0:x1]
    patch += alpha[..., None] * (fill - patch)
    owner[y0:y1, x0:x1][d <= 0] = index


def _blur_axis(image: np.ndarray, weights: np.ndarray, axis: int) -> np.ndarray:
    """1-D symmetric convolution with mirror-paired sums, so it commutes exactly with flips."""
    r = len(weights) - 1
    pad = [(0, 0)] * image.ndim
    pad[axis] = (r, r)
    padded = np.pad(image, pad, mode="reflect")
    n = image.shape[axis]

    def shifted(offset: int) -> np.ndarray:
        return np.take(padded, np.arange(r + offset, r + offset + n), axis=axis)

    out = weights[0] * image
    for i in range(1, r + 1):
        out += weights[i] * (shifted(-i) + shifted(i))
    return out


def _blur(image: np.ndarray, sigma: float) -> np.ndarray:
    radius = max(1, math.ceil(2.5 * sigma))
    w = np.exp(-0.5 * np.square(np.arange(radius + 1) / sigma))
    weights = (w / (w[0] + 2 * w[1:].sum())).astype(np.float32)
    return _blur_axis(_blur_axis(image, weights, 0), weights, 1)


def render_scene(scene: Scene) -> Render:
    """Rasterize a scene; returns the image and which primitive is on top at every pixel centre."""
    canvas = scene.background.astype(np.float32)
    owner = np.full((scene.height, scene.width), -1, np.int32)
    for index, primitive in enumerate(scene.primitives):
        _paint(canvas, owner, primitive, index)
    if scene.blur_sigma > 0:
        canvas = _blur(canvas, scene.blur_sigma)
    if scene.noise is not None:
        canvas += scene.noise
    image = np.rint(np.clip(canvas, 0, 255)).astype(np.uint8)
    primitive_owner = np.array([p.owner for p in scene.primitives] + [-1], np.int32)
    return Render(image=image, owner=owner, person=primitive_owner[owner])  # owner -1 picks the last: -1
