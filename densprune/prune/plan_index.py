"""The plan index of a workspace: built from its samples table, stored in it, mapped by later processes.

``load_index(ws)`` is what every caller uses; the stored copy is why a new process opens it in a blink.

Building a :class:`~densprune.prune.selection.PlanIndex` reads five columns of every row from DuckDB
and sorts them (at 10M rows: ~14 s of CPU). ``DIR/index/plan-KEY/`` keeps the arrays that define it
(:meth:`PlanIndex.arrays`, one ``.npy`` each; ~37 bytes per row, 370 MB at 10M rows), and a later
process maps them read-only instead (shared between processes through the page cache).

KEY names the build the arrays came from: the ``build_id`` every new database gets (workspaces from
before it: the database file's inode and ``created`` time), the centroids' sha256 and the last
``densprune recluster`` (the only command that rewrites clusters in place). A workspace rebuilt or
reclustered has another KEY, so a stale index is never read; it is removed when the new one is stored.
A folder is written under a temporary name and renamed into place whole, so a reader never sees half
of one, and two writers racing both leave a complete one. A workspace that cannot be written (read-only
mount) still works: the index is built in memory each time, as before.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from pathlib import Path

import numpy as np

from densprune import db
from densprune.prune.selection import PlanIndex
from densprune.workspace import INDEX, centroids_path, finish_centroids, negclip_scores

log = logging.getLogger(__name__)

__all__ = ["INDEX_DIR", "build_index", "index_key", "load_index", "load_stored", "store", "stored_path"]

INDEX_DIR = INDEX  # DIR/index/plan-KEY/
FORMAT = 2  # bump when PlanIndex.arrays changes meaning (2: the per-concept summary)
_STALE_TMP_S = 3600.0  # a temporary folder this old belongs to a writer that died


def index_key(workspace: str | os.PathLike, meta: dict) -> str:
    """16 hex digits naming one build of the workspace's clusters (see the module docstring)."""
    build = meta.get("build_id") or (db.db_path(workspace).stat().st_ino, meta.get("created"))  # older builds: none
    ident = {"format": FORMAT, "build": build, "centroids_sha256": meta.get("centroids_sha256"),
             "reclustered": meta.get("reclustered")}
    if meta.get("negclip"):  # scored by `densprune negclip` (absent: the key of the builds before it)
        ident["negclip"] = meta["negclip"]
    return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:16]


def stored_path(workspace: str | os.PathLike, key: str) -> Path:
    return Path(workspace) / INDEX_DIR / f"plan-{key}"


def load_stored(workspace: str | os.PathLike, key: str) -> PlanIndex | None:
    """The stored index of build ``key`` (arrays memory-mapped read-only), or None when there is none
    or it cannot be used (logged; the caller builds a new one)."""
    d = stored_path(workspace, key)
    if not d.is_dir():
        return None
    try:
        arrays = {name: np.load(d / f"{name}.npy", mmap_mode="r", allow_pickle=False)
                  for name in PlanIndex.STORED if (d / f"{name}.npy").exists()}
        index = PlanIndex.from_arrays(arrays)
    except (OSError, ValueError) as e:
        log.warning("the stored plan index %s cannot be used (%s): building it again", d, e)
        return None
    log.info("plan index: %d rows, %d clusters, mapped from %s", index.n_rows, index.n_clusters, d)
    if "inv" not in arrays:  # stored before the inverse was: add it, so later processes map it too
        _add_array(d, "inv", index.arrays()["inv"])
    return index


def _add_array(folder: Path, name: str, arr: np.ndarray) -> None:
    """Write ``folder/name.npy`` beside a stored index's arrays: a temporary file renamed into place, so a
    reader sees the whole file or none (writers racing write the same content). Best effort: a folder
    this process cannot write keeps computing it (logged)."""
    tmp = folder / f".{name}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        with open(tmp, "wb") as fh:
            np.save(fh, np.ascontiguousarray(arr), allow_pickle=False)
        os.replace(tmp, folder / f"{name}.npy")
        log.info("plan index: %s.npy added to %s", name, folder)
    except OSError as e:
        log.info("could not add %s.npy to the stored plan index %s (%s)", name, folder, e)
    finally:
        tmp.unlink(missing_ok=True)


def store(workspace: str | os.PathLike, key: str, index: PlanIndex) -> Path | None:
    """Write ``index`` as build ``key`` and remove older builds' indexes; returns its folder, or None
    when the workspace cannot be written (logged: the app then builds the index once per process)."""
    root = Path(workspace) / INDEX_DIR
    final = stored_path(workspace, key)
    if final.is_dir():
        return final
    tmp = root / f".plan-{key}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        tmp.mkdir(parents=True)
        for name, arr in index.arrays().items():
            with open(tmp / f"{name}.npy", "wb") as fh:
                np.save(fh, np.ascontiguousarray(arr), allow_pickle=False)
        try:
            os.rename(tmp, final)
        except OSError:
            if not final.is_dir():  # not a writer that got there first
                raise
    except OSError as e:
        log.warning("could not store the plan index in %s (%s): it is built again by every new process", root, e)
        return None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _remove_stale(root, keep=final.name)
    log.info("plan index stored in %s", final)
    return final


def _remove_stale(root: Path, keep: str) -> None:
    """Other builds' indexes, and temporary folders of writers that died (older than an hour). Best
    effort: an entry another writer renames or removes meanwhile is skipped, never an error."""
    now = time.time()
    for entry in root.iterdir():
        if entry.name == keep or not entry.name.startswith(("plan-", ".plan-")):
            continue
        try:
            if entry.name.startswith(".") and now - entry.stat().st_mtime < _STALE_TMP_S:
                continue  # another writer at work
        except FileNotFoundError:  # that writer just renamed or removed it
            continue
        shutil.rmtree(entry, ignore_errors=True)


def load_index(workspace: str | os.PathLike) -> PlanIndex:
    """The plan index of a workspace: mapped from the one stored in it for this build
    (below), else built from the samples table and stored there for the next
    process (when the workspace can be written). Callers that reuse it cache it (the app with st.cache_resource)."""

    ws = Path(workspace).resolve()
    # an interrupted `densprune recluster` is finished first
    finish_centroids(ws, db.load_meta(ws).get("centroids_sha256"))
    key = index_key(ws, db.load_meta(ws))
    index = load_stored(ws, key)
    if index is None:
        index = build_index(ws)
        store(ws, key, index)
    return index


def build_index(ws: Path) -> PlanIndex:
    """The plan index built from the samples table (five columns of every row) and the centroids."""
    cols = db.index_columns(ws)
    negclip = None
    if db.load_meta(ws).get("negclip"):  # `densprune negclip DIR` scored the pairs
        path = negclip_scores(ws)
        negclip = np.load(path) if path.is_file() else None
        if negclip is None:
            log.warning("%s: meta names negCLIPLoss scores but %s is missing: the negclip method is off until "
                        "`densprune negclip` runs again", ws, path)
    return PlanIndex.build(clusters=cols.pop("cluster"), dist_to_centroid=cols.pop("dist"),
                           centroids=np.load(centroids_path(ws)), in_pool=cols.pop("pool"),
                           dup_max_sim=cols.pop("dup"), clip_score=cols.pop("clip"), negclip_score=negclip)
