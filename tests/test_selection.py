"""Tests for densprune.selection: plans against direct per-cluster loops on small synthetic data."""

from __future__ import annotations

import numpy as np
import pytest

from densprune.prune.quotas import dbp_quotas, uniform_rate_quotas
from densprune.prune.selection import METHODS, PlanIndex, PlanParams, budget_count

N, K, D = 700, 9, 6


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    clusters = rng.integers(0, K - 1, size=N)  # cluster K-1 is empty
    clusters[:3] = 5  # a few rows in cluster 5 for sure
    clusters[rng.choice(N, 40, replace=False)] = 2  # a larger cluster
    dist = np.round(rng.uniform(0.05, 0.6, size=N), 2)  # ties, broken by row index
    centroids = rng.normal(size=(K, D))
    in_pool = rng.random(N) > 0.1
    dup = rng.uniform(-0.2, 1.0, size=N).astype(np.float32)
    clip = rng.uniform(0.1, 0.4, size=N).astype(np.float32)
    index = PlanIndex.build(clusters, dist, centroids, in_pool, dup, clip, negclip_score=rng.normal(size=N))
    return dict(clusters=clusters, dist=dist, centroids=centroids, pool=in_pool, dup=dup, clip=clip, index=index)


def direct_complexity(d, neighbors, eligible=None):
    """d_inter * d_intra, d_intra over the ``eligible`` rows (default: the pool), one cluster at a time."""
    c = d["centroids"] / np.linalg.norm(d["centroids"], axis=1, keepdims=True)
    d_intra, d_inter = np.full(K, np.nan), np.zeros(K)
    rows = d["pool"] if eligible is None else eligible
    for j in range(K):
        members = (d["clusters"] == j) & rows  # d_intra over what remains only
        if members.any():
            d_intra[j] = d["dist"][members].mean()
        others = sorted(1 - c[j] @ c[i] for i in range(K) if i != j)
        d_inter[j] = np.mean(others[: min(neighbors, K - 1)])
    return d_inter * d_intra


def direct_eligible(d, p):
    e = d["pool"].copy()
    if p.dedup_eps is not None:
        e &= ~(d["dup"].astype(np.float64) > 1 - p.dedup_eps)
    n_dedup = int(e.sum())
    if p.clip_threshold is not None:
        e &= d["clip"] >= p.clip_threshold
    if p.clip_keep is not None:
        n_top = int(np.floor(p.clip_keep * n_dedup + 0.5))  # a fraction of what dedup left
        rows = np.flatnonzero(e)
        rows = rows[np.lexsort((rows, -d["clip"][rows]))]
        e[rows[n_top:]] = False
    return e


def direct_within(d, eligible, quota, within):
    """Per-cluster loop: sort each cluster's eligible rows by distance and take the quota."""
    keep = np.zeros(N, dtype=bool)
    for j in range(K):
        rows = np.flatnonzero((d["clusters"] == j) & eligible)
        rows = rows[np.lexsort((rows, -d["dist"][rows]))]  # farthest first, ties by row
        keep[rows[: quota[j]] if within == "hard" else rows[len(rows) - quota[j]:]] = True
    return keep


def check_invariants(d, r, eligible_rows):
    assert r.keep.shape == (N,) and r.keep.dtype == bool
    assert not (r.keep & ~eligible_rows).any()  # keep within eligible
    assert not (eligible_rows & ~d["pool"]).any()  # eligible within pool
    assert not r.keep[~d["pool"]].any()  # eval rows never kept
    assert r.n_kept == int(r.keep.sum()) == r.budget <= int(eligible_rows.sum()) == r.n_eligible
    keep = r.params.keep  # a fraction counts the remaining pool, a count is a count
    assert r.budget == (int(np.floor(keep * r.n_eligible + 0.5)) if isinstance(keep, float) else keep)
    np.testing.assert_array_equal(r.kept, np.bincount(d["clusters"][r.keep], minlength=K))
    np.testing.assert_array_equal(r.eligible, np.bincount(d["clusters"][eligible_rows], minlength=K))
    assert r.pool_size == int(d["pool"].sum())


@pytest.mark.parametrize("neighbors", [1, 3, 20])
def test_complexity_matches_direct(data, neighbors):
    np.testing.assert_allclose(data["index"].complexity(neighbors), direct_complexity(data, neighbors))
    assert np.isnan(data["index"].d_intra[K - 1])


@pytest.mark.parametrize("within", ["hard", "easy"])
@pytest.mark.parametrize("keep", [0.0, 0.05, 0.3, 0.77, 1.0, 0, 1, 123])
@pytest.mark.parametrize("eps", [None, 0.1])
def test_dbp_matches_direct_loop(data, within, keep, eps):
    p = PlanParams(method="dbp", keep=keep, temperature=0.1, neighbors=3, dedup_eps=eps, within=within)
    r = data["index"].compute(p)
    e = direct_eligible(data, p)
    check_invariants(data, r, e)
    counts = np.bincount(data["clusters"][e], minlength=K)
    budget = int(np.floor(keep * e.sum() + 0.5)) if isinstance(keep, float) else keep
    assert r.budget == budget
    comp = direct_complexity(data, 3, e)  # concepts measured on what remains
    np.testing.assert_allclose(r.complexity, comp)
    np.testing.assert_array_equal(r.quota, dbp_quotas(comp, counts, budget, 0.1))
    np.testing.assert_array_equal(r.kept, r.quota)  # every quota is filled
    np.testing.assert_array_equal(r.keep, direct_within(data, e, r.quota, within))


def test_ssp_uniform_rate(data):
    for within in ["hard", "easy", "random"]:
        r = data["index"].compute(PlanParams(method="ssp", keep=0.4, within=within, seed=3))
        e = direct_eligible(data, r.params)
        check_invariants(data, r, e)
        np.testing.assert_array_equal(r.quota, uniform_rate_quotas(np.bincount(data["clusters"][e], minlength=K),
                                                                   r.budget))
        if within != "random":
            np.testing.assert_array_equal(r.keep, direct_within(data, e, r.quota, within))


def test_within_random(data):
    idx = data["index"]
    a = idx.compute(PlanParams(keep=0.3, within="random", seed=1))
    b = idx.compute(PlanParams(keep=0.3, within="random", seed=1))
    c = idx.compute(PlanParams(keep=0.3, within="random", seed=2))
    hard = idx.compute(PlanParams(keep=0.3, within="hard"))
    check_invariants(data, a, direct_eligible(data, a.params))
    np.testing.assert_array_equal(a.keep, b.keep)  # seeded
    assert (a.keep != c.keep).any() and (a.keep != hard.keep).any()
    np.testing.assert_array_equal(a.quota, hard.quota)  # same quotas, other members
    np.testing.assert_array_equal(a.kept, a.quota)


def test_random_method(data):
    idx = data["index"]
    for keep in [0.0, 0.2, 1.0, 50]:
        r = idx.compute(PlanParams(method="random", keep=keep, seed=7))
        check_invariants(data, r, data["pool"])
    a = idx.compute(PlanParams(method="random", keep=0.5, seed=7))
    np.testing.assert_array_equal(a.keep, idx.compute(PlanParams(method="random", keep=0.5, seed=7)).keep)
    assert (a.keep != idx.compute(PlanParams(method="random", keep=0.5, seed=8)).keep).any()
    # roughly uniform: the kept share of each non-tiny cluster is near 0.5
    big = a.eligible > 60
    assert np.abs(a.kept[big] / a.eligible[big] - 0.5).max() < 0.25


def test_clip_score_method_keeps_the_top(data):
    r = data["index"].compute(PlanParams(method="clip-score", keep=0.25, dedup_eps=0.2))
    e = direct_eligible(data, r.params)
    check_invariants(data, r, e)
    assert data["clip"][r.keep].min() >= data["clip"][e & ~r.keep].max()


def test_dedup_method_keeps_least_duplicated(data):
    r = data["index"].compute(PlanParams(method="dedup", keep=0.4))
    check_invariants(data, r, data["pool"])
    assert data["dup"][r.keep].max() <= data["dup"][data["pool"] & ~r.keep].min()


@pytest.mark.parametrize("method", METHODS)
def test_filters_apply_before_every_method(data, method):
    p = PlanParams(method=method, keep=0.3, dedup_eps=0.15, clip_keep=0.6, clip_threshold=0.15)
    r = data["index"].compute(p)
    e = direct_eligible(data, p)
    check_invariants(data, r, e)
    assert not (r.keep & (data["dup"] > 0.85)).any()
    assert (data["clip"][r.keep] >= 0.15).all()
    assert e.sum() <= budget_count(0.6, int((data["pool"] & ~(data["dup"] > 0.85)).sum()))  # of what dedup left
    assert any("SemDeDup" in n for n in r.notes) and any("CLIP top" in n for n in r.notes)


def test_fraction_counts_the_remaining_pool_and_a_count_beyond_it_is_an_error(data):
    idx = data["index"]
    r = idx.compute(PlanParams(keep=0.3, dedup_eps=0.3))
    e = direct_eligible(data, r.params)
    assert r.n_eligible == e.sum() < r.pool_size
    assert r.budget == r.n_kept == int(np.floor(0.3 * e.sum() + 0.5))  # 30% of what dedup left, not of the pool
    assert any("eval" in n for n in r.notes)
    full = idx.compute(PlanParams(keep=1.0, dedup_eps=0.3))
    np.testing.assert_array_equal(full.keep, e)
    assert idx.compute(PlanParams(keep=int(e.sum()), dedup_eps=0.3)).n_kept == e.sum()
    with pytest.raises(ValueError, match=rf"budget of {e.sum() + 1:,} samples is more than the {e.sum():,} eligible: "
                                         rf"the pool holds {r.pool_size:,} and SemDeDup eps=0.3 removed"):
        idx.compute(PlanParams(keep=int(e.sum()) + 1, dedup_eps=0.3))
    with pytest.raises(ValueError, match="CLIP top 50.0% removed"):
        idx.compute(PlanParams(keep=10**6, clip_keep=0.5))


def test_concept_statistics_of_the_remaining_pool(data):
    """d_intra is measured on what survives the filters, for every method; without filters it is the
    pool's (the index's cached value)."""
    idx = data["index"]
    for p in [PlanParams(keep=0.3, dedup_eps=0.2), PlanParams(method="ssp", keep=0.3, clip_keep=0.5),
              PlanParams(method="random", keep=0.2, dedup_eps=0.1, clip_threshold=0.2)]:
        r = idx.compute(p)
        e = direct_eligible(data, p)
        direct = np.array([data["dist"][(data["clusters"] == j) & e].mean() if ((data["clusters"] == j) & e).any()
                           else np.nan for j in range(K)])
        np.testing.assert_allclose(r.d_intra, direct)
        np.testing.assert_allclose(r.complexity, idx.d_inter(p.neighbors) * direct)
        assert not np.allclose(r.d_intra, idx.d_intra, equal_nan=True)
    plain = idx.compute(PlanParams(keep=0.3))
    np.testing.assert_array_equal(plain.d_intra, idx.d_intra)
    with pytest.raises(ValueError):
        plain.d_intra[0] = 1.0  # read-only, and a copy: the index's own array is not handed out
    assert plain.d_intra is not idx.d_intra


def test_duplicates_change_the_quotas_as_in_the_paper():
    """Clusters full of near-copies look dense (small d_intra) while the copies are counted; measured
    after dedup (the paper's order) they get the share their distinct members deserve."""
    rng = np.random.default_rng(11)
    k, per = 6, 400
    clusters = np.repeat(np.arange(k), per)
    dist = rng.uniform(0.2, 0.5, size=k * per)
    dup = rng.uniform(0.0, 0.8, size=k * per)
    heavy = clusters < 3  # 40% of these clusters' members are near-copies sitting at the centre
    copies = heavy & (rng.random(k * per) < 0.4)
    dist[copies], dup[copies] = 0.02, 0.99
    idx = PlanIndex.build(clusters, dist, rng.normal(size=(k, 8)), dup_max_sim=dup)
    r = idx.compute(PlanParams(keep=0.3, dedup_eps=0.05, temperature=0.05))
    assert (r.d_intra[:3] > idx.d_intra[:3] + 0.05).all()  # the copies no longer pull d_intra down
    stale = dbp_quotas(idx.complexity(20), r.eligible, r.budget, 0.05)  # pool statistics, same budget
    assert r.quota[:3].sum() > stale[:3].sum()


def test_errors_without_clip_or_dedup(data):
    idx = PlanIndex.build(data["clusters"], data["dist"], data["centroids"])
    assert not idx.has_clip_scores and not idx.has_dedup and idx.pool_size == N
    for p in [PlanParams(method="clip-score"), PlanParams(clip_keep=0.5), PlanParams(clip_threshold=0.2)]:
        with pytest.raises(ValueError, match="no CLIP scores"):
            idx.compute(p)
    for p in [PlanParams(method="dedup"), PlanParams(dedup_eps=0.1)]:
        with pytest.raises(ValueError, match="no SemDeDup"):
            idx.compute(p)
    assert idx.compute(PlanParams(keep=0.5)).n_kept == round(0.5 * N)


def test_temperature_moves_budget_to_complex_clusters(data):
    idx = data["index"]
    top = int(np.nanargmax(idx.complexity(20)))
    cold = idx.compute(PlanParams(keep=0.2, temperature=0.001))
    warm = idx.compute(PlanParams(keep=0.2, temperature=100.0))
    assert cold.kept[top] >= warm.kept[top]
    floors = np.clip(np.minimum(1, cold.eligible - 1), 0, None)  # one per other non-singleton cluster
    assert cold.kept[top] == min(cold.eligible[top], cold.budget - (floors.sum() - floors[top]))
    assert warm.kept.max() - warm.kept[warm.eligible > warm.kept.max()].min() <= 1  # equal quotas


def test_results_are_read_only(data):
    r = data["index"].compute(PlanParams())
    with pytest.raises(ValueError):
        r.keep[0] = True
    with pytest.raises(AttributeError):
        r.budget = 3  # type: ignore[misc]


def test_params_and_budget_validation():
    with pytest.raises(ValueError, match="method"):
        PlanParams(method="kmeans")
    with pytest.raises(ValueError, match="within"):
        PlanParams(within="far")
    with pytest.raises(ValueError, match="keep"):
        PlanParams(keep=1.5)
    with pytest.raises(ValueError, match="keep"):
        PlanParams(keep=-3)
    with pytest.raises(ValueError, match="keep"):
        PlanParams(keep=True)
    with pytest.raises(ValueError, match="temperature"):
        PlanParams(temperature=0)
    with pytest.raises(ValueError, match="neighbors"):
        PlanParams(neighbors=0)
    with pytest.raises(ValueError, match="dedup_eps"):
        PlanParams(dedup_eps=-0.1)
    with pytest.raises(ValueError, match="dedup_eps"):
        PlanParams(dedup_eps=1.5)
    with pytest.raises(ValueError, match="clip_keep"):
        PlanParams(clip_keep=2.0)
    with pytest.raises(ValueError, match="seed"):
        PlanParams(seed=-1)
    assert PlanParams(keep=np.int64(5)).keep == 5 and PlanParams(keep=np.float32(0.5)).keep == 0.5
    assert hash(PlanParams()) == hash(PlanParams())
    assert budget_count(0.5, 7) == 4 and budget_count(1.0, 7) == 7 and budget_count(3, 7) == 3
    assert budget_count(0.0, 0) == 0 and budget_count(10, 7) == 10


def test_build_validation(data):
    with pytest.raises(ValueError, match=r"cluster ids must lie in \[0, 2\)"):
        PlanIndex.build(np.array([0, 2]), np.zeros(2), np.ones((2, 3)))
    with pytest.raises(ValueError, match="dist_to_centroid"):
        PlanIndex.build(np.array([0, 1]), np.zeros(3), np.ones((2, 3)))
    with pytest.raises(ValueError, match="bool"):
        PlanIndex.build(np.array([0, 1]), np.zeros(2), np.ones((2, 3)), in_pool=np.array([1, 0]))
    with pytest.raises(ValueError, match="centroids"):
        PlanIndex.build(np.array([0, 1]), np.zeros(2), np.ones(3))
    empty = PlanIndex.build(np.zeros(0, dtype=int), np.zeros(0), np.ones((2, 3)))
    r = empty.compute(PlanParams(keep=0.5))
    assert r.n_kept == 0 and r.keep.shape == (0,)


@pytest.mark.parametrize("method", METHODS)
def test_counts_without_the_mask_are_the_same(data, method):
    p = PlanParams(method=method, keep=0.3, dedup_eps=0.15, within="random" if method == "ssp" else "hard")
    full, counts = data["index"].compute(p), data["index"].compute(p, mask=False)
    assert counts.keep is None and full.keep is not None
    for name in ("eligible", "quota", "kept", "d_intra", "complexity"):
        np.testing.assert_array_equal(getattr(counts, name), getattr(full, name))
    assert (counts.n_kept, counts.budget, counts.notes) == (full.n_kept, full.budget, full.notes)


def test_row_order_arrays_and_random_rank_match(data):
    idx = data["index"]
    np.testing.assert_array_equal(idx.rows_cluster(), data["clusters"])
    np.testing.assert_array_equal(idx.rows_in_pool(), data["pool"])
    a = idx.compute(PlanParams(method="random", keep=0.4, seed=5)).keep  # rank cached alone
    idx._random_orders(5)  # now the full orders are cached too: the same rank
    np.testing.assert_array_equal(a, idx.compute(PlanParams(method="random", keep=0.4, seed=5)).keep)


def test_hard_order_is_the_lexsort_it_replaces():
    from densprune.prune.selection import _hard_order

    rng = np.random.default_rng(7)
    for k in (3, 40_000):  # the 16-bit radix path and the wide one
        cl = rng.integers(0, k, 5000)
        dist = np.round(rng.uniform(0, 1, 5000), 2)  # many ties: broken by row
        np.testing.assert_array_equal(_hard_order(cl, dist, k), np.lexsort((-dist, cl)))
