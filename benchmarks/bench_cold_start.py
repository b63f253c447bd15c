"""Benchmark: from server start to the first painted page, in a real browser, with and without the warm-up.

Each run starts a fresh server (``python -m densprune.app.serve run app.py ... -- --workspace WS``, as
``densprune app`` does) and, once its ``/_stcore/health`` answers, a fresh headless Debian chromium
(Playwright) that opens one page by its URL. Timed from the server's start:

- HTTP: ``/_stcore/health`` answers;
- painted: the page's title is shown, the script run is over, and what the page is about is drawn
  (Concepts: the concept table and the map; Budget: the Kept metric and its charts; Complexity:
  its charts; Overview: its metrics).

The two sides alternate run by run: ``warm-up`` (the server fills the first page's caches while it
starts: densprune.app.serve.warm_up_in_background) and ``no warm-up`` (``DENSPRUNE_NO_WARM_UP=1``:
the first session computes them). Both do the same work before the page is painted; only when.
Medians over ``--runs``; the table and a JSON file go to benchmarks/results/ (``--out``).

    python benchmarks/bench_cold_start.py --workspace workspaces/ws-1m --runs 5 --pages concepts budget \
        --out benchmarks/results/cold_start_1m.md
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks"), str(ROOT / "tests")]  # this checkout

from _util import command_line, machine, publish, table  # noqa: E402
from app_server import CHROMIUM, CHROMIUM_ARGS, SETTLED_JS, free_port, stop_app  # noqa: E402

TITLES = {"overview": "Overview", "concepts": "Concepts", "complexity": "Complexity", "budget": "Budget",
          "preview": "Preview", "export": "Export"}
# what each page is about, drawn (besides its title and a finished script run)
DRAWN_JS = {
    "concepts": "() => !!document.querySelector('[data-testid=\"stDataFrame\"]') "
                "&& !!document.querySelector('.js-plotly-plot .layer-below image, .js-plotly-plot image')",
    "budget": "() => [...document.querySelectorAll('[data-testid=\"stMetric\"]')]"
              ".some(e => e.innerText.startsWith('Kept')) && document.querySelectorAll('.js-plotly-plot').length > 0",
    "complexity": "() => document.querySelectorAll('.js-plotly-plot').length > 0",
    "overview": "() => document.querySelectorAll('[data-testid=\"stMetric\"]').length > 0",
}
TITLE_JS = "() => { const h = document.querySelector('h1'); return h ? h.innerText.trim() : null; }"


def one_run(ws: Path, page_name: str, warm: bool, log: Path) -> dict[str, float]:
    """Seconds from the server's start to HTTP and to the painted page (fresh server, fresh browser)."""
    from playwright.sync_api import sync_playwright

    port = free_port()
    env = dict(os.environ, DENSPRUNE_NO_WARM_UP="0" if warm else "1")
    t0 = time.perf_counter()
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "densprune.app.serve", "run", str(ROOT / "app.py"), "--server.headless", "true",
             "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
             "--server.fileWatcherType", "none", "--", "--workspace", str(ws)],
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.perf_counter() - t0 > 300:
                raise RuntimeError(f"the server did not start, see {log}")
            time.sleep(0.02)
        t_http = time.perf_counter() - t0
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(f"{url}/{page_name}")
            drawn = DRAWN_JS.get(page_name, "() => true")
            page.wait_for_function(f"(t) => ({TITLE_JS})() === t && ({SETTLED_JS})() && ({drawn})()",
                                   arg=TITLES[page_name], timeout=600_000, polling=10)
            t_paint = time.perf_counter() - t0
            browser.close()
    finally:
        stop_app(proc)
    return {"http_s": t_http, "painted_s": t_paint}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workspace", type=Path, required=True)
    ap.add_argument("--runs", type=int, default=5, help="runs per page and side (median)")
    ap.add_argument("--pages", nargs="+", default=["concepts", "budget"], choices=sorted(TITLES))
    ap.add_argument("--out", type=Path, default=None, help="default benchmarks/results/cold_start.md (+ .json)")
    args = ap.parse_args(argv)
    if not Path(CHROMIUM).exists():
        ap.error(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium)")
    from densprune import db

    ws = args.workspace.resolve()
    if not db.is_complete(ws):
        ap.error(f"no complete workspace at {ws}")
    log = Path(os.environ.get("TMPDIR", "/tmp")) / f"densprune-cold-start-{os.getpid()}.log"
    runs: dict[str, dict[str, list[dict[str, float]]]] = {pg: {"warm-up": [], "no warm-up": []} for pg in args.pages}
    for i in range(args.runs):
        for pg in args.pages:
            for side in (("warm-up", "no warm-up") if i % 2 == 0 else ("no warm-up", "warm-up")):
                r = one_run(ws, pg, side == "warm-up", log)
                runs[pg][side].append(r)
                print(f"run {i + 1} /{pg} {side}: HTTP {r['http_s']:.2f} s, painted {r['painted_s']:.2f} s",
                      flush=True)
    rows = []
    for pg, sides in runs.items():
        for side, rs in sides.items():
            http = statistics.median(r["http_s"] for r in rs)
            paint = [r["painted_s"] for r in rs]
            rows.append([f"/{pg}", side, f"{http:.2f}", f"{statistics.median(paint):.2f}",
                         f"{min(paint):.2f}-{max(paint):.2f}"])
        ratio = statistics.median(r["painted_s"] for r in sides["no warm-up"]) / statistics.median(
            r["painted_s"] for r in sides["warm-up"])
        rows.append([f"/{pg}", "no warm-up / warm-up", "", f"{ratio:.2f}x", ""])
    meta = db.load_meta(ws)
    load = os.getloadavg()[0]
    text = (f"{ws.name}: {meta['n_samples']:,} rows, K={meta['k']}; fresh server and fresh headless chromium per run, "
            f"{args.runs} runs per page and side, alternating; 1-min load at the end {load:.1f}\n\n"
            + table(["page", "server", "HTTP answers, s", "page painted, s (median)", "range, s"], rows))
    path = publish(text, args.out, "cold_start.md")
    path.with_suffix(".json").write_text(json.dumps({"command": command_line(), "machine": machine(),
                                                     "workspace": str(ws), "rows": meta["n_samples"],
                                                     "runs": runs}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
