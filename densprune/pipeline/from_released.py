"""``densprune precompute`` from released embeddings: validate, copy shard by shard, then the shared stages.

No image is decoded or embedded. Two passes over the source (:mod:`densprune.ingest.released`):

1. scan: every row's vectors (NaN/inf, zero) and uid are checked; repeated uids are found with
   one sort of 16-byte integers. Rows that fail become rejects with their reason.
2. copy: the accepted rows are L2-normalised and written block by block into
   ``embeddings/image.npy`` (and ``text.npy``), preallocated with ``numpy.lib.format.open_memmap``
   in the stored dtype (float16 stays float16); their metadata goes to a staging parquet.

Then k-means, concept statistics, SemDeDup and the map run as for any workspace, on the vector
file read in blocks (:class:`densprune.vectors.NpyRows`), and the ``samples`` table is loaded
into DuckDB from the staging parquet in batches. No (N, d) array is ever in memory; the per-row
arrays (cluster, distance, rank, SemDeDup columns) are what grows with N (docs/scaling.md).

The workspace has no thumbnails and no image files: ``samples.image_ref`` is the URL, and
``image_loc`` is ``["url", URL]``.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from densprune import db, workspace
from densprune.cluster.labels import cluster_labels
from densprune.ingest.released import (
    Block,
    ReleasedError,
    ReleasedSource,
    block_keys,
    block_uids,
    iter_blocks,
    row_group_slices,
    row_problems,
)
from densprune.ingest.sources import Reject
from densprune.ingest.text import decode_text
from densprune.ingest.uids import first_occurrences, uid_ints
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
from densprune.vectors import NpyRows, unit_rows

log = logging.getLogger(__name__)

BLOCK_ROWS = 16_384  # rows per read/copy block: 16k x 768 float32 = 48 MiB at most
DB_BATCH_ROWS = 262_144  # samples rows per DuckDB insert
DB_MEMORY_LIMIT = "128MB"  # DuckDB's own buffers while the workspace file is built (its peak, whatever N)
LABEL_DOCS = 200_000  # captions sampled for the concept labels
ROWS_SCHEMA = pa.schema([
    ("row_idx", pa.int64()), ("uid", pa.string()), ("key", pa.string()), ("caption", pa.string()),
    ("image_ref", pa.string()), ("image_loc", pa.string()), ("width", pa.int32()), ("height", pa.int32()),
    ("clip_score", pa.float64()), ("caption_flag", pa.string()),
])


@dataclass(slots=True)
class Scan:
    """Pass 1 over the R source rows: which are accepted, which repeat an earlier uid, what was rejected."""

    ok: np.ndarray  # (R,) bool: vectors and uid usable
    repeat: np.ndarray  # (R,) bool: usable but an earlier row has the uid (rejected in pass 2)
    rejects: list[Reject]

    @property
    def accepted(self) -> int:
        return int(self.ok.sum() - self.repeat.sum())


@dataclass(slots=True)
class Copied:
    """Pass 2: the workspace rows written."""

    n: int
    dtype: str
    clip_from: str | None  # "vectors", the metadata column name, or None (no CLIP scores)
    rejects: list[Reject]
    staging: Path


def _source_ref(src: ReleasedSource, block: Block, keys: list[str], i: int) -> tuple[str, str]:
    """(key, image_ref) of row i of a block for a reject: its key and its URL (else file:row)."""
    url = block.meta.column(src.columns.url)[i].as_py() if src.columns.url else None
    return keys[i], url or f"{block.shard.metadata}#row={block.start + i}"


def open_concept_vectors(path: str | Path, src: ReleasedSource) -> np.ndarray:
    """``--concept-vectors FILE``: an (R, d) ``.npy`` memmap with one row per source row, in the source's shard
    order; ReleasedError when it cannot be read or its row count differs from the source's."""
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ReleasedError(f"--concept-vectors {path}: not a readable .npy file ({exc})") from exc
    if arr.ndim != 2 or arr.shape[0] != src.n_rows or arr.shape[1] < 1:
        raise ReleasedError(f"--concept-vectors {path}: shape {arr.shape}, expected ({src.n_rows:,}, d): one row per "
                            f"row of {src.root} ({len(src.shards)} shards, in their order)")
    if arr.dtype.kind != "f":
        raise ReleasedError(f"--concept-vectors {path}: dtype {arr.dtype}, expected float16/32/64 vectors")
    return arr


def scan_stage(src: ReleasedSource, block_rows: int = BLOCK_ROWS, concept: np.ndarray | None = None) -> Scan:
    """Pass 1: check every row's vectors (and its ``concept`` vectors, (R, d_c), when given) and uid; find
    repeated uids (the first occurrence stays)."""
    r = src.n_rows
    ok = np.zeros(r, dtype=bool)
    pairs = np.zeros((r, 2), dtype=np.uint64)  # 16 bytes per row: the uids as two integers
    rejects: list[Reject] = []
    g = 0
    for block in iter_blocks(src, block_rows):
        m = len(block)
        reasons = row_problems(block.image, block.text)
        if concept is not None:
            c_reasons = row_problems(np.asarray(concept[g:g + m]))
            for i in np.flatnonzero((c_reasons != "") & (reasons == "")):
                reasons[i] = f"concept {c_reasons[i]} (--concept-vectors row {g + i})"
        uids, uid_reasons = block_uids(src, block)
        good = np.array([not a and not b for a, b in zip(reasons, uid_reasons)], dtype=bool)
        if not good.all():
            keys = block_keys(src, block)
            for i in np.flatnonzero(~good):
                key, ref = _source_ref(src, block, keys, int(i))
                why = reasons[i] or uid_reasons[i]
                rejects.append(Reject(key, ref, "validate",
                                      f"{block.shard.metadata.name} row {block.start + i}: {why}"))
        idx = np.flatnonzero(good)
        pairs[g + idx] = uid_ints([uids[i] for i in idx])
        ok[g:g + m] = good
        g += m
    repeat = ok & ~first_occurrences(pairs, ok)
    del pairs
    log.info("scanned %d rows in %d shards: %d rejected, %d repeat an earlier uid", r, len(src.shards), len(rejects),
             int(repeat.sum()))
    return Scan(ok, repeat, rejects)


def _preallocate(path: Path, n: int, d: int, dtype: str) -> Path:
    """An (n, d) ``.npy`` of ``dtype`` at ``path``.tmp, created with open_memmap and closed again."""
    tmp = path.with_name(path.name + ".tmp")
    mm = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=(n, d))
    del mm
    return tmp


def _write_rows(path: Path, start: int, rows: np.ndarray) -> None:
    """Write rows [start, start + len(rows)) of a preallocated ``.npy``; the map lives for this call only."""
    mm = np.load(path, mmap_mode="r+")
    try:
        mm[start:start + rows.shape[0]] = rows
        mm.flush()
    finally:
        del mm


def _rows_table(src: ReleasedSource, block: Block, take: np.ndarray, row0: int, uids: list[str | None],
                keys: list[str], clip: np.ndarray | None) -> pa.Table:
    """The staging rows (ROWS_SCHEMA) of the accepted rows ``take`` of a block, numbered from ``row0``."""
    cols, meta = src.columns, block.meta.take(pa.array(take, pa.int64()))
    n = take.size

    def col(name: str | None, typ: pa.DataType) -> pa.Array:
        if name is None:
            return pa.nulls(n, typ)
        return meta.column(name).combine_chunks().cast(typ, safe=False)

    urls = col(cols.url, pa.string())
    url_list = urls.to_pylist()
    captions, flags = _captions(meta.column(cols.caption) if cols.caption else None, n)
    return pa.table({
        "row_idx": pa.array(np.arange(row0, row0 + n, dtype=np.int64)),
        "uid": pa.array([uids[i] for i in take], pa.string()),
        "key": pa.array([keys[i] for i in take], pa.string()),
        "caption": captions,
        "image_ref": urls,
        "image_loc": pa.array([json.dumps(["url", u]) if u else None for u in url_list], pa.string()),
        "width": col(cols.width, pa.int32()),
        "height": col(cols.height, pa.int32()),
        "clip_score": pa.array(clip, pa.float64()) if clip is not None else col(cols.score, pa.float64()),
        "caption_flag": flags,
    }, schema=ROWS_SCHEMA)


def _captions(column: pa.ChunkedArray | None, n: int) -> tuple[pa.Array, pa.Array]:
    """(captions, flags) of n rows: strings as they are (nulls as ""); a binary column decoded as UTF-8 with
    U+FFFD replacement, flagged "invalid UTF-8" where it was not valid (densprune.ingest.text)."""
    if column is None:
        return pa.array([""] * n, pa.string()), pa.nulls(n, pa.string())
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        return column.combine_chunks().cast(pa.string()).fill_null(""), pa.nulls(n, pa.string())
    if pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type):
        decoded = [decode_text(v) for v in column.to_pylist()]
    else:
        decoded = [(decode_text(v)[0], None) for v in column.to_pylist()]
    return pa.array([c for c, _ in decoded], pa.string()), pa.array([f for _, f in decoded], pa.string())


def copy_stage(src: ReleasedSource, ws: Path, scan: Scan, dtype: str, block_rows: int = BLOCK_ROWS,
               concept: np.ndarray | None = None) -> Copied:
    """Pass 2: the accepted rows, L2-normalised, into the preallocated ``embeddings/*.npy`` (and their
    ``concept`` rows (R, d_c) into ``concept.npy``); their metadata into a staging parquet. Rows repeating
    an earlier uid are rejected here."""
    emb_dir = workspace.embeddings_dir(ws)
    emb_dir.mkdir(parents=True, exist_ok=True)
    staging = workspace.work_dir(ws) / "released" / "rows.parquet"
    staging.parent.mkdir(parents=True, exist_ok=True)
    n = scan.accepted
    if n == 0:
        first = scan.rejects[0].reason if scan.rejects else "-"
        raise ValueError(f"{src.root}: none of its {src.n_rows:,} rows can be used (first reason: {first}); "
                         "see the reasons above")
    img_tmp = _preallocate(emb_dir / workspace.IMAGE_VECTORS, n, src.dim, dtype)
    txt_tmp = _preallocate(emb_dir / workspace.TEXT_VECTORS, n, src.dim, dtype) if src.has_text else None
    con_tmp = None if concept is None else _preallocate(emb_dir / workspace.CONCEPT_VECTORS, n, concept.shape[1],
                                                        dtype)
    take_mask = scan.ok & ~scan.repeat
    rejects: list[Reject] = []
    w = g = 0
    with pq.ParquetWriter(staging, ROWS_SCHEMA) as writer:
        for block in iter_blocks(src, block_rows):
            m = len(block)
            take = np.flatnonzero(take_mask[g:g + m])
            uids, _ = block_uids(src, block)
            keys = block_keys(src, block)
            for i in np.flatnonzero(scan.repeat[g:g + m]):
                key, ref = _source_ref(src, block, keys, int(i))
                rejects.append(Reject(key, ref, "validate", f"{block.shard.metadata.name} row {block.start + i}: "
                                                            f"duplicate uid {uids[i]} (an earlier row has it)"))
            img = unit_rows(block.image[take]).astype(dtype)
            _write_rows(img_tmp, w, img)
            if con_tmp is not None:
                _write_rows(con_tmp, w, unit_rows(np.asarray(concept[g:g + m])[take]).astype(dtype))
            clip = None
            if txt_tmp is not None:
                txt = unit_rows(block.text[take]).astype(dtype)
                _write_rows(txt_tmp, w, txt)
                clip = np.einsum("ij,ij->i", img.astype(np.float32), txt.astype(np.float32)).astype(np.float64)
            writer.write_table(_rows_table(src, block, take, w, uids, keys, clip))
            w += take.size
            g += m
    assert w == n, (w, n)
    img_tmp.replace(emb_dir / workspace.IMAGE_VECTORS)
    if con_tmp is not None:
        con_tmp.replace(emb_dir / workspace.CONCEPT_VECTORS)
    else:
        (emb_dir / workspace.CONCEPT_VECTORS).unlink(missing_ok=True)  # a rebuild without concept vectors
    if txt_tmp is not None:
        txt_tmp.replace(emb_dir / workspace.TEXT_VECTORS)
    else:
        (emb_dir / workspace.TEXT_VECTORS).unlink(missing_ok=True)  # a rebuild from a source without caption vectors
    clip_from = "vectors" if src.has_text else src.columns.score
    return Copied(n, dtype, clip_from, rejects, staging)


def caption_sample(staging: Path, rows: np.ndarray, batch_rows: int = DB_BATCH_ROWS) -> list[str]:
    """The captions of the sorted row indices ``rows`` (M,), read from the staging parquet in batches."""
    out: list[str] = []
    start = 0
    for batch in row_group_slices(staging, batch_rows, ["caption"]):
        m = batch.num_rows
        lo, hi = np.searchsorted(rows, [start, start + m])
        if hi > lo:
            caps = batch.column(0).take(pa.array(rows[lo:hi] - start, pa.int64())).to_pylist()
            out.extend(c or "" for c in caps)
        start += m
    return out


def labels_stage(cfg: PrecomputeConfig, cl: Clustering, staging: Path) -> list[str]:
    """Concept labels from at most LABEL_DOCS captions, sampled with the seed."""
    n = cl.labels.size
    rows = np.arange(n) if n <= LABEL_DOCS else np.sort(
        np.random.default_rng(cfg.seed).choice(n, size=LABEL_DOCS, replace=False))
    return cluster_labels(caption_sample(staging, rows), cl.labels[rows], cl.k, seed=cfg.seed)


def _coalesced(tables: Iterator[pa.Table], rows: int) -> Iterator[pa.Table]:
    """Consecutive small tables joined into tables of about ``rows`` rows (fewer, larger inserts)."""
    parts: list[pa.Table] = []
    have = 0
    for t in tables:
        parts.append(t)
        have += t.num_rows
        if have >= rows:
            yield pa.concat_tables(parts)
            parts, have = [], 0
    if parts:
        yield pa.concat_tables(parts)


def sample_batches(staging: Path, cl: Clustering, dup_max_sim: np.ndarray, dup_of: np.ndarray,
                   batch_rows: int = DB_BATCH_ROWS) -> Iterator[pa.Table]:
    """The ``samples`` table in row_idx order, one Arrow table of at most ``batch_rows`` rows at a time."""
    start = 0
    for t in _coalesced(row_group_slices(staging, batch_rows), batch_rows):
        m = t.num_rows
        s = slice(start, start + m)
        extra = {
            "category": pa.nulls(m, pa.string()), "top_category": pa.nulls(m, pa.string()),
            "split": pa.array(["pool"] * m, pa.string()),
            "cluster": pa.array(cl.labels[s].astype(np.int32)),
            "dist_to_centroid": pa.array(cl.dist[s].astype(np.float64)),
            "rank_in_cluster": pa.array(cl.ranks[s].astype(np.int64)),
            "dup_max_sim": pa.array(dup_max_sim[s].astype(np.float64)),
            "dup_of": pa.array(dup_of[s].astype(np.int64)),
            "thumb_offset": pa.array(np.full(m, -1, np.int64)), "thumb_size": pa.array(np.zeros(m, np.int32)),
        }
        for name, arr in extra.items():
            t = t.append_column(name, arr)
        yield t
        start += m


def precompute_released(cfg: PrecomputeConfig, src: ReleasedSource) -> Path:
    """Build the workspace ``cfg.workspace`` from the released embeddings ``src``: one call per stage,
    under the workspace's exclusive lock; ``--force`` removes the old build only once the scan found
    usable rows."""
    check_workspace(cfg)
    check_inputs(cfg)
    with locked_workspace(cfg) as ws:
        return _precompute_released(cfg, src, ws)


def _precompute_released(cfg: PrecomputeConfig, src: ReleasedSource, ws: Path) -> Path:
    timer = StageTimer()
    lap = timer.lap

    dtype = cfg.dtype if cfg.dtype not in (None, "auto") else ("float32" if src.dtype == "float64" else src.dtype)
    log.info("[1/7] checking %d rows of %d-d %s vectors in %d %s shards", src.n_rows, src.dim, src.dtype,
             len(src.shards), src.layout)
    concept_src = open_concept_vectors(cfg.concept_vectors, src) if cfg.concept_vectors else None
    scan = scan_stage(src, concept=concept_src)
    if scan.accepted == 0:
        first = scan.rejects[0].reason if scan.rejects else "-"
        raise ValueError(f"{src.root}: none of its {src.n_rows:,} rows can be used (first reason: {first}); "
                         "see the reasons above")
    reset_workspace(cfg)  # the source is readable and has usable rows: only now does --force remove the old build
    lap("scan")
    log.info("[2/7] copying %d rows into %s", scan.accepted, workspace.embeddings_dir(ws))
    copied = copy_stage(src, ws, scan, dtype, concept=concept_src)
    image = NpyRows(workspace.concept_vectors(ws) if concept_src is not None else workspace.image_vectors(ws))
    rejects = scan.rejects + copied.rejects
    del scan
    lap("copy")
    pool_rows = np.arange(copied.n, dtype=np.int64)
    split = Split(np.empty(0, object), np.empty(0, object), np.zeros(copied.n, bool), pool_rows)
    log.info("[3/7] spherical k-means on %d rows", copied.n)
    cl = cluster_stage(cfg, image, pool_rows)
    lap("cluster")
    log.info("[4/7] concept statistics and labels for %d concepts", cl.k)
    clusters = clusters_frame(cfg, cl, split, labels_stage(cfg, cl, copied.staging))
    lap("concepts")
    log.info("[5/7] SemDeDup similarities inside each concept")
    dd = dedup_stage(cfg, image, cl, pool_rows)
    lap("dedup")
    log.info("[6/7] 2-D UMAP map of %d rows", min(copied.n, cfg.layout_rows))
    layout, cxy = layout_stage(cfg, image, cl)
    clusters["x"], clusters["y"] = cxy[:, 0].astype(np.float64), cxy[:, 1].astype(np.float64)
    lap("layout")
    cent_sha = workspace.save_centroids(ws, cl.centroids)
    workspace.thumbs_path(ws).unlink(missing_ok=True)  # a rebuild over an image workspace
    rej = rejects_frame(rejects)
    concept_meta = ({"concept_embedder": {"name": "vectors", "model": Path(cfg.concept_vectors).name,
                                          "pretrained": None, "image_size": None},
                     "concept_dim": int(concept_src.shape[1])} if concept_src is not None
                    else {"concept_embedder": None, "concept_dim": 0})
    meta = {**released_meta(cfg, src, copied, cl, len(rej), timer.wall), **concept_meta, "dedup_groups": dd.groups,
            "dedup_pairs": dd.pairs, "centroids_sha256": cent_sha, "label_source": "caption words (c-TF-IDF)",
            "zero_shot_vocabulary": None, "zero_shot_vocabulary_size": 0}
    log.info("[7/7] writing %s", db.db_path(ws))
    db.write_new_workspace_db(ws, samples=sample_batches(copied.staging, cl, dd.max_sim, dd.dup_of), clusters=clusters,
                              rejects=rej, meta=meta, layout=layout, dedup_curve=dd.curve, memory_limit=DB_MEMORY_LIMIT)
    lap("write")
    n_clusters = cl.k
    del cl, dd, split, pool_rows  # N-sized arrays the index stage does not need: it reads the database
    store_plan_index(ws)
    lap("index")
    timer.finish()
    db.set_meta(ws, "timings_s", StageTimer.rounded(timer.wall))
    db.set_meta(ws, "cpu_s", StageTimer.rounded(timer.cpu))
    if not cfg.keep_work:
        shutil.rmtree(copied.staging.parent, ignore_errors=True)
    log.info("workspace %s: %d samples, %d clusters, %d rejects in %.1f s", ws, copied.n, n_clusters, len(rej),
             timer.wall["total"])
    return ws


def released_meta(cfg: PrecomputeConfig, src: ReleasedSource, copied: Copied, cl: Clustering, n_rejects: int,
                  timings: dict[str, float]) -> dict:
    """The meta table of a workspace built from released embeddings (docs/formats.md)."""
    return {
        **common_meta(cfg, cl.k, timings),
        "embedder": "released", "model": src.model, "pretrained": None,
        "image_dim": src.dim, "text_dim": src.dim if src.has_text else 0, "dtype": copied.dtype,
        "source": str(src.root), "source_kind": src.layout,
        "n_samples": copied.n, "n_pool": copied.n, "n_eval": 0, "n_source_rows": src.n_rows,
        "n_rejects": n_rejects, "has_clip_scores": copied.clip_from is not None, "clip_score_from": copied.clip_from,
        "has_categories": False, "eval_per_category": 0, "has_thumbnails": False,
    }
