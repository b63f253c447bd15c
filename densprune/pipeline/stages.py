"""The stages both precompute paths share (from images, pipeline/from_images.py; from released
embeddings, pipeline/from_released.py): the workspace checks and its lock, k-means, the concepts
table, SemDeDup, the 2-D map, the rejects table, the meta every workspace records, the stage timer,
and storing the plan index at the end.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from densprune import __version__, db, workspace
from densprune.cluster.concepts import cluster_sizes, complexity, inter_distance, intra_distance
from densprune.cluster.kmeans import (
    assign,
    default_num_clusters,
    faiss_gpu_count,
    rank_in_cluster,
    train_spherical_kmeans,
)
from densprune.cluster.layout import umap_layout
from densprune.cluster.zeroshot import load_vocabulary
from densprune.ingest.sources import Reject
from densprune.pipeline.config import PrecomputeConfig
from densprune.vectors import cosine_distance

log = logging.getLogger(__name__)

DEDUP_EPS_GRID = np.round(np.linspace(0.0, 0.3, 61), 4)
REJECT_COLUMNS = ["key", "image_ref", "stage", "reason"]


@dataclass(slots=True)
class Split:
    """Per row (N,): category, top-level category, the eval flag and (decontaminated builds) the flag of
    pool rows set aside as copies of an eval image; the pool's row indices."""

    category: np.ndarray
    top: np.ndarray
    is_eval: np.ndarray
    pool_rows: np.ndarray
    is_copy: np.ndarray | None = None

    @property
    def in_pool(self) -> np.ndarray:
        """(N,) bool: neither eval nor an eval copy."""
        return ~self.is_eval if self.is_copy is None else ~(self.is_eval | self.is_copy)

    def names(self) -> np.ndarray:
        """(N,) the samples table's split column: 'pool', 'eval' or 'eval-copy'."""
        out = np.where(self.is_eval, "eval", "pool").astype(object)
        if self.is_copy is not None:
            out[self.is_copy] = "eval-copy"
        return out


@dataclass(slots=True)
class Clustering:
    """k-means output: centroids (K, d), per row (N,) cluster, cosine distance and rank in cluster."""

    k: int
    centroids: np.ndarray
    labels: np.ndarray
    dist: np.ndarray
    ranks: np.ndarray
    d_intra: np.ndarray | None = None  # (K,) when the assignment pass already summed it (Ray engine)


def check_workspace(cfg: PrecomputeConfig) -> Path:
    """The workspace folder; FileExistsError when it holds a complete workspace and ``--force`` is not
    given. Changes nothing."""
    ws = Path(cfg.workspace)
    if db.is_complete(ws) and not cfg.force:
        raise FileExistsError(f"{ws} already holds a complete workspace; use --force to rebuild it")
    if ws.exists() and not ws.is_dir():
        raise FileExistsError(f"{ws} is a file, not a workspace folder")
    return ws


def check_inputs(cfg: PrecomputeConfig) -> None:
    """Inputs that can be checked before anything is written: the engine, the zero-shot vocabulary file
    (the source and the embedder's weights are checked by listing and loading them, under the lock)."""
    if cfg.engine not in ("local", "ray"):
        raise ValueError(f"unknown --engine {cfg.engine!r}: use 'local' or 'ray'")
    if cfg.label_vocabulary and cfg.embedder == "openclip":
        load_vocabulary(cfg.label_vocabulary)  # a bad file fails now, not after the embedding


def reset_workspace(cfg: PrecomputeConfig) -> Path:
    """Make a complete workspace incomplete (its DB removed, its plans' masks deleted) when ``--force``
    rebuilds it. The one destructive step of a rebuild: called once the inputs are validated, under
    the workspace's exclusive lock."""
    ws = check_workspace(cfg)
    if db.is_complete(ws):
        db.db_path(ws).unlink()  # from here on the workspace is incomplete until the end
        shutil.rmtree(workspace.plans_dir(ws), ignore_errors=True)  # the masks of the old build's plans
    ws.mkdir(parents=True, exist_ok=True)
    return ws


def prepare_workspace(cfg: PrecomputeConfig) -> Path:
    """The workspace folder, made incomplete (its DB removed) when ``--force`` rebuilds a complete one
    (``check_workspace``, ``check_inputs``, then ``reset_workspace``)."""
    check_workspace(cfg)
    check_inputs(cfg)
    return reset_workspace(cfg)


@contextlib.contextmanager
def locked_workspace(cfg: PrecomputeConfig) -> Iterator[Path]:
    """The workspace folder (created when missing) under its exclusive writer lock (densprune.workspace_lock)
    for the whole build. A folder this call created is removed again when the build fails before writing
    anything into it."""
    from densprune.workspace_lock import HOLDERS_NAME, LOCK_NAME, exclusive_lock

    ws = check_workspace(cfg)
    created = not ws.exists()
    ws.mkdir(parents=True, exist_ok=True)
    ok = False
    try:
        with exclusive_lock(ws, "densprune precompute"):
            yield ws
        ok = True
    finally:
        if created and not ok:
            with contextlib.suppress(OSError):
                if {p.name for p in ws.iterdir()} <= {LOCK_NAME, HOLDERS_NAME}:
                    shutil.rmtree(ws)


def cluster_stage(cfg: PrecomputeConfig, image: np.ndarray, pool_rows: np.ndarray) -> Clustering:
    """Spherical k-means trained on the pool rows, then every row assigned to its nearest centroid."""
    k = cfg.clusters or default_num_clusters(pool_rows.size)
    if k > pool_rows.size:
        raise ValueError(f"{cfg.source}: only {pool_rows.size:,} usable pool rows for --clusters {k} (the others were "
                         "rejected or held out: see the log); lower --clusters or fix the source")
    centroids = train_spherical_kmeans(image, k, niter=cfg.niter, seed=cfg.seed, train_rows=pool_rows)
    d_intra = None
    if cfg.engine == "ray":
        from densprune.pipeline.on_ray import assign_on_ray

        pool = None
        if pool_rows.size < image.shape[0]:
            pool = np.zeros(image.shape[0], dtype=bool)
            pool[pool_rows] = True
        labels, sims, d_intra = assign_on_ray(vector_file(image), centroids, pool, address=cfg.ray_address)
    else:
        labels, sims = assign(image, centroids, progress=True)
    dist = cosine_distance(sims)
    return Clustering(k, centroids, labels, dist, rank_in_cluster(labels, dist), d_intra)


def vector_file(image: np.ndarray) -> Path:
    """The ``.npy`` file behind a workspace's vectors (a memmap or NpyRows): what Ray tasks open."""
    path = getattr(image, "path", None) or getattr(image, "filename", None)
    if path is None:
        raise ValueError("--engine ray needs the vectors in a .npy file that every node can read")
    return Path(path)


def clusters_frame(cfg: PrecomputeConfig, cl: Clustering, split: Split, names: list[str]) -> pd.DataFrame:
    """The clusters table from the clustering and the K concept labels (no map coordinates yet)."""
    k = cl.k
    d_intra = cl.d_intra if cl.d_intra is not None else intra_distance(cl.labels, cl.dist, k, mask=split.in_pool)
    d_inter = inter_distance(cl.centroids, cfg.neighbors)
    return pd.DataFrame({
        "cluster": np.arange(k, dtype=np.int32),
        "size": cluster_sizes(cl.labels, k).astype(np.int32),
        "pool_size": cluster_sizes(cl.labels, k, split.in_pool).astype(np.int32),
        "d_intra": d_intra, "d_inter": d_inter, "complexity": complexity(d_intra, d_inter), "label": names,
    })


@dataclass(slots=True)
class Dedup:
    """SemDeDup per row (N,): max similarity to an earlier member of its group and that member's row;
    the pool's kept-fraction curve over ``DEDUP_EPS_GRID``; the groups it searched."""

    max_sim: np.ndarray
    dup_of: np.ndarray
    curve: pd.DataFrame
    groups: int  # SemDeDup groups (K when concepts are not split)
    pairs: int  # similarity pairs compared


def dedup_stage(cfg: PrecomputeConfig, image: np.ndarray, cl: Clustering, pool_rows: np.ndarray) -> Dedup:
    """SemDeDup inside each concept, or inside finer groups of the large ones (``cfg.dedup_clusters``)."""
    from densprune.cluster.subclusters import (
        describe,
        groups_per_concept,
        pair_count,
        split_concepts,
    )
    from densprune.prune.semdedup import kept_fraction_curve, semdedup

    sizes = cluster_sizes(cl.labels, cl.k)
    per = groups_per_concept(sizes, cfg.dedup_clusters)
    if per.sum() > cl.k:
        log.info("SemDeDup inside %s", describe(per, sizes))
    groups, gdist, n_groups = split_concepts(image, cl.labels, cl.dist, per, seed=cfg.seed)
    if cfg.engine == "ray":
        from densprune.pipeline.on_ray import semdedup_on_ray

        dup_max_sim, dup_of = semdedup_on_ray(vector_file(image), groups, gdist, address=cfg.ray_address)
    else:
        dup_max_sim, dup_of = semdedup(image, groups, gdist, progress=True)
    curve = pd.DataFrame({"eps": DEDUP_EPS_GRID,
                          "kept_fraction": kept_fraction_curve(dup_max_sim[pool_rows], DEDUP_EPS_GRID)})
    return Dedup(dup_max_sim, dup_of, curve, n_groups, pair_count(np.bincount(groups, minlength=n_groups)))


def layout_stage(cfg: PrecomputeConfig, image: np.ndarray, cl: Clustering) -> tuple[pd.DataFrame, np.ndarray]:
    """The 2-D map: a (rows, 4) layout table of sampled rows and the (K, 2) centroid coordinates."""
    n = image.shape[0]
    rows = np.sort(np.random.default_rng(cfg.seed).choice(n, size=min(n, cfg.layout_rows), replace=False))
    xy, cxy = umap_layout(image, cl.centroids, rows, cfg.seed)
    layout = pd.DataFrame({"row_idx": rows.astype(np.int64), "cluster": cl.labels[rows].astype(np.int32),
                           "x": xy[:, 0].astype(np.float64), "y": xy[:, 1].astype(np.float64)})
    return layout, cxy


def store_plan_index(ws: Path) -> None:
    """Build the plan index of the finished workspace and store it there (densprune.prune.plan_index),
    so that the app's first page does not build it (at 10M rows: ~14 s of CPU)."""
    from densprune.prune.plan_index import load_index

    t = time.perf_counter()
    index = load_index(ws)
    log.info("plan index of %d rows stored in %.1f s", index.n_rows, time.perf_counter() - t)


class StageTimer:
    """Wall and CPU seconds per stage: ``lap(stage)`` closes the stage that ran since the last lap."""

    def __init__(self) -> None:
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}  # CPU seconds of this process (all its threads)
        self._t0 = self._t = time.perf_counter()
        self._c0 = self._c = time.process_time()

    def lap(self, stage: str) -> None:
        t, c = time.perf_counter(), time.process_time()
        self.wall[stage], self.cpu[stage] = t - self._t, c - self._c
        self._t, self._c = t, c

    def finish(self) -> None:
        """Record the totals (``total``) of both clocks."""
        self.wall["total"] = time.perf_counter() - self._t0
        self.cpu["total"] = time.process_time() - self._c0

    @staticmethod
    def rounded(seconds: dict[str, float]) -> dict[str, float]:
        return {k: round(v, 3) for k, v in seconds.items()}


def rejects_frame(rejects: list[Reject]) -> pd.DataFrame:
    """The rejects table (key, image_ref, stage, reason; all text) of a list of Reject records."""
    return pd.DataFrame([asdict(r) for r in rejects], columns=REJECT_COLUMNS).astype(str)


def common_meta(cfg: PrecomputeConfig, k: int, timings: dict[str, float]) -> dict:
    """The meta keys every workspace records, whichever path built it (docs/formats.md)."""
    return {
        "k": k, "seed": cfg.seed, "niter": cfg.niter, "neighbors": cfg.neighbors,
        "densprune_version": __version__, "engine": cfg.engine,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "faiss_gpus": faiss_gpu_count(), "timings_s": StageTimer.rounded(timings),
    }
