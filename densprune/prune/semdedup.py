"""SemDeDup: within-cluster semantic deduplication, computed blockwise in bounded memory.

Inside each cluster, members are ordered farthest-from-centroid first ("keep hard"); member i is a
duplicate at threshold eps when its maximum cosine similarity to the members ranked before it
exceeds 1 - eps. Storing that maximum (and which member attains it) once makes every eps a free
threshold on a column: :func:`is_duplicate`, :func:`kept_fraction_curve`.

The rule is facebookresearch/SemDeDup's (``semdedup.py``): there the similarity matrix of a cluster
has its diagonal and lower triangle set to 0 and ``M = max(triu(S, 1), dim=0)``, so a member's value
is ``max(0, max_{j<i} cos)`` and the first member of a cluster gets 0; a member is removed when
``M > 1 - eps``. densprune stores the same value. At eps = 0 the original compares similarities of
exact copies (1 up to float rounding) with 1, so whether it removes them depends on rounding; here
eps is floored at :data:`COPY_TOL`, so eps = 0 removes exact copies and nothing else, and every
eps >= COPY_TOL is exactly the original rule. eps lies in [0, 1] (beyond 1 every member with a
positive similarity is already a duplicate).

The similarity of a cluster with itself is never materialised: rows are taken in blocks of
``row_block``, columns in tiles of ``col_block`` (only columns before the block's last row), and a
running maximum is kept, as in faiss contrib's big_batch_search. Peak extra memory is about
``row_block * col_block * 4`` bytes (32 MiB with the defaults) plus one cluster's rows (in float32
when that takes at most ``FLOAT32_CLUSTER_BYTES``).
"""

from __future__ import annotations

import logging
import time

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["COPY_TOL", "NO_EARLIER", "dup_threshold", "max_similarity_to_earlier", "semdedup", "semdedup_group",
           "is_duplicate", "kept_fraction_curve"]

#: a cluster up to this size in float32 is converted once before its tiles (larger ones tile by tile)
FLOAT32_CLUSTER_BYTES = 512 * 2**20

#: max_sim of a member with no earlier member (the first of its cluster), as in the original's
#: upper-triangular max over a zero-filled matrix; a duplicate for no eps <= 1.
NO_EARLIER = 0.0
#: Cosine similarities within COPY_TOL of 1 are copies: float32 dot products of the same unit
#: vector land within about 1e-6 of 1 (rows are renormalised in float32 first, so float16 storage
#: does not widen that).
COPY_TOL = 1e-5


def _check_blocks(row_block: int, col_block: int) -> None:
    for name, v in (("row_block", row_block), ("col_block", col_block)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {v!r}")


def max_similarity_to_earlier(
    x: np.ndarray, row_block: int = 1024, col_block: int = 8192
) -> tuple[np.ndarray, np.ndarray]:
    """For each row, the largest inner product with any EARLIER row, and that row's index.

    Args:
        x: (n, d) float16/float32/float64, L2-normalised rows, already ordered farthest from the
            centroid first. Not renormalised here. Each block is converted to float32.
        row_block, col_block: tile sizes; memory is bounded by row_block * col_block floats.
    Returns:
        max_sim: (n,) float32, max(0, max_{j < i} <x_i, x_j>) (the original's triu max; row 0 gets
            0.0, ``NO_EARLIER``).
        argmax: (n,) int64, the j attaining max_{j < i} <x_i, x_j> (the smallest j on ties), even
            where that maximum is negative; -1 for row 0.
    """
    _check_blocks(row_block, col_block)
    if x.ndim != 2:
        raise ValueError(f"x must be 2-D (n, d), got shape {x.shape}")
    n = x.shape[0]
    best = np.full(n, NO_EARLIER, dtype=np.float32)
    arg = np.full(n, -1, dtype=np.int64)
    for r0 in range(1, n, row_block):  # row 0 has no earlier member
        r1 = min(r0 + row_block, n)
        xr = np.ascontiguousarray(x[r0:r1], dtype=np.float32)
        rows = np.arange(r0, r1)
        d_run = np.full(r1 - r0, -np.inf, dtype=np.float32)
        i_run = np.full(r1 - r0, -1, dtype=np.int64)
        for c0 in range(0, r1 - 1, col_block):  # columns 0 .. r1-2 can precede some row
            c1 = min(c0 + col_block, r1 - 1)
            s = xr @ np.ascontiguousarray(x[c0:c1], dtype=np.float32).T  # (rb, cb)
            if c1 > r0:  # tile touches the diagonal: hide column >= row
                s[np.arange(c0, c1)[None, :] >= rows[:, None]] = -np.inf
            j = s.argmax(axis=1)
            v = s[np.arange(s.shape[0]), j]
            better = v > d_run  # strict: earlier tiles win ties, so the smallest index is kept
            d_run[better] = v[better]
            i_run[better] = j[better] + c0
        best[r0:r1] = np.maximum(d_run, NO_EARLIER)  # negative maxima count as 0, as in the original
        arg[r0:r1] = i_run
    return best, arg


def semdedup(
    embeddings: np.ndarray,
    clusters: np.ndarray,
    dist_to_centroid: np.ndarray,
    *,
    row_block: int = 1024,
    col_block: int = 8192,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """SemDeDup over a whole dataset, one cluster at a time.

    Args:
        embeddings: (N, d) L2-normalised vectors, an array or ``np.memmap`` (float16 is fine);
            only one cluster's rows are read at a time, in increasing row order, and renormalised
            in float32 (so copies stored in float16 still have similarity 1 within float32 noise).
        clusters: (N,) int cluster id of every row (any non-negative ids).
        dist_to_centroid: (N,) float distance of each row to its centroid (1 - cos); within a
            cluster members are ranked by it, largest first, ties by row index.
        row_block, col_block: tile sizes of :func:`max_similarity_to_earlier`.
        progress: log progress (INFO) about every 10 seconds.
    Returns:
        max_sim: (N,) float32, each row's max cosine similarity to the earlier-ranked members of
            its cluster, floored at 0 (0.0 for the first member of each cluster), at most 1.
        dup_of: (N,) int64 GLOBAL row index of that most similar earlier member, -1 for none.
    """
    _check_blocks(row_block, col_block)
    if embeddings.ndim != 2:
        raise ValueError(f"embeddings must be 2-D (N, d), got shape {embeddings.shape}")
    n = embeddings.shape[0]
    clusters = np.asarray(clusters)
    dist = np.asarray(dist_to_centroid, dtype=np.float64)
    if clusters.shape != (n,) or dist.shape != (n,):
        raise ValueError(
            f"clusters {clusters.shape} and dist_to_centroid {dist.shape} must both be ({n},) like embeddings"
        )
    if n and not np.issubdtype(clusters.dtype, np.integer):
        raise ValueError(f"clusters must be integers, got dtype {clusters.dtype}")
    if not np.isfinite(dist).all():
        raise ValueError("dist_to_centroid must be finite")
    max_sim = np.full(n, NO_EARLIER, dtype=np.float32)
    dup_of = np.full(n, -1, dtype=np.int64)
    if n == 0:
        return max_sim, dup_of
    order = np.argsort(clusters, kind="stable")  # rows grouped by cluster, increasing row index inside
    starts = np.flatnonzero(np.r_[True, clusters[order][1:] != clusters[order][:-1]])
    ends = np.r_[starts[1:], n]
    largest = int((ends - starts).max())
    logger.info(
        "SemDeDup: %d rows, %d clusters (largest %d rows, ~%.0f MiB), tiles %dx%d (%.0f MiB)",
        n, starts.size, largest, largest * embeddings.shape[1] * embeddings.dtype.itemsize / 2**20,
        row_block, col_block, row_block * col_block * 4 / 2**20,
    )
    t_last = time.monotonic()
    for c, (s, e) in enumerate(zip(starts, ends)):
        idx = order[s:e]  # increasing row indices
        max_sim[idx], dup_of[idx] = semdedup_group(embeddings, idx, dist[idx], row_block=row_block,
                                                   col_block=col_block)
        if progress and time.monotonic() - t_last > 10:
            t_last = time.monotonic()
            logger.info("SemDeDup: %d / %d clusters, %d / %d rows", c + 1, starts.size, e, n)
    return max_sim, dup_of


def semdedup_group(embeddings: np.ndarray, idx: np.ndarray, dist: np.ndarray, *, row_block: int = 1024,
                   col_block: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """SemDeDup inside one group (a cluster): the work :func:`semdedup` does per cluster.

    Args:
        embeddings: (N, d) all vectors (only the rows ``idx`` are read).
        idx: (n,) the group's rows, increasing; dist: (n,) their distances to the group's centroid.
    Returns:
        max_sim (n,) float32 and dup_of (n,) int64 (global rows, -1 for none), aligned with ``idx``.
    """
    rank = np.argsort(-np.asarray(dist, dtype=np.float64), kind="stable")  # farthest first, ties by row index
    x = np.asarray(embeddings[idx])[rank]  # one sequential-ish read of this cluster
    if x.dtype != np.float32 and x.nbytes * 4 // x.itemsize <= FLOAT32_CLUSTER_BYTES:
        x = x.astype(np.float32)  # once, instead of once per tile (1.3-1.9x faster for float16)
    if x.dtype == np.float32:
        x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)  # unit rows: the similarity is a cosine
    sim, arg = max_similarity_to_earlier(x, row_block=row_block, col_block=col_block)
    rows = idx[rank]
    out_sim = np.empty(idx.size, dtype=np.float32)
    out_of = np.empty(idx.size, dtype=np.int64)
    out_sim[rank] = np.minimum(sim, 1.0)  # a cosine: float32 rounding can put exact copies at 1 + 1e-7
    out_of[rank] = np.where(arg >= 0, rows[np.maximum(arg, 0)], -1)
    return out_sim, out_of


def _check_eps(eps: np.ndarray) -> np.ndarray:
    eps = np.asarray(eps, dtype=np.float64)
    if not np.isfinite(eps).all() or (eps < 0).any() or (eps > 1).any():
        raise ValueError("eps must lie in [0, 1], got "
                         f"{eps.min() if eps.size else eps}..{eps.max() if eps.size else eps}")
    return eps


def dup_threshold(eps: float | np.ndarray) -> float | np.ndarray:
    """The similarity above which a member is a duplicate: 1 - max(eps, COPY_TOL), float64.

    Equal to the original's 1 - eps for every eps >= COPY_TOL; at eps = 0 it removes exact copies.
    """
    eps = _check_eps(eps)
    t = 1.0 - np.maximum(eps, COPY_TOL)
    return float(t) if t.ndim == 0 else t


def is_duplicate(max_sim: np.ndarray, eps: float) -> np.ndarray:
    """Duplicate mask at threshold eps: max_sim > :func:`dup_threshold` (eps). NaN is never a duplicate.

    Args:
        max_sim: (N,) float from :func:`semdedup`.
        eps: in [0, 1]; larger eps removes more; 0 removes exact copies.
    Returns:
        (N,) bool.
    """
    # float64 threshold: float32 max_sim is compared exactly, as in kept_fraction_curve
    return np.asarray(max_sim) > np.float64(dup_threshold(float(eps)))


def kept_fraction_curve(max_sim: np.ndarray, eps: np.ndarray) -> np.ndarray:
    """Fraction of rows that are NOT duplicates, for every eps at once (one sort).

    Args:
        max_sim: (N,) float.
        eps: (E,) thresholds, any order.
    Returns:
        (E,) float64 fraction kept, mean(~is_duplicate(max_sim, eps_e)); 1.0 for N = 0.
    """
    thr = np.asarray(dup_threshold(eps), dtype=np.float64)
    m = np.asarray(max_sim, dtype=np.float64).ravel()
    if m.size == 0:
        return np.ones(thr.shape)
    nan = np.isnan(m)
    s = np.sort(m[~nan])
    kept = np.searchsorted(s, thr, side="right") + nan.sum()  # rows with max_sim <= the threshold
    return kept / m.size
