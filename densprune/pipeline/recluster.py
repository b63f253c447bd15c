"""``densprune recluster``: k-means again on the deduplicated pool, as the paper did for LAION-DeDup-280M.

A workspace is clustered once, over the whole pool. A plan already measures each concept on what
survives its dedup and CLIP filter (d_intra is re-weighted per plan), but the concepts themselves
-- where the centroids sit -- were found with the duplicates in: k-means may have spent centroids
on piles of near-copies. The paper clustered the deduplicated set (k = 500 on LAION-DeDup-280M).
:func:`recluster` does that on an existing workspace:

1. the training rows are the pool rows that survive SemDeDup at ``dedup_eps`` (the stored
   similarities: the dedup decision stays the one made on the original clusters, SemDeDup first,
   then k-means on what it kept, as in the paper);
2. spherical k-means on them (same K, seed and iterations as the workspace unless given);
3. every row (duplicates and held-out eval rows too) is assigned to its nearest new centroid, so
   any plan still sees the whole pool; distances, ranks, concept statistics and labels are
   recomputed, and each centroid is placed on the 2-D map at its most similar mapped row;
4. the database changes in one transaction that records the new centroids' sha256 in ``meta``;
   the centroid file is renamed into place right after. Should the process die between the two,
   ``workspace.finish_centroids`` (called whenever a plan index is loaded) finishes the rename.

Saved plans refer to the old clusters, so a workspace with saved plans is refused unless
``drop_plans`` (their masks and rows are deleted in the same transaction).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from densprune import db
from densprune.cluster.concepts import (
    NEIGHBORS,
    cluster_sizes,
    complexity,
    inter_distance,
    intra_distance,
    mean_directions,
)
from densprune.cluster.kmeans import NITER, SEED, assign, rank_in_cluster, train_spherical_kmeans
from densprune.cluster.labels import cluster_labels
from densprune.cluster.zeroshot import load_saved_vocabulary, zero_shot_names
from densprune.prune.curation import carry_rules
from densprune.prune.plans import remove_plan_file
from densprune.prune.semdedup import is_duplicate
from densprune.vectors import cosine_distance
from densprune.workspace import (
    centroids_path,
    concept_space,
    embeddings_dir,
    finish_centroids,
    image_vectors,
    stage_centroids,
)

log = logging.getLogger(__name__)

@dataclass(frozen=True, slots=True)
class ReclusterReport:
    """What :func:`recluster` did."""

    k: int
    dedup_eps: float
    train_rows: int  # pool rows that survived SemDeDup: what k-means was trained on
    pool_rows: int
    dropped_plans: tuple[str, ...]
    seconds: float
    carried_rules: int = 0  # concept rules carried to the new concepts by member overlap
    dropped_rules: tuple[str, ...] = ()  # the rules that did not carry over, with why


def _concepts_table(labels: np.ndarray, dist: np.ndarray, pool: np.ndarray, centroids: np.ndarray,
                    captions: np.ndarray, centre_xy: np.ndarray, neighbors: int, seed: int) -> pd.DataFrame:
    """The clusters table for a new assignment (same definitions as precompute: pool rows)."""
    k = centroids.shape[0]
    d_intra = intra_distance(labels, dist, k, mask=pool)
    d_inter = inter_distance(centroids, neighbors)
    rows = np.flatnonzero(pool)
    names = cluster_labels([captions[i] or "" for i in rows], labels[rows], k, seed=seed)
    return pd.DataFrame({
        "cluster": np.arange(k, dtype=np.int32),
        "size": cluster_sizes(labels, k).astype(np.int32),
        "pool_size": cluster_sizes(labels, k, pool).astype(np.int32),
        "d_intra": d_intra, "d_inter": d_inter, "complexity": complexity(d_intra, d_inter), "label": names,
        "x": centre_xy[:, 0].astype(np.float64), "y": centre_xy[:, 1].astype(np.float64),
    })


def _zero_shot_names(ws: Path, centroids: np.ndarray) -> tuple[pd.Series, np.ndarray]:
    """Zero-shot names of the new (K, d) centroids from the vocabulary embeddings precompute kept
    (K Nones and NaNs when it kept none: no text tower, or a workspace from before they were kept)."""
    k = centroids.shape[0]
    saved = load_saved_vocabulary(embeddings_dir(ws))
    if saved is None:
        log.info("recluster: no saved zero-shot vocabulary in %s/embeddings: concepts get no zero-shot names", ws)
        return pd.Series([None] * k, dtype=object), np.full(k, np.nan)
    vocab, vectors = saved
    names, sims = zero_shot_names(centroids, vectors, vocab.entries)
    return pd.Series(names, dtype=object), sims


def centre_positions(image: np.ndarray, centroids: np.ndarray, layout: pd.DataFrame) -> np.ndarray:
    """(K, 2) map position of each centroid: that of its most similar mapped row (layout: row_idx, x, y)."""
    if layout.empty:
        return np.zeros((centroids.shape[0], 2))
    rows = layout["row_idx"].to_numpy()
    order = np.argsort(rows)
    x = np.asarray(image[rows[order]], dtype=np.float32)  # sorted reads from the memmap
    best = np.argmax(np.asarray(centroids, np.float32) @ x.T, axis=1)
    return layout[["x", "y"]].to_numpy(dtype=np.float64)[order][best]


def recluster(workspace: str | os.PathLike, dedup_eps: float, *, clusters: int | None = None,
              niter: int | None = None, seed: int | None = None, drop_plans: bool = False) -> ReclusterReport:
    """Re-run spherical k-means on the pool rows that survive SemDeDup at ``dedup_eps`` and rewrite the
    workspace's cluster assignment and concept statistics (see the module docstring).

    Args:
        workspace: a complete workspace with embeddings/image.npy.
        dedup_eps: SemDeDup eps in [0, 1] defining the deduplicated training set.
        clusters, niter, seed: k-means settings; default: the workspace's own (meta k, niter, seed).
        drop_plans: delete the saved plans (they refer to the old clusters) instead of refusing.

    Holds the workspace's exclusive writer lock (densprune.workspace_lock) throughout: refused at once
    while a precompute, another recluster, a plan save or an export uses the workspace.
    """
    from densprune.workspace_lock import exclusive_lock

    ws = Path(workspace)
    if not db.is_complete(ws):
        raise db.WorkspaceNotFound(f"no workspace at {ws} (missing {db.DB_NAME}); build one with "
                                   "`densprune precompute`")
    with exclusive_lock(ws, "densprune recluster"):
        return _recluster(ws, dedup_eps, clusters=clusters, niter=niter, seed=seed, drop_plans=drop_plans)


def _recluster(ws: Path, dedup_eps: float, *, clusters: int | None, niter: int | None, seed: int | None,
               drop_plans: bool) -> ReclusterReport:
    t0 = time.perf_counter()
    meta = db.load_meta(ws)
    finish_centroids(ws, meta.get("centroids_sha256"))  # an interrupted recluster, finished first
    k = int(clusters or meta["k"])
    niter = int(niter or meta.get("niter", NITER))
    seed = int(meta.get("seed", SEED) if seed is None else seed)
    saved = tuple(db.list_plans(ws)["name"])
    if saved and not drop_plans:
        raise ValueError(f"{ws} has {len(saved)} saved plan(s) made on the current clusters ({', '.join(saved)}); "
                         "their per-concept tables would no longer match. Pass --drop-plans to delete them.")
    arr = db.load_sample_arrays(ws, ("split", "dup_max_sim", "caption", "cluster"))
    pool = arr["split"] == "pool"
    train = pool & ~is_duplicate(arr["dup_max_sim"], dedup_eps)
    if train.sum() < k:
        raise ValueError(f"only {int(train.sum()):,} pool rows survive SemDeDup at eps={dedup_eps:g}: fewer than "
                         f"K={k} clusters; lower --clusters or --dedup-eps")
    image = np.load(concept_space(ws, meta), mmap_mode="r")  # the concept embedder's vectors, where there are
    log.info("recluster: k-means K=%d on %d of %d pool rows (SemDeDup eps=%g)", k, int(train.sum()),
             int(pool.sum()), dedup_eps)
    centroids = train_spherical_kmeans(image, k, niter=niter, seed=seed, train_rows=np.flatnonzero(train))
    labels, sims = assign(image, centroids, progress=True)
    dist = cosine_distance(sims)
    layout = db.load_layout(ws)
    table = _concepts_table(labels, dist, pool, centroids, arr["caption"], centre_positions(image, centroids, layout),
                            int(meta.get("neighbors", NEIGHBORS)), seed)
    directions = centroids  # zero-shot names live in CLIP's space: a concept embedder's concepts use their means there
    if meta.get("concept_dim") and load_saved_vocabulary(embeddings_dir(ws)) is not None:
        directions = mean_directions(np.load(image_vectors(ws), mmap_mode="r"), labels, k, pool)
    table["zs_label"], table["zs_similarity"] = _zero_shot_names(ws, directions)
    assignment = pd.DataFrame({"row_idx": np.arange(labels.size, dtype=np.int64), "cluster": labels.astype(np.int32),
                               "dist_to_centroid": dist, "rank_in_cluster": rank_in_cluster(labels, dist)})
    staged_sha = stage_centroids(ws, centroids)  # centroids.npy.tmp, named by the commit below
    seconds = time.perf_counter() - t0
    updates = {"k": k, "niter": niter, "seed": seed, "centroids_sha256": staged_sha,
               "reclustered": {"dedup_eps": float(dedup_eps), "train_rows": int(train.sum()), "k": k,
                               "previous_k": int(meta["k"]), "seconds": round(seconds, 3),
                               "at": datetime.now(timezone.utc).isoformat(timespec="seconds")}}
    rules, dropped_rules, entries = carry_rules(ws, arr["cluster"], labels, staged_sha)
    for rule, why in dropped_rules:
        log.warning("recluster: the rule %r of concept %d does not carry over (%s): dropped", rule.describe(),
                    rule.concept, why)
    dropped_masks = db.rewrite_clusters(ws, assignment=assignment, clusters=table, meta=updates, drop_plans=saved,
                                        rules=rules, log_entries=tuple(entries))
    if not finish_centroids(ws, staged_sha):  # a reader may have finished it first: both are fine
        raise RuntimeError(f"{centroids_path(ws)} is not the centroids the database now names")
    for keep_file in dropped_masks:
        remove_plan_file(ws, keep_file, "(dropped by recluster)")
    from densprune.prune.plan_index import load_index  # the new clusters' plan index, stored for the app

    load_index(ws)
    log.info("recluster: %s now has %d concepts from %d deduplicated rows in %.1f s", ws, k, int(train.sum()), seconds)
    return ReclusterReport(k=k, dedup_eps=float(dedup_eps), train_rows=int(train.sum()), pool_rows=int(pool.sum()),
                           dropped_plans=saved, seconds=seconds, carried_rules=len(rules),
                           dropped_rules=tuple(f"concept {r.concept}: {r.describe()} ({why})"
                                               for r, why in dropped_rules))
