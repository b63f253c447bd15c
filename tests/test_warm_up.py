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
    # no runtime and no server here: it goes on after waiting for them
    thread = serve.warm_up_in_background(["--workspace", ws], wait_s=0.1, listen_s=0.1)
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


def test_the_concepts_page_finds_the_map_and_the_decisions_the_warm_up_made(small_workspace, monkeypatch):
    """The page's own calls hit what the warm-up cached (the cache key is the call's arguments, so the
    warm-up must call as the page does): drawing the map or reading the tags or rules again fails here."""
    from test_app_pages import no_errors, open_app

    from densprune import db
    from densprune.app import charts

    session.map_picture.clear()
    session.tags.clear()
    session.rules.clear()
    assert "map" in app_main.warm_up(["--workspace", str(small_workspace)])

    def again(*args, **kwargs):
        raise AssertionError("the page computed what the warm-up had made")

    for module, name in ((charts, "map_picture"), (db, "list_tags"), (db, "load_rules")):
        monkeypatch.setattr(module, name, again)
    no_errors(open_app(small_workspace, "concepts"))


def test_the_warm_up_waits_for_the_server_to_listen_but_not_for_ever(monkeypatch):
    import socket
    import time

    from streamlit import config

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    options = {"server.address": "0.0.0.0", "server.port": server.getsockname()[1]}  # all addresses: ask locally
    monkeypatch.setattr(config, "get_option", lambda key: options[key])
    try:
        assert serve.wait_until_listening(5.0)
    finally:
        server.close()
    t0 = time.monotonic()
    assert not serve.wait_until_listening(0.3)  # nothing listens now: it gives up after the time given
    assert 0.3 <= time.monotonic() - t0 < 3.0
