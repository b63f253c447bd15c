"""Per-concept (cluster) statistics: size, d_intra, d_inter, complexity, nearest concepts (labels: labels.py)."""

from __future__ import annotations

import numpy as np

from densprune.vectors import l2_normalize


def cluster_sizes(labels: np.ndarray, k: int, mask: np.ndarray | None = None) -> np.ndarray:
    """labels: (N,) -> (K,) int64 member counts (only rows where ``mask`` is True)."""
    lab = labels if mask is None else labels[mask]
    return np.bincount(lab, minlength=k).astype(np.int64)


def intra_distance(labels: np.ndarray, dist: np.ndarray, k: int, mask: np.ndarray | None = None) -> np.ndarray:
    """d_intra: mean cosine distance of each cluster's members to its centroid.

    labels, dist: (N,) -> (K,) float64, NaN for empty clusters.
    """
    if mask is not None:
        labels, dist = labels[mask], dist[mask]
    sums = np.bincount(labels, weights=dist.astype(np.float64), minlength=k)
    counts = np.bincount(labels, minlength=k)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


NEIGHBORS = 20  # l, the nearest other centroids d_inter averages over (the paper and its code: 20)


def inter_distance(centroids: np.ndarray, neighbors: int = NEIGHBORS, block: int = 1024) -> np.ndarray:
    """d_inter: mean cosine distance of each centroid to its l = min(neighbors, K-1) nearest others.

    Computed in blocks of ``block`` centroids, so memory stays at block x K for any K.
    centroids: (K, d) -> (K,) float64 (NaN when K == 1).
    """
    c = l2_normalize(centroids, dtype=np.float64)
    k = c.shape[0]
    n_near = min(int(neighbors), k - 1)
    out = np.full(k, np.nan)
    for r0 in range(0, k if n_near > 0 else 0, block):
        r1 = min(r0 + block, k)
        d = 1.0 - c[r0:r1] @ c.T  # (rb, K)
        d[np.arange(r1 - r0), np.arange(r0, r1)] = np.inf  # not its own neighbour
        out[r0:r1] = np.partition(d, n_near - 1, axis=1)[:, :n_near].mean(axis=1)
    return out


def complexity(d_intra: np.ndarray, d_inter: np.ndarray) -> np.ndarray:
    """C_j = d_inter_j * d_intra_j, (K,) -> (K,); NaN where either is NaN."""
    return np.asarray(d_inter, dtype=np.float64) * np.asarray(d_intra, dtype=np.float64)


def nearest_concepts(centroids: np.ndarray, j: int, n: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """The ``n`` concepts nearest to concept ``j``: (indices (n,), cosine distances (n,)).

    centroids: (K, d); only row ``j`` of the distance matrix is computed.
    """
    c = np.asarray(centroids, dtype=np.float64)
    c = l2_normalize(c, dtype=np.float64)
    d = 1.0 - c @ c[j]
    d[j] = np.inf
    order = np.argsort(d, kind="stable")[: min(n, d.size - 1)]
    return order, d[order]


def mean_directions(vectors: np.ndarray, labels: np.ndarray, k: int, mask: np.ndarray | None = None,
                    block: int = 65536) -> np.ndarray:
    """Each concept's mean direction in another vector space: the L2-normalised mean of its members' rows.

    Used where the concepts were clustered on one embedder (``--concept-embedder``) and are named in
    another's space (CLIP's, for zero-shot names). vectors: (N, d), read in blocks of ``block`` rows;
    labels: (N,) in [0, K); mask: (N,) bool, the rows that count (None: all) -> (K, d) float32, a zero row
    for a concept without members.
    """
    n, d = vectors.shape
    sums = np.zeros((k, d), np.float64)
    for s in range(0, n, block):
        lab = np.asarray(labels[s:s + block])
        x = np.asarray(vectors[s:s + block], np.float32)
        if mask is not None:
            keep = np.asarray(mask[s:s + block], bool)
            lab, x = lab[keep], x[keep]
        order = np.argsort(lab, kind="stable")
        lab, x = lab[order], x[order]
        starts = np.flatnonzero(np.r_[True, lab[1:] != lab[:-1]]) if lab.size else np.zeros(0, np.int64)
        if starts.size:
            sums[lab[starts]] += np.add.reduceat(x, starts, axis=0)
    norms = np.linalg.norm(sums, axis=1, keepdims=True)
    return np.where(norms > 0, sums / np.maximum(norms, 1e-30), 0.0).astype(np.float32)
