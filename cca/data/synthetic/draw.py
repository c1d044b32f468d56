"""Drawing for the synthetic data sets: shape masks on pixel centres, class styles (colour, stripes),
painting with noise, and saving images (PNG, JPEG)."""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = [
    "JPEG_QUALITY",
    "ellipse",
    "noise_background",
    "paint",
    "rect",
    "save_jpeg",
    "save_png",
    "style",
    "to_uint8",
    "triangle",
]

JPEG_QUALITY = 95


def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates ``(y, x)``, each ``(h, w)``."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    return y + 0.5, x + 0.5


def rect(h: int, w: int, y0: float, x0: float, y1: float, x1: float) -> np.ndarray:
    y, x = _grid(h, w)
    return (y >= y0) & (y < y1) & (x >= x0) & (x < x1)


def ellipse(h: int, w: int, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    y, x = _grid(h, w)
    return ((y - cy) / max(ry, 0.5)) ** 2 + ((x - cx) / max(rx, 0.5)) ** 2 <= 1.0


def triangle(h: int, w: int, points: Sequence[tuple[float, float]]) -> np.ndarray:
    """Pixels whose centre is inside the triangle of ``(x, y)`` points."""
    y, x = _grid(h, w)
    (ax, ay), (bx, by), (cx, cy) = points
    d1 = (x - bx) * (ay - by) - (ax - bx) * (y - by)
    d2 = (x - cx) * (by - cy) - (bx - cx) * (y - cy)
    d3 = (x - ax) * (cy - ay) - (cx - ax) * (y - ay)
    neg = (d1 < 0) | (d2 < 0) | (d3 < 0)
    pos = (d1 > 0) | (d2 > 0) | (d3 > 0)
    return ~(neg & pos)


def style(key: str | int, colour: Sequence[int] | None = None) -> tuple[np.ndarray, float, float]:
    """``(colour (3,), stripe period, stripe angle)`` of a class, fixed by its key."""
    rng = np.random.default_rng(zlib.crc32(str(key).encode()))
    base = rng.integers(30, 226, size=3) if colour is None else np.asarray(colour)
    return base.astype(np.float64), float(rng.uniform(4.0, 10.0)), float(rng.uniform(0.0, np.pi))


def paint(image: np.ndarray, label: np.ndarray | None, mask: np.ndarray, value: int, key, rng, colour=None) -> None:
    """Fill ``mask`` with the class's colour, its stripes and noise; write ``value`` into ``label``."""
    if not mask.any():
        return
    base, period, angle = style(key, colour)
    y, x = _grid(*mask.shape)
    stripes = 18.0 * np.sin(2 * np.pi * (x[mask] * np.cos(angle) + y[mask] * np.sin(angle)) / period)
    image[mask] = base + stripes[:, None] + rng.normal(0.0, 8.0, size=(int(mask.sum()), 3))
    if label is not None:
        label[mask] = value


def noise_background(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A float image ``(h, w, 3)``: a random grey level plus strong noise."""
    return rng.uniform(60, 190) + rng.normal(0.0, 25.0, size=(h, w, 3))


def to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def save_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format="PNG")


def save_jpeg(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format="JPEG", quality=JPEG_QUALITY)
