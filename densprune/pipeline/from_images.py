"""Precompute from a source of images (a folder, a table, webdataset shards, the demo): list, embed,
split off the eval rows, cluster, name and measure the concepts, SemDeDup, map, write the workspace.

Workspace layout: densprune/workspace.py (and docs/formats.md). The DuckDB file is renamed into place
as the very last step: a workspace without it is incomplete, whatever else is there.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from densprune import db, workspace
from densprune.cluster.concepts import mean_directions
from densprune.cluster.labels import cluster_labels
from densprune.cluster.zeroshot import load_vocabulary, save_vocabulary, zero_shot_names
from densprune.devices import resolve_device
from densprune.ingest.eval_split import choose_eval_split, eval_copies
from densprune.ingest.sources import Reject, SampleRef, SourceListing, list_source
from densprune.pipeline.config import PrecomputeConfig
from densprune.pipeline.stages import (
    Clustering,
    Split,
    StageTimer,
    check_inputs,
    check_workspace,
    cluster_stage,
    clusters_frame,
    common_meta,
    dedup_stage,
    layout_stage,
    locked_workspace,
    rejects_frame,
    reset_workspace,
    store_plan_index,
)

if TYPE_CHECKING:  # the runner imports torch: only the embedding stage needs it
    from densprune.embed.models import Embedder
    from densprune.embed.shards import Assembled

log = logging.getLogger(__name__)


def _dedupe_uids(listing: SourceListing) -> list[SampleRef]:
    """The listing's refs with repeated uids rejected (the first one stays)."""
    seen: set[str] = set()
    refs = []
    for r in listing.refs:
        if r.uid in seen:
            listing.rejects.append(Reject(r.key, r.image_ref, "list",
                                          f"duplicate uid {r.uid} (an earlier sample has it)"))
            continue
        seen.add(r.uid)
        refs.append(r)
    return refs


@dataclass(slots=True)
class Embedded:
    """What the embedding stage hands on: the rows that decoded, in row_idx order."""

    refs: list[SampleRef]  # (N,) the source refs of the workspace rows
    asm: Assembled  # widths, heights, thumbnail offsets, rejects, dims
    image: np.ndarray  # (N, d) memmap of embeddings/image.npy
    embedder_name: str
    model: str | None
    pretrained: str | None
    work: Path  # the resumable shard folder
    embedder: Embedder  # the embedder (its text tower names the concepts, where it has one)
    dtype: str = "float32"  # of the .npy vectors
    thumbnails: str = "all"  # the resolved --thumbnails mode


def embed_stage(cfg: PrecomputeConfig, ws: Path, listing: SourceListing, refs: list[SampleRef],
                embedder: object | None = None) -> Embedded:
    """Decode and embed every ref (resumable shards), then assemble the ``.npy`` files of the workspace.

    Shards are reused only when their inputs are unchanged: each records a key of its samples' files
    (location, size, mtime_ns) and captions (densprune.embed.shards.shard_input_keys); a shard whose
    key differs is deleted and embedded again."""
    from densprune.embed.models import make_embedder, vector_dtype
    from densprune.embed.shards import NothingDecoded, assemble, work_dir
    from densprune.embed.thumbnails import resolve_thumbnails

    if embedder is None:
        embedder = make_embedder(cfg.embedder, model=cfg.model, pretrained=cfg.pretrained, weights=cfg.weights,
                                 device=cfg.device, seed=cfg.seed)
    dtype, thumbs = vector_dtype(cfg.dtype, embedder), resolve_thumbnails(cfg.thumbnails, len(refs))
    settings = replace(cfg.embed, thumbnails=thumbs == "all", dtype=dtype if embedder.rowwise else "float32")
    wd = work_dir(ws, listing.spec, embedder, len(refs), settings)
    kwargs = {"kind": cfg.embedder, "model": cfg.model, "pretrained": cfg.pretrained, "weights": cfg.weights,
              "device": cfg.device, "seed": cfg.seed}
    shards = embed_shards(cfg, refs, embedder, kwargs, wd, settings, gpu=cfg.embedder == "openclip")
    try:
        asm = assemble(refs, shards, embedder, ws, dtype=dtype, thumbnails=thumbs == "all")
    except NothingDecoded as exc:
        raise NothingDecoded(f"{listing.spec}: {exc}") from exc
    image = np.load(workspace.image_vectors(ws), mmap_mode="r")
    return Embedded([refs[int(i)] for i in asm.source_idx], asm, image, embedder.name, embedder.model,
                    embedder.pretrained or None, wd, embedder, dtype, thumbs)


def embed_shards(cfg: PrecomputeConfig, refs: list[SampleRef], embedder: Embedder, kwargs: dict, wd: Path,
                 settings, *, gpu: bool) -> list[Path]:
    """Embed ``refs`` into resumable shards under ``wd`` (stale ones discarded first) on ``cfg.engine``:
    this process's DataLoader, or Ray actors that build the embedder from ``kwargs`` (make_embedder's),
    one GPU each when ``gpu`` and the device is CUDA. Returns the shard paths in order."""
    from densprune.embed.shards import discard_stale_shards, shard_input_keys

    keys = shard_input_keys(refs, settings.shard_size)
    discard_stale_shards(wd, keys)
    if cfg.engine == "ray":
        from densprune.embed.on_ray import embed_with_ray

        gpus = 1.0 if gpu and resolve_device(cfg.device) == "cuda" else 0.0
        return embed_with_ray(refs, kwargs, wd, settings, address=cfg.ray_address, actors=cfg.ray_actors,
                              gpus_per_actor=gpus)
    if cfg.engine != "local":
        raise ValueError(f"unknown --engine {cfg.engine!r}: use 'local' or 'ray'")
    from densprune.embed.runner import embed_source

    return embed_source(refs, embedder, wd, settings, input_keys=keys)


def concept_stage(cfg: PrecomputeConfig, ws: Path, listing: SourceListing, emb: Embedded,
                  embedder: Embedder | None) -> tuple[np.ndarray, Path | None]:
    """The vectors the concepts are built on: with a concept embedder (``--concept-embedder``) a second
    embedding pass over the rows the first one accepted (resumable shards in their own work folder)
    into ``embeddings/concept.npy``; without one, the first pass's image vectors (and a concept.npy left
    by an earlier build is removed). Returns ((N, d_c) memmap, the work folder or None)."""
    path = workspace.concept_vectors(ws)
    if embedder is None:
        path.unlink(missing_ok=True)
        return emb.image, None
    from densprune.embed.models import vector_dtype
    from densprune.embed.shards import assemble_rows, work_dir

    dtype = vector_dtype(cfg.dtype, embedder)
    settings = replace(cfg.embed, thumbnails=False, dtype=dtype)
    wd = work_dir(ws, f"{listing.spec}#concepts", embedder, len(emb.refs), settings)
    log.info("concept vectors: embedding the %d accepted images again with %s %s", len(emb.refs), embedder.name,
             embedder.model)
    kwargs = {"kind": "timm", "model": cfg.concept_model, "pretrained": cfg.concept_pretrained,
              "weights": cfg.concept_weights, "device": cfg.device, "seed": cfg.seed,
              "image_size": cfg.concept_image_size}
    shards = embed_shards(cfg, emb.refs, embedder, kwargs, wd, settings, gpu=True)
    assemble_rows(emb.refs, shards, path, dtype=dtype)
    return np.load(path, mmap_mode="r"), wd


def concept_meta(embedder: Embedder | None, vectors: np.ndarray) -> dict:
    """The meta keys of the concept space: ``concept_embedder`` (None: the --embedder's vectors) and
    ``concept_dim`` (0 then)."""
    if embedder is None:
        return {"concept_embedder": None, "concept_dim": 0}
    return {"concept_embedder": {"name": embedder.name, "model": embedder.model,
                                 "pretrained": embedder.pretrained or None,
                                 "image_size": getattr(embedder, "image_size", None)},
            "concept_dim": int(vectors.shape[1])}


def thumbs_stage(cfg: PrecomputeConfig, ws: Path, emb: Embedded, cl: Clustering) -> None:
    """``--thumbnails sample``: thumbnails of each concept's rows nearest its centroid, into thumbs.bin."""
    if emb.thumbnails == "sample":
        from densprune.embed.thumbnails import sample_rows, write_thumbnails

        rows = sample_rows(cl.ranks, cfg.thumbs_per_concept)
        emb.asm.thumb_offsets = write_thumbnails(emb.refs, rows, workspace.thumbs_path(ws), size=cfg.embed.thumb_size,
                                                 max_pixels=cfg.embed.max_pixels, workers=cfg.embed.workers)


def split_stage(cfg: PrecomputeConfig, refs: list[SampleRef], has_categories: bool,
                image: np.ndarray | None = None) -> Split:
    """Categories of the rows and the held-out eval split (sources with categories only); with
    ``cfg.decontaminate`` the pool rows that copy an eval image (``image`` (N, d) similarity or the same
    caption) are set aside: neither pool nor eval."""
    category = np.array([r.category for r in refs], dtype=object)
    top = np.array([r.category.split("/")[0] if r.category else None for r in refs], dtype=object)
    is_eval = (choose_eval_split(top, cfg.eval_per_category, cfg.eval_min_category, cfg.seed)
               if has_categories else np.zeros(len(refs), bool))
    is_copy = None
    if cfg.decontaminate is not None and image is not None:
        is_copy = eval_copies(image, is_eval, [r.caption for r in refs], cfg.decontaminate)
        log.info("decontamination: %d pool rows copy one of the %d eval images (cosine >= %g or the same caption): "
                 "set aside", int(is_copy.sum()), int(is_eval.sum()), cfg.decontaminate)
    split = Split(category, top, is_eval, np.empty(0, np.int64), is_copy)
    split.pool_rows = np.flatnonzero(split.in_pool)
    return split


def concepts_stage(cfg: PrecomputeConfig, cl: Clustering, split: Split, captions: list[str],
                   embedder: object, image: np.ndarray | None = None) -> tuple[pd.DataFrame, object]:
    """The clusters table without its map coordinates (sizes, d_intra, d_inter, complexity, caption-word
    label, zero-shot name and similarity) and the zero-shot vocabulary used (None without a text tower).
    ``image`` (N, d): the CLIP image vectors when the concepts were clustered in another space; the
    zero-shot names then come from each concept's mean CLIP direction."""
    pool = split.pool_rows
    names = cluster_labels([captions[i] for i in pool], cl.labels[pool], cl.k, seed=cfg.seed)
    directions = cl.centroids
    if image is not None and getattr(embedder, "has_text", False):
        directions = mean_directions(image, cl.labels, cl.k, split.in_pool)
    zs_names, zs_sims, vocab = _zero_shot(embedder, directions, cfg.label_vocabulary,
                                             workspace.embeddings_dir(cfg.workspace))
    df = clusters_frame(cfg, cl, split, names)
    df["zs_label"], df["zs_similarity"] = pd.Series(zs_names, dtype=object), zs_sims
    return df, vocab


def _zero_shot(embedder, centroids: np.ndarray, vocabulary: str | None, keep_in: Path):
    """Zero-shot names of the K concepts: (names, (K,) similarities, Vocabulary), or K Nones, NaNs and
    None when the embedder has no text tower. The vocabulary's text embeddings are kept in ``keep_in``
    (for `densprune recluster`)."""
    k = centroids.shape[0]
    if not getattr(embedder, "has_text", False) or not hasattr(embedder, "embed_vocabulary"):
        if vocabulary:
            log.warning("--label-vocabulary %s ignored: the %s embedder has no text tower", vocabulary, embedder.name)
        return [None] * k, np.full(k, np.nan), None
    vocab = load_vocabulary(vocabulary)
    log.info("zero-shot names from %d entries (%s)", len(vocab.entries), vocab.source)
    vectors = embedder.embed_vocabulary(vocab.entries)
    save_vocabulary(keep_in, vocab, vectors)
    names, sims = zero_shot_names(centroids, vectors, vocab.entries)
    return names, sims, vocab


def clip_scores(ws: Path, image: np.ndarray, block: int = 65536) -> np.ndarray | None:
    """(N,) cosine of each image with its caption, from embeddings/text.npy (None without a text tower)."""
    path = workspace.text_vectors(ws)
    if not path.exists():
        return None
    text = np.load(path, mmap_mode="r")
    return np.concatenate([np.einsum("ij,ij->i", np.asarray(image[s:s + block], np.float32),
                                     np.asarray(text[s:s + block], np.float32))
                           for s in range(0, image.shape[0], block)])


def samples_table(emb: Embedded, split: Split, cl: Clustering, dup_max_sim: np.ndarray, dup_of: np.ndarray,
                  clip_score: np.ndarray | None) -> pd.DataFrame:
    """The samples table: one row per workspace row (docs/formats.md)."""
    n, refs, asm = len(emb.refs), emb.refs, emb.asm
    return pd.DataFrame({
        "row_idx": np.arange(n, dtype=np.int64),
        "uid": [r.uid for r in refs],
        "key": [r.key for r in refs],
        "caption": [r.caption for r in refs],
        "image_ref": [r.image_ref for r in refs],
        "image_loc": [json.dumps(list(r.loc)) for r in refs],
        "width": asm.width.astype(np.int32),
        "height": asm.height.astype(np.int32),
        "category": split.category,
        "top_category": split.top,
        "split": split.names(),
        "clip_score": clip_score if clip_score is not None else pd.Series([None] * n, dtype="float64"),
        "cluster": cl.labels.astype(np.int32),
        "dist_to_centroid": cl.dist,
        "rank_in_cluster": cl.ranks,
        "dup_max_sim": dup_max_sim.astype(np.float64),
        "dup_of": dup_of.astype(np.int64),
        "thumb_offset": asm.thumb_offsets[:-1],
        "thumb_size": np.diff(asm.thumb_offsets).astype(np.int32),
        "caption_flag": pd.Series([r.caption_flag for r in refs], dtype=object),
    })


def precompute_images(cfg: PrecomputeConfig) -> Path:
    """Build (or resume building) the workspace ``cfg.workspace`` from the images of ``cfg.source``:
    the inputs are checked (the source listed, the embedder and its weights loaded, the vocabulary read)
    under the workspace's exclusive lock, and only then does ``--force`` remove the old build."""
    check_workspace(cfg)
    check_inputs(cfg)
    with locked_workspace(cfg) as ws:
        return _precompute_images(cfg, ws)


def _precompute_images(cfg: PrecomputeConfig, ws: Path) -> Path:
    """The stages of :func:`precompute` for a source of images, under the workspace's lock."""
    from densprune.embed.models import make_concept_embedder, make_embedder

    timer = StageTimer()
    lap = timer.lap
    listing = list_source(cfg.source, cfg.image_column, cfg.caption_column, follow_links=cfg.follow_links)
    refs = _dedupe_uids(listing)
    log.info("source %s (%s): %d samples, %d rejected while listing", cfg.source, listing.kind, len(refs),
             len(listing.rejects))
    embedder = make_embedder(cfg.embedder, model=cfg.model, pretrained=cfg.pretrained, weights=cfg.weights,
                             device=cfg.device, seed=cfg.seed)  # weights that cannot be loaded fail here
    concept_embedder = make_concept_embedder(cfg.concept_embedder, model=cfg.concept_model,
                                             pretrained=cfg.concept_pretrained, weights=cfg.concept_weights,
                                             device=cfg.device, seed=cfg.seed, image_size=cfg.concept_image_size)
    reset_workspace(cfg)  # inputs checked: only now does --force remove the old build
    lap("list")
    log.info("[1/6] embedding %d samples with the %s embedder", len(refs), cfg.embedder)
    emb = embed_stage(cfg, ws, listing, refs, embedder)
    lap("embed")
    concept, concept_work = concept_stage(cfg, ws, listing, emb, concept_embedder)
    if concept_embedder is not None:
        lap("embed_concepts")
    split = split_stage(cfg, emb.refs, listing.has_categories, concept)
    log.info("[2/6] spherical k-means on %d pool rows", split.pool_rows.size)
    cl = cluster_stage(cfg, concept, split.pool_rows)
    lap("cluster")
    thumbs_stage(cfg, ws, emb, cl)
    lap("thumbnails")
    log.info("[3/6] concept statistics and labels for %d concepts", cl.k)
    clusters, vocab = concepts_stage(cfg, cl, split, [r.caption for r in emb.refs], emb.embedder,
                                     emb.image if concept_embedder is not None else None)
    lap("concepts")
    log.info("[4/6] SemDeDup similarities inside each concept")
    dd = dedup_stage(cfg, concept, cl, split.pool_rows)
    lap("dedup")
    log.info("[5/6] 2-D UMAP map of %d rows", min(len(emb.refs), cfg.layout_rows))
    layout, cxy = layout_stage(cfg, concept, cl)
    clusters["x"], clusters["y"] = cxy[:, 0].astype(np.float64), cxy[:, 1].astype(np.float64)
    lap("layout")
    clip_score = clip_scores(ws, emb.image)
    cent_sha = workspace.save_centroids(ws, cl.centroids)
    samples = samples_table(emb, split, cl, dd.max_sim, dd.dup_of, clip_score)
    rejects = rejects_frame(listing.rejects + emb.asm.rejects)
    timer.finish()
    meta = {**workspace_meta(cfg, listing, emb, split, cl, clip_score is not None, len(rejects), timer.wall),
            **concept_meta(concept_embedder, concept),
            "dedup_groups": dd.groups, "dedup_pairs": dd.pairs, "centroids_sha256": cent_sha,
            "label_source": "caption words (c-TF-IDF)", "zero_shot_vocabulary": vocab.source if vocab else None,
            "zero_shot_vocabulary_size": len(vocab.entries) if vocab else 0}
    log.info("[6/6] writing %s", db.db_path(ws))
    db.write_new_workspace_db(ws, samples=samples, clusters=clusters, rejects=rejects, meta=meta, layout=layout,
                              dedup_curve=dd.curve)
    if not cfg.keep_work:  # the workspace is complete: the shards are not needed again
        shutil.rmtree(emb.work, ignore_errors=True)
        if concept_work is not None:
            shutil.rmtree(concept_work, ignore_errors=True)
    store_plan_index(ws)
    log.info("[done] workspace %s: %d samples, %d clusters, %d rejects in %.1f s", ws, len(emb.refs), cl.k,
             len(rejects), timer.wall["total"])
    return ws


def workspace_meta(cfg: PrecomputeConfig, listing: SourceListing, emb: Embedded, split: Split, cl: Clustering,
                   has_clip: bool, n_rejects: int, timings: dict[str, float]) -> dict:
    """The meta table: how the workspace was built (docs/formats.md)."""
    return {
        **common_meta(cfg, cl.k, timings),
        "embedder": emb.embedder_name, "model": emb.model, "pretrained": emb.pretrained,
        "image_dim": emb.asm.image_dim, "text_dim": emb.asm.text_dim, "dtype": emb.dtype, "thumbnails": emb.thumbnails,
        "source": listing.spec, "source_kind": listing.kind,
        "n_samples": len(emb.refs), "n_pool": int(split.pool_rows.size), "n_eval": int(split.is_eval.sum()),
        "decontaminate": cfg.decontaminate,
        "n_eval_copies": 0 if split.is_copy is None else int(split.is_copy.sum()),
        "n_rejects": n_rejects, "has_clip_scores": has_clip, "has_categories": listing.has_categories,
        "eval_per_category": cfg.eval_per_category if listing.has_categories else 0,
        "has_thumbnails": True,
    }
