"""Nearest neighbours by cosine similarity over stored vectors, read in blocks (pure: no file of its own).

The vectors are a workspace's L2-normalised ``embeddings/image.npy`` (a read-only memmap, float16 or
float32), so cosine similarity is a dot product. :func:`top_k` is the exact reference: it reads the
rows in blocks of ``block`` rows (never N x d at once) and scores them with torch in the vectors' own
dtype (float16 matmul on the CPU is ~7x faster than converting to float32 first, and its scores differ
from float32 by < 2e-4), then re-scores each block's best ``k + margin`` candidates in float32, so the
similarities returned are float32-exact and the ranking is exact except between rows whose scores are
within float16 rounding of each other at the edge of a block's candidates.

:func:`probe_concepts` is the approximate path: the concepts' centroids are an inverted file already
(k-means put every row in the list of its nearest centroid), so a query reads only the members of the
``nprobe`` concepts nearest it. Its recall against :func:`top_k` is measured, never assumed
(benchmarks/bench_search.py).
"""

from __future__ import annotations

import warnings

import numpy as np

from densprune.vectors import sorted_unique

__all__ = ["BLOCK_ROWS", "normalise", "probe_concepts", "top_k"]

BLOCK_ROWS = 1 << 18  # rows per block: 256k x 512 float16 = 256 MB read, (256k, Q) scores
RESCORE_MARGIN = 32  # candidates per block beyond k, re-scored in float32


def normalise(q: np.ndarray) -> np.ndarray:
    """(Q, d) float32 rows of ``q`` ((Q, d) or (d,)) scaled to unit length; a zero or non-finite row is a
    ValueError."""
    q = np.atleast_2d(np.asarray(q, dtype=np.float32))
    norms = np.linalg.norm(q, axis=1, keepdims=True)
    if not np.all(np.isfinite(norms)) or (norms == 0).any():
        raise ValueError("a query vector is zero or not finite: it has no direction to search along")
    return q / norms


def _tensor(a: np.ndarray):
    import torch

    with warnings.catch_warnings():  # a read-only memmap block: torch only reads it
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(np.ascontiguousarray(a))


def top_k(vectors: np.ndarray, queries: np.ndarray, k: int, *, rows: np.ndarray | None = None,
          block: int = BLOCK_ROWS, exclude: np.ndarray | None = None, device: str = "cpu"
          ) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` rows most similar to each query, exactly (see the module docstring).

    Args:
        vectors: (N, d) unit-length vectors, float16 or float32 (typically a memmap).
        queries: (Q, d) or (d,) query vectors (normalised here).
        k: neighbours per query (fewer come back when fewer rows are searched).
        rows: (M,) int64 the rows to search, sorted (reads in row order are fastest); default all N.
        block: rows read and scored at a time.
        exclude: (E,) int64 rows never returned (e.g. the query's own row).
        device: torch device for the block products ("cuda" when there is one).
    Returns:
        rows (Q, k') int64 and similarities (Q, k') float32, most similar first (equal similarities by
        row), k' = min(k, rows searched less excluded).
    """
    import torch

    q32 = normalise(queries)
    if q32.shape[1] != vectors.shape[1]:
        raise ValueError(f"the query has {q32.shape[1]} dimensions, the stored vectors {vectors.shape[1]}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    n = vectors.shape[0] if rows is None else int(rows.size)
    nq = q32.shape[0]
    half = vectors.dtype == np.float16  # scored in float16 (CPU or GPU), re-scored in float32 below
    qt = _tensor(q32).to(device=device, dtype=torch.float16 if half else torch.float32).T.contiguous()  # (d, Q)
    ex = None if exclude is None or len(exclude) == 0 else sorted_unique(exclude)
    best_r = np.empty((nq, 0), dtype=np.int64)
    best_s = np.empty((nq, 0), dtype=np.float32)
    for lo in range(0, n, block):
        hi = min(lo + block, n)
        ids = np.arange(lo, hi, dtype=np.int64) if rows is None else np.asarray(rows[lo:hi], dtype=np.int64)
        v = np.asarray(vectors[lo:hi] if rows is None else vectors[ids])  # (b, d) in the stored dtype
        s = (_tensor(v).to(device) @ qt).float()  # (b, Q)
        if ex is not None:
            hit = np.isin(ids, ex)
            if hit.any():
                s[_tensor(hit).to(device)] = -float("inf")
        take = min(k + RESCORE_MARGIN, s.shape[0])
        cand = torch.topk(s, take, dim=0).indices.cpu().numpy().T  # (Q, take) positions in the block
        exact = np.einsum("qtd,qd->qt", np.asarray(v[cand], dtype=np.float32), q32)  # float32 re-score
        cid = ids[cand]
        if ex is not None:
            exact[np.isin(cid, ex)] = -np.inf
        all_s, all_r = np.concatenate([best_s, exact], axis=1), np.concatenate([best_r, cid], axis=1)
        order = np.lexsort((all_r, -all_s), axis=1)[:, :k] if all_s.shape[1] else all_s.astype(np.int64)
        best_s, best_r = np.take_along_axis(all_s, order, axis=1), np.take_along_axis(all_r, order, axis=1)
    keep = np.isfinite(best_s).all(axis=0)  # excluded rows only fill slots when too few rows remain
    return best_r[:, keep], best_s[:, keep]


def probe_concepts(centroids: np.ndarray, queries: np.ndarray, nprobe: int) -> np.ndarray:
    """(Q, nprobe') int64: the concepts whose centroids (K, d) are most similar to each query ((Q, d) or
    (d,)), nearest first; nprobe' = min(nprobe, K)."""
    c = normalise(centroids)
    q = normalise(queries)
    s = q @ c.T  # (Q, K)
    p = max(1, min(int(nprobe), c.shape[0]))
    if p < c.shape[0]:
        part = np.argpartition(-s, p - 1, axis=1)[:, :p]
    else:
        part = np.tile(np.arange(c.shape[0]), (q.shape[0], 1))
    order = np.argsort(-np.take_along_axis(s, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1).astype(np.int64)
