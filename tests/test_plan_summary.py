"""The per-concept plan summary: on random settings of every knob, the numbers it gives equal the full
pass over the rows (today's engine, ``compute(..., summary=False)``) and the counts of the mask saving
the plan writes; what it cannot answer goes to the full pass and is named."""

from __future__ import annotations

import numpy as np
import pytest

from densprune.prune import plan_index
from densprune.prune.plan_summary import CLIP_GRID, EPS_GRID, PlanSummary, fixed_point, intra_from_sums
from densprune.prune.selection import PlanIndex, PlanParams

N, K, D = 6_000, 40, 8


def make_index(seed: int, with_dup: bool = True, with_clip: bool = True) -> PlanIndex:
    rng = np.random.default_rng(seed)
    sizes = rng.lognormal(0, 1.2, size=K)
    clusters = rng.choice(K, size=N, p=sizes / sizes.sum())
    clusters[clusters == 7] = 8  # an empty cluster
    dist = np.round(rng.uniform(0.02, 0.9, size=N), 3)  # ties
    dup = np.round(rng.beta(5, 1.5, size=N), 3).astype(np.float32) if with_dup else None  # many near 1, ties
    clip = np.round(rng.normal(0.28, 0.05, size=N), 3).astype(np.float32) if with_clip else None
    pool = rng.random(N) > 0.08
    return PlanIndex.build(clusters, dist, rng.normal(size=(K, D)), pool, dup, clip)


@pytest.fixture(scope="module")
def index() -> PlanIndex:
    return make_index(0)


def random_params(rng: np.random.Generator, has_clip: bool = True) -> PlanParams:
    method = rng.choice(["dbp", "dbp", "ssp", "balanced", "hierarchical", "random"])
    keep = float(rng.integers(1, 101)) / 100 if rng.random() < 0.8 else int(rng.integers(0, 2_000))
    return PlanParams(
        method=str(method), keep=keep,
        temperature=float(rng.choice([0.01, 0.05, 0.1, 0.5, 2.0, 10.0])),
        neighbors=int(rng.choice([1, 5, 20])),
        balance=float(rng.choice([0.0, 0.0, 0.3, 1.0])),
        dedup_eps=None if rng.random() < 0.3 else float(rng.choice(EPS_GRID)),
        clip_keep=None if (not has_clip or rng.random() < 0.4) else float(rng.choice(CLIP_GRID)),
        within=str(rng.choice(["hard", "easy", "random"])), seed=int(rng.integers(0, 5)))


def same_result(a, b) -> None:
    assert a.params == b.params
    for name in ("eligible", "quota", "kept"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    np.testing.assert_array_equal(a.d_intra, b.d_intra)  # bit for bit: fixed-point sums on both sides
    np.testing.assert_array_equal(a.complexity, b.complexity)
    assert (a.budget, a.n_kept, a.n_eligible, a.pool_size, a.notes) == (b.budget, b.n_kept, b.n_eligible,
                                                                        b.pool_size, b.notes)


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled-mask", "numpy-mask"])
def test_summary_equals_the_full_pass_and_the_saved_mask_on_random_settings(index, compiled, monkeypatch):
    monkeypatch.setattr(PlanIndex, "COMPILED_MASK_ROWS", 0 if compiled else 2**62)
    rng = np.random.default_rng(1)
    clusters = index.rows_cluster()
    checked = 0
    for _ in range(150):
        p = random_params(rng)
        assert index.summary_level(p) is not None and not index.slow_knobs(p)
        try:
            full = index.compute(p, summary=False)
        except ValueError as e:  # a count above what remains: both engines refuse it with the same words
            with pytest.raises(ValueError) as got:
                index.compute(p, mask=False)
            assert str(got.value) == str(e)
            continue
        fast = index.compute(p, mask=False)
        assert fast.keep is None
        same_result(fast, full)
        with_mask = index.compute(p)  # what saving the plan writes
        np.testing.assert_array_equal(with_mask.keep, full.keep)
        np.testing.assert_array_equal(np.bincount(clusters[with_mask.keep], minlength=K), fast.kept)
        assert int(with_mask.keep.sum()) == fast.n_kept == fast.budget
        checked += 1
    assert checked > 100


def test_summary_without_dedup_or_clip_columns_holds_one_level_each():
    idx = make_index(3, with_dup=False, with_clip=False)
    assert idx.summary.counts.shape == (1, 1, K)
    p = PlanParams(keep=0.4, within="easy")
    same_result(idx.compute(p, mask=False), idx.compute(p, summary=False))
    idx = make_index(4, with_clip=False)
    assert idx.summary.counts.shape == (1 + len(EPS_GRID), 1, K)


def test_what_the_summary_cannot_answer_goes_to_the_full_pass_and_is_named(index):
    slow = [PlanParams(method="clip-score", keep=0.3), PlanParams(method="dedup", keep=0.3),
            PlanParams(keep=0.3, clip_threshold=0.27), PlanParams(keep=0.3, dedup_eps=0.0123),
            PlanParams(keep=0.3, clip_keep=0.33)]
    for p in slow:
        assert index.summary_level(p) is None
        assert index.slow_knobs(p), p
        r = index.compute(p, mask=False)  # the full pass: still exact
        assert r.n_kept == r.budget
    assert "CLIP score threshold" in index.slow_knobs(slow[2])[0]


def test_random_method_is_a_uniform_subset_drawn_per_concept(index):
    """The random baseline's per-concept counts are a multivariate hypergeometric draw: over seeds their
    mean is each concept's share of the budget, and the rows inside a concept are a random subset."""
    p = PlanParams(method="random", keep=0.3)
    kept = np.array([index.compute(PlanParams(method="random", keep=0.3, seed=s), mask=False).kept
                     for s in range(300)])
    elig = index.compute(p, mask=False).eligible
    expected = elig * (kept[0].sum() / elig.sum())
    big = elig > 100
    np.testing.assert_allclose(kept.mean(axis=0)[big], expected[big], rtol=0.05)
    a, b = index.compute(p).keep, index.compute(PlanParams(method="random", keep=0.3, seed=1)).keep
    assert (a != b).any() and np.array_equal(a, index.compute(p).keep)  # seeded, different seeds differ


def test_fixed_point_sums_are_exact_in_any_order():
    rng = np.random.default_rng(2)
    d = rng.uniform(0, 2, size=100_000)
    q = fixed_point(d)
    perm = rng.permutation(d.size)
    assert q.sum() == q[perm].sum() == int(np.add.reduceat(q[perm], [0])[0])
    assert abs(intra_from_sums(np.array([q.sum()]), np.array([d.size]))[0] - d.mean()) < 1e-9


def test_summary_is_stored_with_the_index_and_checked_on_load(tmp_path, index):
    arrays = index.arrays()
    assert {f"summary_{n}" for n in PlanSummary.STORED} <= set(arrays)
    back = PlanIndex.from_arrays(arrays)
    np.testing.assert_array_equal(back.summary.counts, index.summary.counts)
    np.testing.assert_array_equal(back.summary.qsum, index.summary.qsum)
    bad = dict(arrays, summary_counts=arrays["summary_counts"][:, :, :-1])
    with pytest.raises(ValueError, match="summary"):
        PlanIndex.from_arrays(bad)
    assert plan_index.FORMAT >= 2  # stored indexes of before the summary are rebuilt, never read


def test_one_concepts_kept_members_come_from_its_rows_alone(index):
    """concept_keep reads one concept's segment; it agrees with the full mask on random settings,
    including the off-summary ones (which read the mask)."""
    rng = np.random.default_rng(5)
    extra = [PlanParams(method="clip-score", keep=0.3), PlanParams(keep=0.3, clip_threshold=0.27)]
    for p in [random_params(rng) for _ in range(40)] + extra:
        try:
            full = index.compute(p, summary=False)
        except ValueError:
            continue
        fast = index.compute(p, mask=False)
        for j in range(K):
            rows, kept = index.concept_keep(j, fast)
            np.testing.assert_array_equal(kept, full.keep[rows], err_msg=f"{p} concept {j}")
            assert int(kept.sum()) == int(fast.kept[j])
