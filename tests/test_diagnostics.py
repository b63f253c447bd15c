"""Plan diagnostics (densprune.prune.diagnostics): equal quotas water-filled, exp(H(P)) and the max/min
share, and the Jaccard overlap with equal quotas checked against the kept masks themselves; the
``plan --tau-spreads`` and ``plans --json`` commands as a user types them."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import numpy as np
import pytest
from console import run_densprune

from densprune.prune import plan_index
from densprune.prune.diagnostics import balanced_quotas, plan_diagnostics, relative_temperature, weight_diagnostics
from densprune.prune.quotas import complexity_weights
from densprune.prune.selection import PlanParams


@pytest.mark.parametrize("seed", range(20))
def test_balanced_quotas_water_fill(seed):
    rng = np.random.default_rng(seed)
    e = rng.integers(0, 300, size=rng.integers(1, 40))
    budget = int(rng.integers(0, e.sum() + 50))
    q = balanced_quotas(e, budget)
    assert q.sum() == min(budget, e.sum()) and (q >= 0).all() and (q <= e).all()
    free = q < e  # not capped: each within 1 of the others, and at least every capped one's quota
    if free.any():
        assert q[free].max() - q[free].min() <= 1
        assert (q[~free] <= q[free].max()).all()


def test_weights_flat_and_sharp():
    e = np.array([10, 10, 10, 0])
    flat = weight_diagnostics(np.array([0.5, 0.5, 0.5, np.nan]), e, np.array([3, 3, 3, 0]), 0.1)
    assert flat.concepts == 3 and flat.effective_concepts == pytest.approx(3.0) and flat.share_ratio == pytest.approx(1)
    assert flat.jaccard_balanced == 1.0
    sharp = weight_diagnostics(np.array([0.0, 0.0, 5.0, np.nan]), e, np.array([0, 0, 9, 0]), 0.1)
    assert sharp.effective_concepts == pytest.approx(1.0, abs=1e-6) and sharp.share_ratio > 1e20
    assert sharp.jaccard_balanced == pytest.approx(3 / 15)  # min(0,3)+min(0,3)+min(9,3) over 3+3+9
    p = complexity_weights(np.array([0.1, 0.2, 0.4]), 0.1)
    mid = weight_diagnostics(np.array([0.1, 0.2, 0.4, np.nan]), e, np.array([1, 2, 6, 0]), 0.1)
    assert mid.effective_concepts == pytest.approx(np.exp(-(p * np.log(p)).sum()))
    assert weight_diagnostics(np.zeros(4), e, np.array([1, 1, 1, 0]), None, prefixes=False).jaccard_balanced is None
    with pytest.raises(ValueError, match="does not vary"):
        relative_temperature(np.array([0.3, 0.3]), np.array([5, 5]), 1.0)
    assert relative_temperature(np.array([0.1, 0.3, 9.0]), np.array([5, 5, 0]), 2.0) == pytest.approx(0.2)


@pytest.mark.parametrize("method,within", [("dbp", "hard"), ("dbp", "easy"), ("ssp", "hard"), ("dbp", "random")])
def test_jaccard_is_the_overlap_of_the_kept_sets(demo_workspace, method, within):
    """Equal quotas taking the same members in each concept, built from the rows: the overlap with the
    plan's own mask is the number the diagnostics give from the quotas alone."""
    index = plan_index.load_index(demo_workspace)
    result = index.compute(PlanParams(method=method, keep=0.3, within=within, seed=3))
    bal = balanced_quotas(result.eligible, result.n_kept)
    pool = index.rows_in_pool()
    ours, equal = set(), set()
    for j in range(index.n_clusters):
        rows, kept = index.concept_keep(j, result)
        order = rows if within == "hard" else rows[::-1] if within == "easy" else None
        if order is None:  # the seeded random order: the plan's kept rows are its prefix, so read it back
            order = np.concatenate([rows[kept], rows[~kept]])
        elig = order[pool[order]]
        assert set(rows[kept]) == set(elig[:int(result.kept[j])])  # the plan keeps a prefix of the order
        ours |= set(elig[:int(result.kept[j])].tolist())
        equal |= set(elig[:int(bal[j])].tolist())
    d = plan_diagnostics(result)
    assert d.jaccard_balanced == pytest.approx(len(ours & equal) / len(ours | equal))


def test_plan_and_plans_commands_report_them(demo_workspace, tmp_path):
    ws = tmp_path / "ws"
    shutil.copytree(demo_workspace, ws, ignore=shutil.ignore_patterns("exports", ".work", "plans"))
    out = run_densprune("plan", ws, "--name", "rel", "--keep", "0.3", "--tau-spreads", "0.5")
    assert out.returncode == 0, out.stderr
    assert "temperature: 0.5 spreads of the complexity" in out.stdout and "weights: P is worth" in out.stdout
    listed = json.loads(run_densprune("plans", ws, "--json").stdout)
    d = next(r for r in listed if r["name"] == "rel")["diagnostics"]
    assert 1 <= d["effective_concepts"] <= d["concepts"] and 0 < d["jaccard_balanced"] <= 1
    bad = run_densprune("plan", ws, "--name", "bad", "--keep", "0.3", "--tau-spreads", "-1")
    assert bad.returncode == 2 and "spreads > 0" in bad.stderr


def test_budget_and_complexity_pages_show_them(demo_workspace):
    from test_app_pages import no_errors, open_app

    index = plan_index.load_index(demo_workspace)
    want = plan_diagnostics(index.compute(PlanParams(keep=0.3), mask=False)).sentence()
    for page in ("budget", "complexity"):
        at = open_app(demo_workspace, page)
        no_errors(at)
        assert any(want in c.value for c in at.caption), page


def test_balanced_method_is_equal_quotas(demo_workspace):
    """The balanced plan method keeps the water-filled equal quotas in each concept's order: its Jaccard
    with equal quotas is 1, its counts from the summary equal its mask's."""
    index = plan_index.load_index(demo_workspace)
    for within in ("hard", "easy", "random"):
        full = index.compute(PlanParams(method="balanced", keep=0.3, within=within, seed=1))
        fast = index.compute(PlanParams(method="balanced", keep=0.3, within=within, seed=1), mask=False)
        np.testing.assert_array_equal(full.kept, balanced_quotas(full.eligible, full.n_kept))
        np.testing.assert_array_equal(fast.kept, full.kept)
        kept_mask = np.bincount(index.rows_cluster()[full.keep], minlength=index.n_clusters)
        np.testing.assert_array_equal(kept_mask, full.kept)
        assert plan_diagnostics(full).jaccard_balanced == 1.0


@pytest.mark.parametrize("within", ["hard", "easy"])
def test_prototype_method_is_one_global_threshold(demo_workspace, within):
    """Sorscher et al.'s prototype metric: over the whole eligible pool, the budget images farthest from
    (hard) or nearest (easy) their centroid, ties by the index's order; against a direct sort of the rows."""
    index = plan_index.load_index(demo_workspace)
    for params in (PlanParams(method="prototype", keep=0.3, within=within),
                   PlanParams(method="prototype", keep=0.25, within=within, dedup_eps=0.05)):
        r = index.compute(params)
        elig_rows = np.flatnonzero(index.compute(replace(params, method="ssp", keep=1.0, within="hard")).keep)
        dist = np.asarray(index._dist_h)[index.inv[elig_rows]]
        order = np.lexsort((index.inv[elig_rows], -dist if within == "hard" else dist))
        want = np.sort(elig_rows[order[:r.n_kept]])
        np.testing.assert_array_equal(np.flatnonzero(r.keep), want)
        assert r.n_kept == r.budget and plan_diagnostics(r).jaccard_balanced is None
        np.testing.assert_array_equal(index.compute(params, mask=False).kept, r.kept)
    with pytest.raises(ValueError, match="random order is the random method"):
        PlanParams(method="prototype", within="random")
