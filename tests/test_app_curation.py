"""Curation through the app's pages (AppTest) on a copy of the demo: a concept's rule, tagging a concept,
the Budget page's decisions (switch, list, removal), infeasible decisions shown, namesakes shown."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from test_app_pages import as_int, metric, no_errors, open_app, plan_state

from densprune import db
from densprune.app import page_data
from densprune.prune import plan_index
from densprune.prune.curation import load_decisions, set_rule


@pytest.fixture
def ws(demo_workspace: Path, tmp_path: Path) -> Path:
    out = tmp_path / "ws"
    shutil.copytree(demo_workspace, out, ignore=shutil.ignore_patterns("exports", ".work"))
    return out


def submit(at, label: str) -> None:
    for b in at.button:
        if b.label == label:
            b.click().run()
            return
    raise AssertionError(f"no button {label!r}; have {[b.label for b in at.button]}")


def test_a_rule_given_on_concepts_changes_the_plan_at_once(ws):
    at = open_app(ws, "concepts")
    pick = int(at.selectbox(key="concepts_pick").value)
    before = as_int(metric(at, "Kept by the plan"))
    assert before > 0
    at.selectbox(key=f"concepts_rule_kind_{pick}").set_value("drop")
    submit(at, "Apply the rule")
    no_errors(at)
    assert as_int(metric(at, "Kept by the plan")) == 0
    assert any("Rule in force: **drop**" in c.value for c in at.caption)
    assert any(f"would keep {before:,}" in c.value for c in at.caption)
    rules = db.load_rules(ws)
    assert rules[["concept", "kind"]].values.tolist() == [[pick, "drop"]]
    assert rules["created_by"].iloc[0].startswith("app")

    at.selectbox(key=f"concepts_rule_kind_{pick}").set_value("floor")
    at.text_input(key=f"concepts_rule_amount_{pick}").input("lots")
    submit(at, "Apply the rule")
    assert any("not an amount" in e.value for e in at.error)  # refused, the old rule stays
    assert db.load_rules(ws)["kind"].tolist() == ["drop"]


def test_tagging_a_whole_concept_never_excludes_it(ws):
    at = open_app(ws, "concepts")
    pick = int(at.selectbox(key="concepts_pick").value)
    size = int(db.load_clusters(ws).set_index("cluster").loc[pick, "size"])
    at.text_input(key=f"concepts_{pick}_tag_name").input("not-this")
    submit(at, f"Tag all {size:,} of this concept")
    no_errors(at)
    assert as_int(metric(at, "Kept by the plan")) == 0
    tags = db.list_tags(ws)
    assert tags[["name", "action", "n_rows"]].values.tolist() == [["not-this", "never", size]]
    assert db.decision_log(ws)["source"].iloc[0] == str(pick)


def test_budget_lists_the_decisions_and_switches_them_off(ws):
    set_rule(ws, [3], "drop")
    set_rule(ws, [5], "weight", 3)
    at = open_app(ws, "budget")
    no_errors(at)
    index, meta = plan_index.load_index(ws), db.load_meta(ws)
    params = page_data.params_from_state(plan_state(at), meta)
    with_dec = index.compute(params, mask=False, decisions=load_decisions(ws))
    assert as_int(metric(at, "Kept")) == with_dec.n_kept
    table = next(d.value for d in at.dataframe if "decision" in d.value.columns)
    assert table["decision"].tolist() == ["concept 3: drop", "concept 5: weight 3"]
    assert "keeps 0" in table["effect"].iloc[0]
    at.toggle(key="plan_decisions_on").set_value(False).run()
    no_errors(at)
    assert any("Switched off" in c.value for c in at.caption)
    at.toggle(key="plan_decisions_on").set_value(True).run()
    at.multiselect(key="budget_remove_pick").set_value(["concept 3: drop"])
    submit(at, "Remove")
    no_errors(at)
    assert db.load_rules(ws)["concept"].tolist() == [5]


def test_decisions_that_cannot_hold_are_shown_not_raised(ws):
    set_rule(ws, list(range(60)), "floor", "100%")
    at = open_app(ws, "budget")
    at.session_state["plan_keep_pct"] = 10
    at.run()
    no_errors(at)
    assert any("cannot be applied" in e.value and "floors sum to" in e.value for e in at.error)
    index, meta = plan_index.load_index(ws), db.load_meta(ws)
    pure = index.compute(page_data.params_from_state(plan_state(at), meta), mask=False)
    assert as_int(metric(at, "Kept")) == pure.n_kept  # the plan without them, said so


def test_concepts_words_cannot_tell_apart_are_shown_side_by_side(ws):
    cdf = page_data.concept_frame(db.load_clusters(ws), plan_index.load_index(ws))
    shared = cdf[cdf["label"].str.contains(r" - \d+ of \d+$", regex=True)]
    assert len(shared)  # the demo's near-identical stars
    j = int(shared["cluster"].iloc[0])
    at = open_app(ws, "concepts")
    at.selectbox(key="concepts_pick").set_value(j).run()
    no_errors(at)
    n = len(page_data.namesakes(cdf, j))
    assert any(f"The {n} concepts labelled" in s.value for s in at.subheader)
    assert at.checkbox(key=f"concepts_rule_all_{j}") is not None
    at.checkbox(key=f"concepts_rule_all_{j}").check()
    at.selectbox(key=f"concepts_rule_kind_{j}").set_value("cap")
    at.text_input(key=f"concepts_rule_amount_{j}").input("10%")
    submit(at, "Apply the rule")
    no_errors(at)
    assert sorted(db.load_rules(ws)["concept"]) == sorted(int(c) for c in page_data.namesakes(cdf, j)["cluster"])
    assert np.all(db.load_rules(ws)["kind"] == "cap")
