"""Spherical k-means with faiss (GPU when faiss sees one) and blockwise assignment."""

from __future__ import annotations

import logging
import math

import numpy as np
from tqdm.auto import tqdm

from densprune.vectors import l2_normalize

log = logging.getLogger(__name__)

NITER = 50  # k-means iterations
SEED = 1234  # the default seed of k-means, sampling and the map


def default_num_clusters(n: int) -> int:
    """A K that scales with N: sqrt(N) clamped to [2, 500].

    The paper used 500 clusters for LAION-DeDup-280M and 100 for DataComp-medium (128M). This default
    reaches its cap of 500 from 250k rows on, so it gives 500 at DataComp-medium too: pass
    ``--clusters 100`` there to match the paper. Small datasets need relatively more clusters to
    separate their concepts (8k demo rows -> 90).
    """
    return int(min(500, max(2, round(math.sqrt(max(n, 1))))))


def faiss_gpu_count() -> int:
    """Number of GPUs faiss can use (0 for faiss-cpu)."""
    import faiss

    try:
        return int(faiss.get_num_gpus())
    except AttributeError:
        return 0


def train_spherical_kmeans(x: np.ndarray, k: int, *, niter: int = NITER, seed: int = SEED,
                           max_points_per_centroid: int = 256, train_rows: np.ndarray | None = None,
                           nredo: int = 1, use_gpu: bool | None = None) -> np.ndarray:
    """Train spherical k-means on (a sample of) the rows of ``x``.

    Args:
        x: (N, d) L2-normalised vectors (array or memmap, any float dtype).
        k: number of clusters, 1 <= k <= number of training rows.
        train_rows: optional (M,) row indices to train on (e.g. the pruning pool only).
        max_points_per_centroid: at most k * this many rows are sampled (seeded) for training.
        nredo: k-means restarts; the run with the best objective is kept.
    Returns:
        (k, d) float32 L2-normalised centroids.
    """
    import faiss

    rows = np.arange(x.shape[0]) if train_rows is None else np.asarray(train_rows)
    if k < 1 or k > rows.size:
        raise ValueError(f"--clusters {k} must be between 1 and the number of rows ({rows.size})")
    cap = k * max_points_per_centroid
    if rows.size > cap:
        rng = np.random.default_rng(seed)
        rows = np.sort(rng.choice(rows, size=cap, replace=False))
    sample = np.ascontiguousarray(x[rows], dtype=np.float32)
    gpu = faiss_gpu_count() > 0 if use_gpu is None else use_gpu
    log.info("k-means: %d clusters on %d x %d rows (%s), %d iterations", k, *sample.shape, "GPU" if gpu else "CPU",
             niter)
    km = faiss.Kmeans(sample.shape[1], k, niter=niter, seed=seed, spherical=True, gpu=gpu,
                      max_points_per_centroid=max_points_per_centroid, nredo=nredo, verbose=False)
    km.train(sample)
    cent = np.asarray(km.centroids, dtype=np.float32)
    return l2_normalize(cent)


def assign(x: np.ndarray, centroids: np.ndarray, *, block: int = 65536, use_gpu: bool | None = None,
           progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Assign every row to its most similar centroid, reading ``x`` in blocks.

    Args:
        x: (N, d) L2-normalised vectors (memmap is fine: only ``block`` rows are in memory).
        centroids: (K, d) L2-normalised.
    Returns:
        labels (N,) int32 and cosine similarity to the assigned centroid (N,) float32.
    """
    import faiss

    cent = np.ascontiguousarray(centroids, dtype=np.float32)
    index = faiss.IndexFlatIP(cent.shape[1])
    gpu = faiss_gpu_count() > 0 if use_gpu is None else use_gpu
    if gpu:
        index = faiss.index_cpu_to_all_gpus(index)
    index.add(cent)
    n = x.shape[0]
    labels = np.empty(n, dtype=np.int32)
    sims = np.empty(n, dtype=np.float32)
    for start in tqdm(range(0, n, block), desc="assign", disable=not progress or None):
        chunk = np.ascontiguousarray(x[start:start + block], dtype=np.float32)
        d, i = index.search(chunk, 1)
        labels[start:start + block] = i[:, 0]
        sims[start:start + block] = d[:, 0]
    return labels, sims


def rank_in_cluster(labels: np.ndarray, dist: np.ndarray) -> np.ndarray:
    """Rank of each row inside its cluster by distance to the centroid: 0 = nearest (most prototypical).

    labels, dist: (N,) -> (N,) int64. Ties are broken by row index.
    """
    order = np.lexsort((np.arange(labels.size), dist, labels))
    sorted_labels = labels[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_labels)) + 1]
    run_start = np.repeat(starts, np.diff(np.r_[starts, labels.size]))
    ranks = np.empty(labels.size, dtype=np.int64)
    ranks[order] = np.arange(labels.size) - run_start
    return ranks
