"""Curation in a real browser (Playwright + Debian chromium) on a copy of the demo: pick two tiles on
Concepts, tag them never, see the Budget page and the saved plan exclude them; drop a concept and see
it keep 0; two browser sessions and the CLI tagging at the same time lose nothing."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from app_server import artifacts_dir, chromium, require_chromium, served
from console import densprune_command, run_densprune
from test_browser import kept_value, screenshot, settle

from densprune import db
from densprune.prune import plans

pytestmark = [pytest.mark.browser, pytest.mark.slow]
require_chromium()
playwright_api = pytest.importorskip("playwright.sync_api", reason="the playwright python package is not installed")


@pytest.fixture(scope="module")
def ws(demo_workspace: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("curation") / "ws"
    shutil.copytree(demo_workspace, out, ignore=shutil.ignore_patterns("exports", ".work"))
    return out


@pytest.fixture(scope="module")
def app_url(ws: Path):
    with served(ws, "curation") as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    with chromium() as b:
        yield b


@pytest.fixture
def artifacts() -> Path:
    return artifacts_dir()


def open_concept(pg, url: str, concept: int) -> None:
    pg.goto(f"{url}/concepts")
    settle(pg)
    pg.get_by_role("combobox", name="Concept", exact=True).click()
    # the list is virtualised around the current pick (the largest concept, #28 on the demo), so #0 may
    # not be rendered: type to filter it, as a user would
    pg.keyboard.type(f"#{concept} ")
    pg.get_by_role("option").filter(has_text=f"#{concept} ").first.click()
    settle(pg)


def tag_tiles(pg, key_concept: int, tiles: list[int], name: str, action: str) -> None:
    """Pick ``tiles`` (their numbers) in the concept's grid, name the tag, choose the action, press Tag."""
    pills = pg.locator('[data-testid="stButtonGroup"]').filter(has=pg.get_by_role("button", name="1", exact=True))
    for t in tiles:
        pills.last.get_by_role("button", name=str(t), exact=True).click()
        settle(pg)
    form = pg.locator('[data-testid="stForm"]').filter(has=pg.get_by_text("Tag name"))
    form.get_by_role("textbox", name="Tag name").fill(name)
    form.get_by_text(action, exact=True).click()
    form.get_by_role("button", name=f"Tag the {len(tiles)} picked").click()
    # the click starts a script run only after the browser sends it, so settle() alone can return before
    # the tag is written: wait for what the page shows once it is (its toast) or for the error it shows
    done = pg.locator('[data-testid="stToast"]').filter(has_text=f"“{name}”")
    failed = pg.locator('[data-testid="stAlertContentError"]')
    done.or_(failed).first.wait_for(timeout=120_000)
    assert not failed.count(), f"tagging {name!r} failed: {failed.first.inner_text()}"
    settle(pg)


def test_tag_two_tiles_never_and_the_plan_excludes_them(ws, app_url, browser, artifacts):
    concept = 0
    pg = browser.new_page(viewport={"width": 1400, "height": 900})
    open_concept(pg, app_url, concept)
    tag_tiles(pg, concept, [1, 2], "junk", "never")
    screenshot(pg, artifacts / "concepts-tagged.png")
    tags = db.list_tags(ws).set_index("name")
    assert tags.loc["junk", "action"] == "never" and tags.loc["junk", "n_rows"] == 2
    from densprune.prune.plan_index import load_index

    rows = load_index(ws).members(concept, 2)  # tiles 1 and 2: its two images nearest the centre
    _, by_tag = db.tag_rows(ws)
    assert np.array_equal(np.sort(by_tag["junk"]), np.sort(rows))

    pg.goto(f"{app_url}/budget")
    settle(pg)
    # the decisions table: a data grid draws its cells (and their text) only once scrolled into view
    pg.get_by_text("in force:").first.scroll_into_view_if_needed()
    pg.locator('[data-testid="stDataFrame"]').filter(has_text="decision").last.scroll_into_view_if_needed()
    assert pg.get_by_text("tag junk (never)").count() >= 1
    kept = int(kept_value(pg).replace(",", ""))
    form = pg.locator('[data-testid="stForm"]').filter(has=pg.get_by_text("Plan name"))
    form.get_by_role("textbox", name="Plan name").fill("curated")
    form.get_by_role("button", name="Save plan").click()
    pg.get_by_text("Saved plan “curated”").first.wait_for(timeout=60_000)  # written, not merely clicked
    settle(pg)
    screenshot(pg, artifacts / "budget-decisions.png")
    row, keep = plans.load_plan(ws, "curated")
    assert row["decisions"] and not keep[rows].any() and int(keep.sum()) == kept

    open_concept(pg, app_url, concept)  # drop the concept: it keeps 0
    form = pg.locator('[data-testid="stForm"]').filter(has=pg.get_by_text("Rule for this concept"))
    box = form.get_by_role("combobox", name="Rule for this concept")
    box.click()
    box.fill("drop")  # the list filters to the typed text
    pg.get_by_role("option", name="drop", exact=True).click()
    form.get_by_role("button", name="Apply the rule").click()
    pg.get_by_text("Rule in force:").first.wait_for(timeout=60_000)  # the rerun after the rule is written
    settle(pg)
    metric = pg.locator('[data-testid="stMetric"]').filter(has=pg.get_by_text("Kept by the plan", exact=True))
    assert metric.locator('[data-testid="stMetricValue"]').inner_text().strip() == "0"
    assert pg.get_by_text("Rule in force: drop").count() == 1
    screenshot(pg, artifacts / "concepts-rule.png")
    pg.close()


def test_two_sessions_and_the_cli_tag_at_once(ws, app_url, browser):
    keys = db.query_df(ws, "SELECT key FROM samples ORDER BY row_idx LIMIT 500").key
    (ws.parent / "cli-keys.txt").write_text("\n".join(keys))
    a, b = (browser.new_page(viewport={"width": 1400, "height": 900}) for _ in range(2))
    open_concept(a, app_url, 1)
    open_concept(b, app_url, 2)
    cli = subprocess.Popen([str(densprune_command()), "tag", str(ws), "from-cli", "--action", "label", "--keys",
                            str(ws.parent / "cli-keys.txt")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    tag_tiles(a, 1, [3, 4], "from-a", "label")
    tag_tiles(b, 2, [5], "from-b", "always")
    _, err = cli.communicate(timeout=300)
    assert cli.returncode == 0, err[-2000:]
    tags = db.list_tags(ws).set_index("name")["n_rows"].to_dict()
    assert tags["from-a"] == 2 and tags["from-b"] == 1 and tags["from-cli"] == 500
    verify = run_densprune("verify", ws)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    a.close()
    b.close()
