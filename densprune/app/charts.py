"""Plotly figures of the app's pages, built from the tables in :mod:`densprune.app.page_data` (no Streamlit).

Every figure takes K-sized tables or a sampled map (at most ~20k points, drawn into one picture on the
server: densprune.app.raster), never all rows.
Hover texts hold concept names (HTML-escaped: plotly renders a subset of HTML) and numbers.
The Find page's map is the one Plotly figure of the pages (its lasso); every other page's charts are
Vega-Lite specs drawn on a canvas (densprune.app.vega_charts), which also use this module's map picture.
"""

from __future__ import annotations

import base64
import functools
import html
import io

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from PIL import Image

from densprune.app import raster

BLUE, ORANGE, GREEN, RED, GREY = "#4c78a8", "#f58518", "#54a24b", "#d1495b", "#888"
KEPT, DROPPED = "#2e9d57", "#d1495b"


def _names(names) -> np.ndarray:
    return np.asarray([html.escape(str(n)) for n in names], dtype=object)


def _layout(fig: go.Figure, title: str, height: int, title_size: int = 14, **kw) -> go.Figure:
    fig.update_layout(height=height, margin=dict(l=0, r=0, t=30 if title else 8, b=0),
                      title=dict(text=title, font_size=title_size) if title else None, **kw)
    return fig


MAP_PIXELS = (1000, 620)  # the map's picture, about 1.4x its size on the page


def map_colours(pts: pd.DataFrame, concepts: pd.DataFrame, colour: str, keep: np.ndarray | None = None) -> np.ndarray:
    """(n, 3) uint8 colour of each map point (pts: row_idx, cluster): "concept" (golden-ratio hues of the
    Turbo scale: neighbouring ids get distant colours), "complexity" (Viridis over its range), or "kept"
    (green kept, red dropped by ``keep`` (N,) bool)."""
    cl = pts["cluster"].to_numpy()
    if colour == "complexity":
        cx = concepts.set_index("cluster")["complexity"].reindex(np.arange(int(concepts["cluster"].max()) + 1))
        v = cx.to_numpy(dtype=np.float64)[cl]
        fin = v[np.isfinite(v)]
        lo, hi = (fin.min(), fin.max()) if fin.size else (0.0, 1.0)
        t = np.nan_to_num((v - lo) / (hi - lo) if hi > lo else np.zeros_like(v), nan=0.0)
        return _lut("Viridis")[np.rint(t * 255).astype(np.int64)]
    if colour == "kept" and keep is not None:
        k = np.asarray(keep)[pts["row_idx"].to_numpy()]
        return np.where(k[:, None], _rgb(KEPT), _rgb(DROPPED)).astype(np.uint8)
    hue = (cl * 0.6180339887) % 1.0
    return _lut("Turbo")[np.rint(hue * 255).astype(np.int64)]


def _rgb(hex_colour: str) -> np.ndarray:
    return np.array([int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)], dtype=np.uint8)


_lut = functools.lru_cache(maxsize=None)(raster.colour_lut)  # (256, 3) per colour scale, made once


def map_picture(pts: pd.DataFrame, concepts: pd.DataFrame, colour: str,
                keep: np.ndarray | None = None) -> tuple[str, tuple[float, float, float, float]]:
    """The map's points drawn into one PNG (a ``data:`` URI; :func:`densprune.app.raster.splat`) and the
    (x0, x1, y0, y1) data range it spans: every point and concept centre, with a 3% margin."""
    x, y = pts["x"].to_numpy(dtype=np.float64), pts["y"].to_numpy(dtype=np.float64)
    cen = concepts.dropna(subset=["x", "y"])
    xs = np.concatenate([x, cen["x"].to_numpy(dtype=np.float64)])
    ys = np.concatenate([y, cen["y"].to_numpy(dtype=np.float64)])
    x0, x1, y0, y1 = (xs.min(), xs.max(), ys.min(), ys.max()) if xs.size else (0.0, 1.0, 0.0, 1.0)
    pad_x, pad_y = max(0.03 * (x1 - x0), 1e-6), max(0.03 * (y1 - y0), 1e-6)
    extent = (float(x0 - pad_x), float(x1 + pad_x), float(y0 - pad_y), float(y1 + pad_y))
    img = raster.splat(x, y, map_colours(pts, concepts, colour, keep), extent, *MAP_PIXELS, radius=2.5)
    buf = io.BytesIO()
    Image.fromarray(img, "RGBA").save(buf, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii"), extent


def concept_map(pts: pd.DataFrame, concepts: pd.DataFrame, colour: str, keep: np.ndarray | None = None,
                pick: int | None = None, height: int = 430,
                picture: tuple[str, tuple[float, float, float, float]] | None = None,
                legend: tuple[str, str] | None = None, found: pd.DataFrame | None = None,
                found_concepts: np.ndarray | None = None, dragmode: str = "pan") -> go.Figure:
    """The 2-D map: sampled images (pts: row_idx, cluster, x, y) as one picture (``picture``, else
    :func:`map_picture` of the same arguments), the picked concept's images outlined on top, and the
    concept centres (concepts: cluster, name, x, y, pool_size, complexity) as markers that name their
    concept on hover; coloured by "concept", "complexity" or "kept" (needs ``keep``; ``legend`` names its
    two colours, off and on: ("dropped", "kept") unless given, e.g. for the rows of a tag). The Find page
    marks what it found: ``found`` (x, y of the found images the map holds) as rings, ``found_concepts``
    (cluster ids) as larger centres; ``dragmode`` "lasso" or "select" to draw a region."""
    source, extent = picture if picture is not None else map_picture(pts, concepts, colour, keep)
    cen = concepts.dropna(subset=["x", "y"])
    fig = go.Figure()
    fig.add_layout_image(source=source, xref="x", yref="y", x=extent[0], y=extent[3], sizex=extent[1] - extent[0],
                         sizey=extent[3] - extent[2], sizing="stretch", layer="below")
    if colour == "kept" and keep is not None:  # legend entries for the picture's two colours
        for name, col in zip(legend or ("dropped", "kept"), (DROPPED, KEPT)):
            fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=name, marker=dict(size=8, color=col)))
    if pick is not None:
        sel = pts[pts["cluster"].to_numpy() == pick]
        fig.add_trace(go.Scatter(x=sel["x"], y=sel["y"], mode="markers", name=f"#{pick} (picked)", hoverinfo="skip",
                                 marker=dict(size=6, color="rgba(0,0,0,0)", line=dict(color="black", width=1))))
    if found is not None and len(found):
        fig.add_trace(go.Scatter(x=found["x"], y=found["y"], mode="markers", name=f"found ({len(found):,} on the map)",
                                 hoverinfo="skip", marker=dict(size=9, color="rgba(255,215,0,0.35)",
                                                               line=dict(color="black", width=1.5))))
    if found_concepts is not None and len(found_concepts):
        hit = cen[cen["cluster"].isin(np.asarray(found_concepts))]
        fig.add_trace(go.Scatter(x=hit["x"], y=hit["y"], mode="markers", name="concepts found", hoverinfo="skip",
                                 marker=dict(symbol="diamond", size=14, color="#ffd700",
                                             line=dict(color="black", width=1.5))))
    marker = dict(symbol="diamond", size=7, color="white", line=dict(color="#333", width=1))
    if colour == "complexity":  # the centres carry the colour bar of the picture's scale
        marker.update(color=cen["complexity"], colorscale="Viridis",
                      colorbar=dict(title="complexity", thickness=10))
    fig.add_trace(go.Scatter(x=cen["x"], y=cen["y"], mode="markers", name="concept centres", hoverinfo="text",
                             text=[f"{n}<br>{s:,} images · complexity {c:.3f}" for n, s, c in
                                   zip(_names(cen["name"]), cen["pool_size"], cen["complexity"])],
                             marker=marker))
    return _layout(fig, "", height, legend=dict(orientation="h", y=-0.02),
                   xaxis=dict(visible=False, range=list(extent[:2])), yaxis=dict(visible=False, range=list(extent[2:])),
                   dragmode=dragmode)
