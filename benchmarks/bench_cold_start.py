"""Benchmark: from server start to the first painted page, in a real browser, with and without the warm-up.

Each run starts a fresh server (``python -m densprune.app.serve run app.py ... -- --workspace WS``, as
``densprune app`` does) and, once its ``/_stcore/health`` answers, a fresh headless Debian chromium
(Playwright) that opens one page by its URL. Timed from the server's start:

- HTTP: ``/_stcore/health`` answers;
- painted: the page's title is shown, the script run is over, and what the page is about is drawn
  (Concepts: the concept table and the map; Budget: the Kept metric and its charts; Complexity:
  its charts; Overview: its metrics).

With ``--baseline DIR`` (another checkout, such as a git worktree of the previous commit) that
code's app runs as a third side, its servers started from DIR. The sides take turns run by run:
``warm-up`` (the server fills the first page's caches while it starts:
densprune.app.serve.warm_up_in_background) and ``no warm-up`` (``DENSPRUNE_NO_WARM_UP=1``: the first
session computes them). Both do the same work before the page is painted; only when.
With ``--atlas EXE`` (the ``embedding-atlas`` command, installed apart) Embedding Atlas runs beside
them on the same rows: a parquet of the workspace's samples with x/y per row (a row of the map's
sample at its own place, any other row near its concept's centre on the map), served by
``embedding-atlas FILE --x x --y y --text caption``, timed to its table and its histograms with the
row count shown (its embedding view needs WebGPU, which headless chromium lacks: it draws no map).
With ``--floor``, data-free Streamlit apps are timed the same way each run (a title alone; a title, a
10-row table and a chart with an image, the elements of the first page, once as a Plotly figure, as the
map was drawn before, and once as a Vega-Lite chart, as it is now): what any Streamlit page costs on
this machine before densprune does anything.
With ``--browser-first`` each run's fresh chromium is launched (a blank page open) before the server
starts, as for a user whose browser is already open: the browser's own start no longer counts, on
every side alike. Playwright's driver is started before the server either way (it is not the
browser's cost). Medians over ``--runs``; the table and a JSON file go to benchmarks/results/ (``--out``).

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
from app_server import CHROMIUM, CHROMIUM_ARGS, SETTLED_JS, checkout_env, free_port, stop_app  # noqa: E402

TITLES = {"overview": "Overview", "concepts": "Concepts", "complexity": "Complexity", "budget": "Budget",
          "preview": "Preview", "export": "Export"}
# what each page is about, drawn (besides its title and a finished script run); a chart is Plotly's
# (the code before the pages moved to Vega-Lite, e.g. a --baseline checkout) or Vega-Lite's drawn canvas
MAP_DRAWN = ("document.querySelector('.js-plotly-plot .layer-below image, .js-plotly-plot image, "
             "[data-testid=\"stVegaLiteChart\"] canvas')")
CHART_DRAWN = "document.querySelector('.js-plotly-plot, [data-testid=\"stVegaLiteChart\"] canvas')"
DRAWN_JS = {
    "concepts": f"() => !!document.querySelector('[data-testid=\"stDataFrame\"]') && !!{MAP_DRAWN}",
    "budget": "() => [...document.querySelectorAll('[data-testid=\"stMetric\"]')]"
              f".some(e => e.innerText.startsWith('Kept')) && !!{CHART_DRAWN}",
    "complexity": f"() => !!{CHART_DRAWN}",
    "overview": "() => document.querySelectorAll('[data-testid=\"stMetric\"]').length > 0",
}
TITLE_JS = "() => { const h = document.querySelector('h1'); return h ? h.innerText.trim() : null; }"


def one_run(ws: Path, page_name: str, side: str, log: Path, baseline: Path | None = None,
            browser_first: bool = False) -> dict[str, float]:
    """Seconds from the server's start to HTTP and to the painted page (fresh server, fresh browser).
    ``side``: "warm-up", "no warm-up", or "baseline" (the checkout ``baseline``'s code, with its warm-up)."""
    root = baseline if side == "baseline" else ROOT
    env = checkout_env(root, DENSPRUNE_NO_WARM_UP="1" if side == "no warm-up" else "0")
    return serve_and_paint(lambda port: app_command(root, ws, port), env, page_name, TITLES[page_name],
                           DRAWN_JS.get(page_name, "() => true"), log, cwd=root, browser_first=browser_first)


def app_command(root: Path, ws: Path, port: int) -> list[str]:
    """The checkout ``root``'s app on workspace ``ws`` and ``port``, served as ``densprune app`` serves it."""
    return [sys.executable, "-m", "densprune.app.serve", "run", str(root / "app.py"), *streamlit_flags(port),
            "--", "--workspace", str(ws)]


def checked_setup(ap: argparse.ArgumentParser, workspace: Path, stem: str) -> tuple[Path, Path]:
    """(the workspace resolved, a log file named ``stem``) once chromium and a complete workspace are there;
    else the parser's error."""
    if not Path(CHROMIUM).exists():
        ap.error(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium)")
    from densprune import db

    ws = workspace.resolve()
    if not db.is_complete(ws):
        ap.error(f"no complete workspace at {ws}")
    return ws, Path(os.environ.get("TMPDIR", "/tmp")) / f"{stem}-{os.getpid()}.log"


def streamlit_flags(port: int) -> list[str]:
    return ["--server.headless", "true", "--server.port", str(port), "--server.address", "127.0.0.1",
            "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"]


# Streamlit's own floor on this machine: the same fresh server and browser, apps with no data at all
FLOOR_APPS = {
    "bare Streamlit: a title": (
        "import streamlit as st\nst.set_page_config(page_title='Concepts', layout='wide')\nst.title('Concepts')\n",
        "() => true"),
    "bare Streamlit: a title, a 10-row table, a Plotly figure with an image (the first page's elements)": (
        "import base64, io\nimport numpy as np, pandas as pd, plotly.graph_objects as go, streamlit as st\n"
        "from PIL import Image\n"
        "st.set_page_config(page_title='Concepts', layout='wide')\nst.title('Concepts')\n"
        "st.dataframe(pd.DataFrame({'concept': range(10), 'size': range(10)}))\n"
        "buf = io.BytesIO(); Image.new('RGB', (64, 64), (200, 100, 50)).save(buf, 'PNG')\n"
        "fig = go.Figure(go.Scatter(x=[0, 1], y=[0, 1], mode='markers'))\n"
        "fig.add_layout_image(source='data:image/png;base64,' + base64.b64encode(buf.getvalue()).decode(), "
        "xref='x', yref='y', x=0, y=1, sizex=1, sizey=1, layer='below')\n"
        "st.plotly_chart(fig)\n",
        DRAWN_JS["concepts"]),
    "bare Streamlit: a title, a 10-row table, a Vega-Lite chart with an image (the first page's elements now)": (
        "import base64, io\nimport pandas as pd, streamlit as st\nfrom PIL import Image\n"
        "st.set_page_config(page_title='Concepts', layout='wide')\nst.title('Concepts')\n"
        "st.dataframe(pd.DataFrame({'concept': range(10), 'size': range(10)}))\n"
        "buf = io.BytesIO(); Image.new('RGB', (64, 64), (200, 100, 50)).save(buf, 'PNG')\n"
        "url = 'data:image/png;base64,' + base64.b64encode(buf.getvalue()).decode()\n"
        "q = lambda f: {'field': f, 'type': 'quantitative'}\n"
        "st.vega_lite_chart(spec={'height': 430, 'width': 'container', "
        "'usermeta': {'embedOptions': {'renderer': 'canvas'}}, 'datasets': {"
        "'img': pd.DataFrame({'x': [0.0], 'x2': [1.0], 'y': [1.0], 'y2': [0.0], 'url': [url]}), "
        "'pts': pd.DataFrame({'x': [0.0, 1.0], 'y': [0.0, 1.0]})}, 'layer': ["
        "{'data': {'name': 'img'}, 'mark': {'type': 'image', 'aspect': False}, 'encoding': {'x': q('x'), "
        "'x2': {'field': 'x2'}, 'y': q('y'), 'y2': {'field': 'y2'}, 'url': {'field': 'url', 'type': 'nominal'}}}, "
        "{'data': {'name': 'pts'}, 'mark': 'point', 'encoding': {'x': q('x'), 'y': q('y')}}]}, width='stretch')\n",
        DRAWN_JS["concepts"]),
}


def floor_run(source: str, drawn: str, log: Path, browser_first: bool = False) -> dict[str, float]:
    """A data-free Streamlit app (FLOOR_APPS), served and painted like densprune's pages."""
    app = log.with_name(f"floor-{abs(hash(source)) % 10**8}.py")
    app.write_text(source)
    return serve_and_paint(lambda port: [sys.executable, "-m", "streamlit", "run", str(app), *streamlit_flags(port)],
                           dict(os.environ), "", "Concepts", drawn, log, browser_first=browser_first)


def serve_and_paint(cmd, env: dict, path: str, title: str, drawn: str, log: Path,
                    cwd: Path = ROOT, browser_first: bool = False) -> dict[str, float]:
    """Start the server ``cmd(port)`` on a free port; once it answers, open ``/path`` in a fresh headless chromium
    and wait until the title ``title`` is shown, the script run is over and ``drawn`` holds. Seconds from
    the start to HTTP and to that paint (see :func:`timed_paint` for ``browser_first``)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    return timed_paint(lambda out: subprocess.Popen(cmd(port), cwd=cwd, stdout=out, stderr=subprocess.STDOUT, env=env),
                       f"{url}/_stcore/health", f"{url}/{path}",
                       f"(t) => ({TITLE_JS})() === t && ({SETTLED_JS})() && ({drawn})()", title, log, browser_first)


def timed_paint(start, health: str, page_url: str, painted_js: str, arg, log: Path,
                browser_first: bool = False) -> dict[str, float]:
    """Seconds from ``start(log file)`` (the server's process) until ``health`` answers and until
    ``painted_js(arg)`` holds on ``page_url`` in a fresh headless chromium. The browser is launched once
    the server answers, so its own start counts; with ``browser_first`` it is launched (and a blank page
    opened) before the server starts, as for a user whose browser is already open, and only the page's
    request and drawing count."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = page = None
        if browser_first:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 900})
        t0 = time.perf_counter()
        with open(log, "wb") as out:
            proc = start(out)
        try:
            t_http = wait_http(health, proc, t0, log)
            if browser is None:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(page_url)
            page.wait_for_function(painted_js, arg=arg, timeout=600_000, polling=10)
            t_paint = time.perf_counter() - t0
        finally:
            stop_app(proc)
            browser.close()
    return {"http_s": t_http, "painted_s": t_paint}


ATLAS_DRAWN_JS = """(n) => document.body.innerText.includes(n + ' / ' + n + ' points')
                          && document.querySelectorAll('[role=row], tr').length > 1
                          && document.querySelectorAll('svg').length > 10"""


def atlas_parquet(ws: Path, out: Path) -> Path:
    """The workspace's samples as Embedding Atlas reads them, x/y per row (see the module docstring)."""
    import duckdb

    if out.exists():
        return out
    con = duckdb.connect(str(ws / "densprune.duckdb"), read_only=True)
    try:
        con.execute(f"""COPY (
          WITH centres AS (SELECT cluster, avg(x) AS cx, avg(y) AS cy, stddev_pop(x) AS sx, stddev_pop(y) AS sy
                           FROM layout GROUP BY cluster)
          SELECT s.row_idx, s.caption, s.cluster, s.clip_score, s.dist_to_centroid,
                 coalesce(l.x, c.cx + coalesce(c.sx, 0.1) * (((hash(s.row_idx) % 2001) / 1000.0) - 1.0)) AS x,
                 coalesce(l.y, c.cy + coalesce(c.sy, 0.1) * (((hash(s.row_idx * 7 + 1) % 2001) / 1000.0) - 1.0)) AS y
          FROM samples s LEFT JOIN layout l USING (row_idx) LEFT JOIN centres c ON c.cluster = s.cluster
        ) TO '{out}' (FORMAT parquet)""")
    finally:
        con.close()
    return out


def atlas_run(exe: str, data: Path, n_rows: int, log: Path, browser_first: bool = False) -> dict[str, float]:
    """Seconds from Embedding Atlas's start to HTTP and to its table and histograms with the row count."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    cmd = [exe, str(data), "--x", "x", "--y", "y", "--text", "caption", "--host", "127.0.0.1", "--port", str(port),
           "--no-auto-port"]
    return timed_paint(lambda out: subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT), url, url,
                       ATLAS_DRAWN_JS, f"{n_rows:,}", log, browser_first)


def wait_http(url: str, proc: subprocess.Popen, t0: float, log: Path) -> float:
    """Seconds since ``t0`` until ``url`` answers 200."""
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return time.perf_counter() - t0
        except OSError:
            pass
        if proc.poll() is not None or time.perf_counter() - t0 > 300:
            raise RuntimeError(f"the server did not start, see {log}")
        time.sleep(0.02)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workspace", type=Path, required=True)
    ap.add_argument("--runs", type=int, default=5, help="runs per page and side (median)")
    ap.add_argument("--pages", nargs="+", default=["concepts", "budget"], choices=sorted(TITLES))
    ap.add_argument("--baseline", type=Path, default=None,
                    help="another checkout of densprune (e.g. a git worktree of the previous commit): its app runs "
                         "as a third side, on the same rows, interleaved")
    ap.add_argument("--atlas", default=None, help="the embedding-atlas command: run it beside densprune")
    ap.add_argument("--floor", action="store_true",
                    help="also time data-free Streamlit apps the same way: the floor of any Streamlit page here")
    ap.add_argument("--browser-first", action="store_true",
                    help="launch each run's fresh chromium before its server starts (a user's browser is already "
                         "open): only the page's request and drawing count, not the browser's own start")
    ap.add_argument("--out", type=Path, default=None, help="default benchmarks/results/cold_start.md (+ .json)")
    args = ap.parse_args(argv)
    ws, log = checked_setup(ap, args.workspace, "densprune-cold-start")
    from densprune import db

    names = ["warm-up", "no warm-up"] + (["baseline"] if args.baseline else [])
    runs: dict[str, dict[str, list[dict[str, float]]]] = {pg: {side: [] for side in names} for pg in args.pages}
    n_rows = int(db.load_meta(ws)["n_samples"])
    atlas_data = atlas_parquet(ws, log.with_suffix(".parquet")) if args.atlas else None
    atlas: list[dict[str, float]] = []
    floors: dict[str, list[dict[str, float]]] = {name: [] for name in FLOOR_APPS} if args.floor else {}
    for i in range(args.runs):
        for name, rs in floors.items():
            rs.append(floor_run(*FLOOR_APPS[name], log, args.browser_first))
            print(f"run {i + 1} {name}: HTTP {rs[-1]['http_s']:.2f} s, painted {rs[-1]['painted_s']:.2f} s", flush=True)
        if atlas_data is not None:
            atlas.append(atlas_run(args.atlas, atlas_data, n_rows, log, args.browser_first))
            print(f"run {i + 1} Embedding Atlas: HTTP {atlas[-1]['http_s']:.2f} s, "
                  f"painted {atlas[-1]['painted_s']:.2f} s", flush=True)
        for pg in args.pages:
            for side in names[i % len(names):] + names[:i % len(names)]:  # rotating
                r = one_run(ws, pg, side, log, args.baseline, args.browser_first)
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
        if args.baseline:
            ratio = statistics.median(r["painted_s"] for r in sides["baseline"]) / statistics.median(
                r["painted_s"] for r in sides["warm-up"])
            rows.append([f"/{pg}", "baseline / warm-up", "", f"{ratio:.2f}x", ""])
        if atlas:
            theirs = statistics.median(r["painted_s"] for r in atlas)
            ours = statistics.median(r["painted_s"] for r in sides["warm-up"])
            rows.append([f"/{pg}", "Embedding Atlas / warm-up", "", f"{theirs / ours:.2f}x", ""])
    if atlas:
        paint = [r["painted_s"] for r in atlas]
        rows.append(["Embedding Atlas (table + histograms; no map without WebGPU)", "embedding-atlas",
                     f"{statistics.median(r['http_s'] for r in atlas):.2f}", f"{statistics.median(paint):.2f}",
                     f"{min(paint):.2f}-{max(paint):.2f}"])
    for name, rs in floors.items():
        paint = [r["painted_s"] for r in rs]
        rows.append([name, "streamlit run", f"{statistics.median(r['http_s'] for r in rs):.2f}",
                     f"{statistics.median(paint):.2f}", f"{min(paint):.2f}-{max(paint):.2f}"])
    meta = db.load_meta(ws)
    load = os.getloadavg()[0]
    browser = ("launched before the server starts (only the page's request and drawing count)" if args.browser_first
               else "launched once the server answers (its start counts)")
    text = (f"{ws.name}: {meta['n_samples']:,} rows, K={meta['k']}; fresh server and fresh headless chromium per run, "
            f"the browser {browser}; {args.runs} runs per page and side, alternating; 1-min load at the end "
            f"{load:.1f}\n\n"
            + table(["page", "server", "HTTP answers, s", "page painted, s (median)", "range, s"], rows))
    path = publish(text, args.out, "cold_start.md")
    path.with_suffix(".json").write_text(json.dumps({"command": command_line(), "machine": machine(),
                                                     "workspace": str(ws), "baseline": str(args.baseline or ""),
                                                     "browser_first": args.browser_first,
                                                     "rows": meta["n_samples"],
                                                     "runs": runs, "embedding_atlas": atlas,
                                                     "streamlit_floor": floors}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
