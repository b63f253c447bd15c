"""``densprune precompute``: source -> embeddings -> clusters -> concept stats -> DuckDB workspace.

Workspace layout (docs/formats.md)::

    DIR/densprune.duckdb          metadata, samples, clusters, rejects, layout, plans (written last)
    DIR/embeddings/image.npy      (N, d) L2-normalised, row i = row_idx i
    DIR/embeddings/text.npy       (N, d) caption embeddings (open_clip only)
    DIR/embeddings/vocabulary.*   zero-shot vocabulary and its (V, d) text embeddings (open_clip only)
    DIR/centroids.npy             (K, d) L2-normalised
    DIR/thumbs.bin                thumbnails (JPEG/WebP), addressed by samples.thumb_offset/thumb_size
    DIR/.work/                    resumable embedding shards (removed after success)

The DuckDB file is renamed into place as the very last step: a workspace without it is
incomplete, whatever else is there.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from densprune import __version__, db
from densprune.cluster.concepts import (
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
from densprune.cluster.labels import cluster_labels
from densprune.cluster.layout import umap_layout
from densprune.cluster.zeroshot import load_vocabulary, save_vocabulary, zero_shot_names
from densprune.devices import resolve_device
from densprune.embed.settings import EmbedSettings
from densprune.ingest.eval_split import choose_eval_split
from densprune.ingest.released import ReleasedSource, detect_layout, open_released
from densprune.ingest.sources import (
    Reject,
    SampleRef,
    SourceError,
    SourceListing,
    list_source,
)

if TYPE_CHECKING:  # the runner imports torch: only the embedding stage needs it
    from densprune.embed.shards import Assembled

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
    layout_rows: int = 20_000  # the app draws at most 20,000 points of the map
    label_vocabulary: str | None = None  # text file, one name per line; None -> open_clip's ImageNet class names
    dedup_clusters: int | str = "auto"  # SemDeDup groups: "auto" (split concepts > 2,000 rows), "concepts", or a total
    dtype: str = "auto"  # of the .npy vectors: auto = float16 for open_clip (as LAION/DataComp ship them), float32
    #                      offline, the stored dtype for released embeddings
    thumbnails: str = "auto"  # all | sample | none | auto (all up to 1M rows, else sample)
    thumbs_per_concept: int = 96  # rows per concept with a thumbnail in ``sample`` mode
    image_column: str | None = None
    caption_column: str | None = None
    force: bool = False
    keep_work: bool = False
    engine: str = "local"  # "local" (DataLoader on this machine) or "ray" (actors on a Ray cluster)
    ray_address: str | None = None
    ray_actors: int | None = None
    embed: EmbedSettings = field(default_factory=EmbedSettings)
    # released embeddings (densprune.ingest.released): None detects a released layout and otherwise reads
    # SOURCE as images; "auto" requires one of the layouts; "clip-retrieval" / "datacomp" name it
    embeddings_layout: str | None = None
    embedding_key: str | None = None  # DataComp .npz member of the image vectors (None: b32_img)


def _dedupe_uids(listing: SourceListing) -> list[SampleRef]:
    """The listing's refs with repeated uids rejected (the first one stays)."""
    seen: set[str] = set()
    refs = []
    for r in listing.refs:
        if r.uid in seen:
            listing.rejects.append(Reject(r.key, r.image_ref, "list", f"duplicate uid {r.uid} (an earlier sample has it)"))
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
    embedder: object  # the embedder (its text tower names the concepts, where it has one)
    dtype: str = "float32"  # of the .npy vectors
    thumbnails: str = "all"  # the resolved --thumbnails mode


@dataclass(slots=True)
class Split:
    """Per row (N,): category, top-level category and the eval flag; the pool's row indices."""

    category: np.ndarray
    top: np.ndarray
    is_eval: np.ndarray
    pool_rows: np.ndarray


@dataclass(slots=True)
class Clustering:
    """k-means output: centroids (K, d), per row (N,) cluster, cosine distance and rank in cluster."""

    k: int
    centroids: np.ndarray
    labels: np.ndarray
    dist: np.ndarray
    ranks: np.ndarray
    d_intra: np.ndarray | None = None  # (K,) when the assignment pass already summed it (Ray engine)


def absolute_source(spec: str) -> str:
    """SOURCE as an absolute path (``demo`` as it is), so that every image location stored in the
    workspace names its file whatever the current directory of a later reader. Globs and brace
    patterns stay patterns (their directory part is made absolute); symlinks are not resolved."""
    if spec == "demo" or os.path.isabs(spec):
        return spec
    return os.path.abspath(spec)


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
        shutil.rmtree(ws / "plans", ignore_errors=True)  # the masks of the old build's plans
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


def embed_stage(cfg: PrecomputeConfig, ws: Path, listing: SourceListing, refs: list[SampleRef],
                embedder: object | None = None) -> Embedded:
    """Decode and embed every ref (resumable shards), then assemble the ``.npy`` files of the workspace.

    Shards are reused only when their inputs are unchanged: each records a key of its samples' files
    (location, size, mtime_ns) and captions (densprune.embed.shards.shard_input_keys); a shard whose
    key differs is deleted and embedded again."""
    from densprune.embed.models import make_embedder, vector_dtype
    from densprune.embed.runner import embed_source
    from densprune.embed.shards import (
        NothingDecoded,
        assemble,
        discard_stale_shards,
        shard_input_keys,
        work_dir,
    )
    from densprune.embed.thumbnails import resolve_thumbnails

    if embedder is None:
        embedder = make_embedder(cfg.embedder, model=cfg.model, pretrained=cfg.pretrained, weights=cfg.weights,
                                 device=cfg.device, seed=cfg.seed)
    dtype, thumbs = vector_dtype(cfg.dtype, embedder), resolve_thumbnails(cfg.thumbnails, len(refs))
    settings = replace(cfg.embed, thumbnails=thumbs == "all", dtype=dtype if embedder.rowwise else "float32")
    wd = work_dir(ws, listing.spec, embedder, len(refs), settings)
    keys = shard_input_keys(refs, settings.shard_size)
    discard_stale_shards(wd, keys)
    if cfg.engine == "ray":
        from densprune.embed.ray_engine import embed_with_ray

        kwargs = {"kind": cfg.embedder, "model": cfg.model, "pretrained": cfg.pretrained, "weights": cfg.weights,
                  "device": cfg.device, "seed": cfg.seed}
        gpus = 1.0 if cfg.embedder == "openclip" and resolve_device(cfg.device) == "cuda" else 0.0
        shards = embed_with_ray(refs, kwargs, wd, settings, address=cfg.ray_address, actors=cfg.ray_actors,
                                gpus_per_actor=gpus)
    elif cfg.engine == "local":
        shards = embed_source(refs, embedder, wd, settings, input_keys=keys)
    else:
        raise ValueError(f"unknown --engine {cfg.engine!r}: use 'local' or 'ray'")
    try:
        asm = assemble(refs, shards, embedder, ws, dtype=dtype, thumbnails=thumbs == "all")
    except NothingDecoded as exc:
        raise NothingDecoded(f"{listing.spec}: {exc}") from exc
    image = np.load(ws / "embeddings" / "image.npy", mmap_mode="r")
    return Embedded([refs[int(i)] for i in asm.source_idx], asm, image, embedder.name, embedder.model,
                    embedder.pretrained or None, wd, embedder, dtype, thumbs)


def thumbs_stage(cfg: PrecomputeConfig, ws: Path, emb: Embedded, cl: Clustering) -> None:
    """``--thumbnails sample``: thumbnails of each concept's rows nearest its centroid, into thumbs.bin."""
    if emb.thumbnails == "sample":
        from densprune.embed.thumbnails import sample_rows, write_thumbnails

        rows = sample_rows(cl.ranks, cfg.thumbs_per_concept)
        emb.asm.thumb_offsets = write_thumbnails(emb.refs, rows, ws / "thumbs.bin", size=cfg.embed.thumb_size,
                                                 max_pixels=cfg.embed.max_pixels, workers=cfg.embed.workers)


def split_stage(cfg: PrecomputeConfig, refs: list[SampleRef], has_categories: bool) -> Split:
    """Categories of the rows and the held-out eval split (sources with categories only)."""
    category = np.array([r.category for r in refs], dtype=object)
    top = np.array([r.category.split("/")[0] if r.category else None for r in refs], dtype=object)
    is_eval = (choose_eval_split(top, cfg.eval_per_category, cfg.eval_min_category, cfg.seed)
               if has_categories else np.zeros(len(refs), bool))
    return Split(category, top, is_eval, np.flatnonzero(~is_eval))


def cluster_stage(cfg: PrecomputeConfig, image: np.ndarray, pool_rows: np.ndarray) -> Clustering:
    """Spherical k-means trained on the pool rows, then every row assigned to its nearest centroid."""
    k = cfg.clusters or default_num_clusters(pool_rows.size)
    if k > pool_rows.size:
        raise ValueError(f"{cfg.source}: only {pool_rows.size:,} usable pool rows for --clusters {k} (the others were "
                         "rejected or held out: see the log); lower --clusters or fix the source")
    centroids = train_spherical_kmeans(image, k, niter=cfg.niter, seed=cfg.seed, train_rows=pool_rows)
    d_intra = None
    if cfg.engine == "ray":
        from densprune.ray_stages import assign_on_ray

        pool = None
        if pool_rows.size < image.shape[0]:
            pool = np.zeros(image.shape[0], dtype=bool)
            pool[pool_rows] = True
        labels, sims, d_intra = assign_on_ray(vector_file(image), centroids, pool, address=cfg.ray_address)
    else:
        labels, sims = assign(image, centroids, progress=True)
    dist = np.clip(1.0 - sims.astype(np.float64), 0.0, 2.0)
    return Clustering(k, centroids, labels, dist, rank_in_cluster(labels, dist), d_intra)


def vector_file(image: np.ndarray) -> Path:
    """The ``.npy`` file behind a workspace's vectors (a memmap or NpyRows): what Ray tasks open."""
    path = getattr(image, "path", None) or getattr(image, "filename", None)
    if path is None:
        raise ValueError("--engine ray needs the vectors in a .npy file that every node can read")
    return Path(path)


def concepts_stage(cfg: PrecomputeConfig, cl: Clustering, split: Split, captions: list[str],
                   embedder: object) -> tuple[pd.DataFrame, object]:
    """The clusters table without its map coordinates (sizes, d_intra, d_inter, complexity, caption-word
    label, zero-shot name and similarity) and the zero-shot vocabulary used (None without a text tower)."""
    pool = split.pool_rows
    names = cluster_labels([captions[i] for i in pool], cl.labels[pool], cl.k, seed=cfg.seed)
    zs_names, zs_sims, vocab = _zero_shot(embedder, cl.centroids, cfg.label_vocabulary, cfg.workspace / "embeddings")
    df = clusters_frame(cfg, cl, split, names)
    df["zs_label"], df["zs_similarity"] = pd.Series(zs_names, dtype=object), zs_sims
    return df, vocab


def clusters_frame(cfg: PrecomputeConfig, cl: Clustering, split: Split, names: list[str]) -> pd.DataFrame:
    """The clusters table from the clustering and the K concept labels (no map coordinates yet)."""
    k = cl.k
    d_intra = cl.d_intra if cl.d_intra is not None else intra_distance(cl.labels, cl.dist, k, mask=~split.is_eval)
    d_inter = inter_distance(cl.centroids, cfg.neighbors)
    return pd.DataFrame({
        "cluster": np.arange(k, dtype=np.int32),
        "size": cluster_sizes(cl.labels, k).astype(np.int32),
        "pool_size": cluster_sizes(cl.labels, k, ~split.is_eval).astype(np.int32),
        "d_intra": d_intra, "d_inter": d_inter, "complexity": complexity(d_intra, d_inter), "label": names,
    })


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
        from densprune.ray_stages import semdedup_on_ray

        dup_max_sim, dup_of = semdedup_on_ray(vector_file(image), groups, gdist, address=cfg.ray_address)
    else:
        dup_max_sim, dup_of = semdedup(image, groups, gdist, progress=True)
    curve = pd.DataFrame({"eps": DEDUP_EPS_GRID, "kept_fraction": kept_fraction_curve(dup_max_sim[pool_rows], DEDUP_EPS_GRID)})
    return Dedup(dup_max_sim, dup_of, curve, n_groups, pair_count(np.bincount(groups, minlength=n_groups)))


def layout_stage(cfg: PrecomputeConfig, image: np.ndarray, cl: Clustering) -> tuple[pd.DataFrame, np.ndarray]:
    """The 2-D map: a (rows, 4) layout table of sampled rows and the (K, 2) centroid coordinates."""
    n = image.shape[0]
    rows = np.sort(np.random.default_rng(cfg.seed).choice(n, size=min(n, cfg.layout_rows), replace=False))
    xy, cxy = umap_layout(image, cl.centroids, rows, cfg.seed)
    layout = pd.DataFrame({"row_idx": rows.astype(np.int64), "cluster": cl.labels[rows].astype(np.int32),
                           "x": xy[:, 0].astype(np.float64), "y": xy[:, 1].astype(np.float64)})
    return layout, cxy


def clip_scores(ws: Path, image: np.ndarray, block: int = 65536) -> np.ndarray | None:
    """(N,) cosine of each image with its caption, from embeddings/text.npy (None without a text tower)."""
    path = ws / "embeddings" / "text.npy"
    if not path.exists():
        return None
    text = np.load(path, mmap_mode="r")
    return np.concatenate([np.einsum("ij,ij->i", np.asarray(image[s:s + block], np.float32),
                                     np.asarray(text[s:s + block], np.float32)) for s in range(0, image.shape[0], block)])


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
        "split": np.where(split.is_eval, "eval", "pool"),
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


def save_centroids(ws: Path, centroids: np.ndarray) -> str:
    """Write DIR/centroids.npy (K, d) float32 atomically; returns its sha256 (kept in meta, so an
    interrupted `densprune recluster` can be told from a finished one)."""
    tmp = ws / "centroids.npy.tmp"
    with open(tmp, "wb") as fh:
        np.save(fh, centroids.astype(np.float32))
    tmp.replace(ws / "centroids.npy")
    return hashlib.sha256((ws / "centroids.npy").read_bytes()).hexdigest()


def released_source(cfg: PrecomputeConfig) -> ReleasedSource | None:
    """The released-embeddings folder ``cfg.source`` (validated), or None when SOURCE is to be embedded."""
    layout = cfg.embeddings_layout
    if layout is None:
        layout = detect_layout(cfg.source)
        if layout is None:
            if cfg.embedding_key:
                raise SourceError(f"--embedding-key applies to released embeddings, and {cfg.source} is in neither "
                                  "released layout (clip-retrieval or datacomp)")
            return None
        log.info("%s holds released embeddings (%s layout): no image is decoded or embedded", cfg.source, layout)
    return open_released(cfg.source, layout, cfg.embedding_key)


def store_plan_index(ws: Path) -> None:
    """Build the plan index of the finished workspace and store it there (densprune.prune.index_store),
    so that the app's first page does not build it (at 10M rows: ~14 s of CPU)."""
    from densprune.prune.plans import load_index

    t = time.perf_counter()
    index = load_index(ws)
    log.info("plan index of %d rows stored in %.1f s", index.n_rows, time.perf_counter() - t)


def precompute(cfg: PrecomputeConfig) -> Path:
    """Build (or resume building) the workspace ``cfg.workspace`` from ``cfg.source``: one call per stage.

    Order matters for what a failure leaves: SOURCE is made absolute; the inputs are checked (the
    source listed, the embedder and its weights loaded, the vocabulary read) under the workspace's
    exclusive lock, and only then does ``--force`` remove the old build (``reset_workspace``)."""
    cfg = replace(cfg, source=absolute_source(cfg.source))
    released = released_source(cfg)
    if released is not None:
        from densprune.precompute_released import precompute_released

        return precompute_released(cfg, released)
    check_workspace(cfg)
    check_inputs(cfg)
    with locked_workspace(cfg) as ws:
        return _precompute_images(cfg, ws)


def _precompute_images(cfg: PrecomputeConfig, ws: Path) -> Path:
    """The stages of :func:`precompute` for a source of images, under the workspace's lock."""
    from densprune.embed.models import make_embedder

    timings: dict[str, float] = {}
    t0 = t = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal t
        timings[stage], t = time.perf_counter() - t, time.perf_counter()

    listing = list_source(cfg.source, cfg.image_column, cfg.caption_column)
    refs = _dedupe_uids(listing)
    log.info("source %s (%s): %d samples, %d rejected while listing", cfg.source, listing.kind, len(refs), len(listing.rejects))
    embedder = make_embedder(cfg.embedder, model=cfg.model, pretrained=cfg.pretrained, weights=cfg.weights,
                             device=cfg.device, seed=cfg.seed)  # weights that cannot be loaded fail here
    reset_workspace(cfg)  # inputs checked: only now does --force remove the old build
    lap("list")
    log.info("[1/6] embedding %d samples with the %s embedder", len(refs), cfg.embedder)
    emb = embed_stage(cfg, ws, listing, refs, embedder)
    split = split_stage(cfg, emb.refs, listing.has_categories)
    lap("embed")
    log.info("[2/6] spherical k-means on %d pool rows", split.pool_rows.size)
    cl = cluster_stage(cfg, emb.image, split.pool_rows)
    lap("cluster")
    thumbs_stage(cfg, ws, emb, cl)
    lap("thumbnails")
    log.info("[3/6] concept statistics and labels for %d concepts", cl.k)
    clusters, vocab = concepts_stage(cfg, cl, split, [r.caption for r in emb.refs], emb.embedder)
    lap("concepts")
    log.info("[4/6] SemDeDup similarities inside each concept")
    dd = dedup_stage(cfg, emb.image, cl, split.pool_rows)
    lap("dedup")
    log.info("[5/6] 2-D UMAP map of %d rows", min(len(emb.refs), cfg.layout_rows))
    layout, cxy = layout_stage(cfg, emb.image, cl)
    clusters["x"], clusters["y"] = cxy[:, 0].astype(np.float64), cxy[:, 1].astype(np.float64)
    lap("layout")
    clip_score = clip_scores(ws, emb.image)
    cent_sha = save_centroids(ws, cl.centroids)
    samples = samples_table(emb, split, cl, dd.max_sim, dd.dup_of, clip_score)
    rejects = pd.DataFrame([asdict(r) for r in listing.rejects + emb.asm.rejects],
                           columns=["key", "image_ref", "stage", "reason"]).astype(str)
    timings["total"] = time.perf_counter() - t0
    meta = {**workspace_meta(cfg, listing, emb, split, cl, clip_score is not None, len(rejects), timings),
            "dedup_groups": dd.groups, "dedup_pairs": dd.pairs, "centroids_sha256": cent_sha,
            "label_source": "caption words (c-TF-IDF)", "zero_shot_vocabulary": vocab.source if vocab else None,
            "zero_shot_vocabulary_size": len(vocab.entries) if vocab else 0}
    log.info("[6/6] writing %s", db.db_path(ws))
    db.write_new_workspace_db(ws, samples=samples, clusters=clusters, rejects=rejects, meta=meta, layout=layout,
                              dedup_curve=dd.curve)
    if not cfg.keep_work:  # the workspace is complete: the shards are not needed again
        shutil.rmtree(emb.work, ignore_errors=True)
    store_plan_index(ws)
    log.info("[done] workspace %s: %d samples, %d clusters, %d rejects in %.1f s", ws, len(emb.refs), cl.k, len(rejects),
             timings["total"])
    return ws


def workspace_meta(cfg: PrecomputeConfig, listing: SourceListing, emb: Embedded, split: Split, cl: Clustering,
                   has_clip: bool, n_rejects: int, timings: dict[str, float]) -> dict:
    """The meta table: how the workspace was built (docs/formats.md)."""
    return {
        "embedder": emb.embedder_name, "model": emb.model, "pretrained": emb.pretrained,
        "image_dim": emb.asm.image_dim, "text_dim": emb.asm.text_dim, "dtype": emb.dtype, "thumbnails": emb.thumbnails,
        "k": cl.k, "seed": cfg.seed, "niter": cfg.niter, "neighbors": cfg.neighbors,
        "densprune_version": __version__, "source": listing.spec, "source_kind": listing.kind, "engine": cfg.engine,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "n_samples": len(emb.refs), "n_pool": int(split.pool_rows.size), "n_eval": int(split.is_eval.sum()),
        "n_rejects": n_rejects, "has_clip_scores": has_clip, "has_categories": listing.has_categories,
        "eval_per_category": cfg.eval_per_category if listing.has_categories else 0,
        "faiss_gpus": faiss_gpu_count(), "timings_s": {k_: round(v, 3) for k_, v in timings.items()},
        "has_thumbnails": True,
    }
