"""Regions of the 2-D concept map: which drawn points and which concept centres a lasso or a box holds
(pure numpy; the map's coordinates are the layout table's x, y)."""

from __future__ import annotations

import numpy as np

__all__ = ["MAX_VERTICES", "check_polygon", "in_box", "in_polygon"]

MAX_VERTICES = 5_000  # a lasso drawn by hand has a few hundred; more is not a drawing


def check_polygon(xs, ys) -> np.ndarray:
    """(V, 2) float64 vertices of a lasso (closed implicitly); a ValueError unless 3..MAX_VERTICES finite points."""
    pts = np.column_stack([np.asarray(xs, dtype=np.float64).ravel(), np.asarray(ys, dtype=np.float64).ravel()]) \
        if len(xs) == len(ys) else None
    if pts is None:
        raise ValueError(f"a lasso needs as many x as y coordinates, got {len(xs)} and {len(ys)}")
    if not 3 <= len(pts) <= MAX_VERTICES or not np.isfinite(pts).all():
        raise ValueError(f"a lasso needs 3 to {MAX_VERTICES:,} finite vertices, got {len(pts)}")
    return pts


def in_polygon(x: np.ndarray, y: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """(P,) bool: the points (x, y: (P,)) inside ``polygon`` (V, 2) by the even-odd rule (a lasso that
    crosses itself holds what an SVG fill would show). O(P x V) in blocks of vertices."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    inside = np.zeros(x.shape, dtype=bool)
    xi, yi = polygon[:, 0], polygon[:, 1]
    xj, yj = np.roll(xi, 1), np.roll(yi, 1)
    for a in range(0, len(polygon), 256):
        b = slice(a, a + 256)
        y1, y2, x1, x2 = yi[b, None], yj[b, None], xi[b, None], xj[b, None]  # (v, 1) edges
        crosses = (y1 > y) != (y2 > y)  # (v, P) the edge spans the point's height
        with np.errstate(divide="ignore", invalid="ignore"):
            at = x1 + (y - y1) * (x2 - x1) / (y2 - y1)
        inside ^= np.logical_xor.reduce(crosses & (x < at), axis=0)
    return inside


def in_box(x: np.ndarray, y: np.ndarray, x_range: tuple[float, float], y_range: tuple[float, float]) -> np.ndarray:
    """(P,) bool: the points inside the axis-aligned box (edges included; the ranges in either order)."""
    x0, x1 = sorted(float(v) for v in x_range)
    y0, y1 = sorted(float(v) for v in y_range)
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    return (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)
