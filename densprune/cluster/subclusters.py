"""Finer clusters inside large concepts, for SemDeDup (``--dedup-clusters``).

SemDeDup compares every member of a group with every earlier member: its cost is the sum over
groups of n_g^2 pairs. Inside the K concepts that is about N^2 / K pairs (10M rows in 500 concepts:
~1e11 pairs; 400M: ~3e14), so large concepts are split into sub-clusters of about
``DEDUP_TARGET_ROWS`` rows first (SemDeDup itself deduplicated LAION-CAT-440M inside 50,000 clusters,
~9k rows each). Sub-clusters nest inside concepts, so a duplicate and the member it duplicates are
always in the same concept; the result stays a per-row column (``dup_max_sim``), so every eps is free.

The split is spherical k-means inside each large concept: trained on a seeded sample of its rows
(at most ``max_points_per_centroid`` per sub-cluster) and assigned in blocks, reading only that
concept's rows. Cost: about N x (rows per sub-cluster) pairs for SemDeDup, plus one
n_j x k_j x d assignment per split concept.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from densprune.cluster.kmeans import SEED, assign, train_spherical_kmeans
from densprune.vectors import cosine_distance

log = logging.getLogger(__name__)

DEDUP_TARGET_ROWS = 2_000  # the size rule: concepts above this are split into groups of about this many rows


def groups_per_concept(sizes: np.ndarray, dedup_clusters: int | str = "auto") -> np.ndarray:
    """How many SemDeDup groups each concept is split into.

    Args:
        sizes: (K,) rows per concept.
        dedup_clusters: "auto" (the size rule: ceil(size / DEDUP_TARGET_ROWS)), "concepts" (no split),
            or a total number of groups, shared out in proportion to the concept sizes.
    Returns:
        (K,) int64, each in [1, max(size, 1)].
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    if dedup_clusters == "concepts":
        k = np.ones_like(sizes)
    elif dedup_clusters == "auto":
        k = np.ceil(sizes / DEDUP_TARGET_ROWS).astype(np.int64)
    elif isinstance(dedup_clusters, (int, np.integer)) and not isinstance(dedup_clusters, bool):
        if dedup_clusters < sizes.size:
            raise ValueError(f"--dedup-clusters {dedup_clusters} is fewer than the {sizes.size} concepts: "
                             "SemDeDup groups nest inside concepts "
                             "(use 'concepts' to deduplicate inside the concepts themselves)")
        k = np.rint(dedup_clusters * sizes / max(int(sizes.sum()), 1)).astype(np.int64)
    else:
        raise ValueError(f"--dedup-clusters must be 'auto', 'concepts' or a number of groups, got {dedup_clusters!r}")
    return np.clip(k, 1, np.maximum(sizes, 1))


def pair_count(group_sizes: np.ndarray) -> int:
    """Pairs SemDeDup compares: sum of n_g (n_g - 1) / 2."""
    g = np.asarray(group_sizes, dtype=np.int64)
    return int((g * (g - 1) // 2).sum())


class _Subset:
    """Rows ``rows`` of ``x`` as an array-like (slices only), for :func:`assign` over one concept."""

    def __init__(self, x, rows: np.ndarray) -> None:
        self.x, self.rows = x, rows
        self.shape = (rows.size, x.shape[1])

    def __getitem__(self, item: slice) -> np.ndarray:
        return np.asarray(self.x[self.rows[item]])


def split_concepts(x, labels: np.ndarray, dist: np.ndarray, per_concept: np.ndarray, *, seed: int = SEED,
                   niter: int = 10, max_points_per_centroid: int = 64) -> tuple[np.ndarray, np.ndarray, int]:
    """SemDeDup groups: every concept j split into ``per_concept[j]`` sub-clusters (1: the concept itself).

    Args:
        x: (N, d) L2-normalised vectors (array, memmap or NpyRows: only one concept's rows are read at a time).
        labels: (N,) concept of every row; dist: (N,) its cosine distance to the concept centroid.
        per_concept: (K,) groups per concept, from :func:`groups_per_concept`.
    Returns:
        groups (N,) int64 group ids (concept j's groups are numbered consecutively, concepts in order),
        group_dist (N,) float64 cosine distance to the group's centroid (the concept's for unsplit
        concepts), and the number of groups.
    """
    labels = np.asarray(labels)
    per_concept = np.asarray(per_concept, dtype=np.int64)
    base = np.concatenate([[0], np.cumsum(per_concept)[:-1]])
    groups = base[labels].astype(np.int64)
    gdist = np.asarray(dist, dtype=np.float64).copy()
    split = np.flatnonzero(per_concept > 1)
    if split.size == 0:
        return groups, gdist, int(per_concept.sum())
    order = np.argsort(labels, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(np.bincount(labels, minlength=per_concept.size))])
    log.info("SemDeDup groups: splitting %d of %d concepts into %d groups", split.size, per_concept.size,
             int(per_concept[split].sum()))
    for j in split:
        rows = order[bounds[j]:bounds[j + 1]]  # increasing row order
        k = int(per_concept[j])
        cent = train_spherical_kmeans(x, k, niter=niter, seed=seed + int(j), train_rows=rows,
                                      max_points_per_centroid=max_points_per_centroid)
        sub, sims = assign(_Subset(x, rows), cent)
        groups[rows] = base[j] + sub
        gdist[rows] = cosine_distance(sims)
    return groups, gdist, int(per_concept.sum())


def parse_dedup_clusters(text: str) -> int | str:
    """The ``--dedup-clusters`` value: 'auto', 'concepts' or a positive integer."""
    t = str(text).strip().lower()
    if t in ("auto", "concepts"):
        return t
    try:
        v = int(t)
    except ValueError:
        raise ValueError(f"--dedup-clusters must be 'auto', 'concepts' or a number of groups, got {text!r}") from None
    if v < 1:
        raise ValueError(f"--dedup-clusters must be at least 1, got {v}")
    return v


def describe(per_concept: np.ndarray, sizes: np.ndarray) -> str:
    """'1,204 groups (pairs 2.1e9, 38x fewer than inside the concepts)' for logs and meta."""
    per_concept, sizes = np.asarray(per_concept), np.asarray(sizes, dtype=np.int64)
    concept_pairs = pair_count(sizes)
    est = pair_count(np.repeat(sizes // np.maximum(per_concept, 1), per_concept))
    ratio = concept_pairs / est if est else math.inf
    return f"{int(per_concept.sum()):,} groups (~{est:.2g} pairs, {ratio:.0f}x fewer than inside the concepts)"
