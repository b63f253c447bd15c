"""Interactive pruning plans: everything per-cluster is computed once; a plan move is K-sized arithmetic.

:class:`PlanIndex` holds the rows sorted by (cluster, distance to centroid descending), the "hard"
order, together with the cluster offsets in that order, the distances, d_intra of the pool, the
pool mask, the global orders by SemDeDup similarity and CLIP score, and the per-concept summary
(:mod:`densprune.prune.plan_summary`: eligible counts and distance sums at every dedup / CLIP level
the app offers). :meth:`PlanIndex.compute` turns a :class:`PlanParams` into per-cluster numbers and,
when asked, a keep mask:

    counts   = eligible per cluster after pool, dedup(eps) and the CLIP filter   (summary, or a pass)
    budget   = keep * counts.sum()  (a fraction of what remains; an int stays a count)
    d_intra  = fixed-point distance sums of the eligible / counts               (the remaining pool)
    quota    = dbp_quotas(d_inter * d_intra, counts, budget, tau, balance)      (K-sized)
    keep     = eligible & (c - c[offset_j] < quota_j)   ("hard": farthest first; c = exclusive cumsum)

Where the summary holds the plan's filters the first three lines read K numbers, whatever N is;
otherwise (a CLIP threshold, an eps or CLIP fraction off the summary's levels, the clip-score and
dedup methods) one vectorised pass over the rows computes them; both give the same numbers bit for
bit (tests/test_plan_summary.py). The mask is one more pass, made only when it is asked for.

The budget follows the paper: it deduplicates LAION-CAT-440M to 277M and keeps a fraction of that
(the reference code: ``N = int(prune_ratio * total_dataset_size)`` over the deduplicated set), so
``keep=0.3`` is 30% of what survives dedup and the CLIP filter, and ``clip_keep`` is a fraction of
what dedup left. A count larger than what is eligible is an error, never a silent no-op.

"easy" counts the rank from the cluster's end; "random" runs the same pass over a per-seed order
that is random inside each cluster. The random method draws its per-cluster counts from the
multivariate hypergeometric distribution (the counts of a uniformly random subset of ``budget``
eligible rows; seeded) and fills them in that per-seed order: a uniformly random subset, from K
numbers. balanced gives every concept the same count (water-filled); hierarchical shares the budget
equally down a k-means tree of the concept centroids (densprune.cluster.hierarchy, Vo et al. 2024).
prototype, clip-score and dedup keep the first ``budget`` eligible rows of a global order. Times:
benchmarks/bench_plan_moves.py (summary against the full pass) and benchmarks/bench_plan.py (the
full pass against a per-cluster loop). The index is read-only after build except for small caches
guarded by a lock, so one index may be shared across threads (e.g. a Streamlit ``cache_resource``).
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from densprune.cluster.concepts import NEIGHBORS, inter_distance, intra_distance
from densprune.cluster.hierarchy import concept_hierarchy, default_levels
from densprune.prune import masks
from densprune.prune.decisions import Decisions, InfeasibleDecisions
from densprune.prune.plan_summary import (
    CLIP_GRID,
    EPS_GRID,
    PlanSummary,
    budget_count,
    dedup_levels,
    fixed_point,
    intra_from_sums,
    is_int,
    is_real,
    segment_sums,
)
from densprune.prune.quotas import (
    balanced_quotas,
    bounded_quotas,
    complexity_weights,
    dbp_quotas,
    hierarchical_quotas,
    quota_bounds,
    uniform_rate_quotas,
)
from densprune.prune.semdedup import dup_threshold
from densprune.vectors import sorted_unique

logger = logging.getLogger(__name__)

__all__ = ["METHODS", "WITHIN", "PlanParams", "PlanResult", "PlanIndex", "budget_count"]

METHODS = ("dbp", "ssp", "balanced", "hierarchical", "prototype", "random", "clip-score", "negclip", "dedup")
# methods that keep the first eligible rows of one global order (no per-concept quotas): CLIP score, least
# duplicated, and the distance to the sample's prototype (Sorscher et al. 2022's self-supervised prototype
# metric, one global threshold: within "hard" the farthest from their centroid, "easy" the nearest)
GLOBAL_ORDER_METHODS = ("prototype", "clip-score", "negclip", "dedup")
WITHIN = ("hard", "easy", "random")
_RANDOM_QUOTA_STREAM = 0x5EED  # the random method's quota draw: a stream apart from the seed's within-cluster order
_NO_CLIP = ("this workspace has no CLIP scores (offline embedder): clip_keep, clip_threshold and "
            "method='clip-score' need image-text CLIP scores; embed with a CLIP model to use them")
_NO_NEGCLIP = ("this workspace has no negCLIPLoss scores: method='negclip' needs them; compute them with "
               "`densprune negclip DIR` (it needs image and caption vectors from a CLIP embedder)")
_NO_DUP = ("this workspace has no SemDeDup similarities: dedup_eps and method='dedup' need the "
           "per-row max similarity (samples.dup_max_sim) that precompute stores; rebuild the workspace with "
           "`densprune precompute SOURCE --workspace DIR --force`")


@dataclass(frozen=True, slots=True)
class PlanParams:
    """One pruning plan. Hashable, so it can key a cache."""

    method: str = "dbp"  # one of METHODS
    keep: float | int = 0.5  # float in [0, 1]: fraction of what dedup + CLIP filter left (paper); int: a count
    temperature: float = 0.1  # DBP softmax tau (paper 0.1; the reference code's default is 0.5)
    neighbors: int = NEIGHBORS  # l nearest centroids for d_inter (reference default 20)
    balance: float = 0.0  # cluster balancing ratio; 0 = floor of 1 per cluster (paper's best)
    dedup_eps: float | None = None  # SemDeDup eps in [0, 1]; None = no dedup; 0 = exact copies only
    clip_keep: float | None = None  # keep the top fraction of what dedup left, by CLIP score, before quotas
    clip_threshold: float | None = None  # keep CLIP score >= threshold, before quotas
    within: str = "hard"  # which members of a cluster fill its quota: one of WITHIN
    seed: int = 0  # for within="random" and method="random"

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.within not in WITHIN:
            raise ValueError(f"within must be one of {WITHIN}, got {self.within!r}")
        if self.method == "prototype" and self.within == "random":
            raise ValueError("the prototype method keeps the farthest (within=hard) or the nearest (within=easy) "
                             "images from their centroid over the whole pool: a random order is the random method")
        if is_int(self.keep):
            if self.keep < 0:
                raise ValueError(f"keep as a count must be >= 0, got {self.keep}")
            object.__setattr__(self, "keep", int(self.keep))
        elif is_real(self.keep) and 0.0 <= float(self.keep) <= 1.0:
            object.__setattr__(self, "keep", float(self.keep))
        else:
            raise ValueError(f"keep must be a float fraction in [0, 1] or an int count >= 0, got {self.keep!r}")
        if not (is_real(self.temperature) and self.temperature > 0):
            raise ValueError(f"temperature must be a finite number > 0, got {self.temperature!r}")
        if not (is_int(self.neighbors) and self.neighbors >= 1):
            raise ValueError(f"neighbors must be an integer >= 1, got {self.neighbors!r}")
        if not (is_real(self.balance) and self.balance >= 0):
            raise ValueError(f"balance must be a finite number >= 0, got {self.balance!r}")
        if self.dedup_eps is not None and not (is_real(self.dedup_eps) and 0 <= self.dedup_eps <= 1):
            raise ValueError(f"dedup_eps must be None or a number in [0, 1], got {self.dedup_eps!r}")
        if self.clip_keep is not None and not (is_real(self.clip_keep) and 0 <= self.clip_keep <= 1):
            raise ValueError(f"clip_keep must be None or a fraction in [0, 1], got {self.clip_keep!r}")
        if self.clip_threshold is not None and not is_real(self.clip_threshold):
            raise ValueError(f"clip_threshold must be None or a finite number, got {self.clip_threshold!r}")
        if not (is_int(self.seed) and self.seed >= 0):
            raise ValueError(f"seed must be an integer >= 0, got {self.seed!r}")


@dataclass(frozen=True, slots=True, eq=False)
class PlanResult:
    """The outcome of one plan; arrays are read-only. For random, clip-score and dedup (no
    per-cluster quotas) ``quota`` equals ``kept``. ``d_intra`` and ``complexity`` are the concept
    statistics of the remaining pool that DBP used (computed for every method, NaN where a concept
    has nothing eligible)."""

    params: PlanParams
    keep: np.ndarray | None  # (N,) bool, row order; None when computed with mask=False
    eligible: np.ndarray  # (K,) int64 pool members surviving dedup and the CLIP filter
    quota: np.ndarray  # (K,) int64
    kept: np.ndarray  # (K,) int64 kept members per cluster
    budget: int  # samples to keep: round(keep * n_eligible) for a fraction, the count itself for an int
    n_kept: int  # == budget
    n_eligible: int  # the remaining pool: eligible.sum()
    pool_size: int  # the raw pool (before dedup and the CLIP filter)
    d_intra: np.ndarray  # (K,) float64 mean distance to the centroid of the eligible members
    complexity: np.ndarray  # (K,) float64 d_inter * d_intra as DBP used it
    notes: tuple[str, ...] = field(default=())
    decisions: str | None = None  # the digest of the decisions applied (densprune.prune.decisions), None: none
    effects: tuple[dict, ...] = field(default=())  # per decision: what it is and how many images it moved
    forced: int = 0  # images kept by always tags and keep-whole concepts (part of n_kept)


def _ranks(order: np.ndarray) -> np.ndarray:
    """The inverse (N,) of a permutation ``order`` (N,): the rank of every position, int32 when it fits."""
    rank = np.empty(order.size, dtype=np.int32 if order.size < 2**31 else np.int64)
    rank[order] = np.arange(order.size, dtype=rank.dtype)
    return rank


def _hard_order(cl: np.ndarray, dist: np.ndarray, k: int) -> np.ndarray:
    """(N,) intp rows sorted by cluster, then distance descending, then row: ``np.lexsort((-dist, cl))``
    as two stable sorts, the second a radix sort of 16-bit cluster ids when K allows (5.3 -> 3.1 s at
    10M rows)."""
    by_dist = np.argsort(-dist, kind="stable")
    keys = cl[by_dist]
    if k <= np.iinfo(np.int16).max:
        keys = keys.astype(np.int16)
    return by_dist[np.argsort(keys, kind="stable")].astype(np.intp, copy=False)


def _first_by_rank(mask: np.ndarray, rank: np.ndarray, n: int, n_mask: int) -> np.ndarray:
    """The ``n`` rows of ``mask`` (N,) bool (``n_mask`` of them set) with the smallest ``rank`` (N,),
    a permutation: a new (N,) bool mask. Sequential passes and one partition of the masked ranks,
    no gather or scatter through the order (which is random across the N rows)."""
    if n >= n_mask:
        return mask.copy()
    if n <= 0:
        return np.zeros_like(mask)
    cut = np.partition(rank[mask], n - 1)[n - 1]  # the n-th smallest rank among the masked rows
    return mask & (rank <= cut)


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


@dataclass(frozen=True, slots=True, eq=False)
class _Tagged:
    """What a plan's never and always rows are at its filters. Positions are hard positions, sorted."""

    never_pos: np.ndarray  # (M1,) every never row
    never_n: np.ndarray  # (K,) int64 eligible never rows per concept
    never_q: np.ndarray  # (K,) int64 their fixed-point distance sums
    always_pos: np.ndarray  # (M2,) the always rows in the pool (eval rows are never kept)
    always_n: np.ndarray  # (K,) int64 always rows in the pool per concept
    always_elig_n: np.ndarray  # (K,) int64 of those, the ones that pass the filters
    always_eval: int  # always rows outside the pool
    never_eligible: int  # never rows that would have been eligible
    always_outside: int  # always rows in the pool that the filters would have removed


def _effects(dec: Decisions, t: _Tagged, kept: np.ndarray, base: np.ndarray) -> tuple[dict, ...]:
    """Per decision in force, what it changed against the same plan without decisions (``base`` (K,)
    kept per concept): a rule, its concept's kept count before and after; a tag, its rows."""
    out: list[dict] = []
    for r in dec.active_rules:
        j = r.concept
        out.append({"decision": f"concept {j}: {r.describe()}", "kind": "rule", "concept": j,
                    "kept_without": int(base[j]), "kept": int(kept[j]), "moved": int(kept[j] - base[j])})
    for tag in dec.tags:
        if tag.action == "label":
            continue
        out.append({"decision": f"tag {tag.name} ({tag.action})", "kind": "tag", "tag": tag.name,
                    "rows": int(tag.rows.size)})
    out.append({"decision": "all decisions", "kind": "total", "never_eligible": t.never_eligible,
                "always_kept": int(t.always_n.sum()), "always_outside_filters": t.always_outside,
                "moved": int(np.maximum(kept - base, 0).sum())})
    return tuple(out)


@dataclass(frozen=True)
class MaskInputs:
    """What densprune.prune.masks reads for one plan at the summary's levels (PlanIndex._mask_inputs)."""

    lo: np.ndarray  # (K,) segment starts of the concepts in the frame
    hi: np.ndarray  # (K,) segment ends
    from_end: bool  # easy: the kept members are the last of each segment
    frame: np.ndarray | None  # (N,) hard position at each frame position; None: the hard order
    pos: np.ndarray  # (N,) every row's position in the frame
    dl_f: np.ndarray  # (N,) uint8 dedup levels in frame order
    clip_f: np.ndarray | None  # (N,) CLIP ranks in frame order, or None (no CLIP filter)
    cl: np.ndarray  # (N,) concept of every row
    dl: np.ndarray  # (N,) uint8 dedup level of every row
    clip: np.ndarray | None  # (N,) CLIP rank of every row, or None
    level: int  # the dedup level b: eligible iff dl > b
    clip_cut: int  # eligible iff the CLIP rank <= clip_cut (with a CLIP filter)


class PlanIndex:
    """Precomputed per-cluster structure of one workspace; build with :meth:`build`."""

    _SEED_CACHE = 3  # seeds kept per index: their random orders (2 intp arrays of N) and frame columns
    # masks of plans at the summary's levels use the compiled kernels (densprune.prune.masks) from this many
    # rows on; below it the numpy fill takes milliseconds and a process does not pay numba's ~0.5 s first call
    COMPILED_MASK_ROWS = 2_000_000

    def __init__(self, *, order: np.ndarray, sizes: np.ndarray, d_intra: np.ndarray, centroids: np.ndarray,
                 dist_h: np.ndarray, pool_h: np.ndarray, dup_h: np.ndarray | None,
                 clip_h: np.ndarray | None, dup_rank: np.ndarray | None = None,
                 clip_rank: np.ndarray | None = None, summary: PlanSummary | None = None,
                 negclip_h: np.ndarray | None = None, negclip_rank: np.ndarray | None = None,
                 inv: np.ndarray | None = None) -> None:
        """Use :meth:`build` or :meth:`from_arrays`; this stores already-validated arrays (``*_h`` are in
        hard order; ``inv``, the global ranks and the per-concept summary are computed here unless given)."""
        n, k = order.size, sizes.size
        self.order = order  # (N,) hard position -> row
        self.inv = _ranks(order) if inv is None else inv  # (N,) row -> hard position (int32 when N < 2**31)
        self.sizes = sizes  # (K,) members per cluster (eval rows included)
        self.offsets = np.concatenate(([0], np.cumsum(sizes))).astype(np.intp)  # (K+1,)
        self.d_intra = d_intra  # (K,) over the whole pool; NaN for clusters without pool members
        self.centroids = centroids  # (K, d) float64
        self.n_rows, self.n_clusters = n, k
        self._cl_h = np.repeat(np.arange(k, dtype=np.int32), sizes)  # (N,) cluster per hard position
        self._dist_h = dist_h  # (N,) float64 distance to the centroid, hard order
        self._starts = self.offsets[:-1][sizes > 0]  # segment starts of the non-empty clusters
        self._pool_h = pool_h
        self.pool_size = int(np.count_nonzero(pool_h))
        self._dup_h, self._clip_h = dup_h, clip_h
        # (N,) rank of every hard position in a global order: least duplicated first, best CLIP score first
        if dup_h is not None and dup_rank is None:
            dup_rank = _ranks(np.argsort(dup_h, kind="stable"))
        if clip_h is not None and clip_rank is None:
            clip_rank = _ranks(np.argsort(-clip_h, kind="stable"))
        self._dup_rank = None if dup_h is None else dup_rank
        self._clip_rank = None if clip_h is None else clip_rank
        if negclip_h is not None and negclip_rank is None:  # best negCLIPLoss first
            negclip_rank = _ranks(np.argsort(-np.asarray(negclip_h), kind="stable"))
        self._negclip_h = negclip_h
        self._negclip_rank = None if negclip_h is None else negclip_rank
        if summary is None:
            summary = PlanSummary.build(pool_h=pool_h, dist_h=dist_h, sizes=sizes, dup_h=dup_h,
                                        clip_rank=self._clip_rank)
        self.summary = summary  # per-concept counts and distance sums at every filter level (plan_summary.py)
        self._d_inter: dict[int, np.ndarray] = {}
        self._seeds: OrderedDict[int, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._proto_rank: dict[str, np.ndarray] = {}  # per within direction: the prototype method's order
        self._tag_pos: dict[tuple[str, str], np.ndarray] = {}  # sorted hard positions of tagged rows, per digest
        self._frame_cols: OrderedDict[int, dict[str, np.ndarray]] = OrderedDict()  # :meth:`_random_frame_columns`
        self._by_row: dict[str, np.ndarray] = {}  # row-order copies of the filter columns (:meth:`_row_columns`)
        self._hier: dict[int, list[np.ndarray]] = {}  # per seed: the concept hierarchy (:meth:`hierarchy`)
        self._lock = threading.Lock()  # guards the caches above

    @classmethod
    def build(cls, clusters: np.ndarray, dist_to_centroid: np.ndarray, centroids: np.ndarray,
              in_pool: np.ndarray | None = None, dup_max_sim: np.ndarray | None = None,
              clip_score: np.ndarray | None = None, negclip_score: np.ndarray | None = None) -> "PlanIndex":
        """Index a clustered dataset.

        Args:
            clusters: (N,) int cluster of every row, in [0, K).
            dist_to_centroid: (N,) float cosine distance of each row to its centroid (d_intra
                averages it over the pool rows of each cluster).
            centroids: (K, d) float cluster centroids (normalised here for d_inter).
            in_pool: (N,) bool, False for rows never to keep (eval rows); default all True.
            dup_max_sim: (N,) float SemDeDup max similarity (densprune.prune.semdedup), or None.
            clip_score: (N,) float image-text CLIP score, or None (offline embedder).
            negclip_score: (N,) float negCLIPLoss (densprune.prune.negclip), or None.
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
        negclip = _vector("negclip_score", negclip_score, n, "float")
        if negclip is not None and not np.isfinite(negclip).all():
            raise ValueError("negclip_score must be finite (recompute it with `densprune negclip DIR`)")
        dist = dist.astype(np.float64, copy=False)  # (no copies of N-sized arrays that are not needed)
        if dup is not None and (dup < 0).any():  # the original's triu max is >= 0: older workspaces stored -1
            dup = np.where(dup < 0, 0.0, dup)
        order = _hard_order(cl, dist, k)
        sizes = np.bincount(cl, minlength=k).astype(np.int64)
        # d_intra over the pool members only (as the workspace's clusters table): eval rows are held out
        d_intra = intra_distance(cl, dist, k, mask=pool)
        logger.info("plan index: %d rows, %d clusters (%d empty), pool %d", n, k, int((sizes == 0).sum()),
                    int(pool.sum()))
        return cls(order=order, sizes=sizes, d_intra=d_intra, centroids=cen, dist_h=dist[order], pool_h=pool[order],
                   dup_h=None if dup is None else dup[order], clip_h=None if clip is None else clip[order],
                   negclip_h=None if negclip is None else negclip[order].astype(np.float64))

    # the arrays that define an index (:meth:`arrays`); the others are derived from them in __init__
    STORED = ("order", "inv", "sizes", "d_intra", "centroids", "dist_h", "pool_h", "dup_h", "clip_h", "dup_rank",
              "clip_rank", "negclip_h", "negclip_rank",
              *(f"summary_{name}" for name in PlanSummary.STORED))

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays that define this index, by the names of :attr:`STORED` (absent: no dedup or no
        CLIP scores), for storing it: :meth:`from_arrays` restores it without sorting anything.
        ``order`` (N,) row of every hard position and ``inv`` (N,) its inverse, the hard position of every
        row (both int32 when N < 2**31), ``sizes`` (K,), ``d_intra``
        (K,), ``centroids`` (K, d), ``dist_h`` / ``dup_h`` / ``clip_h`` (N,) float64 and ``pool_h``
        (N,) bool in hard order, ``dup_rank`` / ``clip_rank`` (N,) ranks in the two global orders."""
        small = np.int32 if self.n_rows < 2**31 else np.int64
        out = {"order": self.order.astype(small, copy=False), "inv": self.inv.astype(small, copy=False),
               "sizes": self.sizes, "d_intra": self.d_intra,
               "centroids": self.centroids, "dist_h": self._dist_h, "pool_h": self._pool_h,
               "dup_h": self._dup_h, "clip_h": self._clip_h, "dup_rank": self._dup_rank, "clip_rank": self._clip_rank,
               "negclip_h": self._negclip_h, "negclip_rank": self._negclip_rank}
        out.update({f"summary_{name}": v for name, v in self.summary.arrays().items()})
        return {k: v for k, v in out.items() if v is not None}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> "PlanIndex":
        """The index :meth:`arrays` described (arrays may be read-only memory maps). Shapes and the
        permutation's range are checked: a stored index that does not fit is a ValueError."""
        a = {k: np.asarray(v) for k, v in arrays.items()}
        missing = {"order", "sizes", "d_intra", "centroids", "dist_h", "pool_h"} - set(a)
        if missing:
            raise ValueError(f"a stored plan index needs the arrays {sorted(missing)}")
        order, sizes, cen = a["order"], a["sizes"], a["centroids"]
        n, k = order.size, sizes.size
        if order.ndim != 1 or sizes.ndim != 1 or cen.ndim != 2 or cen.shape[0] != k or a["d_intra"].shape != (k,):
            raise ValueError(f"stored plan index: order {order.shape}, sizes {sizes.shape}, centroids {cen.shape}, "
                             f"d_intra {a['d_intra'].shape} do not fit together")
        if int(sizes.sum()) != n or (n and (int(order.min()) < 0 or int(order.max()) >= n)):
            raise ValueError(f"stored plan index: {n} rows in order, {int(sizes.sum())} in sizes, or rows out of range")
        for name in ("inv", "dist_h", "pool_h", "dup_h", "clip_h", "dup_rank", "clip_rank", "negclip_h",
                     "negclip_rank"):
            if name in a and a[name].shape != (n,):
                raise ValueError(f"stored plan index: {name} has shape {a[name].shape}, expected ({n},)")
        if ("dup_h" in a) != ("dup_rank" in a) or ("clip_h" in a) != ("clip_rank" in a) \
                or ("negclip_h" in a) != ("negclip_rank" in a):
            raise ValueError("stored plan index: a global order without its values (or the reverse)")
        inv = a.get("inv")  # absent in indexes stored before it was: computed from the order
        if inv is not None and n:  # a spot check that it is the order's inverse (the whole check costs what it saves)
            probe = np.unique(np.linspace(0, n - 1, min(n, 4096)).astype(np.int64))
            if inv.dtype.kind not in "iu" or not np.array_equal(np.asarray(inv[order[probe]], dtype=np.int64), probe):
                raise ValueError("stored plan index: inv is not the inverse of order")
        summary = None
        if any(name.startswith("summary_") for name in a):
            summary = PlanSummary.from_arrays({name[len("summary_"):]: v for name, v in a.items()
                                               if name.startswith("summary_")}, k)
            if summary.counts.shape[:2] != (1 + len(EPS_GRID) * ("dup_h" in a), 1 + len(CLIP_GRID) * ("clip_h" in a)):
                raise ValueError(f"stored plan summary: levels {summary.counts.shape[:2]} do not fit the index's "
                                 "dedup and CLIP columns")
        return cls(order=order.astype(np.intp, copy=False), sizes=sizes.astype(np.int64, copy=False),
                   d_intra=a["d_intra"], centroids=cen.astype(np.float64, copy=False), dist_h=a["dist_h"],
                   pool_h=a["pool_h"].astype(bool, copy=False), dup_h=a.get("dup_h"), clip_h=a.get("clip_h"),
                   dup_rank=a.get("dup_rank"), clip_rank=a.get("clip_rank"), summary=summary,
                   negclip_h=a.get("negclip_h"), negclip_rank=a.get("negclip_rank"), inv=inv)

    def _segment(self, cluster: int) -> tuple[int, int]:
        """[lo, hi) of one cluster's rows in the hard order (farthest from the centroid first)."""
        if not (is_int(cluster) and 0 <= cluster < self.n_clusters):
            raise ValueError(f"cluster must be an integer in [0, {self.n_clusters}), got {cluster!r}")
        return int(self.offsets[cluster]), int(self.offsets[cluster + 1])

    def members(self, cluster: int, limit: int, nearest_first: bool = True) -> np.ndarray:
        """Row numbers (<= limit,) of one cluster's members nearest its centroid first, equal distances by
        row number (the order of ``rank_in_cluster``), or farthest first (``nearest_first=False``: that
        order reversed).
        A slice of the hard order: no pass over the rows."""
        lo, hi = self._segment(cluster)
        limit = max(int(limit), 0)
        if limit == 0 or hi == lo:
            return np.empty(0, dtype=np.int64)
        seg_rows, seg_dist = self.order[lo:hi], self._dist_h[lo:hi]  # farthest first, ties by row
        if nearest_first:  # the tail, plus every row tied with its first distance (ties run the other way)
            start = max(hi - lo - limit, 0)
            if start > 0:
                start = int(np.searchsorted(-seg_dist, -seg_dist[start], side="left"))
            rows, dist = seg_rows[start:], seg_dist[start:]
            pick = np.lexsort((rows, dist))[:limit]
        else:
            end = min(limit, hi - lo)
            if 0 < end < hi - lo:
                end = int(np.searchsorted(-seg_dist, -seg_dist[end - 1], side="right"))
            rows, dist = seg_rows[:end], seg_dist[:end]
            pick = np.lexsort((-rows, -dist))[:limit]
        return rows[pick].astype(np.int64)

    def duplicates(self, cluster: int, eps: float, limit: int) -> tuple[np.ndarray, int]:
        """One cluster's SemDeDup duplicates at ``eps`` (max similarity > 1 - eps): the row numbers (<= limit,)
        of the most similar first (equal similarities by row number), and how many there are in all."""
        if self._dup_h is None:
            raise ValueError(_NO_DUP)
        lo, hi = self._segment(cluster)
        sims = self._dup_h[lo:hi]
        hit = sims > dup_threshold(eps)
        rows, sims = self.order[lo:hi][hit], sims[hit]
        return rows[np.lexsort((rows, -sims))[:max(int(limit), 0)]].astype(np.int64), int(rows.size)

    @property
    def has_clip_scores(self) -> bool:
        return self._clip_h is not None

    @property
    def has_negclip(self) -> bool:
        return self._negclip_h is not None

    @property
    def has_dedup(self) -> bool:
        return self._dup_h is not None

    def d_inter(self, neighbors: int = NEIGHBORS) -> np.ndarray:
        """(K,) mean cosine distance of each centroid to its min(neighbors, K-1) nearest others
        (NaN when K = 1). Cached per ``neighbors``; computed in row blocks, never a full K x K."""
        if not (is_int(neighbors) and neighbors >= 1):
            raise ValueError(f"neighbors must be an integer >= 1, got {neighbors!r}")
        n_near = min(int(neighbors), self.n_clusters - 1)
        if n_near not in self._d_inter:
            out = inter_distance(self.centroids, n_near)
            with self._lock:
                self._d_inter[n_near] = out
            return out
        return self._d_inter[n_near]

    def complexity(self, neighbors: int = NEIGHBORS) -> np.ndarray:
        """(K,) DBP complexity d_inter * d_intra of the whole pool (NaN for empty clusters); a plan
        uses the d_intra of what remains after its filters (:attr:`PlanResult.complexity`)."""
        return self.d_inter(neighbors) * self.d_intra

    def remaining_intra(self, elig_h: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """(K,) d_intra of the eligible rows: mean distance to the centroid of each cluster's
        eligible members (NaN where none), from exact integer sums of the fixed-point distances
        (:func:`~densprune.prune.plan_summary.fixed_point`), so it equals the summary's bit for bit.

        Args:
            elig_h: (N,) bool eligible mask in hard order.
            counts: (K,) int64 eligible members per cluster (from the same mask).
        """
        q = fixed_point(self._dist_h)
        return intra_from_sums(segment_sums(np.where(elig_h, q, 0), self._starts, self.sizes > 0), counts)

    def rows_cluster(self) -> np.ndarray:
        """(N,) int64 cluster of every row, row order (from the index: no read of the workspace)."""
        return self._cl_h[self.inv].astype(np.int64)

    def clusters_of(self, rows: np.ndarray) -> np.ndarray:
        """(M,) int64 cluster of each of ``rows`` (M,) (no N-sized work)."""
        return self._cl_h[self.inv[np.asarray(rows, dtype=np.int64)]].astype(np.int64)

    def rows_in_pool(self) -> np.ndarray:
        """(N,) bool pool mask, row order (from the index: no read of the workspace)."""
        return self._pool_h[self.inv]

    def _random_orders(self, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """Per seed: the hard positions grouped by cluster in a random order inside each cluster (N,),
        and the row at each position of that order (N,)."""
        with self._lock:
            if seed in self._seeds:
                self._seeds.move_to_end(seed)
                return self._seeds[seed]
        g = np.random.default_rng(seed).permutation(self.n_rows)
        cl_g = self._cl_h[g]
        if self.n_clusters <= np.iinfo(np.int16).max:  # numpy's stable sort of 16-bit ints is a radix sort
            cl_g = cl_g.astype(np.int16)
        w = g[np.argsort(cl_g, kind="stable")]
        rows = self.order[w]
        with self._lock:
            self._seeds[seed] = (w, rows)
            while len(self._seeds) > self._SEED_CACHE:
                self._seeds.popitem(last=False)
        return w, rows

    def _pool_after_dedup(self, p: PlanParams, lo: int, hi: int) -> np.ndarray:
        """(hi - lo,) bool, a new array: hard positions [lo, hi) in the pool and not SemDeDup duplicates
        at ``p.dedup_eps`` (the row-local filters every plan applies first)."""
        e = np.array(self._pool_h[lo:hi], dtype=bool)
        if p.dedup_eps is not None:
            e &= ~(self._dup_h[lo:hi] > dup_threshold(p.dedup_eps))
        return e

    def _eligible(self, p: PlanParams) -> tuple[np.ndarray, tuple[int, int, int]]:
        """(N,) bool in hard order: pool & not duplicate & CLIP filter, and what remained after
        each filter: (after dedup, after the CLIP threshold, after the CLIP top fraction)."""
        e = self._pool_after_dedup(p, 0, self.n_rows)
        n_dedup = int(np.count_nonzero(e)) if p.dedup_eps is not None else self.pool_size
        n_thr = n_dedup
        if p.clip_threshold is not None:
            e &= self._clip_h >= p.clip_threshold
            n_thr = int(np.count_nonzero(e))
        n_top = n_thr
        if p.clip_keep is not None:  # a fraction of what dedup left (the paper: dedup, then the CLIP filter)
            e = _first_by_rank(e, self._clip_rank, budget_count(float(p.clip_keep), n_dedup), n_thr)
            n_top = int(np.count_nonzero(e))
        return e, (n_dedup, n_thr, n_top)

    def _filter_notes(self, p: PlanParams, remained: tuple[int, int, int], notes: list[str],
                      removed: list[str]) -> None:
        """What each filter took, as notes and (``removed``) for the error of a budget that does not fit."""
        n_dedup, n_thr, n_top = remained
        if self.pool_size < self.n_rows:
            notes.append(f"{self.n_rows - self.pool_size} rows outside the pool (eval) are never kept")
        if p.dedup_eps is not None:
            notes.append(f"SemDeDup eps={p.dedup_eps:g}: {self.pool_size - n_dedup} pool samples are duplicates")
            removed.append(f"SemDeDup eps={p.dedup_eps:g} removed {self.pool_size - n_dedup:,}")
        if p.clip_threshold is not None:
            notes.append(f"CLIP score >= {p.clip_threshold:g} removes {n_dedup - n_thr} samples")
            removed.append(f"CLIP score >= {p.clip_threshold:g} removed {n_dedup - n_thr:,}")
        if p.clip_keep is not None:
            n_want = budget_count(float(p.clip_keep), n_dedup)
            notes.append(f"CLIP top {p.clip_keep:.1%} of what dedup left ({n_want} of {n_dedup} samples) "
                         f"removes {n_thr - n_top} samples")
            removed.append(f"the CLIP top {p.clip_keep:.1%} removed {n_thr - n_top:,}")

    def summary_level(self, params: PlanParams) -> tuple[int, int] | None:
        """The summary's (dedup, CLIP) level that answers ``params`` without a pass over the rows, or
        None when only the full pass can (the clip-score and dedup methods, a CLIP threshold, an eps or
        CLIP fraction off the summary's levels: densprune.prune.plan_summary)."""
        if params.method in GLOBAL_ORDER_METHODS:
            return None
        return self.summary.level(params.dedup_eps, params.clip_keep, params.clip_threshold)

    def slow_knobs(self, params: PlanParams) -> list[str]:
        """Which of ``params``' settings make a plan need a full pass over the rows (empty when the
        per-concept summary answers it): the words the app shows next to a slow plan."""
        out = []
        if params.method in GLOBAL_ORDER_METHODS:
            out.append(f"method {params.method} (a global order of the rows)")
        if params.clip_threshold is not None:
            out.append("a CLIP score threshold")
        if params.dedup_eps is not None and self.summary.level(params.dedup_eps, None) is None:
            out.append(f"dedup eps {params.dedup_eps:g} (the summary holds 0 to 0.3 in steps of 0.005)")
        if params.clip_keep is not None and self.summary.level(None, params.clip_keep) is None:
            out.append(f"CLIP top {params.clip_keep:.1%} (the summary holds 5% to 100% in steps of 5%)")
        return out

    def compute(self, params: PlanParams, mask: bool = True, *, summary: bool = True,
                decisions: Decisions | None = None) -> PlanResult:
        """Evaluate one plan: per-cluster counts and (``mask``) the keep mask. See the module docstring.

        The counts come from the per-concept summary when it holds the plan's filters (K-sized work,
        whatever N is: :meth:`summary_level`), else from a full pass over the rows (``summary=False``
        forces the full pass: the reference the summary is tested against). Both give the same
        numbers. ``mask=False`` leaves the (N,) keep mask out (``keep`` is None); with ``mask`` the
        mask is materialised from the quotas in one pass over the rows.

        ``decisions`` (concept rules and row tags, densprune.prune.decisions) are applied as that
        module describes; the tagged rows add work of their size (M), not N's. Decisions that cannot
        all hold raise :class:`~densprune.prune.decisions.InfeasibleDecisions`."""
        if not isinstance(params, PlanParams):
            raise TypeError(f"params must be a PlanParams, got {type(params).__name__}")
        p = params
        if (p.method == "clip-score" or p.clip_keep is not None or p.clip_threshold is not None) \
                and self._clip_h is None:
            raise ValueError(_NO_CLIP)
        if p.method == "negclip" and self._negclip_h is None:
            raise ValueError(_NO_NEGCLIP)
        if (p.method == "dedup" or p.dedup_eps is not None) and self._dup_h is None:
            raise ValueError(_NO_DUP)
        dec = decisions if decisions is not None and not decisions.empty else None
        notes: list[str] = []
        removed: list[str] = []
        level = self.summary_level(p) if summary else None
        no_filter = p.dedup_eps is None and p.clip_keep is None and p.clip_threshold is None
        if level is None:  # the full pass
            elig, remained = self._eligible(p)
            counts = segment_sums(elig, self._starts, self.sizes > 0)
            qsum = None
            d_intra = self.d_intra if no_filter else self.remaining_intra(elig, counts)
        else:
            elig = None
            b, c = level
            counts = np.array(self.summary.counts[b, c], dtype=np.int64)
            qsum = self.summary.qsum[b, c]
            n_dedup = int(self.summary.counts[b, 0].sum())
            remained = (n_dedup, n_dedup, int(counts.sum()))
            d_intra = self.d_intra if no_filter else intra_from_sums(qsum, counts)
        self._filter_notes(p, remained, notes, removed)
        n_elig = int(counts.sum())
        budget = budget_count(p.keep, n_elig)
        if budget > n_elig:
            raise ValueError(f"a budget of {budget:,} samples is more than the {n_elig:,} eligible: the pool holds "
                             f"{self.pool_size:,}" + (f" and {'; '.join(removed)}" if removed else "")
                             + ". Lower --keep (a fraction counts what remains), "
                               "or loosen --dedup-eps / the CLIP filter.")
        tagged = None
        if dec is not None:
            tagged = self._tagged(dec, p, level, elig)
            if tagged.never_n.any():  # never rows leave the pool DBP measures
                if qsum is None:
                    qsum = segment_sums(np.where(elig, fixed_point(self._dist_h), 0), self._starts, self.sizes > 0)
                counts = counts - tagged.never_n
                d_intra = intra_from_sums(qsum - tagged.never_q, counts)
        comp = self.d_inter(p.neighbors) * d_intra
        forced = 0
        if dec is None and p.method in GLOBAL_ORDER_METHODS:
            keep, kept = self._by_order(p, elig, budget, n_elig, mask)
            quota = kept.copy()
        elif dec is None:
            quota = self._quota(p, counts, comp, budget, notes)
            kept = quota.copy()  # quota <= counts, so every quota is filled exactly
            keep = None
            if mask:
                keep = (self._fill_at_level(p, quota, level) if self._compiled_mask(level)
                        else self._fill(p, quota, elig))
        else:
            keep, quota, kept, forced = self._decided(p, dec, tagged, counts, comp, budget, elig, mask, notes,
                                                      level)
        d_intra = np.array(d_intra)  # a copy: the result's, never the index's
        effects: tuple[dict, ...] = ()
        if dec is not None:
            base = self.compute(p, mask=False, summary=summary)
            effects = _effects(dec, tagged, kept, base.kept)
        for a in (keep, counts, quota, kept, d_intra, comp):
            if a is not None:
                a.setflags(write=False)
        return PlanResult(params=p, keep=keep, eligible=counts, quota=quota, kept=kept, budget=budget,
                          n_kept=int(kept.sum()), n_eligible=n_elig, pool_size=self.pool_size, d_intra=d_intra,
                          complexity=comp, notes=tuple(notes), decisions=None if dec is None else dec.digest,
                          effects=effects, forced=forced)

    def _tag_eligible(self, p: PlanParams, pos: np.ndarray, level: tuple[int, int] | None,
                      elig: np.ndarray | None) -> np.ndarray:
        """(M,) bool: whether the hard positions ``pos`` pass the plan's filters (pool, dedup, CLIP),
        from the full pass's mask when there is one, else row by row at the summary's level."""
        if elig is not None:
            return elig[pos]
        e = np.array(self._pool_h[pos], dtype=bool)
        if p.dedup_eps is not None:
            e &= ~(self._dup_h[pos] > dup_threshold(p.dedup_eps))
        if p.clip_keep is not None:
            e &= self._clip_rank[pos] <= self.summary.clip_cut[level]
        return e

    def _tag_positions(self, dec: Decisions, action: str, rows: np.ndarray) -> np.ndarray:
        """(M,) sorted hard positions of ``rows`` (the ``action`` rows of ``dec``), cached per decisions digest:
        they do not change while a slider moves."""
        key = (dec.digest, action)
        with self._lock:
            if key in self._tag_pos:
                return self._tag_pos[key]
        pos = np.sort(self.inv[rows])
        pos.setflags(write=False)
        with self._lock:
            self._tag_pos[key] = pos
            while len(self._tag_pos) > 6:
                self._tag_pos.pop(next(iter(self._tag_pos)))
        return pos

    def _skip_positions(self, dec: Decisions, t: "_Tagged") -> np.ndarray:
        """(M,) sorted distinct hard positions of every tagged pool row (never or always), cached per
        decisions digest (not ``np.union1d``: numpy's hash-based unique takes 0.8 s for 1M rows)."""
        key = (dec.digest, "skip")
        with self._lock:
            if key in self._tag_pos:
                return self._tag_pos[key]
        pos = sorted_unique(np.concatenate([t.never_pos, t.always_pos]))
        pos.setflags(write=False)
        with self._lock:
            self._tag_pos[key] = pos
            while len(self._tag_pos) > 6:
                self._tag_pos.pop(next(iter(self._tag_pos)))
        return pos

    def _tagged(self, dec: Decisions, p: PlanParams, level: tuple[int, int] | None,
                elig: np.ndarray | None) -> "_Tagged":
        """Per concept, what the never and always rows of ``dec`` are at this plan's filters (M-sized)."""
        k = self.n_clusters
        out = {}
        for action in ("never", "always"):
            rows = dec.rows(action)
            if rows.size and (rows[0] < 0 or rows[-1] >= self.n_rows):
                raise ValueError(f"tag rows out of range: {action} rows run to {int(rows[-1])} but the workspace has "
                                 f"{self.n_rows:,} rows (tags from another build of it?); remove them with "
                                 "`densprune untag WS NAME`")
            out[action] = (pos := self._tag_positions(dec, action, rows), self._tag_eligible(p, pos, level, elig))
        never_pos, never_el = out["never"]
        always_pos, always_el = out["always"]
        never_e = never_pos[never_el]
        cl_never = self._cl_h[never_e]
        q = fixed_point(self._dist_h[never_e])  # sorted positions: concepts ascending, exact int64 sums
        edges = np.searchsorted(cl_never, np.arange(k + 1))
        cs = np.concatenate(([0], np.cumsum(q, dtype=np.int64)))
        in_pool = np.asarray(self._pool_h[always_pos], dtype=bool)
        return _Tagged(never_pos=never_pos, never_n=np.diff(edges).astype(np.int64),
                       never_q=cs[edges[1:]] - cs[edges[:-1]],
                       always_pos=always_pos[in_pool],
                       always_n=np.bincount(self._cl_h[always_pos[in_pool]], minlength=k).astype(np.int64),
                       always_elig_n=np.bincount(self._cl_h[always_pos[always_el]], minlength=k).astype(np.int64),
                       always_eval=int(always_pos.size - in_pool.sum()),
                       never_eligible=int(never_e.size), always_outside=int((in_pool & ~always_el).sum()))

    def _decided(self, p: PlanParams, dec: Decisions, t: "_Tagged", counts: np.ndarray, comp: np.ndarray,
                 budget: int, elig: np.ndarray | None, mask: bool, notes: list[str],
                 level: tuple[int, int] | None = None) -> tuple[np.ndarray | None, np.ndarray, np.ndarray, int]:
        """A plan under decisions: always rows and keep-whole concepts first, the method shares the rest
        of the budget among the other concepts under their floors, caps and weights.
        ``counts`` (K,): eligible per concept with the never rows taken out. Returns keep (N,) or None,
        quota (K,) (what the method filled, keep-whole included), kept (K,) (quota + always rows), forced."""
        rules = dec.rule_arrays(self.n_clusters)
        whole, drop = rules.kind == 1, rules.kind == 2
        e = counts - t.always_elig_n  # what is left to share in each concept once the always rows are kept
        forced_whole = np.where(whole, e, 0)
        shared = ~whole & ~drop
        e_s = np.where(shared, e, 0)
        forced = int(t.always_n.sum() + forced_whole.sum())
        rest = budget - forced
        what = (f"always tags {int(t.always_n.sum()):,}, keep-whole concepts {int(forced_whole.sum()):,}")
        if rest < 0:
            raise InfeasibleDecisions(
                f"the decisions force {forced:,} images ({what}) into a budget of {budget:,}: raise --keep to at "
                f"least {forced:,} images, or tag / keep whole fewer")
        if rest > e_s.sum():
            raise InfeasibleDecisions(
                f"a budget of {budget:,} leaves {rest:,} images to share after the {forced:,} forced ({what}), but "
                f"the concepts the method shares hold only {int(e_s.sum()):,} eligible (never tags took "
                f"{t.never_eligible:,}, drop rules {int(np.where(drop, e, 0).sum()):,}); lower --keep or drop less")
        if t.always_eval:
            notes.append(f"{t.always_eval:,} always-tagged rows are eval rows: never kept")
        if t.never_eligible:
            notes.append(f"never tags take {t.never_eligible:,} eligible images out of the pool")
        if forced:
            notes.append(f"decisions keep {forced:,} images first ({what})")
        lo_u, hi_u, w = rules.bounds(counts, t.always_n)  # p% of the eligible; floors and caps count always rows
        lo, hi = np.where(shared, np.minimum(lo_u, e_s), 0), np.where(shared, np.minimum(hi_u, e_s), 0)
        short = np.flatnonzero((rules.kind == 3) & (lo_u < np.ceil(np.nan_to_num(rules.value) - 1e-9))
                               & ~rules.fraction)
        if short.size:
            notes.append(f"floors above what their concept holds keep all of it: concepts {short[:10].tolist()}")
        if hi.sum() < rest:
            raise InfeasibleDecisions(
                f"the caps leave at most {int(hi.sum()):,} images in the shared concepts but {rest:,} are needed "
                f"(budget {budget:,} - forced {forced:,}); raise the caps or lower --keep")
        if lo.sum() > rest:
            raise InfeasibleDecisions(
                f"the floors sum to {int(lo.sum()):,} images but only {rest:,} are left to share (budget {budget:,} "
                f"- forced {forced:,}); lower the floors or raise --keep")
        if p.method in GLOBAL_ORDER_METHODS:
            if (rules.kind >= 3).any():
                notes.append(f"{p.method} keeps a global order: floor, cap and weight rules do not apply to it")
            return self._decided_by_order(p, t, shared, whole, rest, elig, mask) + (forced,)
        bounded = bool((lo > 0).any() or (hi < e_s).any() or (w != 1).any())
        if p.method == "dbp":
            share = complexity_weights(comp, p.temperature) * w * shared
            share = share / share.sum() if share.sum() > 0 else shared / max(shared.sum(), 1)
            m = 1 if p.balance == 0 else int(budget / max(self.n_clusters, 1) * p.balance)
            lo_d = np.minimum(np.maximum(lo, np.clip(np.minimum(m, e_s - 1), 0, None)), hi)
            if lo_d.sum() > rest:
                notes.append(f"budget {budget} is below the per-cluster floors: floors dropped to 0")
                lo_d = lo
            q_s = bounded_quotas(share * rest, rest, lo_d, hi)
        elif p.method == "balanced":  # equal shares of what the bounds leave, water-filled under them
            eq = w * (e_s > 0)
            q_s = bounded_quotas(eq * (rest / eq.sum()) if eq.sum() else eq.astype(np.float64), rest, lo, hi)
        elif p.method == "hierarchical":  # its top-down equal shares, projected onto the bounds when there are any
            q_s = hierarchical_quotas(e_s, self.hierarchy(p.seed), rest)
            if bounded:
                q_s = bounded_quotas((w * q_s).astype(np.float64) * (rest / max(float((w * q_s).sum()), 1.0)),
                                     rest, lo, hi)
        elif p.method == "ssp" or bounded:
            if p.method == "random":
                notes.append("random with floors, caps or weights: each concept keeps its bounded share, chosen "
                             "at random inside it")
            we = w * e_s
            q_s = bounded_quotas(we * (rest / we.sum()) if we.sum() else we, rest, lo, hi)
        else:  # random: the counts of a uniformly random subset of what the shared concepts hold
            rng = np.random.default_rng((p.seed, _RANDOM_QUOTA_STREAM))
            q_s = rng.multivariate_hypergeometric(e_s, rest, method="marginals").astype(np.int64)
        quota = q_s + forced_whole
        keep = None
        if mask and self._compiled_mask(level) and elig is None:  # tagged rows: out of the share, then set
            keep = self._fill_at_level(p, quota, level, skip=self._skip_positions(dec, t))
            keep[self.order[t.never_pos]] = False
            keep[self.order[t.always_pos]] = True
        elif mask:
            keep = self._fill(p, quota, self._untagged(p, t, elig))
            keep[self.order[t.always_pos]] = True
        return keep, quota, quota + t.always_n, forced

    def _untagged(self, p: PlanParams, t: "_Tagged", elig: np.ndarray | None) -> np.ndarray:
        """(N,) bool in hard order: the eligible positions that are neither never nor always tagged."""
        e = self._eligible(p)[0] if elig is None else elig.copy()
        e[t.never_pos] = False
        e[t.always_pos] = False
        return e

    def _decided_by_order(self, p: PlanParams, t: "_Tagged", shared: np.ndarray, whole: np.ndarray, rest: int,
                          elig: np.ndarray, mask: bool) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
        """clip-score / dedup under decisions: always rows and kept-whole concepts, then the first ``rest``
        eligible rows of the global order among the shared concepts."""
        e = self._untagged(p, t, elig)
        in_shared = np.repeat(shared, self.sizes)
        keep_h = _first_by_rank(e & in_shared, self._global_rank(p), rest, int(np.count_nonzero(e & in_shared)))
        keep_h |= e & np.repeat(whole, self.sizes)
        quota = segment_sums(keep_h, self._starts, self.sizes > 0)
        keep_h[t.always_pos] = True
        kept = quota + t.always_n
        return (keep_h[self.inv] if mask else None), quota, kept

    def _quota(self, p: PlanParams, counts: np.ndarray, comp: np.ndarray, budget: int,
               notes: list[str]) -> np.ndarray:
        """(K,) int64 quotas: DBP from ``comp`` (K,), SSP the same rate everywhere, random a seeded
        multivariate hypergeometric draw (the per-concept counts of a uniformly random subset of
        ``budget`` eligible rows, K-sized work)."""
        if p.method == "dbp":
            if budget < counts.sum() and quota_bounds(counts, budget, p.balance)[2]:
                notes.append(f"budget {budget} is below the per-cluster floors: floors dropped to 0")
            return dbp_quotas(comp, counts, budget, p.temperature, p.balance)
        if p.method == "ssp":
            return uniform_rate_quotas(counts, budget)
        if p.method == "balanced":
            return balanced_quotas(counts, budget)
        if p.method == "hierarchical":
            return hierarchical_quotas(counts, self.hierarchy(p.seed), budget)
        rng = np.random.default_rng((p.seed, _RANDOM_QUOTA_STREAM))
        return rng.multivariate_hypergeometric(counts, budget, method="marginals").astype(np.int64)

    def hierarchy(self, seed: int) -> list[np.ndarray]:
        """The concept hierarchy of the hierarchical method (densprune.cluster.hierarchy: k-means of the
        centroids, default levels, seeded), K-sized, built once per seed."""
        with self._lock:
            if seed in self._hier:
                return self._hier[seed]
        parents = concept_hierarchy(self.centroids, default_levels(self.n_clusters), seed=seed)
        with self._lock:
            self._hier[seed] = parents
        return parents

    def _row_columns(self) -> dict[str, np.ndarray]:
        """Row-order copies of what a mask at the summary's levels reads (built once, on the first such
        mask: one gather each through ``inv``): ``cl`` (N,) int16/int32 concept, ``dl`` (N,) uint8 dedup
        level, ``clip`` (N,) CLIP rank (with CLIP scores), and ``dl_h`` the dedup levels in hard order."""
        with self._lock:
            if self._by_row:
                return self._by_row
        dl_h = dedup_levels(self._pool_h, self._dup_h)
        small = np.int16 if self.n_clusters <= np.iinfo(np.int16).max else np.int32
        cols = {"dl_h": dl_h, "cl": self._cl_h.astype(small)[self.inv], "dl": dl_h[self.inv]}
        if self._clip_rank is not None:
            cols["clip"] = np.asarray(self._clip_rank)[self.inv]
        with self._lock:
            self._by_row.update(cols)
        return self._by_row

    def _random_frame_columns(self, seed: int, clip: bool) -> dict[str, np.ndarray]:
        """What a mask in the seed's random frame (:meth:`_random_orders`) reads, cached per seed:
        ``pos`` (N,) int32/int64 every row's position in the frame; ``dl`` (N,) uint8 the dedup levels
        in frame order; with ``clip``, ``clip`` (N,) the CLIP ranks in frame order (built on the first
        CLIP plan of that seed). In frame order the walk of the kept prefixes reads them in sequence,
        not through the frame (a random gather per position)."""
        with self._lock:
            have = self._frame_cols.get(seed)
            if have is not None:
                self._frame_cols.move_to_end(seed)
                if "clip" in have or not clip:
                    return have
        w, _ = self._random_orders(seed)
        if have is None:
            have = {"pos": _ranks(w)[self.inv], "dl": self._row_columns()["dl_h"][w]}
        if clip:
            have = {**have, "clip": np.asarray(self._clip_rank)[w]}
        with self._lock:
            self._frame_cols[seed] = have
            self._frame_cols.move_to_end(seed)
            while len(self._frame_cols) > self._SEED_CACHE:
                self._frame_cols.popitem(last=False)
        return have

    def _compiled_mask(self, level: tuple[int, int] | None) -> bool:
        return level is not None and self.n_rows >= self.COMPILED_MASK_ROWS

    def _mask_inputs(self, p: PlanParams, level: tuple[int, int]) -> MaskInputs:
        """What the mask kernels read for a plan at the summary's (dedup, CLIP) ``level``: its frame
        (the hard order, or the seed's random frame) with the filter columns in that frame's order, and
        the row-order columns."""
        cols = self._row_columns()
        b, c = level
        use_clip = c > 0
        randomised = p.method == "random" or p.within == "random"
        if randomised:
            fc = self._random_frame_columns(p.seed, use_clip)
            frame, pos, dl_f, clip_f = self._random_orders(p.seed)[0], fc["pos"], fc["dl"], fc.get("clip")
        else:  # the hard order is the frame
            frame, pos, dl_f, clip_f = None, self.inv, cols["dl_h"], self._clip_rank
        return MaskInputs(lo=self.offsets[:-1], hi=self.offsets[1:], from_end=p.within == "easy" and not randomised,
                          frame=frame, pos=pos, dl_f=dl_f, clip_f=clip_f if use_clip else None, cl=cols["cl"],
                          dl=cols["dl"], clip=cols.get("clip") if use_clip else None, level=b,
                          clip_cut=int(self.summary.clip_cut[b, c]) if use_clip else 0)

    def _fill_at_level(self, p: PlanParams, quota: np.ndarray, level: tuple[int, int],
                       skip: np.ndarray | None = None) -> np.ndarray:
        """:meth:`_fill` for a plan at the summary's (dedup, CLIP) ``level``, at memory speed
        (densprune.prune.masks: a walk of the kept prefixes and one streaming pass in row order).
        ``skip`` (M,): sorted hard positions taken out of the method's share (tagged rows); the caller
        sets their mask entries. Returns the (N,) bool keep mask in row order."""
        m = self._mask_inputs(p, level)
        cuts = masks.frame_cuts(m.lo, m.hi, quota, from_end=m.from_end, frame=m.frame, dl_f=m.dl_f, level=m.level,
                                clip_f=m.clip_f, clip_cut=m.clip_cut, skip=skip)
        return masks.write_mask(m.pos, m.cl, cuts, from_end=m.from_end, dl=m.dl, level=m.level, clip=m.clip,
                                clip_cut=m.clip_cut)

    def _fill(self, p: PlanParams, quota: np.ndarray, elig: np.ndarray | None) -> np.ndarray:
        """The (N,) bool keep mask in row order that fills ``quota`` (K,) in each cluster in the
        ``within`` order (random for the random method): one pass over the rows (``elig`` (N,), the
        eligible mask in hard order, is computed when not given). Plans off the summary's levels
        come here; those on them go to :meth:`_fill_at_level`."""
        if elig is None:
            elig = self._eligible(p)[0]
        if p.method == "random" or p.within == "random":  # rows grouped by cluster, random inside
            frame, frame_rows = self._random_orders(p.seed)
            e = elig[frame]
        else:  # the hard order itself
            frame_rows, e = self.order, elig
        # c[p] = eligible positions before p (exclusive count); within a cluster the kept eligible
        # positions are those before the cut where c reaches start + quota (hard, random) or from the
        # cut where it reaches start + counts - quota (easy): K binary searches, then ranges of the frame
        c = np.empty(e.size + 1, dtype=np.int32 if e.size < 2**31 else np.int64)
        c[0] = 0
        np.cumsum(e, out=c[1:])
        lo, hi = self.offsets[:-1], self.offsets[1:]
        start = c[lo]
        if p.within == "easy" and p.method != "random":  # the last `quota` eligible: nearest the centroid
            cut = np.searchsorted(c[:-1], start + (c[hi] - start) - quota, side="left")
            first, last = np.clip(cut, lo, hi), hi
        else:  # the first `quota` eligible: farthest first (hard) or the seeded random order
            cut = np.searchsorted(c[:-1], start + quota, side="left")
            first, last = lo, np.clip(cut, lo, hi)
        inside = np.repeat(np.tile(np.array([False, True, False]), lo.size),  # per cluster: before, kept, after
                           np.column_stack((first - lo, last - first, hi - last)).ravel())
        keep = np.zeros(e.size, dtype=bool)
        keep[frame_rows[e & inside]] = True  # a scatter of the kept rows only
        return keep

    def concept_rows(self, cluster: int) -> tuple[np.ndarray, np.ndarray]:
        """One concept's rows (M,) int64 in the hard order (farthest from the centre first) and their
        pool flags (M,) bool: a slice of the index."""
        lo, hi = self._segment(cluster)
        return self.order[lo:hi].astype(np.int64), np.array(self._pool_h[lo:hi], dtype=bool)

    def concept_keep(self, cluster: int, result: PlanResult, decisions: Decisions | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
        """One concept's rows (M,) int64 and whether ``result`` keeps each (M,) bool, from that
        concept's rows alone (no pass over the other N - M), for the pages that list members.
        The filters are row-local, except the CLIP top fraction, whose cut is the summary's
        (a plan the summary cannot answer, or a clip-score / dedup plan, reads its full mask).
        ``decisions``: those ``result`` was computed with (its digest must match)."""
        p = result.params
        dec = decisions if decisions is not None and not decisions.empty else None
        if (None if dec is None else dec.digest) != result.decisions:
            raise ValueError("concept_keep needs the decisions the plan was computed with")
        lo, hi = self._segment(cluster)
        rows = self.order[lo:hi].astype(np.int64)
        level = self.summary_level(p)
        if level is None:
            keep = result.keep if result.keep is not None else self.compute(p, decisions=dec).keep
            return rows, np.asarray(keep[rows], dtype=bool)
        e = self._pool_after_dedup(p, lo, hi)
        if p.clip_keep is not None:
            e &= self._clip_rank[lo:hi] <= self.summary.clip_cut[level]
        forced = np.empty(0, dtype=np.intp)
        if dec is not None:  # tagged rows of this concept: out of the method's share; always rows kept
            for action in ("never", "always"):
                pos = self.inv[dec.rows(action)]
                pos = pos[(pos >= lo) & (pos < hi)] - lo
                e[pos] = False
                if action == "always":
                    forced = pos[np.asarray(self._pool_h[pos + lo], dtype=bool)]
        q = int(result.quota[cluster])
        if p.method == "random" or p.within == "random":  # this concept's rows in the seed's frame
            frame, _ = self._random_orders(p.seed)
            pos = frame[lo:hi] - lo  # positions inside the segment, in the random order
            ranked = np.cumsum(e[pos]) - 1
            keep_seg = np.zeros(hi - lo, dtype=bool)
            keep_seg[pos] = e[pos] & (ranked < q)
        else:
            ranked = np.cumsum(e) - 1
            n = int(e.sum())
            keep_seg = e & ((ranked >= n - q) if p.within == "easy" else (ranked < q))
        keep_seg[forced] = True
        return rows, keep_seg

    def _global_rank(self, p: PlanParams) -> np.ndarray:
        """(N,) rank of every hard position in the global order of a GLOBAL_ORDER_METHODS plan: CLIP score
        (highest first), duplication (least duplicated first), or the distance to the centroid (farthest
        first for within=hard, nearest first for easy; ties by hard position), built once per direction."""
        if p.method == "clip-score":
            return self._clip_rank
        if p.method == "negclip":
            return self._negclip_rank
        if p.method == "dedup":
            return self._dup_rank
        with self._lock:
            if p.within in self._proto_rank:
                return self._proto_rank[p.within]
        d = np.asarray(self._dist_h)
        rank = _ranks(np.argsort(-d if p.within == "hard" else d, kind="stable"))
        rank.setflags(write=False)
        with self._lock:
            self._proto_rank[p.within] = rank
        return rank

    def _by_order(self, p: PlanParams, elig: np.ndarray, budget: int, n_elig: int,
                  mask: bool = True) -> tuple[np.ndarray | None, np.ndarray]:
        """GLOBAL_ORDER_METHODS: the first ``budget`` eligible rows of a global order.
        Returns keep (N,) (None unless ``mask``) and kept per cluster (K,)."""
        keep_h = _first_by_rank(elig, self._global_rank(p), budget, n_elig)
        kept = segment_sums(keep_h, self._starts, self.sizes > 0)
        return (keep_h[self.inv] if mask else None), kept
