"""The stages after embedding on a Ray cluster (``--engine ray``): assignment, concept statistics, SemDeDup.

Every task reads the workspace's ``embeddings/image.npy`` itself (so the workspace must be on
storage every node sees) and returns only small results:

- assignment: one task per range of rows (``ASSIGN_ROWS``), the centroids broadcast with
  ``ray.put``; a task returns its rows' labels and similarities and, for the concept statistics,
  its per-concept sums of distances and member counts (pool rows only), which the driver adds up;
- SemDeDup: one task per batch of groups (about ``DEDUP_ROWS`` rows), each group exactly as the
  local engine computes it, so the results are the same.

The driver never holds an (N, d) array: it gathers (N,) labels and similarities and (K,) sums.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

ASSIGN_ROWS = 1 << 20  # rows per assignment task
DEDUP_ROWS = 1 << 18  # rows per SemDeDup task (whole groups)


@contextlib.contextmanager
def ray_session(address: str | None = None) -> Iterator[object]:
    """The ``ray`` module, connected: to ``address``, to the Ray already initialised, or to a new local one."""
    try:
        import ray
    except ImportError as exc:
        raise RuntimeError("--engine ray needs Ray: pip install 'densprune[distributed]'") from exc
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


def _assign_range(path: str, centroids: np.ndarray, start: int, end: int, pool: np.ndarray | None,
                  block: int) -> tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One task: rows [start, end) of ``path`` assigned; per-concept (sum of distances, count) of pool rows."""
    from densprune.cluster.kmeans import assign
    from densprune.vectors import NpyRows, cosine_distance

    x = NpyRows(path)
    labels, sims = assign(_Range(x, start, end), centroids, block=block, use_gpu=False)
    dist = cosine_distance(sims)
    keep = slice(None) if pool is None else pool[start:end]
    k = centroids.shape[0]
    sums = np.bincount(labels[keep], weights=dist[keep], minlength=k)
    counts = np.bincount(labels[keep], minlength=k)
    return start, labels, sims, sums, counts


class _Range:
    """Rows [start, end) of an array-like, as an array-like (slices only)."""

    def __init__(self, x, start: int, end: int) -> None:
        self.x, self.start = x, start
        self.shape = (end - start, x.shape[1])

    def __getitem__(self, item: slice) -> np.ndarray:
        a, b, _ = item.indices(self.shape[0])
        return np.asarray(self.x[self.start + a:self.start + b])


def assign_on_ray(path: Path, centroids: np.ndarray, pool: np.ndarray | None = None, *, address: str | None = None,
                  rows_per_task: int | None = None, block: int = 65536) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Assign every row of the ``.npy`` at ``path`` to its nearest centroid with Ray tasks over row ranges.

    Args:
        path: (N, d) L2-normalised vectors on storage every node sees.
        centroids: (K, d) L2-normalised.
        pool: optional (N,) bool: the rows the concept statistics count (all when None).
    Returns:
        labels (N,) int32, similarities (N,) float32 (as :func:`densprune.cluster.kmeans.assign`) and
        d_intra (K,) float64: mean distance of each concept's pool rows to its centroid (NaN when empty).
    """
    from densprune.vectors import NpyRows

    n = NpyRows(path).shape[0]
    k = centroids.shape[0]
    rows_per_task = rows_per_task or ASSIGN_ROWS
    labels = np.empty(n, dtype=np.int32)
    sims = np.empty(n, dtype=np.float32)
    sums, counts = np.zeros(k), np.zeros(k, dtype=np.int64)
    with ray_session(address) as ray:
        task = ray.remote(num_cpus=1)(_assign_range)
        cent, mask = ray.put(np.ascontiguousarray(centroids, dtype=np.float32)), ray.put(pool)
        pending = [task.remote(str(path), cent, s, min(s + rows_per_task, n), mask, block)
                   for s in range(0, n, rows_per_task)]
        log.info("ray: assigning %d rows in %d tasks", n, len(pending))
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            start, lab, sim, s_part, c_part = ray.get(done[0])
            labels[start:start + lab.size], sims[start:start + lab.size] = lab, sim
            sums += s_part
            counts += c_part
    with np.errstate(invalid="ignore", divide="ignore"):
        d_intra = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return labels, sims, d_intra


def _dedup_groups(path: str, rows: np.ndarray, dist: np.ndarray, bounds: np.ndarray,
                  row_block: int, col_block: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One task: SemDeDup inside each group ``rows[bounds[i]:bounds[i+1]]`` (increasing row order)."""
    from densprune.prune.semdedup import semdedup_group
    from densprune.vectors import NpyRows

    x = NpyRows(path)
    out_sim = np.empty(rows.size, dtype=np.float32)
    out_of = np.empty(rows.size, dtype=np.int64)
    for a, b in itertools.pairwise(bounds):
        out_sim[a:b], out_of[a:b] = semdedup_group(x, rows[a:b], dist[a:b], row_block=row_block, col_block=col_block)
    return rows, out_sim, out_of


def semdedup_on_ray(path: Path, groups: np.ndarray, dist: np.ndarray, *, address: str | None = None,
                    rows_per_task: int | None = None, row_block: int = 1024,
                    col_block: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """:func:`densprune.prune.semdedup.semdedup` with one Ray task per batch of whole groups.

    groups, dist: (N,) as for ``semdedup``. Returns max_sim (N,) float32 and dup_of (N,) int64, the
    same as the local engine's (each group is computed by the same function).
    """
    n = groups.size
    rows_per_task = rows_per_task or DEDUP_ROWS
    max_sim = np.full(n, -1.0, dtype=np.float32)
    dup_of = np.full(n, -1, dtype=np.int64)
    order = np.argsort(groups, kind="stable")
    g_sorted = groups[order]
    starts = np.flatnonzero(np.r_[True, g_sorted[1:] != g_sorted[:-1]]) if n else np.zeros(0, np.int64)
    ends = np.r_[starts[1:], n]
    with ray_session(address) as ray:
        task = ray.remote(num_cpus=1)(_dedup_groups)
        pending, i = [], 0
        while i < starts.size:  # whole groups, about rows_per_task rows a task
            j = i + 1
            while j < starts.size and ends[j] - starts[i] <= rows_per_task:
                j += 1
            a, b = starts[i], ends[j - 1]
            rows = order[a:b]
            pending.append(task.remote(str(path), rows, dist[rows], np.r_[starts[i:j], b] - a, row_block, col_block))
            i = j
        log.info("ray: SemDeDup of %d groups in %d tasks", starts.size, len(pending))
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            rows, sim, of = ray.get(done[0])
            max_sim[rows], dup_of[rows] = sim, of
    return max_sim, dup_of
