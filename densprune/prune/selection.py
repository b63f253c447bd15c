"""Interactive pruning plans: everything per-cluster is computed once, a plan is one vectorised pass.

:class:`PlanIndex` holds the rows sorted by (cluster, distance to centroid descending), the "hard"
order, together with the cluster offsets in that order, d_intra, the pool mask, and the global
orders by SemDeDup similarity and CLIP score. :meth:`PlanIndex.compute` then turns a
:class:`PlanParams` into a keep mask without any Python loop over rows or clusters:

    eligible = pool & ~duplicate(eps) & CLIP filter                 (hard order, bool)
    c        = exclusive cumsum of eligible                         (rank of a row among eligible)
    counts   = c[offset_{j+1}] - c[offset_j]                        (eligible per cluster)
    quota    = dbp_quotas(complexity, counts, budget, tau, balance)
    keep     = eligible & (c - c[offset_j] < quota_j)               ("hard": farthest first)

"easy" counts the rank from the cluster's end; "random" runs the same pass over a per-seed order
that is random inside each cluster. Global methods (random, clip-score, dedup) keep the first
``budget`` eligible rows of a precomputed global order. Measured on a 2-core x86 machine
(benchmarks/bench_plan.py, K = 1000): 7-18 ms per plan for 1M rows, 0.13-0.45 s for 10M. The index
is read-only after build except for small caches guarded by a lock, so one index may be shared
across threads (e.g. a Streamlit ``cache_resource``).
"""

from __future__ import annotations

import logging
import math
import threading
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from densprune.cluster.concepts import inter_distance, intra_distance
from densprune.prune.quotas import dbp_quotas, quota_bounds, uniform_rate_quotas

logger = logging.getLogger(__name__)

__all__ = ["METHODS", "WITHIN", "PlanParams", "PlanResult", "PlanComparison", "PlanIndex",
           "budget_count", "compare_plans"]

METHODS = ("dbp", "ssp", "random", "clip-score", "dedup")
WITHIN = ("hard", "easy", "random")
_NO_CLIP = ("this workspace has no CLIP scores (offline embedder): clip_keep, clip_threshold and "
            "method='clip-score' need image-text CLIP scores; embed with a CLIP model to use them")
_NO_DUP = ("this workspace has no SemDeDup similarities: dedup_eps and method='dedup' need the "
           "per-row max similarity from densprune.dedup.semdedup; run the dedup step first")


def _is_int(v: object) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _is_real(v: object) -> bool:
    return (_is_int(v) or isinstance(v, (float, np.floating))) and math.isfinite(float(v))


@dataclass(frozen=True, slots=True)
class PlanParams:
    """One pruning plan. Hashable, so it can key a cache."""

    method: str = "dbp"  # one of METHODS
    keep: float | int = 0.5  # float in [0, 1]: fraction of the pool (paper); int >= 0: a count
    temperature: float = 0.1  # DBP softmax tau (paper 0.1; the reference code's default is 0.5)
    neighbors: int = 20  # l nearest centroids for d_inter (reference default 20)
    balance: float = 0.0  # cluster balancing ratio; 0 = floor of 1 per cluster (paper's best)
    dedup_eps: float | None = None  # SemDeDup eps; None = no dedup
    clip_keep: float | None = None  # keep the top fraction of the pool by CLIP score, before quotas
    clip_threshold: float | None = None  # keep CLIP score >= threshold, before quotas
    within: str = "hard"  # which members of a cluster fill its quota: one of WITHIN
    seed: int = 0  # for within="random" and method="random"

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.within not in WITHIN:
            raise ValueError(f"within must be one of {WITHIN}, got {self.within!r}")
        if _is_int(self.keep):
            if self.keep < 0:
                raise ValueError(f"keep as a count must be >= 0, got {self.keep}")
            object.__setattr__(self, "keep", int(self.keep))
        elif _is_real(self.keep) and 0.0 <= float(self.keep) <= 1.0:
            object.__setattr__(self, "keep", float(self.keep))
        else:
            raise ValueError(f"keep must be a float fraction in [0, 1] or an int count >= 0, got {self.keep!r}")
        if not (_is_real(self.temperature) and self.temperature > 0):
            raise ValueError(f"temperature must be a finite number > 0, got {self.temperature!r}")
        if not (_is_int(self.neighbors) and self.neighbors >= 1):
            raise ValueError(f"neighbors must be an integer >= 1, got {self.neighbors!r}")
        if not (_is_real(self.balance) and self.balance >= 0):
            raise ValueError(f"balance must be a finite number >= 0, got {self.balance!r}")
        if self.dedup_eps is not None and not (_is_real(self.dedup_eps) and 0 <= self.dedup_eps <= 2):
            raise ValueError(f"dedup_eps must be None or a number in [0, 2], got {self.dedup_eps!r}")
        if self.clip_keep is not None and not (_is_real(self.clip_keep) and 0 <= self.clip_keep <= 1):
            raise ValueError(f"clip_keep must be None or a fraction in [0, 1], got {self.clip_keep!r}")
        if self.clip_threshold is not None and not _is_real(self.clip_threshold):
            raise ValueError(f"clip_threshold must be None or a finite number, got {self.clip_threshold!r}")
        if not (_is_int(self.seed) and self.seed >= 0):
            raise ValueError(f"seed must be an integer >= 0, got {self.seed!r}")


@dataclass(frozen=True, slots=True, eq=False)
class PlanResult:
    """The outcome of one plan; arrays are read-only. For random, clip-score and dedup (no
    per-cluster quotas) ``quota`` equals ``kept``."""

    params: PlanParams
    keep: np.ndarray  # (N,) bool, row order
    eligible: np.ndarray  # (K,) int64 pool members surviving dedup and the CLIP filter
    quota: np.ndarray  # (K,) int64
    kept: np.ndarray  # (K,) int64 kept members per cluster
    budget: int  # requested count (round(keep * pool_size) for a fraction)
    n_kept: int  # == min(budget, eligible.sum())
    pool_size: int
    notes: tuple[str, ...] = field(default=())


@dataclass(frozen=True, slots=True, eq=False)
class PlanComparison:
    """Two plans side by side."""

    kept_a: np.ndarray  # (K,) int64
    kept_b: np.ndarray  # (K,) int64
    only_a: np.ndarray  # (n_a,) int64 rows kept by a, not by b
    only_b: np.ndarray  # (n_b,) int64 rows kept by b, not by a
    both: int  # rows kept by both


def budget_count(keep: float | int, pool_size: int) -> int:
    """Samples to keep: an int is a count; a float in [0, 1] a fraction of the pool (half rounds up)."""
    if not (_is_int(pool_size) and pool_size >= 0):
        raise ValueError(f"pool_size must be an integer >= 0, got {pool_size!r}")
    if _is_int(keep):
        if keep < 0:
            raise ValueError(f"keep as a count must be >= 0, got {keep}")
        return int(keep)
    if _is_real(keep) and 0.0 <= float(keep) <= 1.0:
        return min(int(math.floor(float(keep) * pool_size + 0.5)), int(pool_size))
    raise ValueError(f"keep must be a float fraction in [0, 1] or an int count >= 0, got {keep!r}")


def compare_plans(a: PlanResult, b: PlanResult) -> PlanComparison:
    """Rows and per-cluster counts where two plans over the same index differ."""
    if a.keep.shape != b.keep.shape or a.kept.shape != b.kept.shape:
        raise ValueError(f"plans come from different indexes: {a.keep.shape}/{a.kept.shape} vs "
                         f"{b.keep.shape}/{b.kept.shape}")
    return PlanComparison(
        kept_a=a.kept, kept_b=b.kept,
        only_a=np.flatnonzero(a.keep & ~b.keep).astype(np.int64),
        only_b=np.flatnonzero(b.keep & ~a.keep).astype(np.int64),
        both=int(np.count_nonzero(a.keep & b.keep)),
    )


def _vector(name: str, v: np.ndarray | None, n: int, kind: str) -> np.ndarray | None:
    if v is None:
        return None
    a = np.asarray(v)
    if a.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},) like clusters, got {a.shape}")
    if kind == "bool" and a.dtype != np.bool_:
        raise ValueError(f"{name} must be a bool mask, got dtype {a.dtype}")
    if kind == "float":
        if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
            raise ValueError(f"{name} must be numeric, got dtype {a.dtype}")
        if not np.issubdtype(a.dtype, np.floating):
            a = a.astype(np.float64)
    return a


class PlanIndex:
    """Precomputed per-cluster structure of one workspace; build with :meth:`build`."""

    _SEED_CACHE = 3  # random orders kept per index (3 int64 arrays of N each per seed)

    def __init__(self, *, order: np.ndarray, sizes: np.ndarray, d_intra: np.ndarray, centroids: np.ndarray,
                 pool_h: np.ndarray, dup_h: np.ndarray | None, clip_h: np.ndarray | None) -> None:
        """Use :meth:`build`; this stores already-validated arrays (``*_h`` are in hard order)."""
        n, k = order.size, sizes.size
        self.order = order  # (N,) hard position -> row
        self.inv = np.empty(n, dtype=np.intp)  # (N,) row -> hard position
        self.inv[order] = np.arange(n)
        self.sizes = sizes  # (K,) members per cluster (eval rows included)
        self.offsets = np.concatenate(([0], np.cumsum(sizes))).astype(np.intp)  # (K+1,)
        self.d_intra = d_intra  # (K,) NaN for empty clusters
        self.centroids = centroids  # (K, d) float64
        self.n_rows, self.n_clusters = n, k
        self._cl_h = np.repeat(np.arange(k, dtype=np.int32), sizes)  # (N,) cluster per hard position
        self._pool_h = pool_h
        self.pool_size = int(np.count_nonzero(pool_h))
        self._dup_h, self._clip_h = dup_h, clip_h
        self._dup_order = None if dup_h is None else np.argsort(dup_h, kind="stable")  # least dup first
        self._clip_order = None if clip_h is None else np.argsort(-clip_h, kind="stable")  # best first
        self._d_inter: dict[int, np.ndarray] = {}
        self._seeds: OrderedDict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = OrderedDict()
        self._lock = threading.Lock()  # guards the two caches above

    @classmethod
    def build(cls, clusters: np.ndarray, dist_to_centroid: np.ndarray, centroids: np.ndarray,
              in_pool: np.ndarray | None = None, dup_max_sim: np.ndarray | None = None,
              clip_score: np.ndarray | None = None) -> "PlanIndex":
        """Index a clustered dataset.

        Args:
            clusters: (N,) int cluster of every row, in [0, K).
            dist_to_centroid: (N,) float cosine distance of each row to its centroid (d_intra
                averages it over the pool rows of each cluster).
            centroids: (K, d) float cluster centroids (normalised here for d_inter).
            in_pool: (N,) bool, False for rows never to keep (eval rows); default all True.
            dup_max_sim: (N,) float SemDeDup max similarity (densprune.dedup.semdedup), or None.
            clip_score: (N,) float image-text CLIP score, or None (offline embedder).
        """
        cen = np.asarray(centroids, dtype=np.float64)
        if cen.ndim != 2 or cen.shape[0] < 1 or not np.isfinite(cen).all():
            raise ValueError(f"centroids must be a finite (K, d) array with K >= 1, got shape {cen.shape}")
        k = cen.shape[0]
        cl = np.asarray(clusters)
        if cl.ndim != 1 or (cl.size and not np.issubdtype(cl.dtype, np.integer)):
            raise ValueError(f"clusters must be a 1-D integer array, got shape {cl.shape} dtype {cl.dtype}")
        n = cl.size
        if n and (cl.min() < 0 or cl.max() >= k):
            raise ValueError(f"cluster ids must lie in [0, {k}) (K = len(centroids)), got [{cl.min()}, {cl.max()}]")
        dist = _vector("dist_to_centroid", dist_to_centroid, n, "float")
        if not np.isfinite(dist).all():
            raise ValueError("dist_to_centroid must be finite")
        pool = np.ones(n, dtype=bool) if in_pool is None else _vector("in_pool", in_pool, n, "bool")
        dup = _vector("dup_max_sim", dup_max_sim, n, "float")
        clip = _vector("clip_score", clip_score, n, "float")
        order = np.lexsort((-dist.astype(np.float64), cl)).astype(np.intp)  # stable: ties by row
        sizes = np.bincount(cl, minlength=k).astype(np.int64)
        # d_intra over the pool members only (as the workspace's clusters table): eval rows are held out
        d_intra = intra_distance(cl, dist, k, mask=pool)
        logger.info("plan index: %d rows, %d clusters (%d empty), pool %d", n, k, int((sizes == 0).sum()),
                    int(pool.sum()))
        return cls(order=order, sizes=sizes, d_intra=d_intra, centroids=cen, pool_h=pool[order],
                   dup_h=None if dup is None else dup[order], clip_h=None if clip is None else clip[order])

    @property
    def has_clip_scores(self) -> bool:
        return self._clip_h is not None

    @property
    def has_dedup(self) -> bool:
        return self._dup_h is not None

    def d_inter(self, neighbors: int = 20) -> np.ndarray:
        """(K,) mean cosine distance of each centroid to its min(neighbors, K-1) nearest others
        (NaN when K = 1). Cached per ``neighbors``; computed in row blocks, never a full K x K."""
        if not (_is_int(neighbors) and neighbors >= 1):
            raise ValueError(f"neighbors must be an integer >= 1, got {neighbors!r}")
        l = min(int(neighbors), self.n_clusters - 1)
        if l not in self._d_inter:
            out = inter_distance(self.centroids, l)
            with self._lock:
                self._d_inter[l] = out
            return out
        return self._d_inter[l]

    def complexity(self, neighbors: int = 20) -> np.ndarray:
        """(K,) DBP complexity d_inter * d_intra (NaN for empty clusters)."""
        return self.d_inter(neighbors) * self.d_intra

    def _random_orders(self, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per seed: a global random order of hard positions, the same order grouped by cluster
        (random inside each cluster), and row -> position in that grouped order."""
        with self._lock:
            if seed in self._seeds:
                self._seeds.move_to_end(seed)
                return self._seeds[seed]
        g = np.random.default_rng(seed).permutation(self.n_rows)
        w = g[np.argsort(self._cl_h[g], kind="stable")]
        winv = np.empty(self.n_rows, dtype=np.intp)
        winv[self.order[w]] = np.arange(self.n_rows)
        with self._lock:
            self._seeds[seed] = (g, w, winv)
            while len(self._seeds) > self._SEED_CACHE:
                self._seeds.popitem(last=False)
        return g, w, winv

    def _counts(self, mask_f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exclusive cumsum (N+1,) of a cluster-grouped mask and its per-cluster totals (K,)."""
        c = np.empty(mask_f.size + 1, dtype=np.int64)
        c[0] = 0
        np.cumsum(mask_f, out=c[1:])
        return c, c[self.offsets[1:]] - c[self.offsets[:-1]]

    def _eligible(self, p: PlanParams, notes: list[str]) -> np.ndarray:
        """(N,) bool in hard order: pool & not duplicate & CLIP filter."""
        e = self._pool_h.copy()
        if self.pool_size < self.n_rows:
            notes.append(f"{self.n_rows - self.pool_size} rows outside the pool (eval) are never kept")
        if p.dedup_eps is not None:
            dup = self._dup_h > np.float64(1.0 - p.dedup_eps)
            before = int(np.count_nonzero(e))
            e &= ~dup
            notes.append(f"SemDeDup eps={p.dedup_eps:g}: {before - int(np.count_nonzero(e))} pool samples "
                         "are duplicates")
        if p.clip_threshold is not None:
            before = int(np.count_nonzero(e))
            e &= self._clip_h >= p.clip_threshold
            notes.append(f"CLIP score >= {p.clip_threshold:g} removes {before - int(np.count_nonzero(e))} samples")
        if p.clip_keep is not None:
            n_top = budget_count(float(p.clip_keep), self.pool_size)
            e_o = e[self._clip_order]
            cut = e_o & (np.cumsum(e_o) > n_top)
            e[self._clip_order[cut]] = False
            notes.append(f"CLIP top {p.clip_keep:.1%} of the pool ({n_top} samples) removes "
                         f"{int(np.count_nonzero(cut))} samples")
        return e

    def compute(self, params: PlanParams) -> PlanResult:
        """Evaluate one plan: a keep mask and per-cluster counts. See the module docstring."""
        if not isinstance(params, PlanParams):
            raise TypeError(f"params must be a PlanParams, got {type(params).__name__}")
        p = params
        if (p.method == "clip-score" or p.clip_keep is not None or p.clip_threshold is not None) \
                and self._clip_h is None:
            raise ValueError(_NO_CLIP)
        if (p.method == "dedup" or p.dedup_eps is not None) and self._dup_h is None:
            raise ValueError(_NO_DUP)
        notes: list[str] = []
        budget = budget_count(p.keep, self.pool_size)
        elig = self._eligible(p, notes)
        n_elig = int(np.count_nonzero(elig))
        if budget > n_elig:
            notes.append(f"budget {budget} exceeds the eligible pool ({n_elig}): every eligible sample kept")
        if p.method in ("dbp", "ssp"):
            keep, counts, quota = self._by_quota(p, elig, budget, notes)
            kept = quota.copy()  # quota <= counts, so every quota is filled exactly
        else:
            _, counts = self._counts(elig)
            if p.method == "random":
                glob = self._random_orders(p.seed)[0]
            elif p.method == "clip-score":
                glob = self._clip_order
            else:  # dedup: least duplicated first
                glob = self._dup_order
            e_o = elig[glob]
            sel = glob[e_o & (np.cumsum(e_o) <= budget)]  # hard positions of the first `budget` eligible
            keep_h = np.zeros(self.n_rows, dtype=bool)
            keep_h[sel] = True
            keep = keep_h[self.inv]
            kept = np.bincount(self._cl_h[sel], minlength=self.n_clusters).astype(np.int64)
            quota = kept.copy()
        for a in (keep, counts, quota, kept):
            a.setflags(write=False)
        return PlanResult(params=p, keep=keep, eligible=counts, quota=quota, kept=kept, budget=budget,
                          n_kept=int(kept.sum()), pool_size=self.pool_size, notes=tuple(notes))

    def _by_quota(self, p: PlanParams, elig: np.ndarray, budget: int,
                  notes: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """DBP/SSP: per-cluster quotas, filled in the `within` order. Returns keep (N,), counts, quota."""
        if p.within == "random":
            _, frame, frame_inv = self._random_orders(p.seed)
            e = elig[frame]
        else:
            frame_inv, e = self.inv, elig
        c, counts = self._counts(e)
        if p.method == "dbp":
            if budget < counts.sum() and quota_bounds(counts, budget, p.balance)[2]:
                notes.append(f"budget {budget} is below the per-cluster floors: floors dropped to 0")
            quota = dbp_quotas(self.complexity(p.neighbors), counts, budget, p.temperature, p.balance)
        else:
            quota = uniform_rate_quotas(counts, budget)
        start = c[self.offsets[:-1]]
        if p.within == "easy":  # the last `quota` eligible of each cluster: nearest the centroid
            keep_f = e & (c[:-1] >= np.repeat(start + counts - quota, self.sizes))
        else:  # the first `quota` eligible: farthest first (hard) or the seeded random order
            keep_f = e & (c[:-1] < np.repeat(start + quota, self.sizes))
        return keep_f[frame_inv], counts, quota
