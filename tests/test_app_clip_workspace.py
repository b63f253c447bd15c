"""The app on a workspace unlike the demo: open_clip vectors with CLIP scores, no categories, webdataset source.

The model is densprune-tiny with random weights (no weights can be downloaded here): the numbers mean
nothing, but every code path that only runs with CLIP scores (CLIP-score filter and method) is exercised.
"""

from __future__ import annotations

import pytest
from conftest import make_wds_shards
from test_app_pages import PAGES, as_int, metric, no_errors, open_app, plan_state

from densprune import db
from densprune.app import page_data
from densprune.embed.runner import EmbedSettings
from densprune.pipeline.config import PrecomputeConfig
from densprune.pipeline.precompute import precompute
from densprune.prune import plan_index

pytestmark = pytest.mark.slow
VOCAB = ("red circle", "green square", "blue circle", "yellow square", "teapot")


@pytest.fixture(scope="module")
def clip_ws(tmp_path_factory):
    root = tmp_path_factory.mktemp("clipws")
    shards = make_wds_shards(root)
    (root / "vocab.txt").write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    ws = precompute(PrecomputeConfig(source=str(shards[0].parent), workspace=root / "ws", embedder="openclip",
                                     model="densprune-tiny", pretrained="none", clusters=3,
                                     label_vocabulary=str(root / "vocab.txt"),
                                     embed=EmbedSettings(batch_size=8, workers=0)))
    assert db.load_meta(ws)["has_clip_scores"]
    return ws


@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders_with_clip_scores_and_no_categories(clip_ws, page):
    at = open_app(clip_ws, page)
    no_errors(at)
    assert at.title


def test_budget_clip_filter_and_method_work(clip_ws):
    index = plan_index.load_index(clip_ws)
    at = open_app(clip_ws, "budget")
    assert as_int(metric(at, "Eligible")) == index.pool_size
    at.toggle(key="plan_clip_on").set_value(True).run()
    at.slider(key="plan_clip_keep_pct").set_value(50).run()
    no_errors(at)
    filtered = index.compute(page_data.params_from_state(plan_state(at), db.load_meta(clip_ws)))
    assert as_int(metric(at, "Eligible")) == int(filtered.eligible.sum()) < index.pool_size
    at.selectbox(key="plan_method").set_value("clip-score").run()
    no_errors(at)
    params = page_data.params_from_state(plan_state(at), db.load_meta(clip_ws))
    assert params.method == "clip-score" and params.clip_keep == 0.5
    result = index.compute(params)
    assert as_int(metric(at, "Kept")) == result.n_kept
    # what the page shows is the top of the CLIP scores among the eligible rows
    cols = db.load_sample_arrays(clip_ws, ("clip_score", "split"))
    clip, pool = cols["clip_score"], cols["split"] == "pool"
    assert clip[result.keep].min() >= clip[pool & ~result.keep].max()


def test_zero_shot_names_are_the_nearest_vocabulary_entries(clip_ws):
    """The clusters table holds, per concept, the entry nearest its centroid and that similarity."""
    import numpy as np

    from densprune.cluster.zeroshot import zero_shot_names
    from densprune.embed.models import OpenClipEmbedder

    cl = db.load_clusters(clip_ws)
    meta = db.load_meta(clip_ws)
    assert meta["zero_shot_vocabulary"] == "vocab.txt" and meta["zero_shot_vocabulary_size"] == len(VOCAB)
    emb = OpenClipEmbedder(model="densprune-tiny", pretrained="none", device="cpu", seed=meta["seed"])
    names, sims = zero_shot_names(np.load(clip_ws / "centroids.npy"), emb.embed_vocabulary(VOCAB), VOCAB)
    assert cl["zs_label"].tolist() == names
    np.testing.assert_allclose(cl["zs_similarity"].to_numpy(), sims, atol=1e-5)


def test_concepts_page_shows_both_names_and_finds_zero_shot_names(clip_ws):
    from densprune.app import page_data

    cl = db.load_clusters(clip_ws)
    at = open_app(clip_ws, "concepts")
    no_errors(at)
    table = at.dataframe[0].value
    expected = [page_data.zero_shot_name(lab, sim) for lab, sim in zip(cl["zs_label"], cl["zs_similarity"])]
    assert table["zs_name"].tolist() == expected
    assert page_data.label_sources(db.load_meta(clip_ws)) in [c.value for c in at.caption]
    assert "Zero-shot names" in page_data.label_sources(db.load_meta(clip_ws))
    target = cl["zs_label"].iloc[0]
    at.text_input(key="concepts_search").input(target.upper()).run()
    no_errors(at)
    found = at.dataframe[0].value
    assert sorted(found["name"]) == sorted(page_data.concept_name(c, lab) for c, lab, z in
                                           zip(cl["cluster"], cl["label"], cl["zs_label"])
                                           if target in z or target.casefold() in (lab or "").casefold()
                                           or _caption_has(clip_ws, c, target))
    pick = int(at.selectbox(key="concepts_pick").value)
    assert any(m.value.startswith("Zero-shot name: **") for m in at.markdown)
    assert cl.set_index("cluster").loc[pick, "zs_label"] == target or _caption_has(clip_ws, pick, target)


def _caption_has(ws, cluster: int, text: str) -> bool:
    return bool(db.query_df(ws, "SELECT count(*) AS n FROM samples WHERE cluster = ? AND caption ILIKE ?",
                            [int(cluster), f"%{text}%"])["n"].iloc[0])


def test_recluster_names_the_new_concepts_from_the_kept_vocabulary(clip_ws, tmp_path):
    """precompute keeps the vocabulary's text embeddings; `recluster` names its new concepts with them."""
    import shutil

    import numpy as np

    from densprune.cluster.zeroshot import load_saved_vocabulary, zero_shot_names
    from densprune.embed.models import OpenClipEmbedder
    from densprune.pipeline.recluster import recluster

    vocab, vectors = load_saved_vocabulary(clip_ws / "embeddings")
    assert vocab.entries == VOCAB and vocab.source == "vocab.txt"
    emb = OpenClipEmbedder(model="densprune-tiny", pretrained="none", device="cpu", seed=db.load_meta(clip_ws)["seed"])
    np.testing.assert_allclose(vectors, emb.embed_vocabulary(VOCAB), atol=1e-5)
    ws = shutil.copytree(clip_ws, tmp_path / "ws")
    recluster(ws, 0.2, clusters=2, drop_plans=True)
    cl = db.load_clusters(ws)
    names, sims = zero_shot_names(np.load(ws / "centroids.npy"), vectors, VOCAB)
    assert len(cl) == 2 and cl["zs_label"].tolist() == names
    np.testing.assert_allclose(cl["zs_similarity"].to_numpy(), sims, atol=1e-6)
