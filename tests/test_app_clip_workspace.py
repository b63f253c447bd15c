"""The app on a workspace unlike the demo: open_clip vectors with CLIP scores, no categories, webdataset source.

The model is densprune-tiny with random weights (no weights can be downloaded here): the numbers mean
nothing, but every code path that only runs with CLIP scores (CLIP-score filter and method) is exercised.
"""

from __future__ import annotations

import pytest
from conftest import make_wds_shards
from test_app_pages import PAGES, as_int, metric, no_errors, open_app, plan_state

from densprune import db
from densprune.app import data as appdata
from densprune.embed.runner import EmbedSettings
from densprune.precompute import PrecomputeConfig, precompute
from densprune.prune import plans

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def clip_ws(tmp_path_factory):
    root = tmp_path_factory.mktemp("clipws")
    shards = make_wds_shards(root)
    ws = precompute(PrecomputeConfig(source=str(shards[0].parent), workspace=root / "ws", embedder="openclip",
                                     model="densprune-tiny", pretrained="none", clusters=3,
                                     embed=EmbedSettings(batch_size=8, workers=0)))
    assert db.load_meta(ws)["has_clip_scores"]
    return ws


@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders_with_clip_scores_and_no_categories(clip_ws, page):
    at = open_app(clip_ws, page)
    no_errors(at)
    assert at.title


def test_budget_clip_filter_and_method_work(clip_ws):
    index = plans.load_index(clip_ws)
    at = open_app(clip_ws, "budget")
    assert as_int(metric(at, "Eligible")) == index.pool_size
    at.toggle(key="plan_clip_on").set_value(True).run()
    at.slider(key="plan_clip_keep_pct").set_value(50).run()
    no_errors(at)
    filtered = index.compute(appdata.params_from_state(plan_state(at), db.load_meta(clip_ws)))
    assert as_int(metric(at, "Eligible")) == int(filtered.eligible.sum()) < index.pool_size
    at.selectbox(key="plan_method").set_value("clip-score").run()
    no_errors(at)
    params = appdata.params_from_state(plan_state(at), db.load_meta(clip_ws))
    assert params.method == "clip-score" and params.clip_keep == 0.5
    result = index.compute(params)
    assert as_int(metric(at, "Kept")) == result.n_kept
    # what the page shows is the top of the CLIP scores among the eligible rows
    cols = db.load_sample_arrays(clip_ws, ("clip_score", "split"))
    clip, pool = cols["clip_score"], cols["split"] == "pool"
    assert clip[result.keep].min() >= clip[pool & ~result.keep].max()
