"""Search: exact top-k against brute force, the concept-probe approximation, map regions, the text
tower a workspace's meta names (a randomly initialised densprune-tiny open_clip model, built here),
and the ``search`` / ``tag --text --like`` commands as a user types them, bad input included."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from console import run_densprune

from densprune import db
from densprune.embed.models import WeightsUnavailable
from densprune.prune import plan_index
from densprune.prune.curation import load_decisions
from densprune.prune.selection import PlanParams
from densprune.search import queries
from densprune.search.regions import check_polygon, in_box, in_polygon
from densprune.search.similarity import normalise, probe_concepts, top_k
from densprune.workspace import image_vectors, text_vectors


def brute(vectors: np.ndarray, q: np.ndarray, k: int, rows: np.ndarray | None = None, exclude=()) -> tuple:
    rows = np.arange(len(vectors)) if rows is None else rows
    s = np.asarray(vectors[rows], dtype=np.float64) @ normalise(q).astype(np.float64).T  # (M, Q)
    out_r, out_s = [], []
    for i in range(s.shape[1]):
        ok = ~np.isin(rows, np.asarray(exclude, dtype=np.int64))
        r, v = rows[ok], s[ok, i]
        o = np.lexsort((r, -v))[:k]
        out_r.append(r[o])
        out_s.append(v[o])
    return np.array(out_r), np.array(out_s)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("block", [7, 64, 10_000])
def test_top_k_is_exact(dtype, block):
    rng = np.random.default_rng(0)
    v = normalise(rng.normal(size=(500, 24))).astype(dtype)
    q = rng.normal(size=(3, 24))
    rows, sims = top_k(v, q, 10, block=block)
    ref_r, ref_s = brute(v, q, 10)
    np.testing.assert_array_equal(rows, ref_r)
    np.testing.assert_allclose(sims, ref_s, atol=1e-5)  # float32 re-scored, not float16
    sub = np.sort(rng.choice(500, 120, replace=False))
    rows, sims = top_k(v, q, 15, rows=sub, block=block, exclude=sub[:5])
    ref_r, _ = brute(v, q, 15, rows=sub, exclude=sub[:5])
    np.testing.assert_array_equal(rows, ref_r)
    assert not np.isin(rows, sub[:5]).any()


def test_top_k_edges():
    v = normalise(np.eye(4, 8)).astype(np.float32)
    rows, sims = top_k(v, v[1], 10, exclude=np.array([1]))  # fewer rows than k, the seed left out
    assert rows.shape == (1, 3) and 1 not in rows
    v2 = np.repeat(v[:1], 5, axis=0)  # equal similarities come by row
    assert top_k(v2, v2[0], 3)[0].tolist() == [[0, 1, 2]]
    with pytest.raises(ValueError, match="dimensions"):
        top_k(v, np.ones(3), 2)
    with pytest.raises(ValueError, match="zero"):
        top_k(v, np.zeros(8), 2)


def test_probe_concepts_nearest_first():
    c = normalise(np.array([[1, 0], [0, 1], [-1, 0], [0.7, 0.7]]))
    assert probe_concepts(c, np.array([1.0, 0.1]), 2).tolist() == [[0, 3]]
    assert probe_concepts(c, np.array([1.0, 0.1]), 99).shape == (1, 4)


def test_regions():
    sq = check_polygon([0, 2, 2, 0], [0, 0, 2, 2])
    x, y = np.array([1, 3, 0.5, 1.999]), np.array([1, 1, 1.5, 0.001])
    assert in_polygon(x, y, sq).tolist() == [True, False, True, True]
    ell = check_polygon([0, 2, 2, 1, 1, 0], [0, 0, 1, 1, 2, 2])  # an L: its notch is outside
    assert in_polygon(np.array([0.5, 1.5, 1.5]), np.array([1.5, 0.5, 1.5]), ell).tolist() == [True, True, False]
    assert in_box(x, y, (2, 0), (0, 2)).tolist() == [True, False, True, True]
    for bad in (([0, 1], [0, 1]), ([0, 1, np.nan], [0, 1, 2]), ([0, 1, 2], [0, 1])):
        with pytest.raises(ValueError):
            check_polygon(*bad)


def test_map_region_counts_points_and_centres():
    pts = pd.DataFrame({"row_idx": [10, 11, 12, 13], "cluster": [0, 0, 1, 2], "x": [0.5, 1.5, 0.2, 5], "y": [0.5] * 4})
    centres = pd.DataFrame({"cluster": [0, 1, 2], "x": [1.0, 8.0, 5.0], "y": [0.5, 0.5, 0.5]})
    sel = queries.map_region(pts, centres, np.array([100, 40, 7]), lasso=([0, 2, 2, 0], [0, 0, 1, 1]))
    assert sel.rows.tolist() == [10, 11, 12]
    assert sel.total == 100  # only concept 0 has its centre inside
    assert sel.concepts[["cluster", "hits", "centre_inside"]].values.tolist() == [[0, 2, True], [1, 1, False]]
    assert sel.label.startswith("3 of the 4 drawn points; their 2 concepts hold 140 images")
    assert json.loads(sel.source())["lasso"][1] == [2.0, 0.0]
    box = queries.map_region(pts, centres, np.array([100, 40, 7]), box=((4, 6), (0, 1)))
    assert box.rows.tolist() == [13] and box.kind == "box" and box.total == 7


def test_nearest_on_the_demo_exact_and_approximate(demo_workspace):
    ws = demo_workspace
    vec = queries.like_vector(ws, 5)
    exact = queries.nearest(ws, vec, 50, kind="like", label="row 5", provenance={"row": 5}, exclude=np.array([5]))
    v = np.load(image_vectors(ws), mmap_mode="r")
    ref_r, _ = brute(v, vec, 50, exclude=[5])
    np.testing.assert_array_equal(exact.rows, ref_r[0])
    index = plan_index.load_index(ws)
    assert exact.concepts["hits"].sum() == 50
    assert set(exact.concepts["cluster"]) == set(index.clusters_of(exact.rows))
    approx = queries.nearest(ws, vec, 50, kind="like", label="row 5", provenance={"row": 5}, exact=False,
                             exclude=np.array([5]))
    assert approx.method.startswith("approximate") and approx.searched < exact.searched
    cand, p = queries._candidates(index, vec, index.n_rows, 50)
    probed = set(probe_concepts(index.centroids, vec, index.n_clusters)[0][:p])  # the p concepts nearest it
    assert set(index.clusters_of(approx.rows)) <= probed and approx.searched == cand.size
    assert cand.size >= 20 * 50  # at least 20 k rows are read
    # every exact neighbour inside the probed concepts is found, in the same order
    inside = exact.rows[np.isin(exact.rows, cand)]
    np.testing.assert_array_equal(approx.rows[:inside.size], inside)
    few = queries.nearest(ws, vec, 50, kind="like", label="", provenance={}, min_similarity=float(exact.similarity[9]))
    assert few.rows.size >= 10 and (few.similarity >= exact.similarity[9]).all()


def test_caption_search_counts_per_concept(demo_workspace):
    sel = queries.caption_search(demo_workspace, "CAT")
    caps = db.query_df(demo_workspace, "SELECT row_idx, cluster, caption FROM samples ORDER BY row_idx")
    want = caps[caps["caption"].str.lower().str.contains("cat", regex=False)]
    assert sel.rows.tolist() == want["row_idx"].tolist() and sel.total == len(want)
    per = want.groupby("cluster").size()
    assert dict(zip(sel.concepts["cluster"], sel.concepts["hits"])) == per.to_dict()
    assert queries.caption_search(demo_workspace, "50%_off").total == 0  # literal, not a pattern


def test_no_text_tower_says_why(demo_workspace):
    with pytest.raises(queries.NoTextTower, match="offline embedder.*caption search"):
        queries.text_vector(demo_workspace, "a penguin")
    with pytest.raises(queries.NoTextTower, match="does not know"):
        queries.text_tower_settings({"embedder": "released", "model": "my_vectors", "image_dim": 384})
    assert queries.text_tower_settings({"embedder": "released", "model": "clip-retrieval", "image_dim": 512}) == \
        {"model": "ViT-B-32", "pretrained": "openai", "weights": None, "seed": 0}


def test_released_tower_without_weights_is_a_clear_error(monkeypatch):
    from densprune.embed import models

    monkeypatch.setattr(models, "_hub_reachable", lambda *a, **k: False)  # the hub cannot be reached from here
    meta = {"embedder": "released", "model": "b32_img", "image_dim": 512}
    with pytest.raises(WeightsUnavailable, match="caption search"):
        queries.text_vector("unused", "a dog", meta=meta)
    with pytest.raises(WeightsUnavailable):  # remembered: no second wait for the hub
        queries.text_vector("unused", "a dog", meta=meta)


def test_bad_queries(demo_workspace):
    for bad in ("", "   ", "x" * 100_000):
        with pytest.raises(ValueError, match="empty|characters"):
            queries.check_query_text(bad)
    for bad in (-1, 10**9, True, 2.5):
        with pytest.raises(ValueError, match="no row"):
            queries.like_vector(demo_workspace, bad)
    with pytest.raises(ValueError, match="k"):
        queries.nearest(demo_workspace, queries.like_vector(demo_workspace, 0), 0, kind="like", label="",
                        provenance={})


# -- a workspace with a text tower: densprune-tiny open_clip, random weights (seeded), unique captions ---------


def test_text_tower_is_the_workspaces_own(tiny_ws):
    caps = db.query_df(tiny_ws, "SELECT row_idx, caption FROM samples ORDER BY row_idx")
    stored = np.load(text_vectors(tiny_ws))
    for r in caps.itertuples():  # the query tower, rebuilt from meta (model, pretrained none, seed) ...
        v = queries.text_vector(tiny_ws, r.caption)
        assert float(v @ normalise(stored[r.row_idx])[0]) > 0.999  # ... is the tower that embedded the captions


def test_a_caption_finds_its_own_image(matched_ws):
    caps = db.query_df(matched_ws, "SELECT row_idx, caption FROM samples ORDER BY row_idx")
    for r in caps.itertuples():
        sel = queries.nearest(matched_ws, queries.text_vector(matched_ws, r.caption), 5, kind="text",
                              label=r.caption, provenance={"text": r.caption})
        assert sel.rows[0] == r.row_idx and sel.similarity[0] > 0.999


def test_search_and_tag_commands(matched_ws):
    ws = matched_ws
    caps = db.query_df(ws, "SELECT row_idx, caption FROM samples ORDER BY row_idx")
    target = caps.iloc[7]
    out = run_densprune("search", ws, "--text", target.caption, "-k", "3", "--json")
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert got["kind"] == "text" and got["rows"][0] == target.row_idx and len(got["rows"]) == 3
    assert got["method"].startswith("exact") and got["similarity"][0] > 0.999
    human = run_densprune("search", ws, "--like", str(target.row_idx), "-k", "4")
    assert human.returncode == 0 and "4 images nearest like row" in human.stdout
    assert f"row {target.row_idx:>10}" not in human.stdout  # the seed is not its own neighbour

    tag = run_densprune("tag", ws, "nope", "--action", "never", "--text", target.caption, "-k", "2")
    assert tag.returncode == 0, tag.stderr
    prov = json.loads(run_densprune("tags", ws, "nope", "--json").stdout)
    assert prov[0]["source_kind"] == "text" and prov[0]["source"]["text"] == target.caption
    assert prov[0]["source"]["k"] == 2 and prov[0]["n_rows"] == 2
    _, rows = db.tag_rows(ws)
    assert target.row_idx in rows["nope"]
    index = plan_index.load_index(ws)
    dec = load_decisions(ws)
    keep = index.compute(PlanParams(keep=0.5), decisions=dec).keep
    assert not keep[rows["nope"]].any()

    sim = run_densprune("tag", ws, "alike", "--action", "label", "--like", str(target.row_idx), "--min-sim", "0.9")
    assert sim.returncode == 0, sim.stderr
    assert json.loads(run_densprune("tags", ws, "alike", "--json").stdout)[0]["source"]["row"] == int(target.row_idx)


def test_bad_input_writes_nothing(demo_workspace, tmp_path):
    ws = tmp_path / "ws"
    shutil.copytree(demo_workspace, ws)
    before = db.decision_log(ws)
    cases = [
        (("search", ws, "--text", ""), "empty"),
        (("search", ws, "--caption", "y" * 100_000), "characters"),
        (("search", ws, "--like", "123456789"), "no row 123456789"),
        (("search", ws, "--like", "3", "-k", "0"), "k \\(results\\)"),
        (("tag", ws, "t", "--action", "never", "--text", "a penguin", "-k", "5"), "no text tower"),
        (("tag", ws, "t", "--action", "never", "--like", "-4", "-k", "5"), "no row -4"),
        (("tag", ws, "t", "--action", "never", "--like", "4"), "-k N"),
    ]
    for args, message in cases:
        out = run_densprune(*args)
        assert out.returncode == 2, (args, out.stdout, out.stderr)
        assert pd.Series([out.stderr]).str.contains(message).all(), (args, out.stderr)
    fallback = run_densprune("search", ws, "--text", "penguin", "--json")
    assert fallback.returncode == 0 and "caption search" in fallback.stderr
    assert json.loads(fallback.stdout)["kind"] == "caption"
    assert len(db.decision_log(ws)) == len(before) and db.list_tags(ws).empty
