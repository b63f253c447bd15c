"""Curation through the installed ``densprune`` command on a copy of the bundled demo: tags and concept
rules stored, applied by plans (and said so), recorded as snapshots, carried into exports, survived by
recluster; bad input refused with nothing written; concurrent taggers lose nothing."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from console import densprune_command, run_densprune

from densprune import db
from densprune.prune import plan_index, plans
from densprune.prune.curation import load_decisions
from densprune.prune.selection import PlanParams


@pytest.fixture
def ws(demo_workspace: Path, tmp_path: Path) -> Path:
    out = tmp_path / "ws"
    shutil.copytree(demo_workspace, out, ignore=shutil.ignore_patterns("exports", ".work"))
    return out


def ok(*args) -> str:
    r = run_densprune(*map(str, args))
    assert r.returncode == 0, f"densprune {' '.join(map(str, args))} failed:\n{r.stderr[-3000:]}"
    return r.stdout


def fails(*args) -> str:
    r = run_densprune(*map(str, args))
    assert r.returncode == 2, f"densprune {' '.join(map(str, args))} should fail:\n{r.stdout}\n{r.stderr[-2000:]}"
    return r.stderr


def test_tags_and_rules_feed_the_plan_and_are_recorded(ws, tmp_path):
    uids = db.query_df(ws, "SELECT uid, key, row_idx, cluster FROM samples WHERE split = 'pool' ORDER BY row_idx")
    (tmp_path / "gold.txt").write_text("# protect these\n" + "\n".join(uids.uid[:40]) + "\n\n")
    (tmp_path / "keys.txt").write_text("\n".join(uids.key[100:110]))
    out = ok("tag", ws, "junk", "--action", "never", "--caption", "star")
    assert "tag junk (never)" in out and "new" in out
    ok("tag", ws, "gold", "--action", "always", "--uids", tmp_path / "gold.txt")
    ok("tag", ws, "look", "--action", "label", "--keys", tmp_path / "keys.txt")
    listed = json.loads(ok("tags", ws, "--json"))
    assert {t["name"]: (t["action"], t["n_rows"]) for t in listed} == {
        "gold": ("always", 40), "junk": ("never", len(db.caption_rows(ws, "star"))), "look": ("label", 10)}
    ok("rule", ws, "--concept", 3, "--drop")
    ok("rule", ws, "--concept", 5, "--floor", "10%")
    ok("rule", ws, "--concept", 6, "--cap", 5)
    ok("rule", ws, "--concept", 7, "--weight", 2)
    ok("rule", ws, "--concept", 8, "--keep-whole")
    rules = {r["concept"]: r["kind"] for r in json.loads(ok("rules", ws, "--json"))}
    assert rules == {3: "drop", 5: "floor", 6: "cap", 7: "weight", 8: "keep-whole"}

    out = ok("plan", ws, "--name", "cur", "--keep", "0.3")
    assert "decisions" in out and "applied" in out and "concept 3: drop: kept 0" in out
    row, keep = plans.load_plan(ws, "cur")
    cl = db.load_sample_arrays(ws, ("cluster",))["cluster"]
    never = db.caption_rows(ws, "star")
    gold = uids.row_idx[:40].to_numpy()
    assert not keep[never].any() and keep[np.setdiff1d(gold, never)].all()
    gold_in_3 = np.setdiff1d(gold[cl[gold] == 3], never).size
    assert np.count_nonzero(keep & (cl == 3)) == gold_in_3  # dropped: only its always rows
    assert np.count_nonzero(keep & (cl == 6)) <= max(5, np.setdiff1d(gold[cl[gold] == 6], never).size)

    pure = ok("plan", ws, "--name", "pure", "--keep", "0.3", "--ignore-decisions")
    assert "ignored" in pure
    index = plan_index.load_index(ws)
    assert np.array_equal(plans.load_plan(ws, "pure")[1], index.compute(PlanParams(keep=0.3)).keep)
    listing = ok("plans", ws)
    assert f"decisions {row['decisions']}" in listing and "no decisions" in listing

    # more tags later: the plan's snapshot still gives its mask
    ok("tag", ws, "more", "--action", "never", "--concept", 9)
    ok("plan", ws, "--name", "again", "--keep", "0.3", "--decisions-from", "cur")
    assert np.array_equal(plans.load_plan(ws, "again")[1], keep)
    ok("plan", ws, "--name", "now", "--keep", "0.3")
    assert not np.array_equal(plans.load_plan(ws, "now")[1], keep)

    ok("export", ws, "--plan", "cur", "--format", "mask", "--out", tmp_path / "cur.npy")
    man = json.loads((tmp_path / "cur.npy.manifest.json").read_text())
    assert man["decisions"]["digest"] == row["decisions"]
    assert {t["name"] for t in man["decisions"]["tags"]} == {"gold", "junk"}  # label tags do not change plans
    assert any(e["decision"] == "concept 3: drop" for e in man["decisions"]["effects"])
    cmp = json.loads(ok("compare", ws, "pure", "cur"))
    assert cmp["decisions_a"] is None and cmp["decisions_b"]["digest"] == row["decisions"]
    assert "ok:" in ok("verify", ws)

    ok("untag", ws, "more")
    ok("rule", ws, "--concept", 8, "--auto")
    assert {r["concept"] for r in json.loads(ok("rules", ws, "--json"))} == {3, 5, 6, 7}
    log = db.decision_log(ws)
    assert {"untag", "rule auto", "tag never", "rule drop"} <= set(log["what"])
    assert (log["who"].str.len() > 0).all()


def test_bad_input_is_refused_and_nothing_is_written(ws, tmp_path):
    uid = db.query_df(ws, "SELECT uid FROM samples LIMIT 2").uid.tolist()
    (tmp_path / "bad.txt").write_text(f"{uid[0]}\nnot-a-uid\n{uid[1]}\nXYZ\n")
    err = fails("tag", ws, "t", "--action", "never", "--uids", tmp_path / "bad.txt")
    assert "2 of 4 lines are not uids" in err and "line 2: 'not-a-uid'" in err and "nothing was tagged" in err
    (tmp_path / "unknown.txt").write_text(f"{uid[0]}\n{'0' * 32}\n")
    err = fails("tag", ws, "t", "--action", "never", "--uids", tmp_path / "unknown.txt")
    assert "1 of 2 uids are not in" in err and "0" * 32 in err
    assert "invalid tag name" in fails("tag", ws, "../x", "--action", "never", "--caption", "star")
    assert "unknown concept [999]" in fails("tag", ws, "t", "--action", "never", "--concept", 999)
    assert "unknown concept [999]" in fails("rule", ws, "--concept", 999, "--drop")
    assert "not an amount" in fails("rule", ws, "--concept", 1, "--floor", "lots")
    assert "nothing to tag" in fails("tag", ws, "t", "--action", "never", "--caption", "zzqqxx-nowhere")
    assert "no tag named" in fails("untag", ws, "t")
    assert db.list_tags(ws).empty and db.load_rules(ws).empty
    ok("tag", ws, "t", "--action", "never", "--caption", "star")
    assert "exists with action 'never'" in fails("tag", ws, "t", "--action", "always", "--caption", "star")
    ok("rule", ws, *[a for j in range(40) for a in ("--concept", j)], "--floor", "100%")
    assert "floors sum to" in fails("plan", ws, "--name", "x", "--keep", "0.1")
    assert not db.plan_exists(ws, "x")


def test_rules_of_another_clustering_are_refused(ws):
    from datetime import datetime

    import pandas as pd

    db.set_rules(ws, "an-old-clustering", pd.DataFrame([{"concept": 2, "kind": "drop", "value": None,
                                                          "fraction": False}]), {"who": "test", "at": datetime.now()})
    err = fails("plan", ws, "--name", "x", "--keep", "0.3")
    assert "made on another clustering" in err and "concept 2: drop" in err and "--drop-stale" in err
    assert "STALE" in ok("rules", ws)
    assert "removed 1 rule(s)" in ok("rules", ws, "--drop-stale")
    ok("plan", ws, "--name", "x", "--keep", "0.3")


def test_recluster_keeps_tags_and_carries_rules_by_overlap(ws):
    from densprune.pipeline.recluster import recluster

    ok("tag", ws, "junk", "--action", "never", "--caption", "star")
    ok("rule", ws, "--concept", 3, "--drop")
    ok("rule", ws, "--concept", 5, "--weight", 2)
    before = load_decisions(ws)
    rep = recluster(ws, 0.05, drop_plans=True)
    after = load_decisions(ws)
    assert np.array_equal(after.rows("never"), before.rows("never"))  # tags are rows: they survive
    assert rep.carried_rules + len(rep.dropped_rules) == 2
    assert len(after.rules) == rep.carried_rules and after.clustering != before.clustering
    log = db.decision_log(ws)
    assert (log["what"].str.contains("carried") | log["what"].str.contains("dropped")).sum() == 2
    ok("plan", ws, "--name", "after", "--keep", "0.3")


def test_rule_on_every_concept_of_a_label(ws):
    labels = db.load_clusters(ws)["label"].value_counts()
    shared = labels[labels > 1].index[0]
    n = int(labels[shared])
    out = ok("rule", ws, "--label", f"{shared} - 2 of {n}", "--cap", "10%")
    assert "every concept labelled" in out
    assert len(db.load_rules(ws)) == n


def test_concurrent_taggers_lose_nothing(ws):
    n = db.counts(ws)["samples"]
    files = []
    for i in range(3):
        path = ws.parent / f"keys{i}.txt"
        keys = db.query_df(ws, "SELECT key FROM samples WHERE row_idx % 3 = ? ORDER BY row_idx LIMIT 300", [i]).key
        path.write_text("\n".join(keys))
        files.append(path)
    procs = [subprocess.Popen([str(densprune_command()), "tag", str(ws), f"t{i}", "--action", "label", "--keys",
                               str(f)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i, f in enumerate(files)]
    procs.append(subprocess.Popen([str(densprune_command()), "tag", str(ws), "t0", "--action", "label", "--keys",
                                   str(files[0])], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-2000:]
    tags = db.list_tags(ws).set_index("name")
    assert tags.n_rows.to_dict() == {"t0": 300, "t1": 300, "t2": 300}
    assert "ok:" in ok("verify", ws)
    assert n == db.counts(ws)["samples"]


def test_the_decisions_version_is_kept_until_the_database_files_change(ws, monkeypatch):
    """decisions_version answers from memory while the database and its log are unchanged, and a write by
    another process (the CLI) or by this one is seen at the next call."""
    import time

    from densprune.prune.curation import add_tag

    before = db.decisions_version(ws)
    time.sleep(db.SETTLED_NS / 1e9)  # the copy's files settle; the next answer is kept
    assert db.decisions_version(ws) == before
    real_connect, opened = db.duckdb.connect, []
    monkeypatch.setattr(db.duckdb, "connect", lambda *a, **k: opened.append(a) or real_connect(*a, **k))
    assert db.decisions_version(ws) == before and db.decisions_version(ws) == before
    assert opened == []  # from memory: no connection
    ok("tag", ws, "junk", "--action", "never", "--concept", 0)  # another process writes
    after_cli = db.decisions_version(ws)
    assert after_cli != before and after_cli[0] == before[0] + 1 and opened
    time.sleep(db.SETTLED_NS / 1e9)
    assert db.decisions_version(ws) == after_cli
    add_tag(ws, "junk2", "never", np.array([1, 2, 3]), source_kind="keys")  # this process writes
    assert db.decisions_version(ws)[0] == after_cli[0] + 1
