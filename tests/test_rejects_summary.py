"""Rejects by kind of reason: the grouping, ``densprune info`` and the Overview page."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
from streamlit.testing.v1 import AppTest

from densprune import db
from densprune.cli.main import main
from densprune.ingest.reject_kinds import reason_kind, summarise_rejects

APP = Path(__file__).resolve().parent.parent / "app.py"


def test_reason_kinds_drop_paths_sizes_and_rows():
    assert reason_kind("empty image file") == "empty image file"
    assert reason_kind("20000x20000 = 400,000,000 pixels exceeds --max-pixels 100,000,000") == \
        "too many pixels (--max-pixels)"
    assert reason_kind("cannot decode image: UnidentifiedImageError: cannot identify image file <_io.BytesIO>") == \
        "cannot decode image (UnidentifiedImageError)"
    assert reason_kind("/data/t.parquet row 7: file not found: /x/a.png") == "file not found"
    assert reason_kind("/data/t.csv row 3: empty 'image'") == "empty image column"
    assert reason_kind("/s/00001.tar: sample 0001 has no image member (json, txt)") == \
        "sample without an image in its tar shard"
    assert reason_kind("duplicate uid 00ff (an earlier sample has it)") == "duplicate uid"
    assert reason_kind("x" * 500) == "x" * 79 + "…"  # an unknown reason is its own kind, cut short


def test_summary_adds_up_distinct_reasons():
    by_reason = pd.DataFrame({"stage": ["list", "list", "decode"],
                              "reason": ["a row 1: file not found: /a", "b row 2: file not found: /b",
                                         "empty image file"],
                              "count": [3, 2, 4]})
    s = summarise_rejects(by_reason)
    assert s[["stage", "kind", "count"]].values.tolist() == [["list", "file not found", 5],
                                                             ["decode", "empty image file", 4]]
    assert summarise_rejects(by_reason.iloc[:0]).empty


def test_info_lists_rejects_by_reason(small_workspace, capsys):
    assert main(["info", str(small_workspace)]) == 0
    out = capsys.readouterr().out
    section = out.split("rejected by reason:\n")[1].split("largest concepts:")[0].splitlines()
    assert [line.split(None, 2) for line in section] == [
        ["2", "decode", "empty image file"], ["1", "decode", "cannot decode image (UnidentifiedImageError)"]]
    assert main(["info", str(small_workspace), "--json"]) == 0
    assert '"rejects_by_reason"' in capsys.readouterr().out


def test_overview_shows_rejects_by_reason(small_workspace, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["app.py", "--workspace", str(small_workspace)])
    at = AppTest.from_file(str(APP), default_timeout=60).run()
    assert not at.exception, [e.value for e in at.exception]
    [table] = [d.value for d in at.dataframe if "kind" in d.value.columns]
    assert dict(zip(table["kind"], table["count"])) == {
        "empty image file": 2, "cannot decode image (UnidentifiedImageError)": 1}
    assert int(table["count"].sum()) == db.load_meta(small_workspace)["n_rejects"]
