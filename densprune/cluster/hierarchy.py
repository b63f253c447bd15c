"""A hierarchy of concepts for hierarchical balanced sampling (Vo et al. 2024, "Automatic data curation
for self-supervised learning: a clustering-based approach").

Vo et al. cluster the data with k-means, then the centroids of that level with k-means again, and so
on up a few levels, each level with "resampling-clustering" steps that move its centroids toward a
uniform cover of the data (plain k-means puts too many centroids in dense regions). Here level 0 is
the workspace's K concepts (its k-means of the images); the levels above cluster the concept
centroids. The resampling step, as we read the paper: draw at most ``r`` points at random from each
cluster of the current level (all of a smaller one), re-run k-means on that more balanced sample
from the current centroids, and reassign every point; repeated ``steps`` times.

Pure numpy (K points of dimension d: a few milliseconds at K = 500), seeded, deterministic.
"""

from __future__ import annotations

import logging

import numpy as np

from densprune.vectors import l2_normalize

log = logging.getLogger(__name__)

__all__ = ["RESAMPLE_STEPS", "concept_hierarchy", "default_levels", "spherical_kmeans"]

RESAMPLE_STEPS = 3  # resampling-clustering steps per level
BRANCHING = 10  # default: each level has about a tenth of the nodes of the level below


def default_levels(k: int, branching: int = BRANCHING) -> tuple[int, ...]:
    """Node counts of the levels above K concepts: K / 10, K / 100, ... while at least 2 (K = 500 ->
    (50, 5); the demo's 89 -> (9,); K < 20 -> (): one level, plain balanced sampling)."""
    out, n = [], k
    while n // branching >= 2:
        n //= branching
        out.append(n)
    return tuple(out)


def spherical_kmeans(x: np.ndarray, k: int, *, seed: int, init: np.ndarray | None = None,
                     niter: int = 25) -> tuple[np.ndarray, np.ndarray]:
    """Spherical k-means of a few points (k-means++ seeding unless ``init``; Lloyd iterations on cosine).

    Args:
        x: (M, d) L2-normalised points.
        k: clusters, 1 <= k <= M.
        init: (k, d) starting centroids, or None.
    Returns:
        labels (M,) int64 in [0, k) and centroids (k, d) float64 (L2-normalised; an emptied cluster
        keeps its previous centroid).
    """
    x = np.asarray(x, dtype=np.float64)
    m = x.shape[0]
    if not 1 <= k <= m:
        raise ValueError(f"k must be in [1, {m}], got {k}")
    rng = np.random.default_rng(seed)
    if init is None:  # k-means++ on the cosine distance
        cent = np.empty((k, x.shape[1]))
        cent[0] = x[rng.integers(m)]
        d = 1.0 - x @ cent[0]
        for i in range(1, k):
            w = np.clip(d, 0, None) ** 2
            cent[i] = x[rng.choice(m, p=w / w.sum()) if w.sum() > 0 else rng.integers(m)]
            d = np.minimum(d, 1.0 - x @ cent[i])
    else:
        cent = np.array(init, dtype=np.float64)
    labels = np.full(m, -1)
    for _ in range(niter):
        new = np.argmax(x @ cent.T, axis=1)
        if np.array_equal(new, labels):
            break
        labels = new
        sums = np.zeros_like(cent)
        np.add.at(sums, labels, x)
        filled = np.bincount(labels, minlength=k) > 0
        cent[filled] = l2_normalize(sums[filled], dtype=np.float64)
    return labels, cent


def _resampled(x: np.ndarray, k: int, *, seed: int, steps: int, per_cluster: int) -> np.ndarray:
    """(M,) labels of ``x`` (M, d) into k clusters after ``steps`` resampling-clustering steps."""
    labels, cent = spherical_kmeans(x, k, seed=seed)
    rng = np.random.default_rng((seed, 1))
    for _ in range(steps):
        picked = np.concatenate([rng.permutation(np.flatnonzero(labels == j))[:per_cluster] for j in range(k)])
        if picked.size <= k:
            break
        _, cent = spherical_kmeans(x[picked], k, seed=seed, init=cent)
        labels = np.argmax(x @ cent.T, axis=1)
    return labels


def concept_hierarchy(centroids: np.ndarray, levels: tuple[int, ...], *, seed: int = 0,
                      steps: int = RESAMPLE_STEPS, per_cluster: int | None = None) -> list[np.ndarray]:
    """The parents of every level's nodes, bottom-up.

    Args:
        centroids: (K, d) concept centroids (level 0).
        levels: node counts of the levels above, decreasing (:func:`default_levels`); a level that
            asks for more nodes than the level below has is clipped to it.
        seed: k-means seed (the plan's).
        steps: resampling-clustering steps per level.
        per_cluster: points drawn per cluster in a resampling step (default: the mean cluster size of
            that level, so the sample is about as large as the level but balanced).
    Returns:
        ``parents``: one (n_l,) int64 array per level above, ``parents[l][i]`` the node of level l+1 that
        holds node i of level l (nodes renumbered 0..n-1 without empty ones).
    """
    x = l2_normalize(centroids, dtype=np.float64)
    parents = []
    for i, k in enumerate(levels):
        k = min(int(k), x.shape[0])
        if k < 1:
            break
        r = per_cluster or max(1, int(round(x.shape[0] / k)))
        labels = _resampled(x, k, seed=seed + 7919 * i, steps=steps, per_cluster=r)
        used, labels = np.unique(labels, return_inverse=True)
        parents.append(labels.astype(np.int64))
        sums = np.zeros((used.size, x.shape[1]))
        np.add.at(sums, labels, x)
        x = l2_normalize(sums, dtype=np.float64)
    log.debug("concept hierarchy: %s nodes per level", [p.max() + 1 for p in parents])
    return parents
