"""Benchmark: the Find page in a real browser (issue "Find and select": a lasso to its grid under 1 s).

For each workspace: ``streamlit run app.py`` on it (a free local port), Debian's chromium driven by
Playwright, the Find page opened in its map mode and settled. Then ``--runs`` lassos, alternating two
polygons moved a little each time (so every lasso selects something new and nothing comes from a cache),
each timed from the mouse release until the page names the new selection and has settled (the region
computed on the server, the concept table, the grid of the drawn images inside with kept / dropped under
the current plan, all drawn); then as many caption searches (a different frequent word each time: Enter
in the box -> the new count, settled) and "Find more like it" presses (a tile of the last results not
asked before -> its 100 nearest images, settled). No fixed sleeps anywhere. Before the server starts the
workspace's vector file is read once, so that the page cache holds it (as after a running app's first
queries; bench_search.py measures in the same state): the first reads of a cold cache are not timed.

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
from app_server import CHROMIUM, CHROMIUM_ARGS, SETTLED_JS, draw_lasso, start_app, stop_app  # noqa: E402

LASSOS = ([(0.20, 0.30), (0.45, 0.25), (0.50, 0.55), (0.35, 0.75), (0.18, 0.60)],
          [(0.60, 0.20), (0.90, 0.25), (0.85, 0.60), (0.62, 0.55)])  # left and right halves: neither holds the other


def lasso(i: int) -> list[tuple[float, float]]:
    """The i-th lasso: the left or right one (alternating, so each starts outside the last), moved a little
    each time, so that no two select the same points (nothing is answered from a cache)."""
    dx, dy = 0.012 * (i // 2), 0.008 * (i // 2)
    return [(x + dx, y + dy) for x, y in LASSOS[i % 2]]


# what the page says it found: the line under the metrics ("3,214 of the 8,121 drawn points; ...",
# "captions containing 'cat' · caption match", "more like row 17 · exact over ...")
SAID = """() => { const c = [...document.querySelectorAll('[data-testid="stCaptionContainer"]')]
                   .map(e => e.innerText).find(t => / · (map|caption match|exact over|approximate)/.test(t));
                 return c === undefined ? null : c; }"""


def _until_changed(pg, before: str | None) -> None:
    pg.wait_for_function(f"(b) => {{ const v = ({SAID})(); return v !== null && v !== b && ({SETTLED_JS})(); }}",
                         arg=before, timeout=120_000, polling=5)


def measure(url: str, runs: int, words: list[str]) -> dict[str, list[float]]:
    """ms per gesture: lasso, caption (``words``: runs + 1 different ones), like."""
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
            before = pg.evaluate(SAID)
            pg.locator('[data-testid="stPlotlyChart"]').first.scroll_into_view_if_needed()
            draw_lasso(pg, lasso(i))
            t0 = time.perf_counter()  # from the mouse release
            _until_changed(pg, before)
            if i:
                out["lasso"].append((time.perf_counter() - t0) * 1000)
        pg.get_by_role("radio", name="Caption words").click()
        pg.wait_for_function(SETTLED_JS, timeout=120_000)
        box = pg.get_by_role("textbox", name="Caption words")
        for i in range(runs + 1):
            before = pg.evaluate(SAID)
            box.fill(words[i])
            t0 = time.perf_counter()
            box.press("Enter")
            _until_changed(pg, before)
            if i:
                out["caption"].append((time.perf_counter() - t0) * 1000)
        seen = set()
        for i in range(runs + 1):  # each time the first tile of the last results not asked before
            before = pg.evaluate(SAID)
            box = pg.get_by_role("combobox", name="More like tile")
            box.click()
            box.press("ArrowDown")  # opens the list (it shows the first few of its options)
            pg.get_by_role("option").first.wait_for(timeout=60_000)
            options = pg.get_by_role("option").all_inner_texts()
            pick = next(o for o in options if int(o.split("row ")[1].rstrip(")")) not in seen)
            seen.add(int(pick.split("row ")[1].rstrip(")")))
            pg.get_by_role("option", name=pick, exact=True).click()
            pg.wait_for_function(SETTLED_JS, timeout=120_000)
            t0 = time.perf_counter()
            pg.get_by_role("button", name="Find more like it").click()
            _until_changed(pg, before)
            if i:
                out["like"].append((time.perf_counter() - t0) * 1000)
        browser.close()
    return out


def caption_words(ws: Path, n: int) -> list[str]:
    """The ``n`` most frequent caption words (3+ letters) of a sample of 2,000 captions: each searched once."""
    from densprune import db

    sample = db.query_df(ws, "SELECT caption FROM samples USING SAMPLE 2000 ROWS (reservoir, 7)")["caption"].dropna()
    counts = sample.str.lower().str.findall(r"[a-z]{3,}").explode().value_counts()
    return list(counts.index[:n])


def read_vectors(ws: Path) -> float:
    """Read the workspace's image vectors once (as a running app's earlier queries would have): the page
    cache then holds them, the state benchmarks/bench_search.py measures in. Returns the seconds it took."""
    from densprune.workspace import image_vectors

    t = time.perf_counter()
    with open(image_vectors(ws), "rb", buffering=0) as f:
        buf = bytearray(64 << 20)
        while f.readinto(buf):
            pass
    return time.perf_counter() - t


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workspaces", type=Path, nargs="+", required=True, help="baseline first (the demo)")
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--words", nargs="+", default=None,
                    help="runs + 1 different caption words (default: the workspace's most frequent words)")
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
        words = args.words or caption_words(ws, args.runs + 1)
        warm = read_vectors(ws)
        log = Path(os.environ.get("TMPDIR", "/tmp")) / f"densprune-bench-find-{os.getpid()}.log"
        proc, url = start_app(ws, log, timeout_s=600)
        try:
            results[ws.name] = measure(url, args.runs, words)
        finally:
            stop_app(proc)
        names.append(f"{ws.name} ({meta['n_samples']:,} rows, K={meta['k']}; vectors read in {warm:.1f} s first)")
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
