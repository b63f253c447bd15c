"""Decisions in the plan engine: the bounded quota solver against an independent QP, and plans with
concept rules and row tags (summary == full pass == the mask's own counts, every rule obeyed)."""

from __future__ import annotations

import numpy as np
import pytest

from densprune.cluster.labels import ranked_labels, strip_rank
from densprune.prune.decisions import ConceptRule, Decisions, InfeasibleDecisions, TagSet, map_rules, parse_amount
from densprune.prune.quotas import bounded_quotas
from densprune.prune.selection import METHODS, PlanIndex, PlanParams


def qp_reference(target: np.ndarray, total: float, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """min ||x - target||^2 s.t. sum(x) = total, lo <= x <= hi, by Clarabel's interior point method (an
    independent conic solver, nothing shared with densprune's breakpoint projection)."""
    import clarabel
    import scipy.sparse as sp

    k = target.size
    P = sp.identity(k, format="csc") * 2.0
    q = -2.0 * target
    A = sp.vstack([sp.csc_matrix(np.ones((1, k))), sp.identity(k), -sp.identity(k)], format="csc")
    b = np.concatenate(([total], hi, -lo)).astype(float)
    cones = [clarabel.ZeroConeT(1), clarabel.NonnegativeConeT(2 * k)]
    settings = clarabel.DefaultSettings()
    settings.verbose = False
    settings.tol_gap_abs = settings.tol_gap_rel = settings.tol_feas = 1e-10
    sol = clarabel.DefaultSolver(P, q, A, b, cones, settings).solve()
    assert str(sol.status) in ("Solved", "AlmostSolved"), sol.status
    return np.asarray(sol.x)


def test_bounded_quotas_match_an_independent_qp_on_thousands_of_cases():
    rng = np.random.default_rng(7)
    worst = 0.0
    for case in range(2000):
        k = int(rng.integers(1, 40))
        e = rng.integers(0, 300, k) * (rng.random(k) > 0.1)
        hi = np.where(rng.random(k) < 0.3, np.minimum(e, rng.integers(0, 100, k)), e)  # caps
        lo = np.where(rng.random(k) < 0.3, np.minimum(hi, rng.integers(0, 80, k)), 0)  # floors
        if hi.sum() == 0:
            continue
        total = int(rng.integers(lo.sum(), hi.sum() + 1))
        w = rng.random(k) * np.where(rng.random(k) < 0.2, 5.0, 1.0)  # weighted shares
        target = w / w.sum() * total
        q = bounded_quotas(target, total, lo, hi)
        ref = qp_reference(target, total, lo, hi)
        assert q.sum() == total, case
        assert (q >= lo).all() and (q <= hi).all(), case
        dev = np.abs(q - ref).max()
        worst = max(worst, dev)
        assert dev < 1.0 + 1e-6, (case, dev)
    assert worst > 0  # the cases bind: rounding differs from the real optimum somewhere


def test_parse_amount():
    assert parse_amount("200") == (200.0, False)
    assert parse_amount("10%") == (0.1, True)
    for bad in ("-3", "2.5", "150%", "lots", ""):
        with pytest.raises(ValueError):
            parse_amount(bad)


def _index(n=20_000, k=40, seed=0):
    rng = np.random.default_rng(seed)
    cl = rng.integers(0, k, n)
    idx = PlanIndex.build(cl, rng.random(n), rng.normal(size=(k, 8)), rng.random(n) > 0.1, rng.random(n),
                          rng.random(n), negclip_score=rng.normal(size=n))
    return idx, cl, rng


def _random_decisions(rng, n, k) -> Decisions:
    kinds = ["drop", "keep-whole", "floor", "cap", "weight", "auto"]
    rules = []
    for j in rng.choice(k, size=int(rng.integers(0, 8)), replace=False):
        kind = kinds[int(rng.integers(len(kinds)))]
        if kind == "drop" or kind == "keep-whole" or kind == "auto":
            rules.append(ConceptRule(int(j), kind))
        elif kind == "weight":
            rules.append(ConceptRule(int(j), kind, float(rng.uniform(0.2, 5))))
        elif rng.random() < 0.5:
            rules.append(ConceptRule(int(j), kind, float(rng.uniform(0, 0.6)), True))
        else:
            rules.append(ConceptRule(int(j), kind, float(rng.integers(0, 150))))
    tags = [TagSet("n", "never", rng.choice(n, int(rng.integers(0, 800)), replace=False)),
            TagSet("a", "always", rng.choice(n, int(rng.integers(0, 300)), replace=False)),
            TagSet("l", "label", rng.choice(n, 50, replace=False))]
    return Decisions(rules=tuple(rules), tags=tuple(tags))


def _check_obeyed(r, dec: Decisions, cl, pool, k):
    keep = r.keep
    kept = np.bincount(cl[keep], minlength=k)
    assert np.array_equal(kept, r.kept)
    assert keep.sum() == r.budget == r.n_kept
    never, always = dec.rows("never"), dec.rows("always")
    assert not keep[never].any()
    assert keep[always[pool[always]]].all() and not keep[always[~pool[always]]].any()
    forced = np.bincount(cl[always[pool[always]]], minlength=k)
    for rule in dec.active_rules:
        j = rule.concept
        if rule.kind == "drop":
            assert kept[j] == forced[j]
        elif rule.kind == "keep-whole":
            assert kept[j] >= r.eligible[j]  # every eligible non-never row, plus always rows
        elif rule.kind in ("floor", "cap") and r.params.method in ("dbp", "ssp", "balanced", "hierarchical", "random"):
            amount = rule.value * r.eligible[j] if rule.fraction else rule.value
            if rule.kind == "floor":
                assert kept[j] >= min(np.ceil(amount - 1e-9), r.eligible[j])
            else:
                assert kept[j] <= max(np.floor(amount + 1e-9), forced[j])


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled-mask", "numpy-mask"])
@pytest.mark.parametrize("method", METHODS)
def test_plans_under_random_decisions_are_exact_and_obey_every_rule(method, compiled, monkeypatch):
    monkeypatch.setattr(PlanIndex, "COMPILED_MASK_ROWS", 0 if compiled else 2**62)
    idx, cl, rng = _index(seed=hash(method) % 1000)
    pool = idx.rows_in_pool()
    checked = infeasible = 0
    for trial in range(25):
        dec = _random_decisions(rng, cl.size, 40)
        kw = [{}, {"dedup_eps": 0.1}, {"dedup_eps": 0.05, "clip_keep": 0.5}, {"dedup_eps": 0.123},
              {"clip_threshold": 0.3}][trial % 5]
        p = PlanParams(method=method, keep=float(rng.choice([0.1, 0.3, 0.6])), within=str(rng.choice(
            ["hard", "easy"] + ([] if method == "prototype" else ["random"]))), seed=int(rng.integers(3)), **kw)
        try:
            fast = idx.compute(p, decisions=dec)
        except InfeasibleDecisions as exc:
            assert any(ch.isdigit() for ch in str(exc))
            with pytest.raises(InfeasibleDecisions):
                idx.compute(p, decisions=dec, summary=False)
            infeasible += 1
            continue
        full = idx.compute(p, decisions=dec, summary=False)
        for name in ("keep", "kept", "quota", "eligible", "d_intra"):
            assert np.array_equal(getattr(fast, name), getattr(full, name), equal_nan=name == "d_intra"), name
        counts_only = idx.compute(p, mask=False, decisions=dec)
        assert np.array_equal(counts_only.kept, fast.kept)
        _check_obeyed(fast, dec, cl, pool, 40)
        assert fast.decisions == dec.digest
        checked += 1
    assert checked >= 15, (checked, infeasible)


def test_no_decisions_is_the_pure_method():
    idx, cl, rng = _index()
    p = PlanParams(keep=0.3, dedup_eps=0.1)
    pure = idx.compute(p)
    labels_only = Decisions(tags=(TagSet("l", "label", np.arange(100)),), rules=(ConceptRule(2, "auto"),))
    assert labels_only.empty
    r = idx.compute(p, decisions=labels_only)
    assert r.decisions is None and np.array_equal(r.keep, pure.keep)


def test_infeasible_decisions_are_errors_with_the_numbers():
    idx, cl, rng = _index()
    everything = Decisions(tags=(TagSet("a", "always", np.arange(cl.size)),))
    with pytest.raises(InfeasibleDecisions, match=r"force [\d,]+ images .* budget of [\d,]+"):
        idx.compute(PlanParams(keep=0.3), decisions=everything)
    floors = Decisions(rules=tuple(ConceptRule(j, "floor", 400.0) for j in range(40)))
    with pytest.raises(InfeasibleDecisions, match=r"floors sum to [\d,]+ images but only [\d,]+ are left"):
        idx.compute(PlanParams(keep=0.3), decisions=floors)
    dropped = Decisions(rules=tuple(ConceptRule(j, "drop") for j in range(30)))
    with pytest.raises(InfeasibleDecisions, match=r"hold only [\d,]+ eligible"):
        idx.compute(PlanParams(keep=0.6), decisions=dropped)
    caps = Decisions(rules=tuple(ConceptRule(j, "cap", 10.0) for j in range(40)))
    with pytest.raises(InfeasibleDecisions, match=r"caps leave at most 400 images"):
        idx.compute(PlanParams(keep=0.3), decisions=caps)
    with pytest.raises(ValueError, match="clustering has 40 concepts"):
        idx.compute(PlanParams(keep=0.3), decisions=Decisions(rules=(ConceptRule(40, "drop"),)))


def test_weight_and_drop_move_images_as_described():
    idx, cl, rng = _index()
    p = PlanParams(keep=0.3)
    base = idx.compute(p, mask=False)
    up = idx.compute(p, mask=False, decisions=Decisions(rules=(ConceptRule(4, "weight", 3.0),)))
    assert up.kept[4] > base.kept[4] and up.n_kept == base.n_kept
    effect = next(e for e in up.effects if e["kind"] == "rule")
    assert effect["kept_without"] == base.kept[4] and effect["moved"] == up.kept[4] - base.kept[4]
    drop = idx.compute(p, mask=False, decisions=Decisions(rules=(ConceptRule(4, "drop"),)))
    assert drop.kept[4] == 0 and drop.n_kept == base.n_kept  # the budget stays the total kept


def test_digest_is_the_content():
    a = Decisions(rules=(ConceptRule(1, "drop"), ConceptRule(0, "cap", 0.1, True)),
                  tags=(TagSet("x", "never", [5, 3, 3]),), clustering="c")
    b = Decisions(rules=(ConceptRule(0, "cap", 0.1, True), ConceptRule(1, "drop")),
                  tags=(TagSet("x", "never", [3, 5]),), clustering="c")
    assert a.digest == b.digest
    assert Decisions(rules=a.rules, tags=(TagSet("x", "never", [3, 6]),), clustering="c").digest != a.digest
    assert Decisions(rules=a.rules, tags=a.tags, clustering="other").digest != a.digest
    with pytest.raises(ValueError, match="two rules"):
        Decisions(rules=(ConceptRule(1, "drop"), ConceptRule(1, "keep-whole")))


def test_never_beats_always_and_row_tags_beat_concept_rules():
    idx, cl, rng = _index()
    pool = idx.rows_in_pool()
    rows4 = np.flatnonzero((cl == 4) & pool)
    dec = Decisions(rules=(ConceptRule(4, "drop"), ConceptRule(5, "keep-whole")),
                    tags=(TagSet("a", "always", rows4[:10]), TagSet("n", "never", rows4[:3])))
    r = idx.compute(PlanParams(keep=0.3), decisions=dec)
    assert r.kept[4] == 7 and r.keep[rows4[3:10]].all() and not r.keep[rows4[:3]].any()


def test_rules_follow_their_members_across_a_reclustering():
    old = np.repeat(np.arange(4), 100)
    new = old.copy()
    new[old == 1] = 3  # concept 1 became 3, 3 became 1
    new[old == 3] = 1
    new[(old == 2)] = np.tile([0, 2], 50)  # concept 2 split in halves
    rules = [ConceptRule(1, "drop"), ConceptRule(2, "floor", 10.0), ConceptRule(0, "weight", 2.0)]
    mapped, dropped = map_rules(rules, old, new)
    # 0 keeps all its members in new 0, which holds 2/3 from it: a mutual majority
    assert [(o.concept, n.concept, n.kind) for o, n in mapped] == [(1, 3, "drop"), (0, 0, "weight")]
    assert [r.concept for r, _ in dropped] == [2]  # split in halves: no majority
    assert "50%" in dropped[0][1]


def test_labels_that_words_cannot_tell_apart_are_ranked():
    got = ranked_labels(["stars", "cats", "stars", "", "stars"], np.array([5, 9, 7, 1, 7]))
    assert got == ["stars - 3 of 3", "cats", "stars - 1 of 3", "", "stars - 2 of 3"]
    assert strip_rank(got[0]) == "stars" and strip_rank("cats") == "cats"


def test_one_concepts_members_match_the_mask_under_decisions():
    idx, cl, rng = _index()
    for trial in range(12):
        dec = _random_decisions(rng, cl.size, 40)
        p = PlanParams(method=["dbp", "ssp", "balanced", "hierarchical", "random"][trial % 5], keep=0.3,
                       within=["hard", "easy", "random"][trial % 3], dedup_eps=[None, 0.1][trial % 2],
                       clip_keep=[None, 0.5][(trial // 2) % 2])
        try:
            r = idx.compute(p, decisions=dec)
        except InfeasibleDecisions:
            continue
        counts = idx.compute(p, mask=False, decisions=dec)
        for j in (0, 7, 21, 39):
            rows, kept = idx.concept_keep(j, counts, dec)
            assert np.array_equal(kept, r.keep[rows]), (trial, j)
    with pytest.raises(ValueError, match="decisions the plan was computed with"):
        idx.concept_keep(0, counts)


def test_sorted_unique_is_np_unique():
    from densprune.vectors import sorted_unique

    rng = np.random.default_rng(4)
    for a in (np.zeros(0, np.int64), np.array([5]), rng.integers(-50, 50, 1000), rng.integers(0, 10**9, 5000),
              np.arange(100)[::-1].repeat(3)):
        got = sorted_unique(a)
        np.testing.assert_array_equal(got, np.unique(a))
        assert got.dtype == np.int64
