"""A plain (non-editable) install works from any folder: the wheel carries the demo data and the app.

Builds the wheel of this checkout, installs it into a temporary target and, from a folder outside the
repository with only that target on PYTHONPATH, builds the demo workspace with the wheel's own
``densprune`` console script (``densprune demo --no-app``), renders one page with AppTest from the
installed files and serves the app with ``densprune app WS``; ``python -m densprune`` is checked too.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent

APPTEST = """
import sys
from pathlib import Path
import densprune
from streamlit.testing.v1 import AppTest
pkg = Path(densprune.__file__).parent
at = AppTest.from_file(str(pkg / "app" / "main.py"), default_timeout=120)
at.session_state["workspace"] = sys.argv[1]
at.run()
at.switch_page(str(pkg / "app" / "views" / "concepts.py")).run()
assert not at.exception, [e.value for e in at.exception]
assert at.title[0].value == "Concepts", at.title
print("rows", len(at.dataframe[0].value))
"""


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, dict]:
    """(an empty folder outside the repository, the environment that sees only the installed wheel)."""
    tmp = tmp_path_factory.mktemp("install")
    wheels, target, outside = tmp / "wheels", tmp / "site", tmp / "elsewhere"
    outside.mkdir()
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels),
                    str(ROOT)], check=True, cwd=outside)
    [wheel] = wheels.glob("densprune-*.whl")
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, cwd=outside)
    env = {**os.environ, "PYTHONPATH": str(target), "DENSPRUNE_DEMO_WORKSPACE": str(tmp / "demo-ws")}
    env.pop("DENSPRUNE_DEMO_DATA", None)
    return outside, env


def run(args: list[str], cwd: Path, env: dict, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def run_script(cmd: list[str], cwd: Path, env: dict, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def test_the_wheel_carries_the_demo_and_the_app(installed):
    outside, env = installed
    target = Path(env["PYTHONPATH"])
    where = run(["-c", "import densprune; print(densprune.__file__)"], outside, env)
    assert where.stdout.strip().startswith(str(target)), where  # not the checkout
    assert (target / "densprune" / "demo_data" / "openclipart" / "shard-00000.parquet").is_file()
    assert (target / "densprune" / "app" / "views" / "budget.py").is_file()
    assert not (target / "pages").exists() and not (target / "data").exists()  # nothing at the top level
    assert run(["-m", "densprune", "--help"], outside, env).returncode == 0
    script = target / "bin" / "densprune"  # the console script the wheel declares, as pip installs it
    assert script.is_file(), sorted(p.name for p in (target / "bin").glob("*"))
    out = subprocess.run([str(script), "--version"], cwd=outside, env=env, capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("densprune "), out.stderr


def test_demo_build_page_and_app_from_outside_the_repo(installed):
    outside, env = installed
    ws = Path(env["DENSPRUNE_DEMO_WORKSPACE"])
    script = str(Path(env["PYTHONPATH"]) / "bin" / "densprune")
    build = run_script([script, "demo", "--no-app", "--workspace", str(ws)], outside, env)
    assert build.returncode == 0, build.stderr[-3000:]
    assert (ws / "densprune.duckdb").is_file()
    info = run_script([script, "info", str(ws)], outside, env)
    assert info.returncode == 0 and "8,121" in info.stdout, info.stdout
    page = run(["-c", APPTEST, str(ws)], outside, env)
    assert page.returncode == 0, page.stderr[-3000:]
    assert page.stdout.split()[-1].isdigit() and int(page.stdout.split()[-1]) > 0

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = subprocess.Popen([script, "app", str(ws), "--port", str(port)], cwd=outside,
                           env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           start_new_session=True)  # its own group: streamlit runs as its child
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as r:
                    assert r.status == 200
                    break
            except OSError:
                assert app.poll() is None and time.monotonic() < deadline, "`densprune app` did not start"
                time.sleep(0.5)
    finally:
        os.killpg(app.pid, signal.SIGTERM)  # densprune and the streamlit server it started
        app.wait(20)
