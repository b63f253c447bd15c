"""Vega-Lite charts of the app's pages, as spec dicts built from K-sized tables or the sampled map (no
Streamlit), drawn on a canvas.

The Complexity page's four charts hold a few hundred to a few thousand marks each; as SVG Plotly
figures they cost a GPU-less browser about 0.3 s each, on a canvas a fraction of that
(benchmarks/results/browser_10m.md: the page opens in 0.73 s against 1.84 s). And a page without
Plotly does not make a fresh browser evaluate Plotly's 4.7 MB bundle (Vega's is 0.8 MB): the first
page of a new server paints ~1.5 s sooner (benchmarks/results/cold_start_1m.md). Only the Find page's
map, which needs Plotly's lasso, and the Train page's charts stay in :mod:`densprune.app.charts`
and :mod:`densprune.app.run_charts`.

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

from densprune.app.charts import BLUE, DROPPED, GREEN, GREY, KEPT, ORANGE, RED  # one palette, the map picture's too

LIGHT = "#bbb"
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


# drawn on a canvas: Streamlit would pick Vega's SVG renderer for datasets under 2,000 rows, which is slower
# here (the Complexity page: 0.75 s with SVG, 0.68 s on a canvas)
CANVAS = {"embedOptions": {"renderer": "canvas"}}


def _chart(title: str | None, height: int, layers: list[Spec], datasets: dict[str, pd.DataFrame]) -> Spec:
    """A layered chart the width of its container, drawn on a canvas."""
    spec: Spec = {"height": height, "width": "container", "datasets": datasets, "layer": layers, "usermeta": CANVAS}
    if title:
        spec["title"] = {"text": title, "fontSize": 14, "anchor": "start"}
    return spec


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


# --- the concept map ------------------------------------------------------------------------------------

def concept_map(pts: pd.DataFrame, concepts: pd.DataFrame, colour: str,
                picture: tuple[str, tuple[float, float, float, float]], pick: int | None = None,
                height: int = 430, legend: tuple[str, str] | None = None) -> Spec:
    """The 2-D map: the sampled images drawn into one picture (``picture``: a PNG ``data:`` URI and the
    (x0, x1, y0, y1) data range it spans, from :func:`densprune.app.charts.map_picture`), the picked
    concept's images outlined on top, and the concept centres (concepts: cluster, name, x, y, pool_size,
    complexity) as diamonds that name their concept on hover. ``colour`` is the picture's colouring:
    "concept", "complexity" (the centres carry its colour scale) or "kept" (a legend for the picture's two
    colours, ``legend`` naming them off and on: ("dropped", "kept") unless given). Wheel zooms, drag pans.

    pts: (n sampled images) row_idx, cluster, x, y. Datasets: "picture" (x, x2, y, y2, url: one row),
    "centres" (cluster, name, x, y, images, complexity), "picked" (x, y of the picked concept's images on
    the map) and, coloured "kept", "legend" (name: its two entries). The layers, and so the datasets,
    differ between colourings: show each colouring as its own element (a key per colouring), since
    Streamlit updates a chart's datasets in place when only they change and fails when their set changes."""
    source, (x0, x1, y0, y1) = picture
    cen = concepts.dropna(subset=["x", "y"])
    centres = pd.DataFrame({"cluster": cen["cluster"].to_numpy(np.int64), "name": cen["name"].astype(str).to_numpy(),
                            "x": cen["x"].to_numpy(float), "y": cen["y"].to_numpy(float),
                            "images": cen["pool_size"].to_numpy(np.int64),
                            "complexity": cen["complexity"].to_numpy(float)})
    sel = pts[pts["cluster"].to_numpy() == pick] if pick is not None else pts.iloc[:0]
    picked = pd.DataFrame({"x": sel["x"].to_numpy(float), "y": sel["y"].to_numpy(float)})
    names = list(legend or ("dropped", "kept"))
    x = _q("x", scale={"domain": [x0, x1], "nice": False, "zero": False}, axis=None)
    y = _q("y", scale={"domain": [y0, y1], "nice": False, "zero": False}, axis=None)
    datasets = {"picture": pd.DataFrame({"x": [x0], "x2": [x1], "y": [y1], "y2": [y0], "url": [source]}),
                "centres": centres, "picked": picked}
    layers: list[Spec] = [
        {"data": {"name": "picture"}, "mark": {"type": "image", "aspect": False, "clip": True, "tooltip": None},
         "params": [{"name": "map_view", "select": "interval", "bind": "scales"}],  # wheel zoom, drag pan
         "encoding": {"x": x, "x2": {"field": "x2"}, "y": y, "y2": {"field": "y2"},
                      "url": {"field": "url", "type": "nominal"}}},
        {"data": {"name": "picked"}, "mark": {"type": "point", "size": 36, "stroke": "black", "strokeWidth": 1,
                                             "filled": False, "clip": True, "tooltip": None},
         "encoding": {"x": x, "y": y}}]
    if colour == "kept":  # the picture's two colours, named: the legend comes from the scale, the rows draw nothing
        datasets["legend"] = pd.DataFrame({"name": names})  # only with its layer: Streamlit fails on unread tables
        layers.append({"data": {"name": "legend"},
                       "mark": {"type": "point", "filled": True, "size": 64, "tooltip": None},
                       "encoding": {"x": {"datum": x0, "type": "quantitative", "axis": None},
                                    "y": {"datum": y0, "type": "quantitative", "axis": None},
                                    "opacity": {"value": 0},
                                    "color": {"field": "name", "type": "nominal", "title": None,
                                              "scale": {"domain": names, "range": [DROPPED, KEPT]},
                                              "legend": {"orient": "bottom", "direction": "horizontal",
                                                         "symbolOpacity": 1}}}})
    centre_colour: dict[str, Any] = {"value": "white"}
    if colour == "complexity":
        centre_colour = _viridis(legend=True)
    layers.append({"data": {"name": "centres"},
                   "mark": {"type": "point", "shape": "diamond", "filled": True, "size": 70, "stroke": "#333",
                            "strokeWidth": 1, "opacity": 1, "clip": True},
                   "encoding": {"x": x, "y": y, "color": centre_colour,
                                "tooltip": [_tip("name", "concept", kind="nominal"), _tip("images", fmt=","),
                                            _tip("complexity", fmt=".3f")]}})
    spec = _chart(None, height, layers, datasets)
    spec["config"] = {"view": {"stroke": None}}
    return spec


# --- the Overview's and the Budget page's charts --------------------------------------------------------

def category_bars(cats: pd.DataFrame) -> Spec:
    """Pool images per category, largest first as given (cats: category, pool). Dataset "categories"."""
    data = pd.DataFrame({"category": cats["category"].astype(str).to_numpy(), "pool": cats["pool"].to_numpy(np.int64)})
    bars = {"data": {"name": "categories"}, "mark": {"type": "bar", "color": BLUE},
            "encoding": {"y": {"field": "category", "type": "nominal", "sort": None, "title": None,
                               "axis": {"labelOverlap": False, "labelLimit": 180}},
                         "x": _q("pool", "pool images"),
                         "tooltip": [_tip("category", kind="nominal"), _tip("pool", "pool images", fmt=",")]}}
    return _chart("Pool images per category", max(220, 22 * len(data) + 60), [bars], {"categories": data})


def dedup_curve(curve: pd.DataFrame, eps: float, height: int = 170) -> Spec:
    """Share of the pool left after SemDeDup against eps (curve: eps, kept_fraction, increasing eps), with
    the current eps marked. Datasets: "curve" (eps, left_pct), "now" (eps, left_pct: one row)."""
    at = float(np.interp(eps, curve["eps"], curve["kept_fraction"]))
    line = pd.DataFrame({"eps": curve["eps"].to_numpy(float), "left_pct": 100 * curve["kept_fraction"].to_numpy(float)})
    now = pd.DataFrame({"eps": [float(eps)], "left_pct": [100 * at]})
    x, y = _q("eps", "ε"), _q("left_pct", "% left", scale={"domain": [0, 101]})
    tip = [_tip("eps", "ε", fmt=".3f"), _tip("left_pct", "% left", fmt=".1f")]
    layers = [{"data": {"name": "curve"}, "mark": {"type": "line", "color": BLUE},
               "encoding": {"x": x, "y": y, "tooltip": tip}},
              {"data": {"name": "now"}, "mark": {"type": "circle", "size": 80, "color": RED, "opacity": 1},
               "encoding": {"x": x, "y": y, "tooltip": tip}}]
    spec = _chart(f"{at:.0%} of the pool left at ε = {eps:.3f}", height, layers, {"curve": line, "now": now})
    spec["title"]["fontSize"] = 12
    return spec


def kept_per_concept(per: pd.DataFrame, method: str, height: int = 330) -> Spec:
    """Kept share per concept (bars, least to most complex) against SSP and random at the same budget
    (lines; the plan's own method not repeated). per: name, complexity, kept, eligible, kept_pct,
    ssp_pct, random_pct. Datasets: "concepts" (order, name, kept, eligible, kept_pct, method: the bars,
    least complex first), "baselines" (order, method, kept_pct: one row per concept and baseline)."""
    per = per[per["eligible"] > 0].sort_values("complexity", kind="stable")
    order = np.arange(len(per))
    def label(m: str) -> str:
        return m.upper() if m in ("dbp", "ssp") else m

    bars = pd.DataFrame({"order": order, "name": per["name"].astype(str).to_numpy(),
                         "kept": per["kept"].to_numpy(np.int64), "eligible": per["eligible"].to_numpy(np.int64),
                         "kept_pct": per["kept_pct"].to_numpy(float), "method": label(method)})
    shown = [b for b in ("ssp", "random") if b != method]  # the baselines beside the plan
    colours, dashes = {"ssp": ORANGE, "random": GREEN}, {"ssp": [1, 0], "random": [2, 2]}
    base = pd.DataFrame({"order": np.tile(order, len(shown)), "method": np.repeat([label(b) for b in shown], len(per)),
                         "kept_pct": np.concatenate([per[f"{b}_pct"].to_numpy(float) for b in shown])})
    colour = {"field": "method", "type": "nominal", "title": None,
              "scale": {"domain": [label(method)] + [label(b) for b in shown],
                        "range": [BLUE] + [colours[b] for b in shown]},
              "legend": {"orient": "top", "direction": "horizontal"}}
    x = {"field": "order", "type": "ordinal", "title": "concepts, least → most complex",
         "axis": {"labels": False, "ticks": False}}
    y = _q("kept_pct", "kept %", scale={"domain": [0, 102]})
    layers = [{"data": {"name": "concepts"}, "mark": {"type": "bar"},
               "encoding": {"x": x, "y": y, "color": colour,
                            "tooltip": [_tip("name", "concept", kind="nominal"), _tip("kept", fmt=","),
                                        _tip("eligible", fmt=","), _tip("kept_pct", "kept %", fmt=".0f")]}},
              {"data": {"name": "baselines"}, "mark": {"type": "line", "strokeWidth": 2},
               "encoding": {"x": x, "y": y, "color": colour,
                            "strokeDash": {"field": "method", "type": "nominal", "legend": None,
                                           "scale": {"domain": [label(b) for b in shown] or ["none"],
                                                     "range": [dashes[b] for b in shown] or [[1, 0]]}}}}]
    return _chart("Share of each concept kept, concepts from least to most complex", height, layers,
                  {"concepts": bars, "baselines": base})


def coverage_bars(cov: pd.DataFrame) -> Spec:
    """Kept share per category for the plan, SSP and random, grouped (cov from page_data.coverage:
    category, pool, plan, ssp, random and their _pct; categories with no pool left out). Dataset
    "coverage": category, method, kept, pool, kept_pct (one row per category and method)."""
    cov = cov[cov["pool"] > 0]
    methods = [("plan", "this plan", BLUE), ("ssp", "SSP", ORANGE), ("random", "random", GREEN)]
    data = pd.DataFrame({"category": np.tile(cov["category"].astype(str).to_numpy(), len(methods)),
                         "method": np.repeat([label for _, label, _ in methods], len(cov)),
                         "kept": np.concatenate([cov[m].to_numpy(np.int64) for m, _, _ in methods]),
                         "pool": np.tile(cov["pool"].to_numpy(np.int64), len(methods)),
                         "kept_pct": np.concatenate([cov[f"{m}_pct"].to_numpy(float) for m, _, _ in methods])})
    bars = {"data": {"name": "coverage"}, "mark": {"type": "bar"},
            "encoding": {"y": {"field": "category", "type": "nominal", "sort": None, "title": None,
                               "axis": {"labelLimit": 280}},
                         "yOffset": {"field": "method", "type": "nominal", "sort": [label for _, label, _ in methods]},
                         "x": _q("kept_pct", "kept %", scale={"domain": [0, 102]}),
                         "color": {"field": "method", "type": "nominal", "title": None,
                                   "scale": {"domain": [label for _, label, _ in methods],
                                             "range": [c for _, _, c in methods]},
                                   "legend": {"orient": "top", "direction": "horizontal"}},
                         "tooltip": [_tip("category", kind="nominal"), _tip("method", kind="nominal"),
                                     _tip("kept", fmt=","), _tip("pool", fmt=","),
                                     _tip("kept_pct", "kept %", fmt=".0f")]}}
    return _chart("Category coverage: share of each category kept", max(260, 22 * len(cov) + 80), [bars],
                  {"coverage": data})


def compare_diff(diff: pd.DataFrame) -> Spec:
    """Concepts where two plans differ most (diff: name, diff = kept_b - kept_a; in the order given).
    Dataset "concepts": name, diff, more (which plan keeps more: "A" or "B")."""
    data = pd.DataFrame({"name": diff["name"].astype(str).to_numpy(), "diff": diff["diff"].to_numpy(np.int64)})
    data["more"] = np.where(data["diff"] > 0, "B", "A")
    bars = {"data": {"name": "concepts"}, "mark": {"type": "bar"},
            "encoding": {"y": {"field": "name", "type": "nominal", "sort": None, "title": None,
                               "axis": {"labelLimit": 280}},
                         "x": _q("diff", "B − A images kept"),
                         "color": {"field": "more", "type": "nominal", "title": "keeps more",
                                   "scale": {"domain": ["A", "B"], "range": [BLUE, ORANGE]}},
                         "tooltip": [_tip("name", "concept", kind="nominal"), _tip("diff", "B − A", fmt="+,")]}}
    return _chart("Concepts that differ most (B − A images kept)", max(220, 24 * len(data) + 60), [bars],
                  {"concepts": data})
