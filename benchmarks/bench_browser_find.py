"""Benchmark: the Find page in a real browser (issue "Find and select": a lasso to its grid under 1 s).

For each workspace: ``streamlit run app.py`` on it (a free local port), Debian's chromium driven by
Playwright, the Find page opened in its map mode and settled. Then ``--runs`` lassos, alternating two
polygons (so every lasso selects something new), each timed from the mouse release until the "Found"
metric shows the new count and the page has settled (the region computed on the server, the concept
table, the grid of the drawn images inside with kept / dropped under the current plan, all drawn);
then as many caption searches (two words alternating: Enter in the box -> the new count, settled) and
"Find more like it" presses (the first tile of the last results -> its 100 nearest images, settled).
No fixed sleeps anywhere.

The baseline is the same page and the same gestures on the first workspace given (the demo): the
ratio says how the gestures grow from it to the second (10M rows).

    python benchmarks/bench_browser_find.py --workspaces workspaces/demo workspaces/ws-10m --runs 7
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks"), str(ROOT / "tests")]  # this checkout

from _util import command_line, machine, publish, table  # noqa: E402
from app_server import CHROMIUM, CHROMIUM_ARGS, SETTLED_JS, draw_lasso, metric_js, start_app, stop_app  # noqa: E402

LASSOS = ([(0.30, 0.30), (0.62, 0.25), (0.70, 0.55), (0.50, 0.75), (0.28, 0.60)],
          [(0.60, 0.20), (0.90, 0.25), (0.85, 0.60), (0.62, 0.55)])  # each starts outside the other
FOUND = metric_js("Found")
LIKE_ROW = "() => { const m = document.body.innerText.match(/more like row (\\d+)/); return m ? m[1] : null; }"


def _until_changed(pg, before: str | None) -> None:
    pg.wait_for_function(f"(b) => {{ const v = ({FOUND})(); return v !== null && v !== b && ({SETTLED_JS})(); }}",
                         arg=before, timeout=120_000, polling=5)


def measure(url: str, runs: int, words: tuple[str, str]) -> dict[str, list[float]]:
    """ms per gesture: lasso, caption, like."""
    from playwright.sync_api import sync_playwright

    out: dict[str, list[float]] = {"lasso": [], "caption": [], "like": []}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        pg = browser.new_page(viewport={"width": 1400, "height": 900})
        pg.goto(f"{url}/find")
        pg.wait_for_function(SETTLED_JS, timeout=600_000)
        pg.wait_for_selector("h1", timeout=600_000)
        pg.get_by_role("radio", name="Draw on the map").click()
        pg.wait_for_function(SETTLED_JS, timeout=120_000)
        pg.locator('[data-testid="stPlotlyChart"] .nsewdrag').first.wait_for(timeout=120_000)
        for i in range(runs + 1):  # the first is a warm-up
            before = pg.evaluate(FOUND)
            pg.locator('[data-testid="stPlotlyChart"]').first.scroll_into_view_if_needed()
            draw_lasso(pg, LASSOS[i % 2])
            t0 = time.perf_counter()  # from the mouse release
            _until_changed(pg, before)
            if i:
                out["lasso"].append((time.perf_counter() - t0) * 1000)
        pg.get_by_role("radio", name="Caption words").click()
        pg.wait_for_function(SETTLED_JS, timeout=120_000)
        box = pg.get_by_role("textbox", name="Caption words")
        for i in range(runs + 1):
            before = pg.evaluate(FOUND)
            box.fill(words[i % 2])
            t0 = time.perf_counter()
            box.press("Enter")
            _until_changed(pg, before)
            if i:
                out["caption"].append((time.perf_counter() - t0) * 1000)
        for i in range(runs + 1):  # tile 1 each time: A -> its nearest B -> B's nearest (A or another)
            before = pg.evaluate(LIKE_ROW)
            t0 = time.perf_counter()
            pg.get_by_role("button", name="Find more like it").click()
            pg.wait_for_function(f"(b) => {{ const v = ({LIKE_ROW})(); return v !== null && v !== b && "
                                 f"({SETTLED_JS})(); }}", arg=before, timeout=120_000, polling=5)
            if i:
                out["like"].append((time.perf_counter() - t0) * 1000)
        browser.close()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workspaces", type=Path, nargs="+", required=True, help="baseline first (the demo)")
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--words", nargs=2, default=None, help="two caption words to alternate (default: per workspace)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    if not Path(CHROMIUM).exists():
        ap.error(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium)")
    from densprune import db

    results, names = {}, []
    for ws in args.workspaces:
        ws = ws.resolve()
        if not db.is_complete(ws):
            ap.error(f"no workspace at {ws}")
        meta = db.load_meta(ws)
        words = tuple(args.words) if args.words else (("cat", "flower") if meta["n_samples"] < 1_000_000
                                                      else ("szs", "szq"))
        log = Path(os.environ.get("TMPDIR", "/tmp")) / f"densprune-bench-find-{os.getpid()}.log"
        proc, url = start_app(ws, log, timeout_s=600)
        try:
            results[ws.name] = measure(url, args.runs, words)
        finally:
            stop_app(proc)
        names.append(f"{ws.name} ({meta['n_samples']:,} rows, K={meta['k']})")
    base = results[args.workspaces[0].resolve().name]
    rows = []
    for what, label in (("lasso", "lasso released -> its grid and concept list drawn"),
                        ("caption", "caption words, Enter -> the count, table and grid drawn"),
                        ("like", "\"Find more like it\" -> its 100 nearest drawn")):
        for i, ws in enumerate(args.workspaces):
            ts = results[ws.resolve().name][what]
            med = statistics.median(ts)
            ratio = "baseline" if i == 0 else f"{med / statistics.median(base[what]):.2f}x the baseline"
            rows.append([label, names[i], f"{med:.0f}", f"{min(ts):.0f}-{max(ts):.0f}", ratio])
    text = (f"Find page in chromium via Playwright, {args.runs} gestures each after one warm-up, no fixed sleeps:\n\n"
            + table(["gesture", "workspace", "median ms", "range ms", "vs"], rows))
    path = publish(text, args.out, "browser_find.md")
    path.with_suffix(".json").write_text(json.dumps({"command": command_line(), "machine": machine(),
                                                     "workspaces": names, "ms": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
