"""Benchmark: the Budget page in a real browser, from one key press on the keep slider to the new count.

Starts ``streamlit run app.py`` on the demo workspace (a free local port), drives Debian's chromium
with Playwright, opens the Budget page and waits until it has settled. Then, ``--runs`` times, it
presses one arrow key on the "Keep" slider (alternating left and right, so the budget moves by 1%
each time) and measures, with no fixed sleep anywhere:

- until the "Kept" metric shows the new count (what the user sees change), and
- until the whole page has settled (the script run is over and Streamlit's running indicator gone).

Both include Streamlit's own slider debounce, the websocket round trip, the script rerun (plan,
random and SSP at the same budget, tables, figures) and the browser drawing.

With ``--page-rounds R`` it then opens every page from the sidebar, R rounds over the pages, each
timed from the click until the page's title is shown and the page has settled (the server's plan
index is built by then; the first round is each page's first open in this server, with its
current plan not computed yet where no earlier page computed it; later rounds find Streamlit's
caches warm). Medians are written, headed by the command, to benchmarks/results/browser.md (``--out``).

With ``--decisions RULES TAGGED`` the workspace first gets that many concept rules and tagged rows
(benchmarks/bench_decisions.py's mix; removed again at the end), so the slider moves a plan that obeys them.

    python benchmarks/bench_browser.py [--workspace DIR] [--runs 15] [--page-rounds 4] [--out FILE]
    python benchmarks/bench_browser.py --workspace workspaces/ws-10m --decisions 500 1000000 --runs 10
    python benchmarks/bench_browser.py --workspace workspaces/ws-10m --page-rounds 3 --baseline /tmp/base

With ``--baseline DIR`` another checkout's app is measured the same way, a fresh server and browser
per side, the sides alternating (``--alternations``), and each figure is given for both with their ratio.
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

from _util import command_line, machine, publish, table
from app_server import CHARTS_DRAWN_JS, CHROMIUM, CHROMIUM_ARGS, KEPT_JS, SETTLED_JS, start_app, stop_app

PAGE_TITLES = ["Overview", "Concepts", "Complexity", "Budget", "Preview", "Export"]
TITLE_JS = """() => { const h = document.querySelector('h1'); return h ? h.innerText.trim() : null; }"""


def open_pages(page, rounds: int) -> dict[str, list[float]]:
    """ms from a click on each page's sidebar link to its title shown, the page settled and each of its
    charts drawn, per round."""
    out: dict[str, list[float]] = {t: [] for t in PAGE_TITLES}
    nav = page.locator('[data-testid="stSidebarNav"]')
    for _ in range(rounds):
        for title in PAGE_TITLES:
            link = nav.get_by_role("link", name=title, exact=True)
            t0 = time.perf_counter()
            link.click()
            page.wait_for_function(f"(t) => ({TITLE_JS})() === t && ({SETTLED_JS})() && ({CHARTS_DRAWN_JS})()",
                                   arg=title, timeout=120_000, polling=5)
            out[title].append((time.perf_counter() - t0) * 1000)
    return out


def measure(url: str, runs: int, page_rounds: int = 0,
            expect: str | None = None) -> tuple[list[float], list[float], str, str, dict]:
    """(ms to the new Kept count, ms to a settled page) per key press; first and last Kept values;
    and the page-open times of :func:`open_pages` (empty without ``page_rounds``). ``expect``: a text the
    Budget page must show before the first and after the last key press (that the decisions are in force)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        t0 = time.perf_counter()
        page.goto(f"{url}/budget")
        page.wait_for_function(f"() => ({SETTLED_JS})() && ({KEPT_JS})() !== null", timeout=600_000)
        opens: dict[str, list[float]] = {"cold": [(time.perf_counter() - t0) * 1000]}
        if expect is not None and page.get_by_text(expect).count() == 0:
            raise RuntimeError(f"the Budget page does not show {expect!r}: the benchmark would not time what it says")
        slider = page.get_by_role("slider").first  # "Keep (% of the remaining pool)"
        slider.focus()
        first = page.evaluate(KEPT_JS)
        to_count, to_settled = [], []
        for i in range(runs):
            before = page.evaluate(KEPT_JS)
            t0 = time.perf_counter()
            slider.press("ArrowLeft" if i % 2 == 0 else "ArrowRight")
            page.wait_for_function(f"(b) => ({KEPT_JS})() !== b", arg=before, timeout=60_000, polling=5)
            t1 = time.perf_counter()
            page.wait_for_function(SETTLED_JS, timeout=60_000, polling=5)
            t2 = time.perf_counter()
            to_count.append((t1 - t0) * 1000)
            to_settled.append((t2 - t0) * 1000)
        last = page.evaluate(KEPT_JS)
        if expect is not None and page.get_by_text(expect).count() == 0:
            raise RuntimeError(f"after the key presses the Budget page no longer shows {expect!r}")
        if page_rounds:
            opens.update(open_pages(page, page_rounds))
        browser.close()
    return to_count, to_settled, first, last, opens


def _cell(ts: list[float]) -> list[str]:
    """median and range of one side's times, ms"""
    if not ts:
        return ["", ""]
    return [f"{statistics.median(ts):.0f}", f"{min(ts):.0f}-{max(ts):.0f}" if len(ts) > 1 else ""]


def result_rows(sides: dict[str, dict[str, list[float]]]) -> list[list[str]]:
    """One row per measured event: each side's median and range (ms), and, with two sides, the second's
    median over the first's. ``sides``: side name -> event -> times (ms), events in the same order."""
    names = list(sides)
    rows = []
    for event in sides[names[0]]:
        cells = [c for n in names for c in _cell(sides[n].get(event, []))]
        if len(names) == 2 and sides[names[1]].get(event):
            a, b = (statistics.median(sides[n][event]) for n in names)
            cells.append(f"{b / a:.2f}x")
        rows.append([event, *cells])
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workspace", type=Path, default=None, help="demo workspace (default: densprune's demo path)")
    ap.add_argument("--runs", type=int, default=15, help="key presses to time (median)")
    ap.add_argument("--page-rounds", type=int, default=0, help="rounds of opening every page from the sidebar")
    ap.add_argument("--out", type=Path, default=None, help="result file (default: benchmarks/results/browser.md)")
    ap.add_argument("--decisions", type=int, nargs=2, metavar=("RULES", "TAGGED"), default=None,
                    help="give the workspace RULES concept rules and TAGGED tagged rows first (removed at the end)")
    ap.add_argument("--baseline", type=Path, default=None,
                    help="another checkout (e.g. a git worktree of the previous commit) measured the same way, "
                         "its server and browser alternating with this checkout's")
    ap.add_argument("--alternations", type=int, default=None,
                    help="fresh servers per side (default 1, or 2 with --baseline), run alternately")
    args = ap.parse_args(argv)
    if not Path(CHROMIUM).exists():
        ap.error(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium)")
    if args.baseline is not None and not (args.baseline / "app.py").is_file():
        ap.error(f"--baseline {args.baseline} holds no app.py: give a checkout of densprune")
    from densprune import db
    from densprune.workspace import default_demo_workspace

    ws = (args.workspace or default_demo_workspace()).resolve()
    if not db.is_complete(ws):
        ap.error(f"no workspace at {ws}: build it with `densprune demo --no-app --workspace {ws}`")
    log = Path(os.environ.get("TMPDIR", "/tmp")) / f"densprune-bench-browser-{os.getpid()}.log"
    roots = {"this checkout": ROOT} | ({"baseline": args.baseline.resolve()} if args.baseline else {})
    alternations = args.alternations or (2 if args.baseline else 1)
    dec = None
    if args.decisions:
        from bench_decisions import make_decisions, write_decisions

        from densprune.prune.plan_index import load_index

        dec = make_decisions(load_index(ws), *args.decisions)
        write_decisions(ws, dec)
    sides: dict[str, dict[str, list[float]]] = {name: {} for name in roots}
    kept = []
    try:
        for _ in range(alternations):
            for name, root in roots.items():
                proc, url = start_app(ws, log, root=root)
                try:
                    to_count, to_settled, first, last, opens = measure(
                        url, args.runs, args.page_rounds,
                        expect="images kept by force" if dec is not None else None)
                finally:
                    stop_app(proc)
                kept.append((first, last))
                got = sides[name]
                got.setdefault("open /budget on the freshly started server (its plan index read from the workspace, "
                               "or built when missing)", []).extend(opens.pop("cold"))
                got.setdefault("key press -> the new Kept count is shown", []).extend(to_count)
                got.setdefault("key press -> the page has settled (script run over)", []).extend(to_settled)
                for title, ts in opens.items():
                    got.setdefault(f"open {title} from the sidebar: first time in this server", []).append(ts[0])
                    if len(ts) > 1:
                        got.setdefault(f"open {title} from the sidebar: again (rounds 2-{len(ts)})", []).extend(ts[1:])
    finally:
        if dec is not None:
            from bench_decisions import remove_decisions

            remove_decisions(ws, dec)
    meta = db.load_meta(ws)
    head = ["what"] + [c for n in roots for c in (f"{n}: median ms", "range ms")]
    if len(roots) == 2:
        head.append("baseline / this checkout")
    text = (f"Budget page of {ws.name} ({meta['n_samples']:,} rows, K={meta['k']}) in chromium via Playwright: one "
            f"arrow key on the keep slider, {args.runs} presses per server (Kept {kept[0][0]} at the start, "
            f"{kept[-1][1]} at the end)"
            + (f"; then every page opened from the sidebar, {args.page_rounds} rounds, each timed until its title "
               "is shown, the script run is over and each of its charts is drawn" if args.page_rounds else "")
            + (f"; with decisions in force: {len(dec.rules)} concept rules, {dec.rows('never').size:,} rows tagged "
               f"never, {dec.rows('always').size:,} always" if dec is not None else "")
            + f". {alternations} fresh server(s) and browser(s) per side"
            + (f", this checkout and the baseline ({args.baseline}) alternating" if args.baseline else "") + "\n\n"
            + table(head, result_rows(sides)))
    path = publish(text, args.out, "browser.md")
    path.with_suffix(".json").write_text(json.dumps({
        "command": command_line(), "machine": machine(), "workspace": str(ws), "rows": meta["n_samples"],
        "baseline": str(args.baseline or ""), "sides": sides}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
