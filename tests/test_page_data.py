"""Tests for the app's pure helpers: densprune.app.page_data, .thumbgrid, .charts, .build."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.io as pio
import pytest
from PIL import Image

from densprune import db
from densprune.app import build as appbuild
from densprune.app import charts, page_data, vega_charts
from densprune.app.thumbgrid import Tile, grid_html, pairs_html, read_thumbs
from densprune.ingest.media import image_ext, image_mime
from densprune.prune.plan_index import load_index
from densprune.prune.selection import PlanIndex, PlanParams

N, K = 600, 6


@pytest.fixture(scope="module")
def tiny():
    rng = np.random.default_rng(1)
    clusters = rng.integers(0, K, size=N)
    pool = rng.random(N) > 0.05
    index = PlanIndex.build(clusters, rng.uniform(0.05, 0.6, N), rng.normal(size=(K, 5)), pool,
                            rng.uniform(0.2, 1.0, N), None)
    df = pd.DataFrame({"cluster": np.arange(K), "size": index.sizes,
                       "pool_size": np.bincount(clusters[pool], minlength=K),
                       "label": [f"label{j}" for j in range(K)], "x": rng.normal(size=K), "y": rng.normal(size=K)})
    codes = rng.integers(0, 3, size=N).astype(np.int32)
    cats = page_data.CategoryCodes(codes, ("a", "b", "c"), np.bincount(codes[pool], minlength=3))
    return dict(index=index, concepts=page_data.concept_frame(df, index), cats=cats, clusters=clusters, pool=pool)


def webp(color=(200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(buf, format="WEBP")
    return buf.getvalue()


# --- thumbs ---------------------------------------------------------------------------------

def test_read_thumbs_only_reads_inside_thumbs_bin(tmp_path: Path):
    a, b = webp(), webp((0, 0, 255))
    (tmp_path / "thumbs.bin").write_bytes(a + b)
    got = read_thumbs(tmp_path, [0, len(a), len(a) + len(b), -5, 0], [len(a), len(b), 10, 3, 10**9])
    assert got[:2] == [a, b]
    assert got[2:] == [b"", b"", b""]  # past the end, negative, absurd size
    assert read_thumbs(tmp_path / "nowhere", [0], [1]) == [b""]


def test_image_mime():
    assert image_mime(webp()) == "image/webp"
    assert image_mime(b"\xff\xd8\xff\xe0rest") == "image/jpeg"
    assert image_mime(b"<svg></svg>") is None


def test_grid_html_escapes_captions_and_notes():
    evil = '<script>alert(1)</script> "quoted" **bold** <img src=x onerror=alert(2)>'
    out = grid_html([Tile(webp(), evil, note="<b>n</b>", tone="kept"), Tile(b"<svg/>", "x")])
    assert "<script>" not in out and "onerror=alert(2)>" not in out and "<b>n</b>" not in out
    assert "&lt;script&gt;" in out and "&quot;quoted&quot;" in out
    assert out.count("data:image/webp;base64,") == 1
    assert "no thumbnail" in out  # unknown bytes are not embedded
    assert "dp-kept" in out
    pair = pairs_html([(Tile(webp(), "<i>a</i>"), Tile(webp(), "b"), "similarity <1>")])
    assert "<i>a</i>" not in pair and "similarity &lt;1&gt;" in pair


# --- page_data --------------------------------------------------------------------------------

def test_escape_markdown():
    assert page_data.escape_markdown("**x** [a](b) <i>") == "\\*\\*x\\*\\* \\[a\\]\\(b\\) \\<i\\>"
    assert page_data.concept_name(3, "cats, dogs") == "#3 cats, dogs" and page_data.concept_name(4, "") == "#4"


def test_concept_message_explains_each_state():
    assert "empty" in page_data.concept_message(0, 0, 0, 0)
    assert "held out" in page_data.concept_message(0, 0, 0, 20)
    assert "None of its 5 pool images" in page_data.concept_message(5, 0, 0, 5)
    assert "every one" in page_data.concept_message(5, 5, 5, 5)
    assert "none of its images" in page_data.concept_message(5, 5, 0, 5)
    assert page_data.concept_message(10, 8, 3, 10) is None


def test_budget_view_compares_at_the_same_budget(tiny):
    view = page_data.budget_view(tiny["index"], PlanParams(keep=0.3), tiny["concepts"], tiny["cats"])
    r = view.result
    assert r.n_kept == view.random.n_kept == view.ssp.n_kept == round(0.3 * tiny["pool"].sum())
    per = view.per_concept
    assert per["kept"].sum() == r.n_kept and per["random"].sum() == r.n_kept and per["ssp"].sum() == r.n_kept
    assert (per["kept"] <= per["eligible"]).all()
    assert "target" in per and np.isclose(per["target"].sum(), r.budget)
    cov = view.coverage
    assert cov["plan"].sum() == r.n_kept and cov["pool"].sum() == tiny["pool"].sum()
    assert not view.keeps_everything
    assert page_data.budget_view(tiny["index"], PlanParams(keep=1.0), tiny["concepts"]).keeps_everything


def test_plan_table_and_shares_use_the_remaining_pool(tiny):
    view = page_data.budget_view(tiny["index"], PlanParams(keep=0.3, dedup_eps=0.1), tiny["concepts"])
    r, per = view.result, view.per_concept
    np.testing.assert_array_equal(per["d_intra"], r.d_intra)  # what DBP used, not the pool's
    np.testing.assert_array_equal(per["complexity"], r.complexity)
    assert not np.allclose(per["d_intra"], tiny["concepts"]["d_intra"])
    sh = page_data.budget_shares(r)
    assert (sh.kept, sh.remaining, sh.pool) == (r.n_kept, int(r.eligible.sum()), int(tiny["pool"].sum()))
    assert sh.remaining < sh.pool and abs(sh.of_remaining - 0.3) < 1e-3 and sh.of_pool < sh.of_remaining
    assert f"{sh.of_remaining:.1%} of the {sh.remaining:,} that remain" in sh.sentence()
    assert np.isnan(page_data.BudgetShares(0, 0, 0).of_remaining)


def test_coverage_counts_kept_per_category(tiny):
    keep = np.zeros(N, bool)
    keep[:50] = True
    cov = page_data.coverage(tiny["cats"], {"m": keep}).set_index("category")
    for i, name in enumerate(("a", "b", "c")):
        assert cov.loc[name, "m"] == np.count_nonzero(tiny["cats"].codes[:50] == i)


def test_rate_by_complexity_groups_all_concepts(tiny):
    view = page_data.budget_view(tiny["index"], PlanParams(keep=0.3, temperature=0.01), tiny["concepts"])
    g = page_data.rate_by_complexity(view.per_concept, bins=3)
    assert g["concepts"].sum() == (view.per_concept["eligible"] > 0).sum()
    assert g["kept"].sum() == view.result.n_kept
    assert g["kept_pct"].iloc[-1] >= g["kept_pct"].iloc[0]  # small tau favours complex concepts


def test_kept_and_dropped_split_a_concept(tiny):
    r = tiny["index"].compute(PlanParams(keep=0.4))
    j = 2
    kept, dropped, n_kept, n_dropped = page_data.kept_and_dropped(tiny["index"], j, r.keep, n=5)
    members = np.flatnonzero((tiny["clusters"] == j) & tiny["pool"])
    assert n_kept + n_dropped == members.size and n_kept == r.kept[j]
    assert len(kept) <= 5 and len(dropped) <= 5
    assert r.keep[kept].all() and not r.keep[dropped].any()


def test_compare_keeps_and_neighbours(tiny):
    a = tiny["index"].compute(PlanParams(keep=0.3)).keep
    b = tiny["index"].compute(PlanParams(keep=0.3, method="ssp")).keep
    per, only_a, only_b, both = page_data.compare_keeps(a, b, tiny["clusters"], tiny["concepts"])
    assert both + only_a.size == a.sum() and both + only_b.size == b.sum()
    assert (per["diff"] == per["kept_b"] - per["kept_a"]).all() and "name" in per
    near = page_data.neighbour_concepts(tiny["index"], tiny["concepts"], 0, n=3)
    assert len(near) == 3 and 0 not in set(near["cluster"]) and near["distance"].is_monotonic_increasing
    assert page_data.spread_sample(np.arange(100), 7).size == 7


def test_workspace_queries(demo_workspace: Path):
    ws = demo_workspace
    pts = db.layout_sample(ws, max_points=500)
    assert len(pts) == 500 and set(pts.columns) == {"row_idx", "cluster", "x", "y"}
    literal = db.caption_matches(ws, "%")  # a literal percent sign, not a wildcard
    n_pct = db.query_df(ws, "SELECT count(*) AS n FROM samples WHERE contains(caption, '%')")["n"].iloc[0]
    assert literal["matches"].sum() == n_pct
    rows = db.sample_rows(ws, [5, 2, 9])
    assert rows["row_idx"].tolist() == [5, 2, 9]
    index = load_index(ws)
    for c in range(index.n_clusters):
        dups, total = index.duplicates(c, 0.3, 4)
        want = db.query_df(ws, "SELECT row_idx, dup_of, dup_max_sim FROM samples WHERE cluster = ? AND dup_of >= 0 "
                               "AND dup_max_sim > 0.7 ORDER BY dup_max_sim DESC, row_idx", [c])
        assert total == len(want) and dups.tolist() == want["row_idx"].tolist()[:4]
        if total:  # the pairs of a concept that has some
            pairs = db.dup_pairs(ws, dups)
            assert pairs["row_idx"].tolist() == dups.tolist() and (pairs["sim"] > 0.7).all()
            assert pairs["dup_of"].tolist() == want["dup_of"].tolist()[:4]
            assert (pairs["dup_caption"].notna()).all()
            break
    else:
        raise AssertionError("the demo has no near-duplicate pairs at eps 0.3")
    meta = db.load_meta(ws)
    steps = page_data.pipeline_steps(ws, meta, db.counts(ws))
    assert len(steps) >= 6
    cats = page_data.category_codes(ws)
    assert cats.codes.size == meta["n_samples"] and cats.pool_counts.sum() == meta["n_pool"]


# --- charts ---------------------------------------------------------------------------------

def test_charts_draw_the_data_they_are_given(tiny):
    view = page_data.budget_view(tiny["index"], PlanParams(keep=0.3), tiny["concepts"], tiny["cats"])
    per = view.per_concept
    pts = pd.DataFrame({"row_idx": np.arange(N), "cluster": tiny["clusters"], "x": np.arange(N, dtype=float),
                        "y": np.zeros(N)})
    keep = view.result.keep
    # the map coloured by kept: kept rows green, dropped red, drawn into one picture with a legend entry each
    rgb = charts.map_colours(pts, tiny["concepts"], "kept", keep)
    np.testing.assert_array_equal(rgb[keep], np.tile(charts._rgb(charts.KEPT), (int(keep.sum()), 1)))
    np.testing.assert_array_equal(rgb[~keep], np.tile(charts._rgb(charts.DROPPED), (int((~keep).sum()), 1)))
    picture = charts.map_picture(pts, tiny["concepts"], "kept", keep)
    assert picture[0].startswith("data:image/png;base64,")
    m = vega_charts.concept_map(pts, tiny["concepts"], "kept", picture)
    (image,) = m["datasets"]["picture"].itertuples()  # the picture spans the data range it was drawn for
    assert image.url == picture[0] and (image.x, image.x2, image.y2, image.y) == picture[1]
    assert list(m["datasets"]["legend"]["name"]) == ["dropped", "kept"]
    assert m["datasets"]["picked"].empty and len(m["datasets"]["centres"]) == tiny["concepts"]["x"].notna().sum()
    tagged = vega_charts.concept_map(pts, tiny["concepts"], "kept", picture, legend=("not tagged", "tagged a"))
    assert list(tagged["datasets"]["legend"]["name"]) == ["not tagged", "tagged a"]
    picked = vega_charts.concept_map(pts, tiny["concepts"], "concept", picture, pick=1)
    assert len(picked["datasets"]["picked"]) == int((tiny["clusters"] == 1).sum())
    assert "legend" not in picked["datasets"]  # only the datasets a layer reads
    # by complexity: the concept with the highest complexity gets the top of the scale
    cx = charts.map_colours(pts, tiny["concepts"], "complexity")
    top = int(tiny["concepts"]["complexity"].idxmax())
    np.testing.assert_array_equal(cx[tiny["clusters"] == tiny["concepts"].loc[top, "cluster"]][0],
                                  charts._lut("Viridis")[255])
    # per-concept bars: sorted least to most complex, heights = kept %; the baselines beside them
    bars = vega_charts.kept_per_concept(per, "dbp")["datasets"]
    order = per[per["eligible"] > 0].sort_values("complexity", kind="stable")
    np.testing.assert_allclose(bars["concepts"]["kept_pct"], order["kept_pct"])
    np.testing.assert_array_equal(bars["concepts"]["kept"], order["kept"])
    for method in ("SSP", "random"):
        line = bars["baselines"][bars["baselines"]["method"] == method]
        np.testing.assert_allclose(line["kept_pct"], order[f"{method.lower()}_pct"])
    assert set(vega_charts.kept_per_concept(per, "ssp")["datasets"]["baselines"]["method"]) == {"random"}
    # the dedup curve in percent, the current eps marked on it
    curve = pd.DataFrame({"eps": [0.0, 0.1, 0.2], "kept_fraction": [1.0, 0.7, 0.5]})
    dc = vega_charts.dedup_curve(curve, 0.05)["datasets"]
    np.testing.assert_allclose(dc["curve"]["left_pct"], [100.0, 70.0, 50.0])
    assert list(dc["now"]["eps"]) == [0.05] and list(dc["now"]["left_pct"]) == pytest.approx([85.0])
    # coverage: the plan's bars are each category's kept share
    cov = view.coverage[view.coverage["pool"] > 0]
    plan_bars = vega_charts.coverage_bars(view.coverage)["datasets"]["coverage"].query("method == 'this plan'")
    np.testing.assert_allclose(plan_bars["kept_pct"], cov["plan_pct"])
    cats = pd.DataFrame({"category": ["a", "b"], "pool": [3, 5]})
    assert list(vega_charts.category_bars(cats)["datasets"]["categories"]["pool"]) == [3, 5]
    diff = vega_charts.compare_diff(pd.DataFrame({"name": ["#1", "#2"], "diff": [4, -2]}))["datasets"]["concepts"]
    assert list(diff["diff"]) == [4, -2] and list(diff["more"]) == ["B", "A"]
    for spec in (m, tagged, picked, vega_charts.concept_map(pts, tiny["concepts"], "complexity", picture),
                 vega_charts.kept_per_concept(per, "dbp"), vega_charts.kept_per_concept(per, "random"),
                 vega_charts.dedup_curve(curve, 0.05), vega_charts.coverage_bars(view.coverage),
                 vega_charts.category_bars(cats),
                 vega_charts.compare_diff(pd.DataFrame({"name": ["#1"], "diff": [1]}))):
        vega_lite_valid(spec)
    # the Find page's map (Plotly, for its lasso): one picture under the concept centres, no WebGL
    fig = charts.concept_map(pts, tiny["concepts"], "concept", picture=picture, dragmode="lasso")
    assert len(fig.layout.images) == 1 and fig.layout.images[0].source == picture[0]
    assert all(t.type == "scatter" for t in fig.data)  # no WebGL: nothing for a GPU-less browser to emulate
    pio.to_json(fig, validate=False)


def vega_lite_valid(spec: dict) -> None:
    """Raise unless ``spec`` (its DataFrame datasets as rows) is valid against the Vega-Lite schema that
    Altair ships (Streamlit's dependency) and each of its datasets is read by a layer."""
    import jsonschema
    from altair.vegalite import schema

    # every table is read by a layer: Vega drops the others, and Streamlit then fails to update the chart
    assert set(spec["datasets"]) == {layer["data"]["name"] for layer in spec["layer"]}
    rows = {k: json.loads(v.to_json(orient="records")) for k, v in spec.get("datasets", {}).items()}
    jsonschema.validate({**spec, "datasets": rows}, schema.core.load_schema())


def test_complexity_charts_draw_the_data_they_are_given(tiny):
    """The Complexity page's Vega-Lite specs: one mark per concept at its numbers; the softmax targets
    drawn are exactly those the cap cut; every spec valid Vega-Lite."""
    view = page_data.budget_view(tiny["index"], PlanParams(keep=0.3), tiny["concepts"], tiny["cats"])
    per = view.per_concept[view.per_concept["eligible"] > 0]
    q = vega_charts.quota_vs_size(per, 0.1)
    dots = q["datasets"]["concepts"]
    np.testing.assert_array_equal(dots["eligible"], per["eligible"])
    np.testing.assert_array_equal(dots["quota"], per["quota"])
    assert list(dots["name"]) == [str(n) for n in per["name"]]
    assert q["title"]["text"] == "Quota against size at τ = 0.1"
    capped = per.assign(target=np.where(np.arange(len(per)) % 3 == 0, per["eligible"] + 5.0, per["eligible"] * 0.5))
    cut = vega_charts.quota_vs_size(capped, 0.1)["datasets"]["capped"]
    np.testing.assert_array_equal(cut["eligible"], capped["eligible"].to_numpy()[::3])
    np.testing.assert_allclose(cut["quota"], capped["target"].to_numpy()[::3])
    assert vega_charts.quota_vs_size(capped.assign(target=0.0), 0.1)["datasets"]["capped"].empty
    k = vega_charts.kept_vs_complexity(per, 30.0)
    np.testing.assert_allclose(k["datasets"]["concepts"]["kept_pct"], per["kept_pct"])
    assert list(k["datasets"]["ssp"]["kept_pct"]) == [30.0]  # the SSP line at the uniform rate
    ok = tiny["concepts"][tiny["concepts"]["complexity"].notna()]
    si = vega_charts.spread_isolation(tiny["concepts"])
    np.testing.assert_allclose(si["datasets"]["concepts"]["d_intra"], ok["d_intra"])
    np.testing.assert_allclose(si["datasets"]["concepts"]["d_inter"], ok["d_inter"])
    curves = si["datasets"]["curves"]  # equal complexity: d_intra * d_inter = C along each curve, inside the y range
    product = (curves["x"] * curves["y"]).groupby(curves["label"])
    assert len(product) == 3 and (product.max() - product.min()).max() < 1e-9
    np.testing.assert_allclose(product.first(), product.first().index.str.removeprefix("C=").astype(float), atol=0.005)
    assert curves["y"].max() <= ok["d_inter"].max() * 1.08
    h = vega_charts.complexity_histogram(tiny["concepts"])
    np.testing.assert_allclose(h["datasets"]["concepts"]["complexity"], ok["complexity"])
    empty = tiny["concepts"].assign(complexity=np.nan)
    for spec in (q, k, si, h, vega_charts.spread_isolation(empty), vega_charts.complexity_histogram(empty),
                 vega_charts.quota_vs_size(per.iloc[:0], 0.1), vega_charts.kept_vs_complexity(per.iloc[:0], 0.0)):
        vega_lite_valid(spec)
    with pytest.raises(jsonschema_error()):  # the check can fail: a mark Vega-Lite does not know
        vega_lite_valid({**q, "layer": [{**q["layer"][0], "mark": {"type": "blob"}}, *q["layer"][1:]]})


def jsonschema_error() -> type[Exception]:
    import jsonschema

    return jsonschema.ValidationError


# --- appbuild -------------------------------------------------------------------------------

def test_build_progress_moves_forward():
    logs = ["", "12:00 INFO some.module: [1/6] embedding 10 samples", "... other.name: [2/6] spherical k-means",
            "... x: [4/6] SemDeDup similarities"]
    text, fracs = "", []
    for line in logs:
        text += line + "\n"
        fracs.append(appbuild.build_progress(text, 0.0)[0])
        assert appbuild.build_progress(text, 1e6)[0] < 1.0
    assert fracs == sorted(fracs) and fracs[0] == 0.0 and len(set(fracs)) == len(fracs)
    assert appbuild.current_stage(text) == len(appbuild.STAGES) - 1
    assert appbuild.build_progress(text + "INFO anywhere: [done] workspace w: done", 0.0) == (1.0, "done")


def test_build_progress_follows_a_real_precompute_log(image_folder, tmp_path):
    """The markers the bar keys on are the lines precompute really logs, in order (whatever module logs them)."""
    from console import run_densprune

    out = run_densprune("precompute", image_folder, "--workspace", tmp_path / "ws", "--embedder", "offline",
                        "-k", "4", "--layout-rows", "100", timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    log = out.stderr
    markers = [marker for marker, *_ in appbuild.STAGES[1:]] + [appbuild.DONE_MARKER]
    positions = [log.find(marker) for marker in markers]
    assert -1 not in positions, f"markers missing from the log: {dict(zip(markers, positions))}\n{log[-2000:]}"
    assert positions == sorted(positions)
    fracs = [appbuild.build_progress(log[:p + len(m)], 0.0)[0] for p, m in zip(positions, markers)]
    assert fracs == sorted(fracs) and fracs[-1] == 1.0


def test_image_ext_from_magic_then_suffix():
    assert image_ext(b"\xff\xd8\xff\xe0rest", "x.png") == "jpg"
    assert image_ext(b"\x89PNG\r\n\x1a\n....", "") == "png"
    assert image_ext(b"<svg></svg>", "/a/b/c.SVG#k") == "svg"
    assert image_ext(b"", "") == "img"


# --- concept names and search -----------------------------------------------------------------

def test_concept_names_are_bounded_and_zero_shot_names_shown_with_similarity():
    assert page_data.concept_name(3, "x" * 200_000).startswith("#3 ")
    assert len(page_data.concept_name(3, "x" * 500)) <= 64
    assert page_data.concept_name(4, None) == "#4"
    assert page_data.zero_shot_name("tabby cat", 0.2734) == "tabby cat (0.27)"
    assert page_data.zero_shot_name(None, float("nan")) == ""


def test_search_concepts_by_name_zero_shot_name_or_caption_word():
    table = pd.DataFrame({"cluster": [0, 1, 2, 3], "name": ["#0 star, shapes", "#1 flag, europe", "#2 apple",
                                                              "#3 card"],
                          "zs_name": ["starfish (0.21)", "flagpole (0.30)", "Granny Smith (0.25)", ""]})
    hits = pd.DataFrame({"cluster": [3, 1], "matches": [7, 2]})  # captions containing the text
    got = page_data.search_concepts(table, hits, " FLAG ")
    assert got["cluster"].tolist() == [1, 3] and got["matches"].tolist() == [2, 7]
    assert got["name_match"].tolist() == [True, False]
    got = page_data.search_concepts(table, hits.iloc[:0], "granny")
    assert got["cluster"].tolist() == [2] and got["matches"].tolist() == [0]
    assert page_data.search_concepts(table, hits.iloc[:0], "zebra").empty


def test_grid_captions_are_cut_but_escaped():
    html_ = grid_html([Tile(webp(), "<b>" + "y" * 200_000)])
    assert "&lt;b&gt;" in html_ and "y" * 400 not in html_ and len(html_) < 5_000
