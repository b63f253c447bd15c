"""The app in a real browser: `streamlit run app.py` on a free port, driven by Playwright and chromium.

Visits every page, checks that nothing raised and that thumbnails decode, moves the budget slider with
the keyboard and checks the kept count follows, and saves a screenshot per page to
``$DENSPRUNE_ARTIFACTS`` (default ``artifacts/screenshots``, git-ignored).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from app_server import (
    CHARTS_DRAWN_JS,
    CHROMIUM,
    CHROMIUM_ARGS,
    KEPT_JS,
    artifacts_dir,
    require_chromium,
    served,
)

from densprune.prune import plans

PAGES = ["", "concepts", "find", "complexity", "budget", "preview", "export"] + ["train"]
WITH_THUMBS = {"concepts", "complexity", "preview"}

pytestmark = [pytest.mark.browser, pytest.mark.slow]
require_chromium()
playwright_api = pytest.importorskip("playwright.sync_api", reason="the playwright python package is not installed")


@pytest.fixture(scope="module")
def app_url(demo_workspace: Path):
    with served(demo_workspace, "streamlit") as url:
        yield url


@pytest.fixture(scope="module")
def page(app_url):
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        pg = browser.new_page(viewport={"width": 1400, "height": 900})
        yield pg
        browser.close()


@pytest.fixture(scope="module")
def artifacts() -> Path:
    return artifacts_dir()


def settle(pg, timeout_ms: int = 60_000) -> None:
    """Wait until the script run is over (stApp reports notRunning, no running indicator) and the
    page has a title."""
    pg.wait_for_selector('[data-testid="stApp"][data-test-script-state="notRunning"]', timeout=timeout_ms)
    pg.wait_for_selector("h1", timeout=timeout_ms)
    pg.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=timeout_ms)
    pg.wait_for_timeout(300)


def screenshot(pg, path: Path) -> None:
    """The whole page: the main area scrolls inside the window, so grow the window to its height."""
    h = pg.evaluate("() => document.querySelector('[data-testid=\"stMain\"]').scrollHeight")
    pg.set_viewport_size({"width": 1400, "height": max(900, min(int(h) + 20, 8000))})
    pg.wait_for_timeout(400)
    pg.screenshot(path=str(path))
    pg.set_viewport_size({"width": 1400, "height": 900})


def kept_value(pg) -> str:
    """The value of the metric labelled exactly "Kept" (not "Kept of the raw pool", not "Concepts kept
    whole"), waiting until it is drawn."""
    label = pg.locator('[data-testid="stMetricLabel"]').get_by_text("Kept", exact=True)
    return pg.locator('[data-testid="stMetric"]').filter(has=label).first \
        .locator('[data-testid="stMetricValue"]').inner_text()


def test_deep_link_is_the_first_request_of_a_fresh_server(page, app_url):
    """The server has run no script yet: a link straight to /concepts must open the Concepts page."""
    page.goto(f"{app_url}/concepts")
    settle(page)
    assert page.locator("h1").first.inner_text().strip() == "Concepts"
    assert page.url.rstrip("/").endswith("/concepts")
    assert page.locator('[data-testid="stException"]').count() == 0
    # no "Page not found" modal over it (what Streamlit shows when it runs in pages/-folder mode, e.g.
    # because an empty pages/ folder was left beside app.py)
    assert page.get_by_text("Page not found").count() == 0


@pytest.mark.parametrize("name", PAGES)
def test_page_renders(page, app_url, artifacts, name):
    t0 = time.perf_counter()
    page.goto(f"{app_url}/{name}")
    settle(page)
    print(f"{name or 'overview'} opened in {(time.perf_counter() - t0) * 1000:.0f} ms")
    errors = page.locator('[data-testid="stException"]')
    assert errors.count() == 0, errors.first.inner_text()
    if name in WITH_THUMBS:
        page.wait_for_selector(".dp-grid img", state="attached", timeout=15_000)
        imgs = page.locator(".dp-grid img")
        assert imgs.count() > 0
        imgs.last.scroll_into_view_if_needed()
        page.wait_for_function("() => [...document.querySelectorAll('.dp-grid img')].every(i => i.complete)",
                               timeout=15_000)
        widths = page.eval_on_selector_all(".dp-grid img", "els => els.map(e => e.naturalWidth)")
        assert widths and min(widths) > 0, f"{sum(w == 0 for w in widths)} thumbnails did not load"
    screenshot(page, artifacts / f"{name or 'overview'}.png")


def test_concept_map_is_drawn_names_its_concepts_and_zooms(page, app_url, artifacts):
    """The Concepts page's map (Vega-Lite on a canvas): drawn, a concept centre under the pointer shows
    its name and numbers in a tooltip, and the wheel zooms the picture and the centres together."""
    page.goto(f"{app_url}/concepts")
    settle(page)
    page.wait_for_function(CHARTS_DRAWN_JS, timeout=30_000)
    canvas = page.locator('[data-testid="stVegaLiteChart"] canvas').first
    canvas.scroll_into_view_if_needed()
    page.wait_for_timeout(300)
    box = canvas.bounding_box()
    before = canvas.screenshot()
    tooltip = None
    for y in range(int(box["y"]) + 10, int(box["y"] + box["height"]) - 10, 9):  # pass the pointer over the map
        for x in range(int(box["x"]) + 10, int(box["x"] + box["width"]) - 10, 9):
            page.mouse.move(x, y)
            if page.evaluate("() => !!document.querySelector('#vg-tooltip-element.visible')"):
                tooltip = page.locator("#vg-tooltip-element").inner_text()
                break
        if tooltip:
            break
    assert tooltip and "concept" in tooltip and "images" in tooltip and "complexity" in tooltip, tooltip
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.wheel(0, -400)
    page.wait_for_timeout(500)
    page.mouse.move(box["x"] + 2, box["y"] + 2)  # no tooltip in the picture
    page.wait_for_timeout(200)
    assert canvas.screenshot() != before, "the wheel did not zoom the map"
    screenshot(page, artifacts / "concepts-map-zoomed.png")


def test_concept_map_redraws_in_every_colouring(page, app_url, artifacts):
    """Each colouring (concept, complexity, kept by the plan: different layers and tables) and another
    picked concept redraw the map, with no error in the page's scripts."""
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{app_url}/concepts")
    settle(page)
    page.wait_for_function(CHARTS_DRAWN_JS, timeout=30_000)

    def drawing() -> bytes:
        canvas = page.locator('[data-testid="stVegaLiteChart"] canvas').first
        canvas.scroll_into_view_if_needed()
        return canvas.screenshot()

    def redrawn(before: bytes) -> bytes:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            page.wait_for_timeout(300)
            try:
                if page.evaluate(CHARTS_DRAWN_JS) and (now := drawing()) != before:
                    return now
            except playwright_api.Error:  # the chart was replaced while it was read (a new colouring's element)
                continue
        raise AssertionError(f"the map was not redrawn; page errors: {errors}")

    shown = drawing()
    buttons = page.locator('[data-testid="stButtonGroup"] button')
    for colour in ("complexity", "kept by the plan", "concept"):
        buttons.filter(has_text=colour).first.click()
        shown = redrawn(shown)
        assert not errors, errors
    page.locator('[data-testid="stSelectbox"]').filter(has_text="Concept").first.click()
    page.get_by_role("option").nth(3).click()  # another concept: the same layers, other outlined points
    redrawn(shown)
    assert not errors, errors
    screenshot(page, artifacts / "concepts-map-recoloured.png")


def test_budget_slider_moves_the_kept_count(page, app_url, artifacts):
    page.goto(f"{app_url}/budget")
    settle(page)
    before = kept_value(page)
    slider = page.get_by_role("slider").first  # "Keep (% of the pool)"
    slider.focus()
    t0 = time.perf_counter()
    for _ in range(10):
        slider.press("ArrowLeft")
    page.wait_for_function(f"(before) => ({KEPT_JS})() !== null && ({KEPT_JS})() !== before", arg=before,
                           timeout=15_000)
    settle(page)
    elapsed = time.perf_counter() - t0
    after = kept_value(page)
    assert int(after.replace(",", "")) < int(before.replace(",", "")), (before, after)
    print(f"kept {before} -> {after} in {elapsed * 1000:.0f} ms (10 key presses, browser round trips included)")
    screenshot(page, artifacts / "budget-after-slider.png")


def test_two_sessions_are_independent(app_url, page, demo_workspace):
    """A second browser session keeps its own budget while the first one moves the slider and saves."""
    other = page.context.browser.new_context(viewport={"width": 1400, "height": 900}).new_page()
    name = f"browser-{os.getpid()}-{int(time.time())}"
    try:
        other.goto(f"{app_url}/budget")
        settle(other)
        page.goto(f"{app_url}/budget")
        settle(page)
        before = kept_value(other)
        slider = page.get_by_role("slider").first
        slider.focus()
        for _ in range(5):
            slider.press("ArrowRight")
        page.wait_for_function(f"(before) => ({KEPT_JS})() !== null && ({KEPT_JS})() !== before", arg=before,
                               timeout=15_000)
        settle(page)
        page.get_by_role("textbox", name="Plan name").fill(name)
        page.get_by_role("button", name="Save plan").click()
        page.wait_for_selector(f"text=Saved plan “{name}”", timeout=30_000)
        other.reload()
        settle(other)
        assert kept_value(other) == before
        assert other.locator('[data-testid="stException"]').count() == 0
    finally:
        other.context.close()
        if name in set(plans.list_plans(demo_workspace)["name"]):
            plans.delete_plan(demo_workspace, name)
