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
import threading
import time
from pathlib import Path
from typing import Iterable, Iterator

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

log = logging.getLogger(__name__)

DB_NAME = "densprune.duckdb"
SCHEMA_VERSION = 1

SAMPLES_DDL = """
CREATE TABLE samples (
    row_idx BIGINT PRIMARY KEY,   -- row of embeddings/*.npy
    uid VARCHAR NOT NULL,         -- 32 hex chars, DataComp style
    key VARCHAR,                  -- the source's own key / relative path
    caption VARCHAR,
    image_ref VARCHAR,            -- where the original image lives (path, tar#member, parquet#row)
    image_loc VARCHAR,            -- how densprune reads it: JSON ["file", path] | ["tar", path, offset, size] | ["parquet", path, row, column]
    width INTEGER,                -- original size in pixels
    height INTEGER,
    category VARCHAR,             -- folder / category path where the source has one
    top_category VARCHAR,
    split VARCHAR,                -- 'pool' (prunable) or 'eval' (held out, never kept)
    clip_score DOUBLE,            -- cos(image, caption); NULL without a CLIP model
    cluster INTEGER,
    dist_to_centroid DOUBLE,      -- 1 - cos(embedding, centroid)
    rank_in_cluster BIGINT,       -- 0 = nearest its centroid (most prototypical)
    dup_max_sim DOUBLE,           -- SemDeDup: max cos to the members ranked before it (-1: first)
    dup_of BIGINT,                -- row_idx of that most similar earlier member (-1: none)
    thumb_offset BIGINT,          -- thumbnail bytes in thumbs.bin
    thumb_size INTEGER
)"""

CLUSTERS_DDL = """
CREATE TABLE clusters (
    cluster INTEGER PRIMARY KEY,
    size INTEGER,                 -- all members
    pool_size INTEGER,            -- members in the pruning pool
    d_intra DOUBLE,
    d_inter DOUBLE,
    complexity DOUBLE,
    label VARCHAR,
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
    plan VARCHAR, cluster INTEGER, eligible BIGINT, quota BIGINT, kept BIGINT
)"""

# training runs (densprune.training): one row per run, its latest progress mirrored from the run
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

_PROCESS_LOCK = threading.RLock()


class WorkspaceNotFound(FileNotFoundError):
    """No complete workspace at the path."""


def db_path(workspace: str | os.PathLike) -> Path:
    return Path(workspace) / DB_NAME


def is_complete(workspace: str | os.PathLike) -> bool:
    """A workspace is complete once its DuckDB file exists: it is renamed into place last."""
    return db_path(workspace).exists()


@contextlib.contextmanager
def connect(workspace: str | os.PathLike, read_only: bool = True, timeout_s: float = 30.0) -> Iterator[duckdb.DuckDBPyConnection]:
    """A short-lived connection to the workspace database, retrying while another process writes."""
    path = db_path(workspace)
    if not path.exists():
        raise WorkspaceNotFound(f"no workspace at {workspace} (missing {DB_NAME}); build one with `densprune precompute`")
    deadline = time.monotonic() + timeout_s
    delay = 0.02
    with _PROCESS_LOCK:
        while True:
            try:
                con = duckdb.connect(str(path), read_only=read_only)
                break
            except duckdb.IOException as exc:
                if "lock" not in str(exc).lower() or time.monotonic() > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 0.5)
        try:
            yield con
        finally:
            con.close()


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
        meta = {**meta, "schema_version": SCHEMA_VERSION}
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
    con.register("_df", data)
    try:
        con.execute(f"INSERT INTO {table} ({cols}) SELECT {cols} FROM _df")
    finally:
        con.unregister("_df")


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
               "dup_of", "split", "width", "height", "thumb_offset", "thumb_size", "category", "top_category", "uid"}
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
        else:
            out[c] = np.asarray(col.to_pylist(), dtype=object)
    return out


def set_meta(workspace: str | os.PathLike, key: str, value: object) -> None:
    """Set one ``meta`` entry of a complete workspace (one short read-write transaction)."""
    with connect(workspace, read_only=False) as con:
        con.execute("BEGIN")
        con.execute("DELETE FROM meta WHERE key = ?", [key])
        con.execute("INSERT INTO meta VALUES (?, ?)", [key, json.dumps(value, default=str)])
        con.execute("COMMIT")


def load_clusters(workspace: str | os.PathLike) -> pd.DataFrame:
    return query_df(workspace, "SELECT * FROM clusters ORDER BY cluster")


def load_rejects(workspace: str | os.PathLike) -> pd.DataFrame:
    return query_df(workspace, "SELECT * FROM rejects")


def counts(workspace: str | os.PathLike) -> dict[str, int]:
    """Row counts of the main tables."""
    with connect(workspace) as con:
        return {t: int(con.execute(f"SELECT count(*) FROM {t}").fetchone()[0])
                for t in ("samples", "clusters", "rejects", "plans")}


# --------------------------------------------------------------------------------------------
# training runs (written by densprune.training with one short transaction per update)
# --------------------------------------------------------------------------------------------

def _has_table(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    return bool(con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [name]).fetchone()[0])


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
    with connect(workspace, read_only=False, timeout_s=timeout_s) as con:
        con.execute("BEGIN")
        con.execute("DELETE FROM runs WHERE name = ?", [row["name"]])
        con.execute(f"INSERT INTO runs ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                    [row[c] for c in cols])
        con.execute("COMMIT")


def update_run(workspace: str | os.PathLike, name: str, fields: dict, metrics: list[tuple] = (),
               timeout_s: float = 30.0) -> None:
    """Set ``fields`` of run ``name`` and append ``metrics`` rows (name, value, step, samples_seen)."""
    bad = set(fields) - set(RUN_COLUMNS)
    if bad:
        raise ValueError(f"unknown run columns {sorted(bad)}")
    with connect(workspace, read_only=False, timeout_s=timeout_s) as con:
        con.execute("BEGIN")
        if fields:
            sets = ", ".join(f"{c} = ?" for c in fields)
            con.execute(f"UPDATE runs SET {sets} WHERE name = ?", [*fields.values(), name])
        if metrics:
            con.executemany("INSERT INTO run_metrics VALUES (?, ?, ?, ?, ?)", [(name, *m) for m in metrics])
        con.execute("COMMIT")


def replace_run_metrics(workspace: str | os.PathLike, name: str, metrics: list[tuple], prefix: str,
                        timeout_s: float = 30.0) -> None:
    """Replace run ``name``'s metrics whose name starts with ``prefix`` (e.g. 'eval/') by ``metrics``."""
    with connect(workspace, read_only=False, timeout_s=timeout_s) as con:
        con.execute("BEGIN")
        con.execute("DELETE FROM run_metrics WHERE run = ? AND starts_with(name, ?)", [name, prefix])
        if metrics:
            con.executemany("INSERT INTO run_metrics VALUES (?, ?, ?, ?, ?)", [(name, *m) for m in metrics])
        con.execute("COMMIT")


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
    with connect(workspace, read_only=False) as con:
        con.execute("BEGIN")
        con.execute("DELETE FROM runs WHERE name = ?", [name])
        con.execute("DELETE FROM run_metrics WHERE run = ?", [name])
        con.execute("COMMIT")
