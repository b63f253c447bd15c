"""All DuckDB access of densprune: the workspace schema and the queries on it.

The schema is a public interface (docs/formats.md). Connections are short-lived: a reader opens
the file read-only for one query; a writer opens it read-write for one transaction and retries
while another process holds the lock. Inside one process, a lock keeps read-only and read-write
connections from overlapping (DuckDB refuses two configurations of one file in one process).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import stat
import threading
import time
import uuid
from pathlib import Path
from typing import Iterable, Iterator

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
from filelock import ReadWriteLock, Timeout

from densprune.vectors import sorted_unique

log = logging.getLogger(__name__)

DB_NAME = "densprune.duckdb"
# 2: clusters.zs_label/zs_similarity; 3: plan_clusters.d_intra/complexity (added on the next plan save)
SCHEMA_VERSION = 3

SAMPLES_DDL = """
CREATE TABLE samples (
    row_idx BIGINT PRIMARY KEY,   -- row of embeddings/*.npy
    uid VARCHAR NOT NULL,         -- 32 hex chars, DataComp style
    key VARCHAR,                  -- the source's own key / relative path
    caption VARCHAR,
    image_ref VARCHAR,            -- where the original image lives (path, tar#member, parquet#row)
    image_loc VARCHAR,            -- how densprune reads it: JSON ["file", path] | ["tar", path, offset, size]
                                  -- | ["parquet", path, row, column]
    width INTEGER,                -- original size in pixels
    height INTEGER,
    category VARCHAR,             -- folder / category path where the source has one
    top_category VARCHAR,
    split VARCHAR,                -- 'pool' (prunable), 'eval' (held out, never kept), 'eval-copy' (set aside)
    clip_score DOUBLE,            -- cos(image, caption); NULL without a CLIP model
    cluster INTEGER,
    dist_to_centroid DOUBLE,      -- 1 - cos(embedding, centroid)
    rank_in_cluster BIGINT,       -- 0 = nearest its centroid (most prototypical)
    dup_max_sim DOUBLE,           -- SemDeDup: max(0, max cos to the members ranked before it); 0: first
    dup_of BIGINT,                -- row_idx of that most similar earlier member (-1: none)
    thumb_offset BIGINT,          -- thumbnail bytes in thumbs.bin
    thumb_size INTEGER,
    caption_flag VARCHAR          -- 'invalid UTF-8': the source caption was decoded with U+FFFD replacement;
                                  -- NULL: as read
)"""

CLUSTERS_DDL = """
CREATE TABLE clusters (
    cluster INTEGER PRIMARY KEY,
    size INTEGER,                 -- all members
    pool_size INTEGER,            -- members in the pruning pool
    d_intra DOUBLE,
    d_inter DOUBLE,
    complexity DOUBLE,
    label VARCHAR,                -- its most distinctive caption words (c-TF-IDF), <= 40 characters
    zs_label VARCHAR,             -- zero-shot name: the vocabulary entry nearest its centroid (CLIP text tower);
                                  -- NULL without one
    zs_similarity DOUBLE,         -- cos(centroid, that entry's text embedding); NULL without one
    x DOUBLE,                     -- centroid position in the 2-D layout
    y DOUBLE
)"""

REJECTS_DDL = "CREATE TABLE rejects (key VARCHAR, image_ref VARCHAR, stage VARCHAR, reason VARCHAR)"
META_DDL = "CREATE TABLE meta (key VARCHAR PRIMARY KEY, value VARCHAR)"
LAYOUT_DDL = "CREATE TABLE layout (row_idx BIGINT, cluster INTEGER, x DOUBLE, y DOUBLE)"
DEDUP_CURVE_DDL = "CREATE TABLE dedup_curve (eps DOUBLE, kept_fraction DOUBLE)"
PLANS_DDL = """
CREATE TABLE IF NOT EXISTS plans (
    name VARCHAR PRIMARY KEY, method VARCHAR, params JSON, n_kept BIGINT, budget BIGINT,
    pool_size BIGINT, keep_file VARCHAR, notes VARCHAR, created_at TIMESTAMP
)"""
PLAN_CLUSTERS_DDL = """
CREATE TABLE IF NOT EXISTS plan_clusters (
    plan VARCHAR, cluster INTEGER, eligible BIGINT, quota BIGINT, kept BIGINT,
    d_intra DOUBLE,               -- mean distance to the centroid of the ELIGIBLE members (what the plan used)
    complexity DOUBLE             -- d_inter * d_intra as the plan used it
)"""
PLAN_COLUMNS = ("name", "method", "params", "n_kept", "budget", "pool_size", "keep_file", "notes", "created_at")
PLAN_CLUSTER_COLUMNS = ("plan", "cluster", "eligible", "quota", "kept", "d_intra", "complexity")
# columns added after schema version 1, created on the next write in older workspaces
ADDED_COLUMNS = {"plan_clusters": (("d_intra", "DOUBLE"), ("complexity", "DOUBLE"))}

# training runs (densprune.train): one row per run, its latest progress mirrored from the run
# folder's progress.jsonl; run_metrics holds the loss curve and the evaluation results (long format)
RUNS_DDL = """
CREATE TABLE IF NOT EXISTS runs (
    name VARCHAR PRIMARY KEY, plan VARCHAR, preset VARCHAR, model VARCHAR,
    mode VARCHAR,                 -- 'samples' (equal compute) or 'epochs' (equal epochs)
    seed INTEGER, device VARCHAR, n_train BIGINT, batch_size INTEGER, epochs INTEGER,
    total_steps BIGINT, target_samples BIGINT,  -- what the run will see: epochs * steps * batch
    status VARCHAR,               -- queued | running | done | failed | cancelled
    phase VARCHAR,                -- export | train | eval while running
    error VARCHAR, step BIGINT, samples_seen BIGINT, loss DOUBLE, elapsed_s DOUBLE, eta_s DOUBLE,
    wall_s DOUBLE,                -- trainer wall time, start to exit
    command JSON,                 -- the trainer's argument list, exactly as run
    run_dir VARCHAR, checkpoint VARCHAR, pid INTEGER,
    created_at TIMESTAMP, started_at TIMESTAMP, finished_at TIMESTAMP
)"""
RUN_METRICS_DDL = """
CREATE TABLE IF NOT EXISTS run_metrics (
    run VARCHAR, name VARCHAR, value DOUBLE, step BIGINT, samples_seen BIGINT
)"""
RUN_COLUMNS = ("name", "plan", "preset", "model", "mode", "seed", "device", "n_train", "batch_size", "epochs",
               "total_steps", "target_samples", "status", "phase", "error", "step", "samples_seen", "loss",
               "elapsed_s", "eta_s", "wall_s", "command", "run_dir", "checkpoint", "pid", "created_at",
               "started_at", "finished_at")

LOCK_NAME = ".densprune.lock"


class WorkspaceNotFound(FileNotFoundError):
    """No complete workspace at the path."""


class WorkspaceDamaged(WorkspaceNotFound):
    """A workspace whose DuckDB file is not a readable densprune database (the message names the file)."""


def _damaged(path: Path, why: str) -> WorkspaceDamaged:
    return WorkspaceDamaged(f"{path} is not a readable densprune workspace database ({why}); rebuild the workspace "
                            "with `densprune precompute SOURCE --workspace DIR --force`")


class WorkspaceBusy(TimeoutError):
    """Another process held the workspace's write lock for longer than the caller would wait."""


def db_path(workspace: str | os.PathLike) -> Path:
    return Path(workspace) / DB_NAME


def is_complete(workspace: str | os.PathLike) -> bool:
    """A workspace is complete once its DuckDB file exists: it is renamed into place last."""
    return db_path(workspace).exists()


@contextlib.contextmanager
def connect(workspace: str | os.PathLike, read_only: bool = True,
            timeout_s: float = 30.0) -> Iterator[duckdb.DuckDBPyConnection]:
    """A short-lived connection to the workspace database.

    DuckDB lets one process write or many read a database file, never both, so every connection
    holds the workspace's reader/writer lock (``DIR/.densprune.lock``, filelock's ReadWriteLock):
    readers share it, a writer waits for them and holds it alone. Raises WorkspaceBusy after
    ``timeout_s`` seconds of waiting."""
    path = db_path(workspace)
    if not path.exists():
        raise WorkspaceNotFound(f"no workspace at {workspace} (missing {DB_NAME}); "
                                "build one with `densprune precompute`")
    lock = ReadWriteLock(Path(workspace) / LOCK_NAME, is_singleton=False)
    with contextlib.ExitStack() as stack:
        stack.callback(lock.close)
        try:
            stack.enter_context((lock.read_lock if read_only else lock.write_lock)(timeout=timeout_s))
        except Timeout:
            raise WorkspaceBusy(f"{workspace} is busy: another process kept it locked for {timeout_s:g} s "
                                "(a precompute or a long plan save?); try again when it is done") from None
        if not stat.S_ISREG(path.stat().st_mode):  # a FIFO there would block DuckDB for ever
            raise _damaged(path, "not a regular file")
        try:
            con = duckdb.connect(str(path), read_only=read_only)
        except duckdb.Error as exc:
            if "lock" in str(exc).lower():  # held by a process outside densprune's locks: not damage
                raise
            raise _damaged(path, str(exc).splitlines()[0][:300]) from exc
        stack.callback(con.close)
        try:
            yield con
        except duckdb.CatalogException as exc:  # a DuckDB file without densprune's tables
            if con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = 'meta'").fetchone()[0]:
                raise
            raise _damaged(path, "it has no densprune tables") from exc
        except (duckdb.IOException, duckdb.SerializationException, duckdb.InternalException) as exc:
            if not read_only:  # a write that fails (a full disk?) is not called damage
                raise
            raise _damaged(path, str(exc).splitlines()[0][:300]) from exc  # a file cut short, say


@contextlib.contextmanager
def transaction(con: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    """BEGIN ... COMMIT around the block; ROLLBACK when it raises (the error goes on)."""
    con.execute("BEGIN")
    try:
        yield con
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")


@contextlib.contextmanager
def registered(con: duckdb.DuckDBPyConnection, name: str, data: object) -> Iterator[str]:
    """``data`` (a frame or Arrow table) visible to SQL as ``name`` inside the block, unregistered after
    it, also when it raises."""
    con.register(name, data)
    try:
        yield name
    finally:
        con.unregister(name)


def _upsert_meta(con: duckdb.DuckDBPyConnection, items: dict) -> None:
    """Set ``meta`` entries (JSON values) inside the caller's transaction."""
    for key, value in items.items():
        con.execute("DELETE FROM meta WHERE key = ?", [key])
        con.execute("INSERT INTO meta VALUES (?, ?)", [key, json.dumps(value, default=str)])


# --------------------------------------------------------------------------------------------
# building a workspace
# --------------------------------------------------------------------------------------------

def write_new_workspace_db(workspace: Path, *, samples: pd.DataFrame | Iterable[pa.Table], clusters: pd.DataFrame,
                           rejects: pd.DataFrame, meta: dict, layout: pd.DataFrame,
                           dedup_curve: pd.DataFrame, memory_limit: str | None = None) -> Path:
    """Create ``densprune.duckdb`` under a temporary name, fill every table, then rename it in place.

    ``samples`` is one frame, or an iterable of Arrow tables (batches in row_idx order) that are
    inserted one at a time, so the rows never have to be in memory together. ``memory_limit``
    (e.g. "1GB") caps DuckDB's own buffers while the file is built.
    """
    final = db_path(workspace)
    tmp = final.with_name(final.name + ".tmp")
    for stale in (tmp, tmp.with_name(tmp.name + ".wal")):
        stale.unlink(missing_ok=True)
    con = duckdb.connect(str(tmp))
    try:
        if memory_limit:
            con.execute(f"SET memory_limit = '{_size_setting(memory_limit)}'")
        con.execute(SAMPLES_DDL)
        batches = [samples] if isinstance(samples, pd.DataFrame) else samples
        for batch in batches:
            _insert(con, "samples", batch)
        for ddl, name, df in ((CLUSTERS_DDL, "clusters", clusters), (REJECTS_DDL, "rejects", rejects),
                              (LAYOUT_DDL, "layout", layout), (DEDUP_CURVE_DDL, "dedup_curve", dedup_curve)):
            con.execute(ddl)
            _insert(con, name, df)
        con.execute(META_DDL)
        meta = {**meta, "schema_version": SCHEMA_VERSION, "build_id": uuid.uuid4().hex}  # names this build
        con.executemany("INSERT INTO meta VALUES (?, ?)", [(k, json.dumps(v, default=str)) for k, v in meta.items()])
        con.execute(PLANS_DDL)
        con.execute(PLAN_CLUSTERS_DDL)
        con.execute(RUNS_DDL)
        con.execute(RUN_METRICS_DDL)
        con.execute("CHECKPOINT")
    finally:
        con.close()
    os.replace(tmp, final)
    return final


def _insert(con: duckdb.DuckDBPyConnection, table: str, data: pd.DataFrame | pa.Table) -> None:
    """INSERT the columns of a frame or Arrow table into ``table`` by name."""
    names = list(data.columns) if isinstance(data, pd.DataFrame) else list(data.column_names)
    cols = ", ".join(f'"{c}"' for c in names)
    with registered(con, "_df", data):
        con.execute(f"INSERT INTO {table} ({cols}) SELECT {cols} FROM _df")


def _size_setting(value: str) -> str:
    """A DuckDB size such as '1GB' or '512MB' (checked: it goes into a SET statement)."""
    if not re.fullmatch(r"\d+(\.\d+)?\s*(KB|MB|GB|TB|KiB|MiB|GiB|TiB)", value.strip()):
        raise ValueError(f"not a memory size: {value!r} (e.g. '1GB')")
    return value.strip()


# --------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------

def load_meta(workspace: str | os.PathLike) -> dict:
    """Workspace metadata: embedder, model, pretrained, dims, K, seed, version, source, created..."""
    with connect(workspace) as con:
        rows = con.execute("SELECT key, value FROM meta").fetchall()
    return {k: json.loads(v) for k, v in rows}


def query_df(workspace: str | os.PathLike, sql: str, params: list | tuple = ()) -> pd.DataFrame:
    """Run a read-only query with ``?`` parameters and return a DataFrame."""
    with connect(workspace) as con:
        return con.execute(sql, list(params)).df()


def load_sample_arrays(workspace: str | os.PathLike, columns: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Columns of ``samples`` as numpy arrays in row_idx order (NULL -> NaN for floats)."""
    allowed = {"row_idx", "cluster", "dist_to_centroid", "rank_in_cluster", "clip_score", "dup_max_sim",
               "dup_of", "split", "width", "height", "thumb_offset", "thumb_size", "category", "top_category", "uid",
               "caption"}
    bad = set(columns) - allowed
    if bad:
        raise ValueError(f"unknown sample columns {sorted(bad)}")
    cols = ", ".join(columns)
    with connect(workspace) as con:
        rel = con.sql(f"SELECT {cols} FROM samples ORDER BY row_idx")
        table = rel.to_arrow_table() if hasattr(rel, "to_arrow_table") else rel.arrow()  # duckdb >= 2 renamed it
    out = {}
    for c in columns:
        col = table.column(c)
        if str(col.type) in ("double", "float"):
            out[c] = col.to_numpy(zero_copy_only=False).astype(np.float64)
        elif str(col.type) in ("int32", "int64"):
            out[c] = col.fill_null(-1).to_numpy(zero_copy_only=False)
        elif c in _FEW_VALUES:  # a handful of distinct strings: one Python object per value, not per row
            enc = col.combine_chunks().dictionary_encode()
            names = np.asarray(enc.dictionary.to_pylist() + [None], dtype=object)
            out[c] = names[enc.indices.fill_null(len(enc.dictionary)).to_numpy()]
        else:
            out[c] = np.asarray(col.to_pylist(), dtype=object)
    return out


def index_columns(workspace: str | os.PathLike) -> dict[str, np.ndarray | None]:
    """What the plan index is built from, per row in row_idx order, with as little memory as they need:
    ``cluster`` (N,) int32, ``dist`` (N,) float64, ``pool`` (N,) bool, ``dup`` (N,) float64 (NULL -> NaN)
    and ``clip`` (N,) float64 or None when no row has a CLIP score.

    One column per query, each a plain scan in insertion order (DuckDB's ``preserve_insertion_order``),
    which the ``row_idx`` scan checks is row order (else the columns are put in row order): no 10M-row
    sort, and never more than one column in flight beside the arrays already read."""
    with connect(workspace) as con:
        con.execute("SET preserve_insertion_order = true")
        row_idx = con.execute("SELECT row_idx FROM samples").fetchnumpy()["row_idx"]
        n = row_idx.size
        perm = None if np.array_equal(row_idx, np.arange(n)) else np.argsort(row_idx, kind="stable")
        del row_idx

        def column(expr: str) -> np.ndarray:
            out = con.execute(f"SELECT {expr} AS v FROM samples").fetchnumpy()["v"]
            out = np.asarray(out)  # NULLs were coalesced: never a masked array
            return out if perm is None else out[perm]

        has_clip = con.execute("SELECT count(clip_score) FROM samples").fetchone()[0] > 0
        return {"cluster": column("cluster::INTEGER"), "dist": column("dist_to_centroid"),
                "pool": column("coalesce(split = 'pool', false)"),
                "dup": column("coalesce(dup_max_sim, 'NaN'::DOUBLE)"),
                "clip": column("coalesce(clip_score, 'NaN'::DOUBLE)") if has_clip else None}


_FEW_VALUES = frozenset({"split", "category", "top_category"})  # string columns with few distinct values


def set_meta(workspace: str | os.PathLike, key: str, value: object) -> None:
    """Set one ``meta`` entry of a complete workspace (one short read-write transaction)."""
    with connect(workspace, read_only=False) as con, transaction(con):
        _upsert_meta(con, {key: value})


def load_clusters(workspace: str | os.PathLike) -> pd.DataFrame:
    """The clusters table; a workspace of schema 1 (no zero-shot columns) gets them as NULL."""
    df = query_df(workspace, "SELECT * FROM clusters ORDER BY cluster")
    for col, dtype in (("zs_label", object), ("zs_similarity", "float64")):
        if col not in df:
            df[col] = pd.Series([None] * len(df), dtype=dtype)
    return df


def top_captions(workspace: str | os.PathLike) -> pd.DataFrame:
    """Each concept's most frequent caption among its pool images: cluster, caption, n (ties: the
    alphabetically first caption)."""
    return query_df(workspace, (
        "SELECT cluster, caption, n FROM (SELECT cluster, caption, count(*) AS n, row_number() OVER "
        "(PARTITION BY cluster ORDER BY count(*) DESC, caption) AS rk FROM samples WHERE split = 'pool' "
        "GROUP BY cluster, caption) WHERE rk = 1 ORDER BY cluster"))


def load_rejects(workspace: str | os.PathLike, limit: int | None = None) -> pd.DataFrame:
    """The rejects table (stage, reason, key, image_ref), at most ``limit`` rows."""
    sql = "SELECT stage, reason, key, image_ref FROM rejects"
    return query_df(workspace, sql + " LIMIT ?", [int(limit)]) if limit is not None else query_df(workspace, sql)


def dedup_curve(workspace: str | os.PathLike) -> pd.DataFrame:
    """The pool's SemDeDup kept fraction on the eps grid: eps, kept_fraction."""
    return query_df(workspace, "SELECT eps, kept_fraction FROM dedup_curve ORDER BY eps")


def eval_rows(workspace: str | os.PathLike) -> pd.DataFrame:
    """The held-out rows with a category: row_idx, image_loc, caption, top_category."""
    return query_df(workspace, "SELECT row_idx, image_loc, caption, top_category FROM samples "
                               "WHERE split = 'eval' AND top_category IS NOT NULL ORDER BY row_idx")


def kept_samples(workspace: str | os.PathLike, keep: np.ndarray) -> pd.DataFrame:
    """The kept rows of ``samples`` in row_idx order (the export columns). keep: (N,) bool."""
    rows = pd.DataFrame({"row_idx": np.flatnonzero(keep).astype(np.int64)})
    with connect(workspace) as con, registered(con, "_keep", rows):
        return con.execute(
            "SELECT s.uid, s.row_idx, s.caption, s.image_ref, s.image_loc, s.cluster, s.dist_to_centroid, "
            "s.rank_in_cluster, s.clip_score, s.dup_max_sim, s.category, s.width, s.height "
            "FROM samples s JOIN _keep k USING (row_idx) ORDER BY s.row_idx").df()


def kept_uids(workspace: str | os.PathLike, keep: np.ndarray):
    """The uids of the kept rows as one Arrow string column (pyarrow ChunkedArray), in no particular
    order (the ``datacomp`` export sorts them). keep: (N,) bool over row_idx. The kept row numbers
    go to DuckDB as an Arrow table and only the uid column is read: no pandas frame, no Python
    string per row."""
    import pyarrow as pa

    rows = pa.table({"row_idx": pa.array(np.flatnonzero(keep).astype(np.int64))})
    with connect(workspace) as con, registered(con, "_keep", rows):
        rel = con.sql("SELECT s.uid FROM samples s SEMI JOIN _keep k ON s.row_idx = k.row_idx")
        table = rel.to_arrow_table() if hasattr(rel, "to_arrow_table") else rel.arrow()
    return table.column("uid")


RELATIVE_LOC = r'^\["(file|tar|parquet)", "[^/]'  # samples.image_loc (JSON) naming a relative path


def relative_image_locations(workspace: str | os.PathLike) -> tuple[int, str | None]:
    """How many samples have an image location with a relative path, and the path of one of them."""
    n, example = query_df(workspace, "SELECT count(*) AS n, min(image_loc) AS example FROM samples "
                                     "WHERE regexp_matches(image_loc, ?)", [RELATIVE_LOC]).iloc[0]
    return int(n), (json.loads(example)[1] if int(n) else None)


def load_layout(workspace: str | os.PathLike) -> pd.DataFrame:
    """The whole 2-D map: row_idx, cluster, x, y."""
    return query_df(workspace, "SELECT row_idx, cluster, x, y FROM layout ORDER BY row_idx")




def counts(workspace: str | os.PathLike) -> dict[str, int]:
    """Row counts of the main tables."""
    with connect(workspace) as con:
        return {t: int(con.execute(f"SELECT count(*) FROM {t}").fetchone()[0])
                for t in ("samples", "clusters", "rejects", "plans")}


# --------------------------------------------------------------------------------------------
# re-clustering (densprune.pipeline.recluster)
# --------------------------------------------------------------------------------------------

def rewrite_clusters(workspace: str | os.PathLike, *, assignment: pd.DataFrame, clusters: pd.DataFrame,
                     meta: dict, drop_plans: tuple[str, ...] = (), rules: pd.DataFrame | None = None,
                     log_entries: tuple[dict, ...] = ()) -> list[str]:
    """Replace the cluster assignment in one transaction: ``samples`` (cluster, dist_to_centroid,
    rank_in_cluster by row_idx, every row), the whole ``clusters`` table, ``layout.cluster``, the
    given ``meta`` keys, and delete the plans ``drop_plans`` (their rows; the caller removes the masks,
    whose ``keep_file`` paths are returned). ``rules`` (clustering, concept, kind, value, fraction,
    created_by, created_at) replace every concept rule: the old clustering's, carried to the new one."""
    need = {"row_idx", "cluster", "dist_to_centroid", "rank_in_cluster"}
    if set(assignment.columns) != need:
        raise ValueError(f"assignment needs exactly the columns {sorted(need)}")
    cols = ", ".join(f'"{c}"' for c in clusters.columns)
    with connect(workspace, read_only=False) as con:
        n = con.execute("SELECT count(*) FROM samples").fetchone()[0]
        if n != len(assignment):
            raise ValueError(f"assignment has {len(assignment)} rows, samples has {n}")
        with transaction(con):
            with registered(con, "_a", assignment):
                con.execute("UPDATE samples SET cluster = _a.cluster, dist_to_centroid = _a.dist_to_centroid, "
                            "rank_in_cluster = _a.rank_in_cluster FROM _a WHERE samples.row_idx = _a.row_idx")
                con.execute("UPDATE layout SET cluster = _a.cluster FROM _a WHERE layout.row_idx = _a.row_idx")
            con.execute("DELETE FROM clusters")
            with registered(con, "_c", clusters):
                con.execute(f"INSERT INTO clusters ({cols}) SELECT {cols} FROM _c")
            _upsert_meta(con, meta)
            dropped = [f for f in (_drop_plan(con, name) for name in drop_plans) if f is not None]
            if rules is not None:
                _replace_rules(con, rules, log_entries)
    return dropped


# --------------------------------------------------------------------------------------------
# saved plans (densprune.prune.plans): a row in plans, K rows in plan_clusters
# --------------------------------------------------------------------------------------------

def _columns(con: duckdb.DuckDBPyConnection, table: str) -> set[str]:
    return {r[0] for r in con.execute("SELECT column_name FROM information_schema.columns WHERE table_name = ?",
                                      [table]).fetchall()}


def plan_exists(workspace: str | os.PathLike, name: str) -> bool:
    with connect(workspace) as con:
        return con.execute("SELECT count(*) FROM plans WHERE name = ?", [name]).fetchone()[0] > 0


def write_plan(workspace: str | os.PathLike, row: dict, clusters: pd.DataFrame, *,
               overwrite: bool = False, decisions: tuple[dict, pd.DataFrame, str] | None = None) -> str | None:
    """Replace plan ``row['name']`` (keys: PLAN_COLUMNS) and its per-cluster rows (PLAN_CLUSTER_COLUMNS)
    in one transaction; a workspace of schema version 1 gains the newer plan_clusters columns first.

    Returns the ``keep_file`` of the row it replaced (None for a new plan), read in the same transaction,
    so the caller removes exactly the mask no row names any more. Raises FileExistsError (nothing
    written) when the plan exists and ``overwrite`` is False: checked under the write lock, so two
    processes saving the same new name cannot both succeed.

    ``decisions``: (snapshot, its rows, the effects as JSON) of the decisions the plan applied, stored in
    the same transaction (the snapshot once per digest) and named by the plan's ``decisions`` column."""
    if set(row) != set(PLAN_COLUMNS) or set(clusters.columns) != set(PLAN_CLUSTER_COLUMNS):
        raise ValueError(f"a plan needs columns {PLAN_COLUMNS} and {PLAN_CLUSTER_COLUMNS}")
    cols = ", ".join(PLAN_CLUSTER_COLUMNS)
    with connect(workspace, read_only=False) as con, transaction(con):
        old = con.execute("SELECT keep_file FROM plans WHERE name = ?", [row["name"]]).fetchone()
        if old is not None and not overwrite:
            raise FileExistsError(f"plan {row['name']!r} already exists in {workspace}; choose another name or "
                                  "overwrite it")
        for table, added in ADDED_COLUMNS.items():
            for col, typ in added:
                con.execute(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {col} {typ}")
        con.execute("DELETE FROM plans WHERE name = ?", [row["name"]])
        con.execute("DELETE FROM plan_clusters WHERE plan = ?", [row["name"]])
        con.execute(f"INSERT INTO plans ({', '.join(PLAN_COLUMNS)}) VALUES ({', '.join('?' * len(PLAN_COLUMNS))})",
                    [row[c] for c in PLAN_COLUMNS])
        with registered(con, "_rows", clusters):
            con.execute(f"INSERT INTO plan_clusters ({cols}) SELECT {cols} FROM _rows")
        if decisions is not None:
            snap, snap_rows, effects = decisions
            _ensure_decision_tables(con)
            _write_snapshot(con, snap, snap_rows)
            con.execute("UPDATE plans SET decisions = ?, effects = ? WHERE name = ?", [snap["digest"], effects,
                                                                                      row["name"]])
    return None if old is None else old[0]


def list_plans(workspace: str | os.PathLike) -> pd.DataFrame:
    """All plans, newest first: name, method, n_kept, budget, eligible (the remaining pool the budget
    counted), pool_size (the raw pool), params, created_at."""
    with connect(workspace) as con:
        dec = "p.decisions" if "decisions" in _columns(con, "plans") else "NULL::VARCHAR AS decisions"
        return con.execute("SELECT p.name, p.method, p.n_kept, p.budget, "
                           "(SELECT sum(c.eligible) FROM plan_clusters c WHERE c.plan = p.name)::BIGINT "
                           f"AS eligible, p.pool_size, p.params, p.created_at, {dec} "
                           "FROM plans p ORDER BY p.created_at DESC").df()


def load_plan_row(workspace: str | os.PathLike, name: str) -> pd.DataFrame:
    """The ``plans`` row of ``name`` (an empty frame when there is none)."""
    return query_df(workspace, "SELECT * FROM plans WHERE name = ?", [name])


def load_plan_clusters(workspace: str | os.PathLike, name: str) -> pd.DataFrame:
    """Per cluster of plan ``name``: cluster, eligible, quota, kept, d_intra, complexity (NaN in a
    workspace of schema version 1, which did not store them)."""
    with connect(workspace) as con:
        have = _columns(con, "plan_clusters")
        cols = [c if c in have else f"NULL::DOUBLE AS {c}" for c in PLAN_CLUSTER_COLUMNS[1:]]
        return con.execute(f"SELECT {', '.join(cols)} FROM plan_clusters WHERE plan = ? ORDER BY cluster",
                           [name]).df()


def _delete_rows(workspace: str | os.PathLike, where: tuple[tuple[str, str], ...], value: str) -> None:
    """DELETE FROM each (table, column) the rows whose column equals ``value``, in one transaction."""
    with connect(workspace, read_only=False) as con, transaction(con):
        for table, column in where:
            con.execute(f"DELETE FROM {table} WHERE {column} = ?", [value])


def delete_plan(workspace: str | os.PathLike, name: str) -> str | None:
    """Remove plan ``name``'s rows (plans and plan_clusters) in one transaction; returns the
    ``keep_file`` its row named (None when there was no such plan)."""
    with connect(workspace, read_only=False) as con, transaction(con):
        return _drop_plan(con, name)


def _drop_plan(con: duckdb.DuckDBPyConnection, name: str) -> str | None:
    """Inside the caller's transaction: delete plan ``name``'s rows; the ``keep_file`` its row named, or None."""
    old = con.execute("SELECT keep_file FROM plans WHERE name = ?", [name]).fetchone()
    con.execute("DELETE FROM plans WHERE name = ?", [name])
    con.execute("DELETE FROM plan_clusters WHERE plan = ?", [name])
    return None if old is None else old[0]


def integrity_facts(workspace: str | os.PathLike) -> dict:
    """What ``densprune verify`` compares with the files: row counts and ranges of ``samples``, ``clusters``,
    ``rejects``, the plans (keep_file, n_kept, pool_size) and their ``plan_clusters`` sums."""
    with connect(workspace) as con:
        s = con.execute(
            "SELECT count(*), count(DISTINCT row_idx), min(row_idx), max(row_idx), min(cluster), max(cluster), "
            "count(*) FILTER (WHERE cluster IS NULL), max(thumb_offset + thumb_size), "
            "count(*) FILTER (WHERE split = 'pool') FROM samples").fetchone()
        c = con.execute("SELECT count(*), coalesce(sum(size), 0), coalesce(sum(pool_size), 0) FROM clusters").fetchone()
        sizes = con.execute("SELECT cluster, count(s.row_idx) AS n, c.size FROM samples s FULL JOIN clusters c "
                            "USING (cluster) GROUP BY cluster, c.size").fetchall()  # an empty concept counts 0
        n_rejects = con.execute("SELECT count(*) FROM rejects").fetchone()[0]
        plan_rows = con.execute("SELECT name, keep_file, n_kept, pool_size FROM plans ORDER BY name").df()
        pc = con.execute("SELECT plan, count(*) AS n_clusters, sum(kept) AS kept, sum(eligible) AS eligible "
                         "FROM plan_clusters GROUP BY plan").df()
    keys = ("n", "n_distinct_rows", "min_row", "max_row", "min_cluster", "max_cluster", "null_clusters",
            "thumbs_end", "n_pool")
    return {"samples": dict(zip(keys, s)), "clusters": {"n": c[0], "sum_size": c[1], "sum_pool_size": c[2]},
            "size_mismatch": [(cl, n, size) for cl, n, size in sizes if n != size],
            "n_rejects": int(n_rejects), "plans": plan_rows, "plan_clusters": pc}


def caption_flag_counts(workspace: str | os.PathLike) -> pd.DataFrame:
    """Samples counted by ``caption_flag`` (flag, count), most frequent first; empty when none is flagged
    or the workspace predates the column."""
    with connect(workspace) as con:
        if "caption_flag" not in _columns(con, "samples"):
            return pd.DataFrame(columns=["flag", "count"])
        return con.execute("SELECT caption_flag AS flag, count(*) AS count FROM samples WHERE caption_flag IS NOT NULL "
                           "GROUP BY caption_flag ORDER BY count DESC, flag").df()


def reject_summary(workspace: str | os.PathLike) -> pd.DataFrame:
    """Rejects counted by stage and reason, most frequent first: stage, reason, count."""
    return query_df(workspace, "SELECT stage, reason, count(*) AS count FROM rejects GROUP BY stage, reason "
                               "ORDER BY count DESC, stage, reason")


# --------------------------------------------------------------------------------------------
# a curator's decisions (densprune.prune.curation): row tags, concept rules, their log, and the
# snapshots saved plans record. Created on the first write; a workspace without them has none.
# --------------------------------------------------------------------------------------------

DECISION_DDL = (
    "CREATE TABLE IF NOT EXISTS tags (name VARCHAR PRIMARY KEY, action VARCHAR, created_by VARCHAR, "
    "created_at TIMESTAMP)",
    "CREATE TABLE IF NOT EXISTS tag_rows (tag VARCHAR, row_idx BIGINT)",
    # rules belong to one clustering (meta centroids_sha256); value: a count, a fraction or a weight
    "CREATE TABLE IF NOT EXISTS concept_rules (clustering VARCHAR, concept INTEGER, kind VARCHAR, value DOUBLE, "
    "fraction BOOLEAN, created_by VARCHAR, created_at TIMESTAMP)",
    # who did what, when, how: one row per tag addition / removal and rule change
    "CREATE TABLE IF NOT EXISTS decision_log (logged_at TIMESTAMP, who VARCHAR, what VARCHAR, target VARCHAR, "
    "source_kind VARCHAR, source VARCHAR, n_rows BIGINT)",
    # the decisions a saved plan used, by content digest (densprune.prune.decisions.Decisions.digest)
    "CREATE TABLE IF NOT EXISTS decision_snapshots (digest VARCHAR PRIMARY KEY, clustering VARCHAR, rules JSON, "
    "tags JSON, created_at TIMESTAMP)",
    "CREATE TABLE IF NOT EXISTS snapshot_rows (digest VARCHAR, tag VARCHAR, row_idx BIGINT)",
)
DECISION_TABLES = ("tags", "tag_rows", "concept_rules", "decision_log", "decision_snapshots", "snapshot_rows")
PLAN_DECISION_COLUMNS = (("decisions", "VARCHAR"), ("effects", "JSON"))  # added to plans on the first write


def _ensure_decision_tables(con: duckdb.DuckDBPyConnection) -> None:
    for ddl in DECISION_DDL:
        con.execute(ddl)
    for col, typ in PLAN_DECISION_COLUMNS:
        con.execute(f"ALTER TABLE plans ADD COLUMN IF NOT EXISTS {col} {typ}")


def _log(con: duckdb.DuckDBPyConnection, entry: dict) -> None:
    con.execute("INSERT INTO decision_log VALUES (?, ?, ?, ?, ?, ?, ?)",
                [entry.get("at"), entry.get("who"), entry["what"], entry.get("target"), entry.get("source_kind"),
                 entry.get("source"), entry.get("n_rows")])


def add_tag_rows(workspace: str | os.PathLike, name: str, action: str, rows: np.ndarray, log_entry: dict) -> int:
    """Add ``rows`` (M,) int64 to tag ``name`` (created with ``action``; an existing tag must have that
    action) in one transaction, with its log entry; returns how many rows were new. Rows already in the
    tag are not added twice, so concurrent writers of the same rows lose nothing and double nothing."""
    rows = sorted_unique(rows)
    with connect(workspace, read_only=False) as con, registered(con, "_new", pa.table({"row_idx": rows})), \
            transaction(con):
        _ensure_decision_tables(con)
        have = con.execute("SELECT action FROM tags WHERE name = ?", [name]).fetchall()
        if have and have[0][0] != action:
            raise ValueError(f"tag {name!r} exists with action {have[0][0]!r}, not {action!r}; choose another name, "
                             f"or remove it first with `densprune untag WS {name}`")
        if not have:
            con.execute("INSERT INTO tags VALUES (?, ?, ?, ?)", [name, action, log_entry.get("who"),
                                                               log_entry.get("at")])
        added = con.execute("INSERT INTO tag_rows SELECT ?, n.row_idx FROM _new n WHERE n.row_idx NOT IN "
                            "(SELECT row_idx FROM tag_rows WHERE tag = ?)", [name, name]).fetchall()[0][0]
        _log(con, {**log_entry, "what": f"tag {action}", "target": name, "n_rows": int(added)})
    return int(added)


def remove_tag(workspace: str | os.PathLike, name: str, log_entry: dict) -> int:
    """Delete tag ``name`` and its rows in one transaction (logged); returns its row count (-1: no such tag)."""
    with connect(workspace, read_only=False) as con, transaction(con):
        _ensure_decision_tables(con)
        if con.execute("SELECT count(*) FROM tags WHERE name = ?", [name]).fetchone()[0] == 0:
            return -1
        n = con.execute("SELECT count(*) FROM tag_rows WHERE tag = ?", [name]).fetchone()[0]
        con.execute("DELETE FROM tag_rows WHERE tag = ?", [name])
        con.execute("DELETE FROM tags WHERE name = ?", [name])
        _log(con, {**log_entry, "what": "untag", "target": name, "n_rows": int(n)})
    return int(n)


def list_tags(workspace: str | os.PathLike) -> pd.DataFrame:
    """Every tag: name, action, n_rows, created_by, created_at (empty without tags)."""
    with connect(workspace) as con:
        if not _has_table(con, "tags"):
            return pd.DataFrame(columns=["name", "action", "n_rows", "created_by", "created_at"])
        return con.execute("SELECT t.name, t.action, (SELECT count(*) FROM tag_rows r WHERE r.tag = t.name) AS n_rows, "
                           "t.created_by, t.created_at FROM tags t ORDER BY t.name").df()


def tag_rows(workspace: str | os.PathLike) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """The tags (name, action) and each tag's rows (M,) int64 sorted."""
    with connect(workspace) as con:
        if not _has_table(con, "tags"):
            return pd.DataFrame(columns=["name", "action"]), {}
        tags = con.execute("SELECT name, action FROM tags ORDER BY name").df()
        got = con.execute("SELECT tag, row_idx FROM tag_rows ORDER BY tag, row_idx").fetchnumpy()
    tag, row = np.asarray(got["tag"], dtype=object), np.asarray(got["row_idx"], dtype=np.int64)
    out = {}
    for name in tags["name"]:
        lo, hi = np.searchsorted(tag, name, side="left"), np.searchsorted(tag, name, side="right")
        out[name] = row[lo:hi]
    return tags, out


def set_rules(workspace: str | os.PathLike, clustering: str, rules: pd.DataFrame, log_entry: dict) -> None:
    """Replace the rules of the concepts in ``rules`` (concept, kind, value, fraction) on ``clustering``
    in one transaction (an 'auto' rule deletes the concept's rule), logged."""
    with connect(workspace, read_only=False) as con, transaction(con):
        _ensure_decision_tables(con)
        for r in rules.itertuples():
            con.execute("DELETE FROM concept_rules WHERE clustering = ? AND concept = ?", [clustering, int(r.concept)])
            if r.kind != "auto":
                con.execute("INSERT INTO concept_rules VALUES (?, ?, ?, ?, ?, ?, ?)",
                            [clustering, int(r.concept), r.kind, None if pd.isna(r.value) else float(r.value),
                             bool(r.fraction), log_entry.get("who"), log_entry.get("at")])
            _log(con, {**log_entry, "what": f"rule {r.kind}", "target": f"concept {int(r.concept)}",
                       "source": log_entry.get("source") or (None if pd.isna(r.value) else f"{r.value:g}")})


def replace_rules(workspace: str | os.PathLike, rules: pd.DataFrame, log_entries: list[dict]) -> None:
    """Replace every concept rule with ``rules`` (the columns of concept_rules) in one transaction, logged."""
    with connect(workspace, read_only=False) as con, transaction(con):
        _replace_rules(con, rules, log_entries)


def _replace_rules(con: duckdb.DuckDBPyConnection, rules: pd.DataFrame, log_entries) -> None:
    """Inside the caller's transaction: every concept rule becomes ``rules``; the log entries are added."""
    _ensure_decision_tables(con)
    con.execute("DELETE FROM concept_rules")
    with registered(con, "_r", rules):
        con.execute("INSERT INTO concept_rules SELECT clustering, concept, kind, value, fraction, "
                    "created_by, created_at FROM _r")
    for entry in log_entries:
        _log(con, entry)


def load_rules(workspace: str | os.PathLike) -> pd.DataFrame:
    """Every concept rule: clustering, concept, kind, value, fraction, created_by, created_at."""
    with connect(workspace) as con:
        if not _has_table(con, "concept_rules"):
            return pd.DataFrame(columns=["clustering", "concept", "kind", "value", "fraction", "created_by",
                                         "created_at"])
        return con.execute("SELECT * FROM concept_rules ORDER BY clustering, concept").df()


def decision_log(workspace: str | os.PathLike, limit: int = 200) -> pd.DataFrame:
    """The latest ``limit`` decision log entries, newest first."""
    with connect(workspace) as con:
        if not _has_table(con, "decision_log"):
            return pd.DataFrame(columns=["logged_at", "who", "what", "target", "source_kind", "source", "n_rows"])
        return con.execute("SELECT * FROM decision_log ORDER BY logged_at DESC LIMIT ?", [int(limit)]).df()


def tag_sources(workspace: str | os.PathLike, name: str) -> pd.DataFrame:
    """Where tag ``name``'s rows came from, oldest first: logged_at, who, source_kind, source, n_rows (new rows)."""
    with connect(workspace) as con:
        if not _has_table(con, "decision_log"):
            return pd.DataFrame(columns=["logged_at", "who", "source_kind", "source", "n_rows"])
        return con.execute("SELECT logged_at, who, source_kind, source, n_rows FROM decision_log WHERE target = ? "
                           "AND what LIKE 'tag %' ORDER BY logged_at", [name]).df()


_VERSIONS: dict[str, tuple[tuple, tuple]] = {}  # workspace -> (its database files' stat, decisions_version)
_VERSIONS_LOCK = threading.Lock()
SETTLED_NS = 100_000_000  # a file modified this recently (0.1 s) may be modified again within its clock tick


def _files_stat(workspace: str | os.PathLike) -> tuple | None:
    """(inode, size, mtime) of the database and of its write-ahead log, or None while either was modified in
    the last SETTLED_NS (timestamps come from a coarse clock: a later write inside the same tick could
    leave them equal)."""
    path = db_path(workspace)
    out = []
    for p in (path, path.with_name(path.name + ".wal")):
        try:
            info = p.stat()
        except FileNotFoundError:
            out.append(None)
            continue
        if time.time_ns() - info.st_mtime_ns < SETTLED_NS:
            return None
        out.append((info.st_ino, info.st_size, info.st_mtime_ns))
    return tuple(out)


def decisions_version(workspace: str | os.PathLike) -> tuple:
    """A cheap key that changes whenever a decision is written (for caches).

    Opening the database costs ~25-40 ms at 1M rows and the app asks for this key several times per
    page run, so the answer is kept with the database files' stat: every committed write, from any
    process, changes the size or modification time of the database or of its write-ahead log, and while
    neither has changed the stored answer is the one a query would give (any write, decision or not,
    sends it back to the database)."""
    key = _files_stat(workspace)
    with _VERSIONS_LOCK:
        memo = _VERSIONS.get(str(workspace))
    if key is not None and memo is not None and memo[0] == key:
        return memo[1]
    with connect(workspace) as con:
        if not _has_table(con, "decision_log"):
            version: tuple = (0, None)
        else:
            version = tuple(con.execute("SELECT count(*), max(logged_at) FROM decision_log").fetchone())
    if key is not None:  # the stat taken before the query: a write during it changes the files after it
        with _VERSIONS_LOCK:
            _VERSIONS[str(workspace)] = (key, version)
    return version


def _write_snapshot(con: duckdb.DuckDBPyConnection, snap: dict, rows: pd.DataFrame) -> None:
    """Inside the caller's transaction: store snapshot ``snap`` (digest, clustering, rules, tags, created_at)
    and its ``rows`` (tag, row_idx) unless that digest is stored already."""
    if con.execute("SELECT count(*) FROM decision_snapshots WHERE digest = ?", [snap["digest"]]).fetchall()[0][0]:
        return
    con.execute("INSERT INTO decision_snapshots VALUES (?, ?, ?, ?, ?)",
                [snap["digest"], snap["clustering"], snap["rules"], snap["tags"], snap["created_at"]])
    with registered(con, "_snap", rows):
        con.execute("INSERT INTO snapshot_rows SELECT ?, tag, row_idx FROM _snap", [snap["digest"]])


def decision_facts(workspace: str | os.PathLike) -> dict:
    """What ``densprune verify`` checks of the decisions: tag rows out of range or duplicated, rows of
    tags that do not exist, plans naming snapshots that are not stored (all 0 without decision tables)."""
    with connect(workspace) as con:
        if not _has_table(con, "tags"):
            return {"out_of_range": 0, "duplicated": 0, "orphan_rows": 0, "missing_snapshots": []}
        n = con.execute("SELECT count(*) FROM samples").fetchall()[0][0]
        out = con.execute("SELECT count(*) FILTER (WHERE row_idx < 0 OR row_idx >= ?), count(*) - "
                          "count(DISTINCT (tag, row_idx)), count(*) FILTER (WHERE tag NOT IN (SELECT name FROM tags)) "
                          "FROM tag_rows", [n]).fetchall()[0]
        missing = [r[0] for r in con.execute(
            "SELECT name FROM plans WHERE decisions IS NOT NULL AND decisions NOT IN "
            "(SELECT digest FROM decision_snapshots) ORDER BY name").fetchall()]
    return {"out_of_range": int(out[0]), "duplicated": int(out[1]), "orphan_rows": int(out[2]),
            "missing_snapshots": missing}


def load_snapshot(workspace: str | os.PathLike, digest: str) -> tuple[dict, pd.DataFrame] | None:
    """Snapshot ``digest``: its row (rules and tags as JSON text) and its rows (tag, row_idx); None if absent."""
    with connect(workspace) as con:
        if not _has_table(con, "decision_snapshots"):
            return None
        snap = con.execute("SELECT * FROM decision_snapshots WHERE digest = ?", [digest]).df()
        if snap.empty:
            return None
        rows = con.execute("SELECT tag, row_idx FROM snapshot_rows WHERE digest = ? ORDER BY tag, row_idx",
                           [digest]).df()
    return snap.iloc[0].to_dict(), rows


# --------------------------------------------------------------------------------------------
# training runs (written by densprune.train.records with one short transaction per update)
# --------------------------------------------------------------------------------------------

def _has_table(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    return bool(con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = ?",
                            [name]).fetchone()[0])


def ensure_run_tables(workspace: str | os.PathLike) -> None:
    """Create ``runs`` and ``run_metrics`` in a workspace built before they existed."""
    with connect(workspace) as con:
        if _has_table(con, "runs") and _has_table(con, "run_metrics"):
            return
    with connect(workspace, read_only=False) as con:
        con.execute(RUNS_DDL)
        con.execute(RUN_METRICS_DDL)


def upsert_run(workspace: str | os.PathLike, row: dict, timeout_s: float = 30.0) -> None:
    """Insert or replace the row of run ``row['name']`` (keys: a subset of RUN_COLUMNS)."""
    bad = set(row) - set(RUN_COLUMNS)
    if bad:
        raise ValueError(f"unknown run columns {sorted(bad)}")
    cols = list(row)
    with connect(workspace, read_only=False, timeout_s=timeout_s) as con, transaction(con):
        con.execute("DELETE FROM runs WHERE name = ?", [row["name"]])
        con.execute(f"INSERT INTO runs ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                    [row[c] for c in cols])


def update_run(workspace: str | os.PathLike, name: str, fields: dict, metrics: list[tuple] = (),
               timeout_s: float = 30.0) -> None:
    """Set ``fields`` of run ``name`` and append ``metrics`` rows (name, value, step, samples_seen)."""
    bad = set(fields) - set(RUN_COLUMNS)
    if bad:
        raise ValueError(f"unknown run columns {sorted(bad)}")
    with connect(workspace, read_only=False, timeout_s=timeout_s) as con, transaction(con):
        if fields:
            sets = ", ".join(f"{c} = ?" for c in fields)
            con.execute(f"UPDATE runs SET {sets} WHERE name = ?", [*fields.values(), name])
        if metrics:
            con.executemany("INSERT INTO run_metrics VALUES (?, ?, ?, ?, ?)", [(name, *m) for m in metrics])


def replace_run_metrics(workspace: str | os.PathLike, name: str, metrics: list[tuple], prefix: str,
                        timeout_s: float = 30.0) -> None:
    """Replace run ``name``'s metrics whose name starts with ``prefix`` (e.g. 'eval/') by ``metrics``."""
    with connect(workspace, read_only=False, timeout_s=timeout_s) as con, transaction(con):
        con.execute("DELETE FROM run_metrics WHERE run = ? AND starts_with(name, ?)", [name, prefix])
        if metrics:
            con.executemany("INSERT INTO run_metrics VALUES (?, ?, ?, ?, ?)", [(name, *m) for m in metrics])


def load_runs(workspace: str | os.PathLike) -> pd.DataFrame:
    """All runs, newest first (an empty frame with the columns where no run was ever started)."""
    with connect(workspace) as con:
        if not _has_table(con, "runs"):
            return pd.DataFrame(columns=list(RUN_COLUMNS))
        return con.execute("SELECT * FROM runs ORDER BY created_at DESC, name").df()


def load_run_metrics(workspace: str | os.PathLike, runs: list[str] | None = None,
                     prefix: str | None = None) -> pd.DataFrame:
    """Rows (run, name, value, step, samples_seen) of the given runs (all when None), by name prefix."""
    cols = ["run", "name", "value", "step", "samples_seen"]
    with connect(workspace) as con:
        if not _has_table(con, "run_metrics"):
            return pd.DataFrame(columns=cols)
        sql, params = "SELECT * FROM run_metrics WHERE true", []
        if runs is not None:
            sql += " AND list_contains(?, run)"
            params.append(list(runs))
        if prefix:
            sql += " AND starts_with(name, ?)"
            params.append(prefix)
        return con.execute(sql + " ORDER BY run, name, step", params).df()


def delete_run(workspace: str | os.PathLike, name: str) -> None:
    """Remove run ``name``'s rows (runs and run_metrics) in one transaction."""
    _delete_rows(workspace, (("runs", "name"), ("run_metrics", "run")), name)


# --------------------------------------------------------------------------------------------
# the app's reads
# --------------------------------------------------------------------------------------------

SHOWN_CAPTION_CHARS = 500  # captions are read cut to this many characters (kept whole in the workspace)
# the columns the app's grids and tables read of a sample, and the SELECT list that reads them
SAMPLE_COLUMN_NAMES = ("row_idx", "caption", "split", "cluster", "dist_to_centroid", "rank_in_cluster", "dup_max_sim",
                       "dup_of", "thumb_offset", "thumb_size", "image_loc", "image_ref", "width", "height")
SAMPLE_COLUMNS = ", ".join(f"left(caption, {SHOWN_CAPTION_CHARS}) AS caption" if c == "caption" else c
                           for c in SAMPLE_COLUMN_NAMES)


def category_code_rows(workspace: str | os.PathLike, no_category: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Per row (N,) in row order: the code of its top-level category (int32, index into the sorted
    names; rows without one count as ``no_category``) and whether it is in the pool; the names."""
    with connect(workspace) as con:
        names = [r[0] for r in con.execute("SELECT DISTINCT coalesce(top_category, ?) AS name FROM samples "
                                           "ORDER BY name", [no_category]).fetchall()]
        rows = con.execute(
            "WITH codes AS (SELECT UNNEST(?::VARCHAR[]) AS name, "
            "(generate_subscripts(?::VARCHAR[], 1) - 1)::INTEGER AS code) "
            "SELECT c.code, s.split = 'pool' AS pool FROM samples s "
            "JOIN codes c ON coalesce(s.top_category, ?) = c.name ORDER BY s.row_idx",
            [names, names, no_category]).fetchnumpy()
    return np.asarray(rows["code"], dtype=np.int32), np.asarray(rows["pool"], dtype=bool), names


def top_categories(workspace: str | os.PathLike, no_category: str = "(none)") -> pd.DataFrame:
    """Pool and eval samples per top-level category (empty without categories)."""
    return query_df(workspace, (
        "SELECT coalesce(top_category, ?) AS category, "
        "count(*) FILTER (WHERE split = 'pool') AS pool, count(*) FILTER (WHERE split = 'eval') AS eval "
        "FROM samples GROUP BY 1 ORDER BY pool DESC, category"), [no_category])


def _like(text: str) -> str:
    """An ILIKE pattern matching ``text`` anywhere, literally (%, _ and \\ escaped)."""
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def caption_matches(workspace: str | os.PathLike, text: str) -> pd.DataFrame:
    """Concepts with captions containing ``text`` (case-insensitive, literal): cluster, matches."""
    return query_df(workspace, "SELECT cluster, count(*) AS matches FROM samples WHERE caption ILIKE ? "
                                     "ESCAPE '\\' GROUP BY cluster ORDER BY matches DESC", [_like(text)])


def splits_and_captions(workspace: str | os.PathLike) -> pd.DataFrame:
    """Every row's split and caption, in row order (for the eval-contamination report)."""
    return query_df(workspace, "SELECT split, caption FROM samples ORDER BY row_idx")


def caption_rows(workspace: str | os.PathLike, text: str | list[str]) -> np.ndarray:
    """(M,) int64 rows whose caption contains ``text`` (case-insensitive, literal), sorted; given a list,
    the rows whose caption contains every one of its texts."""
    texts = [text] if isinstance(text, str) else list(text)
    where = " AND ".join(["caption ILIKE ? ESCAPE '\\'"] * len(texts)) or "false"
    with connect(workspace) as con:
        got = con.execute(f"SELECT row_idx FROM samples WHERE {where} ORDER BY row_idx",
                          [_like(t) for t in texts]).fetchnumpy()
    return np.asarray(got["row_idx"], dtype=np.int64)


def rows_for(workspace: str | os.PathLike, column: str, values: list[str]) -> pd.DataFrame:
    """The rows whose ``column`` (uid or key) is one of ``values``: value, row_idx (absent values: no row)."""
    if column not in ("uid", "key"):
        raise ValueError(f"rows are looked up by uid or key, not {column!r}")
    with connect(workspace) as con, registered(con, "_v", pa.table({"value": pa.array(values, pa.string())})):
        return con.execute(f"SELECT v.value, s.row_idx FROM _v v JOIN samples s ON s.{column} = v.value").df()


def layout_sample(workspace: str | os.PathLike, max_points: int = 20_000) -> pd.DataFrame:
    """At most ``max_points`` rows of the 2-D map (a fixed hash sample): row_idx, cluster, x, y."""
    return query_df(workspace, "SELECT row_idx, cluster, x, y FROM layout ORDER BY hash(row_idx) LIMIT ?",
                          [int(max_points)])


def sample_rows(workspace: str | os.PathLike, rows: np.ndarray | list[int]) -> pd.DataFrame:
    """The samples at ``rows`` (row_idx), in the given order."""
    rows = [int(r) for r in rows]
    if not rows:
        return pd.DataFrame(columns=list(SAMPLE_COLUMN_NAMES))
    # list_contains, not IN (SELECT UNNEST(...)): the filter reaches the scan, whose zone maps on the
    # row-ordered row_idx skip every row group without a wanted row (ms instead of a 10M-row join)
    df = query_df(workspace, f"SELECT {SAMPLE_COLUMNS} FROM samples WHERE list_contains(?::BIGINT[], row_idx)", [rows])
    return df.set_index("row_idx", drop=False).loc[rows].reset_index(drop=True)


def dup_pairs(workspace: str | os.PathLike, rows: np.ndarray | list[int]) -> pd.DataFrame:
    """The near-duplicate rows ``rows`` (row_idx, in the order given: the plan index finds them) beside
    the earlier member each duplicates: (row_idx, dup_of, sim, caption, dup_caption, thumbs of both).
    Both are fetched by row number (a self-join would hash the whole samples table: seconds at 10M rows)."""
    rows = [int(r) for r in rows]
    with connect(workspace) as con:
        top = con.execute(
            f"SELECT row_idx, dup_of, dup_max_sim AS sim, left(caption, {SHOWN_CAPTION_CHARS}) AS caption, "
            "thumb_offset, thumb_size, image_loc, image_ref, width, height FROM samples "
            "WHERE list_contains(?::BIGINT[], row_idx) AND dup_of >= 0", [rows]).df()
        present = set(top["row_idx"].tolist())
        top = top.set_index("row_idx", drop=False).loc[[r for r in rows if r in present]].reset_index(drop=True)
        earlier = con.execute(
            f"SELECT row_idx AS dup_of, left(caption, {SHOWN_CAPTION_CHARS}) AS dup_caption, "
            "thumb_offset AS dup_thumb_offset, thumb_size AS dup_thumb_size, image_loc AS dup_image_loc, "
            "image_ref AS dup_image_ref, width AS dup_width, height AS dup_height FROM samples "
            "WHERE list_contains(?::BIGINT[], row_idx)", [[int(r) for r in top["dup_of"]]]).df()
    df = top.merge(earlier, on="dup_of", how="inner")
    return df[["row_idx", "dup_of", "sim", "caption", "thumb_offset", "thumb_size", "image_loc", "dup_caption",
               "dup_thumb_offset", "dup_thumb_size", "dup_image_loc", "image_ref", "width", "height",
               "dup_image_ref", "dup_width", "dup_height"]]
