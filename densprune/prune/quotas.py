"""Per-cluster keep quotas: DBP's softmax-of-complexity target projected onto the budget.

DBP (Abbas et al., ICLR 2024) gives cluster j the share P_j = softmax(C / tau)_j of a budget of N
samples, then "redistributes" what small clusters cannot use. Written as a problem:

    minimise ||x - P N||^2   subject to   sum(x) = N,   lo_j <= x_j <= hi_j,

with hi_j = eligible members of cluster j and lo_j = min(m, hi_j - 1) clipped at 0. The reference
code calls a QP solver (osqp) and rounds with rint, so its total drifts. The problem is the
Euclidean projection onto a box cut by a hyperplane; its solution is x_j = clip(t_j + lam, lo_j,
hi_j) for one scalar lam, found here exactly from the sorted breakpoints, then rounded with the
largest-remainder rule so that the integer quotas sum to N exactly.

Behaviour of the exact projection (worth knowing when reading plans):
- tau -> infinity: P is uniform, every cluster gets the same quota N / K (not the same rate);
  clusters smaller than that keep everything and the rest is shared equally by the others.
- tau -> 0: P is one-hot on the most complex cluster, which gets min(its size, N - the floors of
  the others). Because lam is *added* to every target, what that cluster cannot hold is shared
  equally by the remaining clusters (each up to its size), not poured into the second most
  complex one: "then the next" holds only to the extent that the next targets still differ.
"""

from __future__ import annotations

import logging

import numpy as np

logger = logging.getLogger(__name__)

__all__ = [
    "complexity_weights",
    "project_to_budget",
    "round_to_integers",
    "quota_bounds",
    "dbp_quotas",
    "uniform_rate_quotas",
    "balanced_quotas",
    "bounded_quotas",
]


def complexity_weights(complexity: np.ndarray, temperature: float) -> np.ndarray:
    """Softmax of cluster complexity: P = softmax(C / tau).

    Args:
        complexity: (K,) float, C_j = d_inter_j * d_intra_j; NaN (empty or tiny clusters) is
            replaced by the mean of the finite values; all NaN gives uniform weights.
        temperature: tau > 0. Small tau concentrates the weight on the most complex clusters.
    Returns:
        (K,) float64, non-negative, sums to 1 (empty for K = 0).
    """
    c = np.asarray(complexity, dtype=np.float64)
    if c.ndim != 1:
        raise ValueError(f"complexity must be 1-D (K,), got shape {c.shape}")
    if not (np.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    if np.isinf(c).any():
        raise ValueError("complexity contains +-inf; only finite values or NaN are allowed")
    if c.size == 0:
        return c.copy()
    nan = np.isnan(c)
    if nan.all():
        return np.full(c.size, 1.0 / c.size)
    if nan.any():
        c = np.where(nan, c[~nan].mean(), c)
    z = (c - c.max()) / temperature  # <= 0: exp never overflows, the max term is exactly 1
    w = np.exp(z)
    return w / w.sum()


def _check_box(target: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, ...]:
    t = np.asarray(target, dtype=np.float64)
    lo = np.broadcast_to(np.asarray(lo, dtype=np.float64), t.shape)
    hi = np.broadcast_to(np.asarray(hi, dtype=np.float64), t.shape)
    if t.ndim != 1:
        raise ValueError(f"target must be 1-D (K,), got shape {t.shape}")
    if not (np.isfinite(t).all() and np.isfinite(lo).all() and np.isfinite(hi).all()):
        raise ValueError("target, lo and hi must be finite")
    if (lo > hi).any():
        j = int(np.flatnonzero(lo > hi)[0])
        raise ValueError(f"lower bound above upper bound for cluster {j}: lo={lo[j]}, hi={hi[j]}")
    return t, lo, hi


def _ramp_sum(c_sorted: np.ndarray, c_cumsum: np.ndarray, lam: np.ndarray) -> np.ndarray:
    """sum_j max(lam - c_j, 0) at every lam, from sorted c and its prefix sums (0 prepended)."""
    k = np.searchsorted(c_sorted, lam, side="right")
    return k * lam - c_cumsum[k]


def project_to_budget(target: np.ndarray, total: float, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Euclidean projection of ``target`` onto {x : sum(x) = total, lo <= x <= hi}.

    The solution is x = clip(target + lam, lo, hi). With a_j = lo_j - t_j and b_j = hi_j - t_j,
    f(lam) = sum(x) = sum(lo) + sum_j max(lam - a_j, 0) - sum_j max(lam - b_j, 0) is continuous,
    non-decreasing and linear between consecutive breakpoints {a_j, b_j}; it is evaluated at all
    2K breakpoints with prefix sums (O(K log K)) and lam is interpolated inside the segment that
    contains ``total``. No iteration, no solver.

    Args:
        target: (K,) float, the unconstrained wish (P * N for DBP).
        total: the required sum; sum(lo) <= total <= sum(hi).
        lo, hi: (K,) float bounds (scalars broadcast), lo <= hi.
    Returns:
        (K,) float64 with lo <= x <= hi and sum(x) == total up to rounding error.
    """
    t, lo, hi = _check_box(target, lo, hi)
    total = float(total)
    s_lo, s_hi = float(lo.sum()), float(hi.sum())
    tol = 1e-9 * max(1.0, abs(s_lo), abs(s_hi))
    if not (s_lo - tol <= total <= s_hi + tol):
        raise ValueError(f"total={total} is outside [sum(lo), sum(hi)] = [{s_lo}, {s_hi}]: infeasible")
    if t.size == 0:
        return t.copy()
    a = np.sort(lo - t)
    b = np.sort(hi - t)
    ca = np.concatenate(([0.0], np.cumsum(a)))
    cb = np.concatenate(([0.0], np.cumsum(b)))
    bp = np.concatenate((a, b))
    bp.sort()
    f = s_lo + _ramp_sum(a, ca, bp) - _ramp_sum(b, cb, bp)
    i = int(np.searchsorted(f, total, side="left"))
    if i == 0:
        lam = bp[0]
    elif i >= bp.size:
        lam = bp[-1]
    else:
        df = f[i] - f[i - 1]
        lam = bp[i - 1] if df <= 0 else bp[i - 1] + (total - f[i - 1]) * (bp[i] - bp[i - 1]) / df
    x = np.clip(t + lam, lo, hi)
    # remove the floating-point residual on the free coordinates (one step, exact in exact arithmetic)
    free = (x > lo) & (x < hi)
    if free.any():
        x[free] += (total - x.sum()) / free.sum()
        np.clip(x, lo, hi, out=x)
    return x


def round_to_integers(x: np.ndarray, total: int, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Round real quotas to integers that sum to ``total`` exactly (largest remainder).

    Each entry is floored, then the entries with the largest fractional parts get +1 until the sum
    is ``total`` (ties: lower index first). When x is the exact projection, floor(x) <= q <= ceil(x).

    Args:
        x: (K,) float real quotas, ideally with lo <= x <= hi and sum(x) ~= total.
        total: required integer sum, sum(lo) <= total <= sum(hi).
        lo, hi: (K,) integer bounds.
    Returns:
        (K,) int64 q with lo <= q <= hi and q.sum() == total.
    """
    x = np.asarray(x, dtype=np.float64)
    lo_i = np.broadcast_to(np.asarray(lo), x.shape).astype(np.int64)
    hi_i = np.broadcast_to(np.asarray(hi), x.shape).astype(np.int64)
    total = int(total)
    if x.ndim != 1 or not np.isfinite(x).all():
        raise ValueError("x must be a finite 1-D array (K,)")
    if (lo_i > hi_i).any():
        raise ValueError("lo must be <= hi")
    if not lo_i.sum() <= total <= hi_i.sum():
        raise ValueError(f"total={total} is outside [sum(lo), sum(hi)] = [{lo_i.sum()}, {hi_i.sum()}]")
    q = np.clip(np.floor(x), lo_i, hi_i).astype(np.int64)
    frac = x - np.floor(x)
    r = total - int(q.sum())
    while r != 0:  # one pass unless x was far from feasible
        if r > 0:
            cand = np.flatnonzero(q < hi_i)
            pick = cand[np.argsort(-frac[cand], kind="stable")[:r]]
            q[pick] += 1
        else:
            cand = np.flatnonzero(q > lo_i)
            pick = cand[np.argsort(frac[cand], kind="stable")[:-r]]
            q[pick] -= 1
        r = total - int(q.sum())
    return q


def _check_eligible(eligible: np.ndarray) -> np.ndarray:
    e = np.asarray(eligible)
    if e.ndim != 1:
        raise ValueError(f"eligible must be 1-D (K,), got shape {e.shape}")
    if e.size and not np.issubdtype(e.dtype, np.integer):
        if not np.array_equal(e, np.round(e)):
            raise ValueError("eligible must hold integer counts")
    e = e.astype(np.int64)
    if (e < 0).any():
        raise ValueError("eligible counts must be >= 0")
    return e


def _check_budget(budget: int) -> int:
    if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)):
        raise ValueError(f"budget must be an integer count, got {budget!r}")
    if budget < 0:
        raise ValueError(f"budget must be >= 0, got {budget}")
    return int(budget)


def quota_bounds(eligible: np.ndarray, budget: int, balance: float = 0.0) -> tuple[np.ndarray, np.ndarray, bool]:
    """DBP's bounds: hi = eligible, lo = clip(min(m, hi - 1), 0) with m = 1 or int(N/K * balance).

    When the floors alone exceed the budget (e.g. fewer samples than clusters), the floor is
    dropped to 0 everywhere; the third value says whether that happened.

    Returns:
        lo (K,) int64, hi (K,) int64, floor_dropped bool.
    """
    hi = _check_eligible(eligible)
    budget = _check_budget(budget)
    if not (np.isfinite(balance) and balance >= 0):
        raise ValueError(f"balance must be a finite number >= 0, got {balance!r}")
    k = hi.size
    m = 1 if balance == 0 else int(budget / max(k, 1) * balance)
    lo = np.clip(np.minimum(m, hi - 1), 0, None)
    if lo.sum() > budget:
        return np.zeros_like(hi), hi, True
    return lo, hi, False


def dbp_quotas(
    complexity: np.ndarray,
    eligible: np.ndarray,
    budget: int,
    temperature: float = 0.1,
    balance: float = 0.0,
) -> np.ndarray:
    """DBP quotas: how many samples each cluster keeps.

    Args:
        complexity: (K,) float cluster complexity d_inter * d_intra (NaN allowed, see
            :func:`complexity_weights`).
        eligible: (K,) int, members of each cluster still available (pool, after dedup and
            CLIP filtering); this is the upper bound. Zero-eligible clusters get 0 and their
            share flows to the others.
        budget: N, total samples to keep. More than sum(eligible) keeps every eligible sample.
        temperature: softmax temperature tau (paper: 0.1).
        balance: cluster balancing ratio; 0 means a floor of 1 per non-singleton cluster
            (the paper's best LAION setting), > 0 a floor of int(N/K * balance).
    Returns:
        (K,) int64 quotas, 0 <= q <= eligible, q.sum() == min(budget, eligible.sum()).
    """
    c = np.asarray(complexity, dtype=np.float64)
    e = _check_eligible(eligible)
    budget = _check_budget(budget)
    if c.shape != e.shape:
        raise ValueError(f"complexity {c.shape} and eligible {e.shape} must have the same shape (K,)")
    p = complexity_weights(c, temperature)
    if budget >= e.sum():
        if budget > e.sum():
            logger.info("budget %d exceeds the eligible pool %d: every eligible sample kept", budget, e.sum())
        return e.copy()
    lo, hi, dropped = quota_bounds(e, budget, balance)
    if dropped:
        logger.info("budget %d below the per-cluster floors: lower bounds dropped to 0", budget)
    x = project_to_budget(p * budget, budget, lo, hi)
    return round_to_integers(x, budget, lo, hi)


def uniform_rate_quotas(eligible: np.ndarray, budget: int) -> np.ndarray:
    """SSP baseline: the same keep rate in every cluster.

    Args:
        eligible: (K,) int eligible members per cluster.
        budget: total to keep.
    Returns:
        (K,) int64 quotas ~ eligible * rate, summing exactly to min(budget, eligible.sum())
        (largest remainder), 0 <= q <= eligible.
    """
    e = _check_eligible(eligible)
    budget = _check_budget(budget)
    n = int(e.sum())
    total = min(budget, n)
    if total == n:
        return e.copy()
    x = e * (total / n)
    return round_to_integers(x, total, np.zeros_like(e), e)


def balanced_quotas(eligible: np.ndarray, budget: int) -> np.ndarray:
    """(K,) int64 equal quotas per concept, water-filled: every concept the same share of ``budget``, capped
    at its ``eligible`` (K,) images, the rest shared by the others; sums to min(budget, eligible.sum())."""
    e = np.asarray(eligible, dtype=np.int64)
    total = int(min(int(budget), int(e.sum())))
    if e.size == 0 or total == 0:
        return np.zeros_like(e)
    live = e > 0
    target = np.where(live, total / max(int(live.sum()), 1), 0.0)
    return bounded_quotas(target, total, np.zeros_like(e), e)


def hierarchical_quotas(eligible: np.ndarray, parents: list[np.ndarray], budget: int) -> np.ndarray:
    """(K,) int64 quotas of hierarchical balanced sampling (Vo et al. 2024): the budget is shared equally
    (water-filled, :func:`balanced_quotas`) among the top level's nodes, each node's share equally
    among its children, and so on down to the K concepts; a node's capacity is what its concepts hold.

    Args:
        eligible: (K,) eligible images per concept (level 0).
        parents: bottom-up, one (n_l,) int array per level above (densprune.cluster.hierarchy):
            ``parents[l][i]`` is the level-(l+1) node holding node i of level l. Empty: one level,
            the same as :func:`balanced_quotas`.
        budget: images to keep.
    Returns:
        (K,) int64, summing to min(budget, eligible.sum()), each at most its concept's eligible.
    """
    caps = [np.asarray(eligible, dtype=np.int64)]
    for par in parents:
        caps.append(np.bincount(par, weights=caps[-1], minlength=int(par.max()) + 1 if par.size else 0
                                ).astype(np.int64))
    q = balanced_quotas(caps[-1], budget)
    for level in range(len(parents) - 1, -1, -1):  # push each node's quota down to its children
        par, cap = parents[level], caps[level]
        child_q = np.zeros(cap.size, dtype=np.int64)
        order = np.argsort(par, kind="stable")
        bounds = np.searchsorted(par[order], np.arange(q.size + 1))
        for g in np.flatnonzero(q):
            kids = order[bounds[g]:bounds[g + 1]]
            child_q[kids] = balanced_quotas(cap[kids], int(q[g]))
        q = child_q
    return q


def bounded_quotas(target: np.ndarray, total: int, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Integer quotas nearest ``target`` under per-concept bounds: the exact projection of ``target``
    onto {x : sum(x) = total, lo <= x <= hi} (:func:`project_to_budget`), rounded by largest remainder
    (:func:`round_to_integers`), so the total is exact and each quota is within 1 of the real optimum.
    This is the quota problem with a curator's floors, caps and weights (densprune.prune.decisions).

    Args:
        target: (K,) float wish (a weighted share of ``total``).
        total: integer sum, sum(lo) <= total <= sum(hi).
        lo, hi: (K,) int64 bounds, 0 <= lo <= hi.
    Returns:
        (K,) int64 q, lo <= q <= hi, q.sum() == total.
    """
    lo = np.asarray(lo, dtype=np.int64)
    hi = np.asarray(hi, dtype=np.int64)
    total = _check_budget(total)
    x = project_to_budget(target, total, lo, hi)
    return round_to_integers(x, total, lo, hi)
