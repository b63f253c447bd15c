"""Vega-Lite charts of the Complexity page, as spec dicts built from K-sized tables (no Streamlit).

Streamlit draws Vega-Lite on a canvas. The Complexity page's four charts hold a few hundred to a few
thousand marks each; as SVG Plotly figures they cost a GPU-less browser about 0.3 s each, on a canvas a
fraction of that (benchmarks/results/browser_10m.md: the page opens in 0.86 s against 1.78 s). The map
and the charts that need Plotly's interactions stay in :mod:`densprune.app.charts`.

The specs are plain dicts, not Altair objects: Altair costs 0.4 s to import and ~0.1 s per chart to
validate on every rerun. Each spec's tables are DataFrames under ``spec["datasets"]`` (Streamlit sends
them as Arrow); a scatter chart's concepts are ``datasets["concepts"]``, one row per mark. Tooltips show
names as text (Vega's tooltip handler escapes HTML). tests/test_page_data.py validates every spec
against the Vega-Lite schema.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

BLUE, GREY, LIGHT = "#4c78a8", "#888", "#bbb"
VIRIDIS = {"scheme": "viridis"}
Spec = dict[str, Any]


def _q(field: str, title: str | None = None, **kw) -> dict[str, Any]:
    """A quantitative encoding of ``field``."""
    enc: dict[str, Any] = {"field": field, "type": "quantitative", **kw}
    if title is not None:
        enc["title"] = title
    return enc


def _tip(field: str, title: str | None = None, fmt: str | None = None, kind: str = "quantitative") -> dict[str, Any]:
    tip: dict[str, Any] = {"field": field, "type": kind}
    if title:
        tip["title"] = title
    if fmt:
        tip["format"] = fmt
    return tip


def _chart(title: str, height: int, layers: list[Spec], datasets: dict[str, pd.DataFrame]) -> Spec:
    """A layered chart the width of its container."""
    return {"title": {"text": title, "fontSize": 14, "anchor": "start"}, "height": height, "width": "container",
            "datasets": datasets, "layer": layers}


def _viridis(legend: bool = False) -> dict[str, Any]:
    return _q("complexity", scale=VIRIDIS,
              legend={"title": "complexity", "gradientThickness": 10} if legend else None)


def spread_isolation(concepts: pd.DataFrame, height: int = 430) -> Spec:
    """d_intra against d_inter per concept (area = pool images, colour = complexity), with dotted
    curves of equal complexity (d_inter = C / d_intra at the 25th, 50th and 90th percentile of C).

    concepts: (K rows) cluster, name, d_intra, d_inter, pool_size, complexity; concepts without a
    complexity are left out. Datasets: "concepts" (name, d_intra, d_inter, images, complexity),
    "curves" (x, y, label: 80 points per curve, those inside the y range)."""
    ok = concepts[concepts["complexity"].notna()]
    points = pd.DataFrame({"name": ok["name"].astype(str).to_numpy(), "d_intra": ok["d_intra"].to_numpy(float),
                           "d_inter": ok["d_inter"].to_numpy(float), "images": ok["pool_size"].to_numpy(np.int64),
                           "complexity": ok["complexity"].to_numpy(float)})
    y_hi = float(points["d_inter"].max() * 1.08) if len(points) else 1.0
    x_lo = max(float(points["d_intra"].min()) * 0.9, 1e-4) if len(points) else 0.0
    x_hi = float(points["d_intra"].max()) * 1.05 if len(points) else 1.0
    curves = pd.DataFrame({"x": np.zeros(0), "y": np.zeros(0), "label": np.zeros(0, dtype=object)})
    if len(points):
        xs = np.linspace(x_lo, x_hi, 80)
        qs = [float(q) for q in np.quantile(points["complexity"], [0.25, 0.5, 0.9]) if q > 0]
        if qs:
            curves = pd.DataFrame({"x": np.tile(xs, len(qs)), "y": np.concatenate([q / xs for q in qs]),
                                   "label": np.repeat([f"C={q:.2f}" for q in qs], len(xs))})
            curves = curves[curves["y"] <= y_hi].reset_index(drop=True)
    x = _q("d_intra", "d_intra: spread inside the concept",
           scale={"zero": False, "nice": False, "domain": [x_lo, x_hi]})
    y = _q("d_inter", "d_inter: distance to the nearest concepts", scale={"domain": [0, y_hi]})
    lines = {"data": {"name": "curves"}, "mark": {"type": "line", "color": LIGHT, "strokeDash": [2, 3],
                                                  "strokeWidth": 1, "clip": True},
             "encoding": {"x": _q("x"), "y": _q("y"), "detail": {"field": "label", "type": "nominal"}}}
    labels = {"data": {"name": "curves"},
              "transform": [{"window": [{"op": "row_number", "as": "i"}], "groupby": ["label"],
                             "sort": [{"field": "x", "order": "descending"}]}, {"filter": "datum.i == 1"}],
              "mark": {"type": "text", "align": "right", "dy": -6, "fontSize": 10, "color": "#999", "clip": True},
              "encoding": {"x": _q("x"), "y": _q("y"), "text": {"field": "label", "type": "nominal"}}}
    dots = {"data": {"name": "concepts"},
            "mark": {"type": "circle", "opacity": 0.8, "stroke": "white", "strokeWidth": 0.5},
            "encoding": {"x": x, "y": y, "size": _q("images", scale={"range": [64, 1444], "zero": True}, legend=None),
                         "color": _viridis(legend=True),
                         "tooltip": [_tip("name", "concept", kind="nominal"), _tip("images", fmt=","),
                                     _tip("complexity", fmt=".3f")]}}
    return _chart("Spread against isolation (size = images, colour = complexity)", height, [lines, labels, dots],
                  {"concepts": points, "curves": curves})


def complexity_histogram(concepts: pd.DataFrame, height: int = 430) -> Spec:
    """How many concepts fall in each of at most 30 complexity bins (concepts: complexity, K rows;
    missing values left out). Dataset "concepts": complexity."""
    data = pd.DataFrame({"complexity": concepts["complexity"].dropna().to_numpy(float)})
    bars = {"data": {"name": "concepts"}, "mark": {"type": "bar", "color": BLUE},
            "encoding": {"x": _q("complexity", "complexity", bin={"maxbins": 30}),
                         "y": {"aggregate": "count", "type": "quantitative", "title": "concepts"},
                         "tooltip": [_q("complexity", "complexity", bin={"maxbins": 30}),
                                     {"aggregate": "count", "type": "quantitative", "title": "concepts"}]}}
    return _chart("How complexity is distributed", height, [bars], {"concepts": data})


def kept_vs_complexity(per: pd.DataFrame, uniform_pct: float, height: int = 380) -> Spec:
    """Each concept's kept share against its complexity, with the uniform (SSP) rate as a dashed line.

    per: one row per concept with eligible images (name, complexity, kept, eligible, kept_pct).
    Datasets: "concepts" (name, complexity, kept_pct, kept, eligible), "ssp" (kept_pct, label: one row)."""
    points = pd.DataFrame({"name": per["name"].astype(str).to_numpy(), "complexity": per["complexity"].to_numpy(float),
                           "kept_pct": per["kept_pct"].to_numpy(float), "kept": per["kept"].to_numpy(np.int64),
                           "eligible": per["eligible"].to_numpy(np.int64)})
    ssp = pd.DataFrame({"kept_pct": [float(uniform_pct)], "label": ["same rate everywhere (SSP)"]})
    y = _q("kept_pct", "kept %", scale={"domain": [-3, 105]})
    rule = {"data": {"name": "ssp"}, "mark": {"type": "rule", "color": GREY, "strokeDash": [5, 4]},
            "encoding": {"y": y}}
    label = {"data": {"name": "ssp"}, "mark": {"type": "text", "align": "left", "baseline": "bottom", "x": 4, "dy": -3,
                                               "color": "#666"},
             "encoding": {"y": y, "text": {"field": "label", "type": "nominal"}}}
    dots = {"data": {"name": "concepts"}, "mark": {"type": "circle", "size": 80, "opacity": 0.85},
            "encoding": {"x": _q("complexity", "complexity", scale={"zero": False}), "y": y, "color": _viridis(),
                         "tooltip": [_tip("name", "concept", kind="nominal"), _tip("kept", fmt=","),
                                     _tip("eligible", fmt=","), _tip("kept_pct", "kept %", fmt=".0f")]}}
    return _chart("Share kept against complexity", height, [rule, label, dots], {"concepts": points, "ssp": ssp})


def quota_vs_size(per: pd.DataFrame, temperature: float, height: int = 380) -> Spec:
    """Quota against eligible size per concept, the y = x cap (dashed), and, where the cap binds, the
    softmax target it cut (grey crosses: only for capped concepts).

    per: one row per concept with eligible images (name, eligible, quota, complexity; target when the
    plan has softmax targets). Datasets: "concepts" (name, eligible, quota, complexity), "cap" (the
    line's two ends), "capped" (eligible, quota = the softmax target; no rows where the cap binds none)."""
    top = float(per["eligible"].max()) if len(per) else 1.0
    points = pd.DataFrame({"name": per["name"].astype(str).to_numpy(), "eligible": per["eligible"].to_numpy(np.int64),
                           "quota": per["quota"].to_numpy(np.int64), "complexity": per["complexity"].to_numpy(float)})
    capped = per[per["target"] > per["eligible"]] if "target" in per else per.iloc[:0]
    cut = pd.DataFrame({"eligible": capped["eligible"].to_numpy(np.int64),
                        "quota": capped["target"].to_numpy(float) if "target" in capped else np.zeros(0)})
    y_hi = max(top, float(points["quota"].max()) if len(points) else 1.0) * 1.05
    x = _q("eligible", "images in the concept (eligible)")
    y = _q("quota", "images kept (quota)", scale={"domain": [0, y_hi]})
    layers = [{"data": {"name": "cap"}, "mark": {"type": "line", "color": GREY, "strokeDash": [5, 4]},
               "encoding": {"x": x, "y": y}},
              {"data": {"name": "capped"}, "mark": {"type": "point", "shape": "cross", "size": 70, "filled": True,
                                                    "color": LIGHT, "clip": True},
               "encoding": {"x": x, "y": y}},
              {"data": {"name": "concepts"}, "mark": {"type": "circle", "size": 80, "opacity": 0.85},
               "encoding": {"x": x, "y": y, "color": _viridis(),
                            "tooltip": [_tip("name", "concept", kind="nominal"), _tip("quota", fmt=","),
                                        _tip("eligible", fmt=","), _tip("complexity", fmt=".3f")]}}]
    return _chart(f"Quota against size at τ = {temperature:g}", height, layers,
                  {"concepts": points, "cap": pd.DataFrame({"eligible": [0.0, top], "quota": [0.0, top]}),
                   "capped": cut})
