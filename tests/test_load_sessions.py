"""Concurrent real browser sessions on one `streamlit run`, with a CLI saving plans and a progress writer
alongside: a light run of benchmarks/load_sessions.py (3 sessions, Budget -> save -> Preview -> Train).
The full load (10 sessions, every page, a real training run) is the benchmark:
``python benchmarks/load_sessions.py``, figures in docs/reliability.md.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
from app_server import ROOT, require_chromium

pytestmark = [pytest.mark.browser, pytest.mark.slow]
require_chromium()
pytest.importorskip("playwright.async_api", reason="the playwright python package is not installed")


def load_module():
    spec = importlib.util.spec_from_file_location("load_sessions", ROOT / "benchmarks" / "load_sessions.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["load_sessions"] = mod  # its dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def test_three_sessions_save_plans_while_a_cli_and_a_progress_writer_work(demo_workspace: Path, tmp_path: Path):
    load = load_module()
    ws = load.prepare_workspace(demo_workspace, tmp_path)
    res = load.run_load(ws, sessions=3, rounds=1, trainer="recorder", timeout_s=120, light=True)
    head = load.summarise(res)
    errors = [f"session {a['session']} {a['name']}: {a['error']}" for a in res["actions"] if a["error"]]
    assert errors == []
    assert head["actions"] == 3 * 7  # open, Budget, slider, save, Preview, pick the CLI's plan, Train
    assert res["plans"]["saved_by_sessions"] == 3 and res["plans"]["lost"] == [] and res["plans"]["wrong_count"] == []
    assert res["plans"]["listed_after"] == res["plans"]["expected_after"]
    assert res["cli"]["errors"] == [] and res["cli"]["saved"]  # the CLI saved plans alongside
    run = res["training"]["runs"][0]
    assert run["rc"] == 0 and run["status"] == "done" and run["step"] > 0
    assert res["verify"] == []
