"""Tests for densprune.quotas: exact projection, integer rounding, DBP and SSP quotas."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.optimize import Bounds, LinearConstraint, minimize

from densprune.prune.quotas import (
    complexity_weights,
    dbp_quotas,
    project_to_budget,
    round_to_integers,
    uniform_rate_quotas,
)

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def bounds_rule(eligible: np.ndarray, budget: int, balance: float) -> tuple[np.ndarray, np.ndarray]:
    """DBP.md's bounds, written out independently of the module."""
    hi = eligible.astype(np.float64)
    m = 1 if balance == 0 else int(budget / len(eligible) * balance)
    lo = np.clip(np.minimum(m, hi - 1), 0, None)
    if lo.sum() > budget:
        lo = np.zeros_like(hi)
    return lo, hi


def scipy_projection(t: np.ndarray, total: float, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """min ||x - t||^2 s.t. sum x = total, lo <= x <= hi, by a generic scipy solver (scaled to O(1))."""
    x = lo.astype(np.float64).copy()
    free = hi - lo > 1e-12  # fixed coordinates and single-point problems trip SLSQP up
    rest = total - lo[~free].sum()
    if not free.any() or rest <= lo[free].sum() or rest >= hi[free].sum():
        return lo.copy() if not free.any() or rest <= lo[free].sum() else np.where(free, hi, lo)
    t, lo, hi = t[free], lo[free], hi[free]
    s = max(1.0, float(np.abs(hi).max()))
    x0 = lo + (hi - lo) * ((rest - lo.sum()) / (hi.sum() - lo.sum()))
    fun, jac = (lambda y: 0.5 * np.sum((y - t / s) ** 2)), (lambda y: y - t / s)
    res = minimize(fun, x0 / s, jac=jac, method="SLSQP", bounds=list(zip(lo / s, hi / s)),
                   constraints=[{"type": "eq", "fun": lambda y: y.sum() - rest / s, "jac": lambda y: np.ones_like(y)}],
                   options={"ftol": 1e-14, "maxiter": 500})
    if not res.success:  # SLSQP's line search gives up on some easy degenerate cases
        res = minimize(fun, x0 / s, jac=jac, hess=lambda y: np.eye(y.size), method="trust-constr",
                       bounds=Bounds(lo / s, hi / s),
                       constraints=[LinearConstraint(np.ones((1, t.size)), rest / s, rest / s)],
                       options={"gtol": 1e-12, "xtol": 1e-14, "maxiter": 5000})
    assert res.success, res.message
    x[free] = res.x * s
    return x


@st.composite
def dbp_case(draw):
    k = draw(st.integers(1, 8))
    eligible = np.array(draw(st.lists(st.integers(0, 40), min_size=k, max_size=k)), dtype=np.int64)
    comp = np.array(draw(st.lists(st.floats(0.0, 1.0), min_size=k, max_size=k)))
    budget = draw(st.integers(0, int(eligible.sum())))
    tau = draw(st.sampled_from([0.02, 0.1, 0.5, 2.0, 50.0]))
    balance = draw(st.sampled_from([0.0, 0.0, 0.5, 1.0, 3.0]))
    return comp, eligible, budget, tau, balance


@SETTINGS
@given(dbp_case())
def test_dbp_total_bounds_and_scipy_reference(case):
    comp, eligible, budget, tau, balance = case
    q = dbp_quotas(comp, eligible, budget, tau, balance)
    assert q.dtype == np.int64
    assert q.sum() == budget
    lo, hi = bounds_rule(eligible, budget, balance)
    assert (q >= lo).all() and (q <= hi).all()
    if budget < eligible.sum():
        p = np.exp(comp / tau) / np.exp(comp / tau).sum()
        ref = scipy_projection(p * budget, budget, lo, hi)
        assert np.abs(q - ref).max() < 1 + 1e-4, (q, ref)


@SETTINGS
@given(
    st.lists(st.floats(-50, 50), min_size=1, max_size=10),
    st.lists(st.tuples(st.floats(0, 20, allow_subnormal=False), st.floats(0, 20, allow_subnormal=False)),
             min_size=10, max_size=10),
    st.floats(0, 1),
)
def test_projection_is_exact(target, box, where):
    t = np.array(target)
    k = t.size
    lo = np.array([min(a, b) for a, b in box[:k]])
    hi = np.array([max(a, b) for a, b in box[:k]])
    total = lo.sum() + where * (hi.sum() - lo.sum())
    x = project_to_budget(t, total, lo, hi)
    assert abs(x.sum() - total) < 1e-8 * max(1.0, total)
    assert (x >= lo - 1e-12).all() and (x <= hi + 1e-12).all()
    # KKT: one lambda with x = clip(t + lambda, lo, hi)
    box_ = hi - lo > 1e-6  # (near-)fixed coordinates and say nothing about lambda
    free = box_ & (x > lo + 1e-9) & (x < hi - 1e-9)
    g = x - t
    if free.any():
        lam = g[free].mean()
        assert np.allclose(g[free], lam, atol=1e-7)
        assert (g[box_ & (x <= lo + 1e-9)] >= lam - 1e-7).all()
        assert (g[box_ & (x >= hi - 1e-9)] <= lam + 1e-7).all()
    ref = scipy_projection(t, total, lo, hi)
    assert np.abs(x - ref).max() < 1e-4 * max(1.0, np.abs(hi).max())


def test_projection_rejects_infeasible_total():
    with pytest.raises(ValueError, match="infeasible"):
        project_to_budget(np.zeros(3), 10.0, np.zeros(3), np.ones(3))
    with pytest.raises(ValueError, match="lower bound above upper bound"):
        project_to_budget(np.zeros(2), 1.0, np.array([0, 2]), np.array([1, 1]))


@SETTINGS
@given(st.lists(st.integers(0, 30), min_size=1, max_size=12), st.data())
def test_round_to_integers(his, data):
    hi = np.array(his)
    total = data.draw(st.integers(0, int(hi.sum())))
    x = project_to_budget(np.array(data.draw(st.lists(st.floats(0, 30), min_size=hi.size, max_size=hi.size))),
                          total, np.zeros(hi.size), hi)
    q = round_to_integers(x, total, np.zeros(hi.size, dtype=int), hi)
    assert q.sum() == total
    assert (q >= 0).all() and (q <= hi).all()
    assert (q >= np.floor(x) - 1e-9).all() and (q <= np.ceil(x) + 1e-9).all()


@SETTINGS
@given(st.lists(st.integers(1, 40), min_size=2, max_size=8), st.data())
def test_smaller_tau_never_lowers_the_most_complex_quota(eligible, data):
    e = np.array(eligible)
    comp = np.array(data.draw(st.lists(st.floats(0, 1), min_size=e.size, max_size=e.size, unique=True)))
    budget = data.draw(st.integers(0, int(e.sum())))
    top = int(np.argmax(comp))
    lo, hi = bounds_rule(e, budget, 0.0)
    prev_x, prev_q = -np.inf, -1
    for tau in [100.0, 10.0, 3.0, 1.0, 0.3, 0.1, 0.03, 0.01]:
        p = complexity_weights(comp, tau)
        x = project_to_budget(p * budget, budget, lo, hi)
        q = dbp_quotas(comp, e, budget, tau)
        assert x[top] >= prev_x - 1e-9
        # integer quotas: floor(x) never decreases; the largest-remainder +1 may move by one
        assert q[top] >= prev_q - 1
        prev_x, prev_q = x[top], max(prev_q, q[top])


def test_large_tau_gives_equal_quotas_not_equal_rates():
    e = np.array([1000, 200, 50, 600, 10])
    q = dbp_quotas(np.array([0.9, 0.1, 0.5, 0.3, 0.7]), e, 300, temperature=1e6)
    # level L with sum(min(e, L)) = 300 is L = 80: clusters of 10 and 50 keep all, the rest get 80
    assert q.tolist() == [80, 80, 50, 80, 10]
    # not equal rates: the 1000-member cluster keeps 8%, the 200-member one 40%
    q = dbp_quotas(np.array([0.9, 0.1]), np.array([1000, 200]), 200, temperature=1e6)
    assert q.tolist() == [100, 100]


def test_small_tau_fills_the_most_complex_cluster_first():
    e = np.array([50, 100, 100, 100])
    comp = np.array([0.9, 0.5, 0.4, 0.1])
    # fits in the top cluster: it takes everything except the floors of 1 of the others
    q = dbp_quotas(comp, e, 40, temperature=1e-4)
    assert q.tolist() == [37, 1, 1, 1]
    # does not fit: top cluster full; the exact projection adds one lambda to every target, so
    # the overflow is shared equally by the others (not poured into the second one)
    q = dbp_quotas(comp, e, 110, temperature=1e-4)
    assert q[0] == 50 and q[1:].tolist() == [20, 20, 20]
    # with distinguishable targets the order of complexity is respected
    q = dbp_quotas(comp, e, 110, temperature=0.1)
    assert q[0] == 50 and q[1] > q[2] > q[3]


def test_edge_cases():
    comp = np.array([0.3, 0.2, 0.1])
    # one cluster
    assert dbp_quotas(np.array([0.5]), np.array([7]), 5).tolist() == [5]
    # empty and singleton clusters: empty gets 0, a singleton has no floor
    q = dbp_quotas(comp, np.array([0, 1, 10]), 4, temperature=10.0)
    assert q[0] == 0 and q.sum() == 4 and q[1] <= 1
    # budget 0 and the full pool
    assert dbp_quotas(comp, np.array([5, 5, 5]), 0).tolist() == [0, 0, 0]
    assert dbp_quotas(comp, np.array([5, 6, 7]), 18).tolist() == [5, 6, 7]
    # more than the eligible pool: everything eligible
    assert dbp_quotas(comp, np.array([5, 6, 7]), 10**6).tolist() == [5, 6, 7]
    # budget below the number of clusters: floors dropped, still exact
    q = dbp_quotas(np.linspace(0, 1, 10), np.full(10, 5), 3, temperature=0.01)
    assert q.sum() == 3 and q[-1] == 3
    # all-NaN complexity: uniform, i.e. the tau -> infinity split
    q = dbp_quotas(np.full(4, np.nan), np.full(4, 100), 40)
    assert q.tolist() == [10, 10, 10, 10]
    # zero clusters
    assert dbp_quotas(np.zeros(0), np.zeros(0, dtype=int), 0).shape == (0,)


def test_complexity_weights():
    c = np.array([0.1, np.nan, 0.3])
    w = complexity_weights(c, 0.1)
    ref = np.exp(np.array([0.1, 0.2, 0.3]) / 0.1)
    np.testing.assert_allclose(w, ref / ref.sum())
    w = complexity_weights(np.array([1e4, 0.0]), 1e-3)  # would overflow without the shift
    assert np.isfinite(w).all() and w[0] == 1.0
    np.testing.assert_allclose(complexity_weights(np.full(3, np.nan), 0.5), np.full(3, 1 / 3))
    with pytest.raises(ValueError, match="temperature"):
        complexity_weights(c, 0.0)
    with pytest.raises(ValueError, match="inf"):
        complexity_weights(np.array([np.inf, 0.0]), 1.0)


def test_validation_messages():
    with pytest.raises(ValueError, match="same shape"):
        dbp_quotas(np.zeros(3), np.ones(2, dtype=int), 1)
    with pytest.raises(ValueError, match=">= 0"):
        dbp_quotas(np.zeros(2), np.array([1, -1]), 1)
    with pytest.raises(ValueError, match="integer"):
        dbp_quotas(np.zeros(2), np.array([1, 1]), 1.5)
    with pytest.raises(ValueError, match="balance"):
        dbp_quotas(np.zeros(2), np.array([3, 3]), 2, balance=-1)


@SETTINGS
@given(st.lists(st.integers(0, 50), min_size=1, max_size=10), st.data())
def test_uniform_rate_quotas(eligible, data):
    e = np.array(eligible)
    budget = data.draw(st.integers(0, int(e.sum()) + 20))
    q = uniform_rate_quotas(e, budget)
    total = min(budget, int(e.sum()))
    assert q.dtype == np.int64 and q.sum() == total
    assert (q >= 0).all() and (q <= e).all()
    if e.sum():
        assert np.abs(q - e * total / e.sum()).max() < 1
