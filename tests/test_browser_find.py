"""The Find page in a real browser (Playwright + Debian chromium) on a copy of the demo: draw a lasso on the
map, see the drawn images in the grid, tag them never and see the plan exclude them; caption words found,
then more like one of them."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from app_server import artifacts_dir, chromium, draw_lasso, require_chromium, served
from test_browser import screenshot, settle

from densprune import db
from densprune.prune.curation import tag_sources
from densprune.prune.plan_index import load_index
from densprune.prune.selection import PlanParams
from densprune.search import queries

pytestmark = [pytest.mark.browser, pytest.mark.slow]
require_chromium()
playwright_api = pytest.importorskip("playwright.sync_api", reason="the playwright python package is not installed")

# the lasso, as fractions of the map's plot area (x right, y down): a pentagon around its middle
LASSO = [(0.30, 0.30), (0.62, 0.25), (0.70, 0.55), (0.50, 0.75), (0.28, 0.60)]


@pytest.fixture(scope="module")
def ws(demo_workspace: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("find") / "ws"
    shutil.copytree(demo_workspace, out, ignore=shutil.ignore_patterns("exports", ".work"))
    return out


@pytest.fixture(scope="module")
def app_url(ws: Path):
    with served(ws, "find") as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    with chromium() as b:
        yield b


@pytest.fixture
def artifacts() -> Path:
    return artifacts_dir()


def metric_value(pg, label: str) -> int:
    m = pg.locator('[data-testid="stMetric"]').filter(has=pg.get_by_text(label, exact=True)).first
    m.wait_for(timeout=60_000)
    return int(m.locator('[data-testid="stMetricValue"]').inner_text().replace(",", ""))


def test_lasso_on_the_map_to_the_grid_to_a_never_tag(ws, app_url, browser, artifacts):
    pg = browser.new_page(viewport={"width": 1400, "height": 900})
    pg.goto(f"{app_url}/find")
    settle(pg)
    pg.get_by_role("radio", name="Draw on the map").click()
    settle(pg)
    screenshot(pg, artifacts / "find-map.png")
    draw_lasso(pg, LASSO)
    pg.get_by_text("The concepts they fall in").wait_for(timeout=60_000)
    settle(pg)
    found = metric_value(pg, "Found")
    assert found > 20
    tiles = pg.locator("img")
    assert tiles.count() >= min(found, 48)  # the drawn images are in the grid
    screenshot(pg, artifacts / "find-lasso.png")

    form = pg.locator('[data-testid="stForm"]').filter(has=pg.get_by_text("Tag name"))
    form.get_by_role("textbox", name="Tag name").fill("lassoed")
    form.get_by_text("never", exact=True).click()
    form.get_by_role("button", name=f"Tag the {found:,} drawn points").click()
    settle(pg)
    pg.wait_for_function("() => [...document.querySelectorAll('[data-testid=\"stMetricValue\"]')]"
                         ".some(e => e.innerText.trim() === '0')", timeout=60_000)
    assert metric_value(pg, "Kept by the plan") == 0  # never: the plan in force keeps none of them

    src = tag_sources(ws, "lassoed")
    assert src[0]["source_kind"] == "lasso" and src[0]["source"]["scope"] == "points"
    poly = src[0]["source"]["lasso"]  # the polygon the browser drew, in map coordinates
    pts = db.layout_sample(ws, 20_000)
    sel = queries.map_region(pts, db.load_clusters(ws)[["cluster", "x", "y"]], load_index(ws).sizes,
                             lasso=([p[0] for p in poly], [p[1] for p in poly]))
    _, by_tag = db.tag_rows(ws)
    np.testing.assert_array_equal(by_tag["lassoed"], sel.rows)
    assert sel.rows.size == found
    from densprune.prune.curation import load_decisions

    keep = load_index(ws).compute(PlanParams(keep=0.5), decisions=load_decisions(ws)).keep
    assert not keep[sel.rows].any()
    pg.close()


def test_caption_words_then_more_like_one(ws, app_url, browser, artifacts):
    pg = browser.new_page(viewport={"width": 1400, "height": 900})
    pg.goto(f"{app_url}/find?caption=cat")
    settle(pg)
    want = queries.caption_search(ws, "cat").total
    assert metric_value(pg, "Found") == want
    screenshot(pg, artifacts / "find-caption.png")
    first = queries.caption_search(ws, "cat").rows[0]
    pg.get_by_role("button", name="Find more like it").click()  # tile 1: the first caption match
    pg.get_by_text(f"more like row {first}").first.wait_for(timeout=60_000)
    settle(pg)
    assert metric_value(pg, "Found") == 100
    nearest = queries.nearest(ws, queries.like_vector(ws, int(first)), 1, kind="like", label="", provenance={},
                              exclude=np.array([first])).rows[0]
    pg.get_by_role("button", name="Find more like it").click()  # again, from the new results' first tile
    pg.get_by_text(f"more like row {nearest}").first.wait_for(timeout=60_000)
    settle(pg)
    assert pg.locator('[data-testid="stException"]').count() == 0
    screenshot(pg, artifacts / "find-like.png")
    pg.close()
