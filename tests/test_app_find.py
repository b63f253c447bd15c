"""The Find page (AppTest): caption words, a text (the demo has no text tower: it says so and answers with
the captions; a tiny open_clip workspace answers through its own tower), more like an image (by link and by
tile), the map's region event, saving what was found as a tag the plan obeys, and a saved selection."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from test_app_pages import as_int, button, metric, no_errors, open_app

from densprune import db
from densprune.app import page_data
from densprune.prune.curation import tag_sources
from densprune.search import queries


@pytest.fixture
def ws(demo_workspace: Path, tmp_path: Path) -> Path:
    out = tmp_path / "ws"
    shutil.copytree(demo_workspace, out, ignore=shutil.ignore_patterns("exports", ".work"))
    return out


def find(ws: Path, mode: str):
    at = open_app(ws)
    at.session_state["find_mode"] = mode
    from densprune.app.session import VIEWS

    at.switch_page(str(VIEWS / "find.py")).run()
    no_errors(at)
    assert at.title[0].value == "Find"
    return at


def ask(at, key: str, text: str) -> None:
    at.text_input(key=key).input(text)
    button(at, "Search").click().run()
    no_errors(at)


def shown_rows(at) -> list[int]:
    """The rows of the tiles shown, in order (the 'More like tile' picker names them)."""
    box = at.selectbox(key="find_like_tile")
    return [int(o.split("row ")[1].rstrip(")")) for o in box.options]


def test_caption_words_found_kept_and_tagged_never(ws):
    at = find(ws, "caption")
    ask(at, "find_caption_text", "CAT")
    sel = queries.caption_search(ws, "CAT")
    assert sel.total > 20
    assert as_int(metric(at, "Found")) == sel.total
    assert as_int(metric(at, "Concepts")) == len(sel.concepts)
    assert shown_rows(at) == sel.rows[:48].tolist()  # row order, the first 48 shown
    kept_before = as_int(metric(at, "Kept by the plan"))
    assert 0 < kept_before < sel.total
    table = next(d.value for d in at.dataframe if "hits" in d.value.columns)
    assert table["hits"].sum() == sel.total

    at.text_input(key=next(t.key for t in at.text_input if t.key.endswith("_tag_name"))).input("no-cats")
    button(at, f"Tag all {sel.total:,} found").click().run()
    no_errors(at)
    assert as_int(metric(at, "Kept by the plan")) == 0  # the plan in force excludes them at once
    _, by_tag = db.tag_rows(ws)
    np.testing.assert_array_equal(by_tag["no-cats"], sel.rows)
    src = tag_sources(ws, "no-cats")
    assert src[0]["source_kind"] == "caption" and src[0]["source"] == {"caption": "CAT"}

    at.session_state["find_mode"] = "saved"  # the saved selection: where it came from, its images
    at.run()
    no_errors(at)
    assert any("**caption**" in m.value and "CAT" in m.value for m in at.markdown)
    assert any(b.label.startswith("Search again: caption CAT") for b in at.button)


def test_a_text_without_a_text_tower_says_why_and_answers_with_captions(ws):
    at = find(ws, "text")
    assert any("offline embedder" in c.value for c in at.caption)
    ask(at, "find_text_text", "cat icon")
    assert any("No text search here" in i.value for i in at.info)
    want = queries.caption_search(ws, "cat icon", every_word=True)
    assert as_int(metric(at, "Found")) == want.total > queries.caption_search(ws, "cat icon").total
    caps = db.query_df(ws, "SELECT caption FROM samples WHERE row_idx IN (SELECT UNNEST(?))", [want.rows.tolist()])
    assert caps["caption"].str.lower().map(lambda c: "cat" in c and "icon" in c).all()


def test_nothing_found_says_so(ws):
    at = find(ws, "caption")
    ask(at, "find_caption_text", "zzqx no such caption")
    assert any("Nothing found" in i.value for i in at.info)
    assert not at.metric and not any(b.label.startswith("Tag all") for b in at.button)
    at.checkbox(key="find_every_word").check()
    button(at, "Search").click().run()
    assert any("Nothing found" in i.value and "each of" in i.value for i in at.info)


def test_bad_queries_are_errors_not_crashes(ws):
    at = find(ws, "caption")
    ask(at, "find_caption_text", "   ")
    assert not at.metric  # an empty query asks nothing
    at = find(ws, "like")
    at.number_input(key="find_k").set_value(queries.MAX_K)
    button(at, "Search").click().run()
    no_errors(at)
    assert as_int(metric(at, "Found")) == min(queries.MAX_K, db.counts(ws)["samples"] - 1)


def test_more_like_an_image_by_link_and_by_tile(ws):
    at = open_app(ws)
    at.query_params["like"] = "17"
    from densprune.app.session import VIEWS

    at.switch_page(str(VIEWS / "find.py")).run()
    no_errors(at)
    want = queries.nearest(ws, queries.like_vector(ws, 17), 100, kind="like", label="", provenance={},
                           exclude=np.array([17]))
    assert as_int(metric(at, "Found")) == 100
    assert shown_rows(at) == want.rows[:48].tolist()
    assert "exact over" in " ".join(c.value for c in at.caption)

    at.selectbox(key="find_like_tile").set_value(f"3 (row {want.rows[2]})")
    button(at, "Find more like it").click().run()
    no_errors(at)
    again = queries.nearest(ws, queries.like_vector(ws, int(want.rows[2])), 100, kind="like", label="",
                            provenance={}, exclude=want.rows[2:3])
    assert shown_rows(at) == again.rows[:48].tolist()
    assert at.number_input(key="find_like_row").value == int(want.rows[2])


def test_a_text_through_the_workspaces_own_tower(matched_ws):
    caps = db.query_df(matched_ws, "SELECT row_idx, caption FROM samples ORDER BY row_idx")
    target = caps.iloc[5]
    at = find(matched_ws, "text")
    ask(at, "find_text_text", target.caption)
    assert shown_rows(at)[0] == int(target.row_idx)  # its own image first
    assert not at.info  # no fallback


def test_the_map_draws_and_a_region_event_is_read():
    assert page_data.region_of(None) is None
    assert page_data.region_of({"points": [], "box": [], "lasso": []}) is None
    lasso = {"lasso": [{"xref": "x", "yref": "y", "x": [0, 1, 1], "y": [0, 0, 1]}], "box": []}
    assert page_data.region_of(lasso) == {"lasso": ([0.0, 1.0, 1.0], [0.0, 0.0, 1.0])}
    box = {"lasso": [], "box": [{"xref": "x", "yref": "y", "x": [2, -1], "y": [5, 3]}]}
    assert page_data.region_of(box) == {"box": ((-1.0, 2.0), (3.0, 5.0))}
    assert page_data.region_of({"lasso": [{"x": [0, 1], "y": [0, 1]}]}) is None  # two points draw no area


def test_map_mode_renders_the_selectable_map(ws):
    at = find(ws, "map")
    assert any("Draw a lasso" in c.value for c in at.caption)
    assert not at.metric  # nothing drawn yet
