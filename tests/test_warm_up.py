"""The server's warm-up: before a browser connects, the caches the first page reads are filled, so the
first session finds them (the same objects) instead of computing them."""

from __future__ import annotations

from densprune.app import main as app_main
from densprune.app import page_data, serve, session
from densprune.workspace import build_stamp


def test_warm_up_fills_the_caches_the_first_page_reads(small_workspace, monkeypatch):
    ws = str(small_workspace)
    session.plan_index.clear()
    session.plan_counts.clear()
    thread = serve.warm_up_in_background(["--workspace", ws], wait_s=0.1)  # no runtime here: it goes on
    thread.join(120)
    assert not thread.is_alive()

    def no_computing(*args, **kwargs):
        raise AssertionError("computed by the page, not by the warm-up")

    monkeypatch.setattr(session, "load_index", no_computing)
    stamp = build_stamp(small_workspace)
    index = session.plan_index(ws, stamp)  # the warm-up's: load_index is not called again
    monkeypatch.setattr(type(index), "compute", no_computing)
    params = page_data.params_from_state(session.PLAN_DEFAULTS, session.meta(ws, stamp))
    assert session.plan_counts(ws, stamp, params, session.decisions_version(ws)).n_kept > 0


def test_warm_up_names_what_it_filled_and_skips_a_missing_workspace(small_workspace, tmp_path):
    assert "plan index" in app_main.warm_up(["--workspace", str(small_workspace)])
    assert app_main.warm_up(["--workspace", str(tmp_path / "none")]) == []
