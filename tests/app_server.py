"""The app in a real browser, shared by tests/test_browser.py, tests/test_load_sessions.py and the browser
benchmarks (benchmarks/bench_browser.py, benchmarks/load_sessions.py): start `streamlit run app.py` on a
workspace at a free local port, stop it, launch Debian's chromium, and the page checks they all use.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
# the script run is over (stApp reports notRunning) and Streamlit's running indicator is gone
SETTLED_JS = """() => !!document.querySelector('[data-testid="stApp"][data-test-script-state="notRunning"]')
                      && !document.querySelector('[data-testid="stStatusWidget"]')"""
# every chart on the page holds its drawing: Plotly's SVG, Vega-Lite's canvas (or SVG)
CHARTS_DRAWN_JS = """() => [...document.querySelectorAll('[data-testid="stPlotlyChart"]')]
                             .every(e => e.querySelector('.main-svg'))
                          && [...document.querySelectorAll('[data-testid="stVegaLiteChart"]')]
                             .every(e => e.querySelector('canvas, svg.marks'))"""
# the value of the "Kept" metric on the Budget page (null until it is drawn)
KEPT_JS = """() => { const m = [...document.querySelectorAll('[data-testid="stMetric"]')]
                       .find(e => e.innerText.split('\\n')[0].trim() === 'Kept');
                     return m ? m.querySelector('[data-testid="stMetricValue"]').innerText : null; }"""


def require_chromium() -> None:
    """At the top of a browser test module: skip it without chromium, or fail when
    ``DENSPRUNE_REQUIRE_BROWSER=1`` (`make test`, and so CI, must not skip the browser tests)."""
    import pytest

    if not Path(CHROMIUM).exists():
        why = f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium) to run the browser tests"
        if os.environ.get("DENSPRUNE_REQUIRE_BROWSER") == "1":
            pytest.fail(why + " (DENSPRUNE_REQUIRE_BROWSER=1)", pytrace=False)
        pytest.skip(why, allow_module_level=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def checkout_env(root: Path, **extra: str) -> dict[str, str]:
    """This process's environment, with the checkout ``root`` first on PYTHONPATH (its densprune imported
    before any installed one) and ``extra`` set."""
    return dict(os.environ, **extra,
                PYTHONPATH=os.pathsep.join([str(root), *filter(None, [os.environ.get("PYTHONPATH")])]))


def start_app(ws: Path, log: Path, port: int | None = None, timeout_s: float = 120.0,
              root: Path = ROOT) -> tuple[subprocess.Popen, str]:
    """``streamlit run app.py -- --workspace WS`` on 127.0.0.1 (a free port unless given), its output in
    ``log``; returns (the process, its URL) once ``/_stcore/health`` answers. ``root``: the checkout whose
    app and densprune package run (another one, such as a worktree of an earlier commit, for a baseline).
    Raises RuntimeError naming the log when it exits or does not answer within ``timeout_s``."""
    port = port or free_port()
    env = checkout_env(root)
    with open(log, "wb") as out:  # the child keeps its own descriptor
        proc = subprocess.Popen(
            [sys.executable, "-m", "densprune.app.serve", "run", str(root / "app.py"), "--server.headless", "true",
             "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
             "--server.fileWatcherType", "none", "--", "--workspace", str(ws)],
            cwd=root, stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return proc, url
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_app(proc)
            raise RuntimeError(f"streamlit did not start (exit code {proc.poll()}), see {log}")
        time.sleep(0.2)


def stop_app(proc: subprocess.Popen) -> None:
    """SIGTERM the server, SIGKILL it after 10 s."""
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def metric_js(label: str) -> str:
    """A JS function returning the value text of the metric labelled ``label`` (null while not drawn)."""
    return ("() => { const m = [...document.querySelectorAll('[data-testid=\"stMetric\"]')].find(e => "
            "e.innerText.split('\\n')[0].trim() === " + repr(label) + "); "
            "return m ? m.querySelector('[data-testid=\"stMetricValue\"]').innerText.trim() : null; }")


def draw_lasso(pg, points: list[tuple[float, float]], steps: int = 5) -> None:
    """Drag a lasso through ``points`` (fractions of the plot area: x right, y down) and back to the first,
    on the page's first plotly chart (the Find page's map, in its lasso mode)."""
    area = pg.locator('[data-testid="stPlotlyChart"] .nsewdrag').first
    area.wait_for(timeout=60_000)
    box = area.bounding_box()
    xy = [(box["x"] + fx * box["width"], box["y"] + fy * box["height"]) for fx, fy in points]
    pg.mouse.move(*xy[0])
    pg.mouse.down()
    for a, b in zip(xy, xy[1:] + xy[:1]):
        for i in range(1, steps + 1):
            t = i / steps
            pg.mouse.move(a[0] + t * (b[0] - a[0]), a[1] + t * (b[1] - a[1]))
    pg.mouse.up()


@contextmanager
def served(ws: Path, name: str, timeout_s: float = 60.0) -> Iterator[str]:
    """The app on ``ws`` for the duration of the block (its URL), its log in $TMPDIR/densprune-NAME-PID.log."""
    proc, url = start_app(ws, Path(os.environ.get("TMPDIR", "/tmp")) / f"densprune-{name}-{os.getpid()}.log",
                          timeout_s=timeout_s)
    try:
        yield url
    finally:
        stop_app(proc)


@contextmanager
def chromium() -> Iterator[object]:
    """Debian's chromium driven by Playwright, for the duration of the block."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


def artifacts_dir() -> Path:
    """Where browser tests put their screenshots: $DENSPRUNE_ARTIFACTS or artifacts/screenshots."""
    out = Path(os.environ.get("DENSPRUNE_ARTIFACTS", ROOT / "artifacts" / "screenshots"))
    out.mkdir(parents=True, exist_ok=True)
    return out

