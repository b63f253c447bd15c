"""Points drawn into an image on the server: the concept map as one picture instead of 20,000 markers.

A browser without a GPU (and headless chromium) spends ~0.4 s creating a WebGL context and drawing a
20,000-point Plotly ``scattergl`` trace, and ~1.5 s for the same points as SVG; a PNG of them costs it
a few milliseconds. :func:`splat` draws the points with numpy (one ``bincount`` per colour channel over
every pixel of every disc), where overlapping points blend: the mean of their colours, more opaque the more there are.
"""

from __future__ import annotations

import numpy as np

__all__ = ["colour_lut", "splat"]


def colour_lut(scale: str, n: int = 256) -> np.ndarray:
    """(n, 3) uint8 colours of a Plotly colour scale ("Turbo", "Viridis", ...) from 0 to 1."""
    from plotly.colors import sample_colorscale, unlabel_rgb

    return np.asarray([unlabel_rgb(c) for c in sample_colorscale(scale, list(np.linspace(0.0, 1.0, n)))],
                      dtype=np.float64).round().astype(np.uint8)


def splat(x: np.ndarray, y: np.ndarray, rgb: np.ndarray, extent: tuple[float, float, float, float],
          width: int, height: int, radius: float = 1.5, alpha: float = 0.65) -> np.ndarray:
    """Draw points as small discs into a transparent (height, width, 4) uint8 RGBA image.

    Args:
        x, y: (n,) point coordinates; points outside ``extent`` are left out.
        rgb: (n, 3) uint8 colour of each point.
        extent: (x0, x1, y0, y1) the data range the image spans; row 0 of the image is y1 (top).
        width, height: image size in pixels (>= 2 each).
        radius: disc radius in pixels (every pixel centre within it is covered).
        alpha: opacity of one point; k points on a pixel give 1 - (1 - alpha)**k.
    """
    x0, x1, y0, y1 = (float(v) for v in extent)
    if width < 2 or height < 2 or not (x1 > x0 and y1 > y0):
        raise ValueError(f"need width, height >= 2 and a non-empty extent, got {width}x{height}, {extent}")
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    rgb = np.asarray(rgb, dtype=np.float64).reshape(-1, 3)
    if not (x.shape == y.shape == (rgb.shape[0],)):
        raise ValueError(f"x {x.shape}, y {y.shape} and rgb {rgb.shape} must describe the same points")
    ok = np.isfinite(x) & np.isfinite(y)
    px = np.rint((x[ok] - x0) / (x1 - x0) * (width - 1)).astype(np.int64)
    py = np.rint((y1 - y[ok]) / (y1 - y0) * (height - 1)).astype(np.int64)
    col = rgb[ok]
    r = int(np.floor(radius))
    offsets = [(dx, dy) for dx in range(-r, r + 1) for dy in range(-r, r + 1) if dx * dx + dy * dy <= radius * radius]
    size = width * height
    qx = (px[:, None] + np.array([o[0] for o in offsets])).ravel()  # (n * len(offsets),): every disc pixel
    qy = (py[:, None] + np.array([o[1] for o in offsets])).ravel()
    inside = (qx >= 0) & (qx < width) & (qy >= 0) & (qy < height)
    idx = qy[inside] * width + qx[inside]
    count = np.bincount(idx, minlength=size).astype(np.float64)
    per_pixel = np.repeat(col, len(offsets), axis=0)[inside]
    sums = np.stack([np.bincount(idx, weights=per_pixel[:, c], minlength=size) for c in range(3)])
    out = np.zeros((size, 4), dtype=np.uint8)
    hit = count > 0
    out[hit, :3] = np.rint(sums[:, hit] / count[hit]).T.astype(np.uint8)
    out[hit, 3] = np.rint(255.0 * (1.0 - (1.0 - alpha) ** count[hit])).astype(np.uint8)
    return out.reshape(height, width, 4)
