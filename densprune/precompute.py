"""``densprune precompute``: source -> embeddings -> clusters -> concept stats -> DuckDB workspace.

Workspace layout (docs/formats.md)::

    DIR/densprune.duckdb          metadata, samples, clusters, rejects, layout, plans (written last)
    DIR/embeddings/image.npy      (N, d) L2-normalised, row i = row_idx i
    DIR/embeddings/text.npy       (N, d) caption embeddings (open_clip only)
    DIR/centroids.npy             (K, d) L2-normalised
    DIR/thumbs.bin                thumbnails (WebP), addressed by samples.thumb_offset/thumb_size
    DIR/.work/                    resumable embedding shards (removed after success)

The DuckDB file is renamed into place as the very last step: a workspace without it is
incomplete, whatever else is there.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
import warnings
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from densprune import __version__, db
from densprune.cluster.concepts import (
    cluster_labels,
    cluster_sizes,
    complexity,
    inter_distance,
    intra_distance,
)
from densprune.cluster.kmeans import (
    assign,
    default_num_clusters,
    faiss_gpu_count,
    rank_in_cluster,
    train_spherical_kmeans,
)
from densprune.embed.runner import EmbedSettings, assemble, embed_source, work_dir
from densprune.ingest.sources import Reject, SourceListing, list_source

log = logging.getLogger(__name__)

DEDUP_EPS_GRID = np.round(np.linspace(0.0, 0.3, 61), 4)


@dataclass(frozen=True, slots=True)
class PrecomputeConfig:
    """Everything ``densprune precompute`` can be told (see ``densprune precompute --help``)."""

    source: str
    workspace: Path
    embedder: str = "openclip"
    model: str = "ViT-B-32"
    pretrained: str | None = "laion2b_s34b_b79k"
    weights: str | None = None
    device: str = "auto"
    clusters: int | None = None  # None -> default_num_clusters(N)
    niter: int = 50
    seed: int = 1234
    neighbors: int = 20
    eval_per_category: int = 20  # held-out eval images per top-level category (sources with categories)
    eval_min_category: int = 100  # only categories with at least this many images give eval images
    layout_rows: int = 50_000
    dtype: str = "float32"
    image_column: str | None = None
    caption_column: str | None = None
    force: bool = False
    keep_work: bool = False
    engine: str = "local"  # "local" (DataLoader on this machine) or "ray" (actors on a Ray cluster)
    ray_address: str | None = None
    ray_actors: int | None = None
    embed: EmbedSettings = field(default_factory=EmbedSettings)


def _dedupe_uids(listing: SourceListing) -> list:
    seen: set[str] = set()
    refs = []
    for r in listing.refs:
        if r.uid in seen:
            listing.rejects.append(Reject(r.key, r.image_ref, "list", f"duplicate uid {r.uid} (an earlier sample has it)"))
            continue
        seen.add(r.uid)
        refs.append(r)
    return refs


def choose_eval_split(top_category: np.ndarray, per_category: int, min_category: int, seed: int) -> np.ndarray:
    """Held-out evaluation rows, balanced over the top-level categories with enough images.

    top_category: (N,) strings or None -> (N,) bool, True for eval rows (``per_category`` per category).
    """
    is_eval = np.zeros(top_category.size, dtype=bool)
    if per_category <= 0:
        return is_eval
    rng = np.random.default_rng(seed)
    cats = pd.Series(top_category)
    for cat, rows in sorted(cats.groupby(cats, dropna=True).indices.items()):
        if cat and rows.size >= min_category:
            is_eval[rng.choice(rows, size=per_category, replace=False)] = True
    return is_eval


def umap_layout(x: np.ndarray, centroids: np.ndarray, rows: np.ndarray, seed: int,
                n_neighbors: int = 15, n_epochs: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """2-D UMAP of the sampled rows together with all centroids.

    The k-nearest-neighbour graph is computed exactly with faiss (inner product on the
    L2-normalised vectors) and handed to UMAP, which skips NN-descent and its JIT warm-up.
    Returns (len(rows), 2) and (K, 2) float32 coordinates.
    """
    import faiss
    import umap

    data = np.ascontiguousarray(np.concatenate([np.asarray(x[rows], dtype=np.float32),
                                                np.asarray(centroids, dtype=np.float32)]))
    n = data.shape[0]
    nn = int(min(n_neighbors, max(2, n - 1)))
    index = faiss.IndexFlatIP(data.shape[1])
    index.add(data)
    sims, knn = index.search(data, nn)
    knn_dist = np.clip(1.0 - sims, 0.0, 2.0).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # UMAP warns that precomputed_knn disables transform(): we never call it
        reducer = umap.UMAP(n_neighbors=nn, min_dist=0.1, metric="cosine", random_state=seed, init="pca",
                            n_epochs=n_epochs, precomputed_knn=(knn, knn_dist, None))
        xy = reducer.fit_transform(data).astype(np.float32)
    return xy[: rows.size], xy[rows.size:]


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def precompute(cfg: PrecomputeConfig) -> Path:
    """Build (or resume building) the workspace ``cfg.workspace`` from ``cfg.source``."""
    from densprune.embed.models import make_embedder
    from densprune.prune.semdedup import kept_fraction_curve, semdedup

    ws = Path(cfg.workspace)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    if db.is_complete(ws):
        if not cfg.force:
            raise FileExistsError(f"{ws} already holds a complete workspace; use --force to rebuild it")
        db.db_path(ws).unlink()  # from here on the workspace is incomplete until the end
        shutil.rmtree(ws / "plans", ignore_errors=True)  # keep masks of the old build's plans
    ws.mkdir(parents=True, exist_ok=True)

    listing = list_source(cfg.source, cfg.image_column, cfg.caption_column)
    refs = _dedupe_uids(listing)
    log.info("source %s (%s): %d samples, %d rejected while listing", cfg.source, listing.kind, len(refs), len(listing.rejects))
    timings["list"] = time.perf_counter() - t0

    log.info("[1/6] embedding %d samples with the %s embedder", len(refs), cfg.embedder)
    t = time.perf_counter()
    embedder = make_embedder(cfg.embedder, model=cfg.model, pretrained=cfg.pretrained, weights=cfg.weights,
                             device=cfg.device, seed=cfg.seed)
    wd = work_dir(ws, listing.spec, embedder, len(refs))
    if cfg.engine == "ray":
        from densprune.embed.ray_engine import embed_with_ray

        kwargs = {"kind": cfg.embedder, "model": cfg.model, "pretrained": cfg.pretrained, "weights": cfg.weights,
                  "device": cfg.device, "seed": cfg.seed}
        gpus = 1.0 if cfg.embedder == "openclip" and cfg.device in ("auto", "cuda") and _cuda() else 0.0
        shards = embed_with_ray(refs, kwargs, wd, cfg.embed, address=cfg.ray_address, actors=cfg.ray_actors,
                                gpus_per_actor=gpus)
    elif cfg.engine == "local":
        shards = embed_source(refs, embedder, wd, cfg.embed)
    else:
        raise ValueError(f"unknown --engine {cfg.engine!r}: use 'local' or 'ray'")
    asm = assemble(refs, shards, embedder, ws, dtype=cfg.dtype)
    timings["embed"] = time.perf_counter() - t
    n = asm.source_idx.size
    kept_refs = [refs[int(i)] for i in asm.source_idx]
    image = np.load(ws / "embeddings" / "image.npy", mmap_mode="r")

    categories = np.array([r.category for r in kept_refs], dtype=object)
    top = np.array([r.category.split("/")[0] if r.category else None for r in kept_refs], dtype=object)
    is_eval = choose_eval_split(top, cfg.eval_per_category, cfg.eval_min_category, cfg.seed) if listing.has_categories else np.zeros(n, bool)
    pool_rows = np.flatnonzero(~is_eval)

    log.info("[2/6] spherical k-means on %d pool rows", pool_rows.size)
    t = time.perf_counter()
    k = cfg.clusters or default_num_clusters(pool_rows.size)
    centroids = train_spherical_kmeans(image, k, niter=cfg.niter, seed=cfg.seed, train_rows=pool_rows)
    labels, sims = assign(image, centroids, progress=True)
    dist = np.clip(1.0 - sims.astype(np.float64), 0.0, 2.0)
    ranks = rank_in_cluster(labels, dist)
    timings["cluster"] = time.perf_counter() - t

    log.info("[3/6] concept statistics and labels for %d concepts", k)
    t = time.perf_counter()
    d_intra = intra_distance(labels, dist, k, mask=~is_eval)
    d_inter = inter_distance(centroids, cfg.neighbors)
    comp = complexity(d_intra, d_inter)
    captions = [r.caption for r in kept_refs]
    names = cluster_labels([captions[i] for i in pool_rows], labels[pool_rows], k, seed=cfg.seed)
    timings["concepts"] = time.perf_counter() - t

    log.info("[4/6] SemDeDup similarities inside each concept")
    t = time.perf_counter()
    dup_max_sim, dup_of = semdedup(image, labels, dist, progress=True)
    curve = kept_fraction_curve(dup_max_sim[pool_rows], DEDUP_EPS_GRID)
    timings["dedup"] = time.perf_counter() - t

    log.info("[5/6] 2-D UMAP map of %d rows", min(n, cfg.layout_rows))
    t = time.perf_counter()
    rng = np.random.default_rng(cfg.seed)
    layout_rows = np.sort(rng.choice(n, size=min(n, cfg.layout_rows), replace=False))
    xy, cxy = umap_layout(image, centroids, layout_rows, cfg.seed)
    timings["layout"] = time.perf_counter() - t

    clip_score = None
    if (ws / "embeddings" / "text.npy").exists():
        text = np.load(ws / "embeddings" / "text.npy", mmap_mode="r")
        clip_score = np.concatenate([np.einsum("ij,ij->i", np.asarray(image[s:s + 65536], np.float32),
                                               np.asarray(text[s:s + 65536], np.float32)) for s in range(0, n, 65536)])
    tmp_cent = ws / "centroids.npy.tmp"
    with open(tmp_cent, "wb") as fh:
        np.save(fh, centroids.astype(np.float32))
    tmp_cent.replace(ws / "centroids.npy")
    cent_sha = hashlib.sha256((ws / "centroids.npy").read_bytes()).hexdigest()

    samples = pd.DataFrame({
        "row_idx": np.arange(n, dtype=np.int64),
        "uid": [r.uid for r in kept_refs],
        "key": [r.key for r in kept_refs],
        "caption": captions,
        "image_ref": [r.image_ref for r in kept_refs],
        "image_loc": [json.dumps(list(r.loc)) for r in kept_refs],
        "width": asm.width.astype(np.int32),
        "height": asm.height.astype(np.int32),
        "category": categories,
        "top_category": top,
        "split": np.where(is_eval, "eval", "pool"),
        "clip_score": clip_score if clip_score is not None else np.full(n, np.nan),
        "cluster": labels.astype(np.int32),
        "dist_to_centroid": dist,
        "rank_in_cluster": ranks,
        "dup_max_sim": dup_max_sim.astype(np.float64),
        "dup_of": dup_of.astype(np.int64),
        "thumb_offset": asm.thumb_offsets[:-1],
        "thumb_size": np.diff(asm.thumb_offsets).astype(np.int32),
    })
    if clip_score is None:
        samples["clip_score"] = pd.Series([None] * n, dtype="float64")
    clusters = pd.DataFrame({
        "cluster": np.arange(k, dtype=np.int32),
        "size": cluster_sizes(labels, k).astype(np.int32),
        "pool_size": cluster_sizes(labels, k, ~is_eval).astype(np.int32),
        "d_intra": d_intra, "d_inter": d_inter, "complexity": comp, "label": names,
        "x": cxy[:, 0].astype(np.float64), "y": cxy[:, 1].astype(np.float64),
    })
    layout = pd.DataFrame({"row_idx": layout_rows.astype(np.int64), "cluster": labels[layout_rows].astype(np.int32),
                           "x": xy[:, 0].astype(np.float64), "y": xy[:, 1].astype(np.float64)})
    rejects = pd.DataFrame([asdict(r) for r in listing.rejects + asm.rejects],
                           columns=["key", "image_ref", "stage", "reason"]).astype(str)
    timings["total"] = time.perf_counter() - t0
    meta = {
        "embedder": embedder.name, "model": embedder.model, "pretrained": embedder.pretrained or None,
        "image_dim": asm.image_dim, "text_dim": asm.text_dim, "dtype": cfg.dtype,
        "k": k, "seed": cfg.seed, "niter": cfg.niter, "neighbors": cfg.neighbors, "centroids_sha256": cent_sha,
        "densprune_version": __version__, "source": listing.spec, "source_kind": listing.kind, "engine": cfg.engine,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "n_samples": n, "n_pool": int(pool_rows.size), "n_eval": int(is_eval.sum()), "n_rejects": len(rejects),
        "has_clip_scores": clip_score is not None, "has_categories": listing.has_categories,
        "eval_per_category": cfg.eval_per_category if listing.has_categories else 0,
        "faiss_gpus": faiss_gpu_count(), "timings_s": {k_: round(v, 3) for k_, v in timings.items()},
    }
    log.info("[6/6] writing %s", db.db_path(ws))
    db.write_new_workspace_db(ws, samples=samples, clusters=clusters, rejects=rejects, meta=meta,
                                 layout=layout, dedup_curve=pd.DataFrame({"eps": DEDUP_EPS_GRID, "kept_fraction": curve}))
    if not cfg.keep_work:
        shutil.rmtree(wd, ignore_errors=True)
    log.info("workspace %s: %d samples, %d clusters, %d rejects in %.1f s", ws, n, k, len(rejects), timings["total"])
    return ws
