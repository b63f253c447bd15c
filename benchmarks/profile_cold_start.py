"""Profile: what a fresh server and a fresh browser do before the first page is painted, event by event.

Each run starts the app's server as ``densprune app`` does (benchmarks/bench_cold_start.py, the same
command), launches a fresh headless Debian chromium once ``/_stcore/health`` answers (with
``--browser-first``: before the server starts; Playwright's driver starts first either way), and opens one page
by its URL. A MutationObserver in the page records when each thing first appears (the title, the data
grid and its canvas, the Plotly element and its drawn image, a metric), the page's own status says when
the script run is over, and the browser's responses say when each lazily loaded chunk of Streamlit's
frontend arrived. Every time is seconds from the server's start; the table has the median of each
event over ``--runs``.

    python benchmarks/profile_cold_start.py --workspace workspaces/ws-1m --page concepts --runs 5 \\
        --out benchmarks/results/cold_start_timeline_1m.md
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks"), str(ROOT / "tests")]  # this checkout

from _util import command_line, machine, publish, table  # noqa: E402
from app_server import CHROMIUM, CHROMIUM_ARGS, SETTLED_JS, free_port, stop_app  # noqa: E402
from bench_cold_start import DRAWN_JS, TITLES, app_command, checked_setup, wait_http  # noqa: E402

OBSERVE_JS = """
window.__seen = {};
const seen = (k) => { if (!(k in window.__seen)) window.__seen[k] = performance.now(); };
new MutationObserver(() => {
  const h = document.querySelector('h1');
  if (h && h.innerText.trim()) seen('title painted');
  if (document.querySelector('[data-testid="stDataFrame"]')) seen('data grid element');
  if (document.querySelector('[data-testid="stDataFrame"] canvas')) seen('data grid drawn');
  if (document.querySelector('.js-plotly-plot')) seen('Plotly element');
  if (document.querySelector('.js-plotly-plot image')) seen('Plotly map image drawn');
  if (document.querySelector('[data-testid="stVegaLiteChart"]')) seen('Vega-Lite element');
  if (document.querySelector('[data-testid="stVegaLiteChart"] canvas')) seen('Vega-Lite chart drawn');
  if (document.querySelector('[data-testid="stMetric"]')) seen('first metric');
}).observe(document, {subtree: true, childList: true});
"""
# Streamlit's lazily loaded chunks (embed: vega-embed)
CHUNKS = ("DataFrame", "PlotlyChart", "ArrowVegaLiteChart", "embed", "Metric", "ButtonGroup", "Selectbox")


def one_run(ws: Path, page_name: str, log: Path, browser_first: bool = False) -> dict[str, float]:
    """Seconds from the server's start to each event of one fresh server and browser (the browser
    launched once the server answers, or, with ``browser_first``, before the server starts)."""
    from playwright.sync_api import sync_playwright

    ev: dict[str, float] = {}
    t0 = 0.0

    def on_response(r) -> None:
        name = r.url.rsplit("/", 1)[-1]
        for chunk in CHUNKS:
            if name.startswith(chunk + ".") and name.endswith(".js"):
                ev.setdefault(f"chunk {chunk} received", time.perf_counter() - t0)

    with sync_playwright() as p:
        def launch():
            b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            pg = b.new_page(viewport={"width": 1400, "height": 900})
            pg.add_init_script(OBSERVE_JS)
            pg.on("response", on_response)
            return b, pg

        browser, page = launch() if browser_first else (None, None)
        port = free_port()
        t0 = time.perf_counter()
        with open(log, "wb") as out:
            proc = subprocess.Popen(app_command(ROOT, ws, port), cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        try:
            ev["HTTP answers"] = wait_http(f"http://127.0.0.1:{port}/_stcore/health", proc, t0, log)
            if browser is None:
                browser, page = launch()
                ev["chromium started"] = time.perf_counter() - t0
            t_nav = time.perf_counter()
            ev["page requested"] = t_nav - t0
            page.goto(f"http://127.0.0.1:{port}/{page_name}")
            page.wait_for_function(f"() => ({SETTLED_JS})() && !!document.querySelector('h1')", timeout=600_000,
                                   polling=10)
            ev["script run over (page status)"] = time.perf_counter() - t0
            page.wait_for_function(DRAWN_JS.get(page_name, "() => true"), timeout=600_000, polling=10)
            ev["page drawn (bench_cold_start's test)"] = time.perf_counter() - t0
            for k, v in page.evaluate("() => window.__seen").items():  # ms since the page's navigation
                ev[k] = t_nav - t0 + v / 1000
        finally:
            stop_app(proc)
            browser.close()
    return ev


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workspace", type=Path, required=True)
    ap.add_argument("--page", default="concepts", choices=sorted(TITLES))
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--browser-first", action="store_true",
                    help="launch the browser before the server starts, as bench_cold_start.py --browser-first")
    ap.add_argument("--out", type=Path, default=None, help="default benchmarks/results/cold_start_timeline.md")
    args = ap.parse_args(argv)
    ws, log = checked_setup(ap, args.workspace, "densprune-cold-profile")
    from densprune import db

    runs = [one_run(ws, args.page, log, args.browser_first) for _ in range(args.runs)]
    events = sorted({k for r in runs for k in r}, key=lambda k: statistics.median(r[k] for r in runs if k in r))
    rows = []
    for k in events:
        vals = [r[k] for r in runs if k in r]
        rows.append([k, f"{statistics.median(vals):.2f}", f"{min(vals):.2f}-{max(vals):.2f}",
                     f"{len(vals)}/{len(runs)}"])
    meta = db.load_meta(ws)
    text = (f"{ws.name}: {meta['n_samples']:,} rows, K={meta['k']}; /{args.page}, fresh server and fresh headless "
            f"chromium per run ({'launched before the server' if args.browser_first else 'launched once it answers'}), "
            f"{args.runs} runs; seconds from the server's start; 1-min load at the end "
            f"{os.getloadavg()[0]:.1f}\n\n" + table(["event", "median, s", "range, s", "runs seen"], rows))
    path = publish(text, args.out, "cold_start_timeline.md")
    path.with_suffix(".json").write_text(json.dumps({"command": command_line(), "machine": machine(),
                                                     "workspace": str(ws), "page": args.page, "runs": runs},
                                                    indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
