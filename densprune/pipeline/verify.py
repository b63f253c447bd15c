"""``densprune verify``: does a workspace (and its exports) still hold together?

Checks, each naming the file at fault:

- the tables against each other: samples.row_idx is 0..N-1, every sample in a cluster 0..K-1, the
  clusters' sizes are their member counts, meta's n_samples / n_pool / n_rejects / k are the counts;
- the ``.npy`` files against the tables: embeddings/image.npy (and text.npy) have N rows of meta's
  dims, no NaN/inf rows; centroids.npy is (K, d), finite, unit rows; thumbs.bin holds every thumbnail;
- every plan: its mask exists, is (N,) bool, keeps n_kept rows, all in the pool; plan_clusters has K
  rows summing to n_kept; a mask file without a plan row (an interrupted save) is reported;
- every export (``DIR/exports/*.manifest.json`` and ``--export FILE``): each file the manifest lists
  exists with its size and sha256, the kept count of the file is the manifest's; an export file
  without a manifest (an interrupted export) is reported.

The library returns :class:`Problem` records; the CLI prints one line each and exits 1 when any.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pyarrow.parquet as pq

from densprune import db

log = logging.getLogger(__name__)

__all__ = ["Problem", "repair", "verify_workspace", "verify_export"]

BLOCK_ROWS = 65_536  # rows of an embedding file checked for NaN/inf at a time
STRAY_MASK = "a plan mask with no plan row"


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing that does not hold: the file it is about and what is wrong."""

    file: str
    message: str
    removable: bool = False  # a leftover of an interrupted write: `densprune verify --repair` removes ``file``

    def __str__(self) -> str:
        return f"{self.file}: {self.message}"


def verify_workspace(workspace: str | os.PathLike, exports: bool = True) -> list[Problem]:
    """Every problem of ``workspace`` (an empty list when all holds); ``exports``: also check DIR/exports."""
    ws = Path(workspace)
    if not db.is_complete(ws):
        return [Problem(str(db.db_path(ws)), "missing: the workspace is incomplete (an interrupted precompute "
                                             "resumes with the same `densprune precompute` command)")]
    try:
        meta = db.load_meta(ws)
        facts = db.integrity_facts(ws)
    except (db.WorkspaceDamaged, duckdb.Error) as exc:
        return [Problem(str(db.db_path(ws)), f"cannot be read: {exc}")] + _leftovers(ws, {})
    problems = _tables(ws, meta, facts)
    n, k = int(facts["samples"]["n"]), int(facts["clusters"]["n"])
    problems += _embeddings(ws, meta, n)
    problems += _centroids(ws, meta, k)
    problems += _thumbs(ws, facts)
    problems += _plans(ws, facts, n, k)
    problems += _decisions(ws)
    problems += [p for p in [relative_location_problem(ws, meta)] if p is not None]
    problems += _leftovers(ws, meta)
    if exports:
        problems += _exports_folder(ws)
    return problems


# --------------------------------------------------------------------------------------------
# leftovers of interrupted writes
# --------------------------------------------------------------------------------------------

LEFTOVER_AGE_S = 60.0  # a temporary file without a PID this old belongs to no running writer


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _writer_gone(path: Path) -> bool:
    """Whether the process that writes ``path`` (a temporary name) is gone: its PID (``...tmp-PID``) is not
    running, or, for a name without a PID, it has not changed for LEFTOVER_AGE_S."""
    from densprune.export.writers import TMP_MARK

    tail = path.name.rsplit(TMP_MARK, 1)[-1] if TMP_MARK in path.name else ""
    if tail.isdigit():
        return not _pid_alive(int(tail))
    try:
        return time.time() - path.lstat().st_mtime > LEFTOVER_AGE_S
    except FileNotFoundError:
        return False


def _writer_gone_pid(pending: Path) -> bool:
    """Whether the export that holds the claim ``pending`` (its JSON records the PID) is gone."""
    try:
        return not _pid_alive(int(json.loads(pending.read_text())["pid"]))
    except (OSError, ValueError, KeyError, TypeError):
        return True


def _leftovers(ws: Path, meta: dict) -> list[Problem]:
    """Temporary files and folders that interrupted writes left in the workspace (their writers are gone)."""
    from densprune.export.writers import TMP_MARK
    from densprune.workspace import CENTROIDS, EMBEDDINGS, EXPORTS, INDEX, PLANS, TMP_SUFFIX, sha256_file, tmp_path

    out = []
    candidates = [ws / (db.DB_NAME + TMP_SUFFIX), ws / (db.DB_NAME + TMP_SUFFIX + ".wal"), tmp_path(ws / "thumbs.bin")]
    candidates += sorted((ws / EMBEDDINGS).glob("*" + TMP_SUFFIX)) + sorted((ws / PLANS).glob("*" + TMP_SUFFIX))
    candidates += sorted((ws / EXPORTS).glob(f".*{TMP_MARK}*")) + sorted((ws / INDEX).glob(".plan-*" + TMP_SUFFIX))
    for path in candidates:
        if (path.exists() or path.is_symlink()) and _writer_gone(path):
            out.append(Problem(str(path), "a temporary file left by an interrupted write (its writer is gone); "
                                          "`densprune verify --repair` removes it", removable=True))
    staged = tmp_path(ws / CENTROIDS)
    if staged.exists():
        if meta.get("centroids_sha256") and sha256_file(staged) == meta["centroids_sha256"]:
            out.append(Problem(str(staged), "the centroids an interrupted recluster committed, not yet renamed into "
                                            "place; opening the workspace (or `densprune verify --repair`) finishes it",
                               removable=True))
        elif _writer_gone(staged):
            out.append(Problem(str(staged), "centroids of a recluster that did not commit; `densprune verify "
                                            "--repair` removes them", removable=True))
    for pending in sorted((ws / EXPORTS).glob(".*.manifest.json.pending")):
        if _writer_gone_pid(pending):
            out.append(Problem(str(pending), "an export was interrupted here: its files are incomplete; run the same "
                                             "export again (it replaces them)"))
    return out


def repair(workspace: str | os.PathLike, problems: list[Problem]) -> list[str]:
    """Remove the leftovers among ``problems`` (``removable``) and stray plan masks; finish a committed
    recluster's centroid rename. Returns what was done, one line each. Nothing else is touched."""
    from densprune.workspace import CENTROIDS, finish_centroids, tmp_path

    ws = Path(workspace)
    done = []
    for p in problems:
        path = Path(p.file)
        if path == tmp_path(ws / CENTROIDS) and finish_centroids(ws, db.load_meta(ws).get("centroids_sha256")):
            done.append(f"moved {path} into place")
            continue
        if not (p.removable or p.message.startswith(STRAY_MASK)):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
        done.append(f"removed {path}")
    return done


def _tables(ws: Path, meta: dict, facts: dict) -> list[Problem]:
    f, s, c = str(db.db_path(ws)), facts["samples"], facts["clusters"]
    out = []
    n = int(s["n"])
    if n and (s["n_distinct_rows"] != n or s["min_row"] != 0 or s["max_row"] != n - 1):
        out.append(Problem(f, f"samples.row_idx is not 0..{n - 1} without gaps (min {s['min_row']}, max "
                              f"{s['max_row']}, {s['n_distinct_rows']} distinct of {n})"))
    if s["null_clusters"] or (n and (s["min_cluster"] < 0 or s["max_cluster"] >= c["n"])):
        out.append(Problem(f, f"samples.cluster outside 0..{c['n'] - 1} ({s['null_clusters']} NULL, min "
                              f"{s['min_cluster']}, max {s['max_cluster']})"))
    for cl, members, size in facts["size_mismatch"][:5]:
        out.append(Problem(f, f"cluster {cl}: clusters.size says {size}, samples has {members} members"))
    for key, value in (("n_samples", n), ("n_pool", int(s["n_pool"])), ("n_rejects", facts["n_rejects"]),
                       ("k", int(c["n"]))):
        if key in meta and int(meta[key]) != value:
            out.append(Problem(f, f"meta {key} = {meta[key]} but the tables hold {value}"))
    return out


def _decisions(ws: Path) -> list[Problem]:
    """Tags and snapshots hold together: every tagged row exists, once per tag, in a tag that exists; every
    plan's decision snapshot is stored."""
    f, d = str(db.db_path(ws)), db.decision_facts(ws)
    out = []
    for key, what in (("out_of_range", "tagged rows outside the samples"), ("duplicated", "rows tagged twice by "
                      "one tag"), ("orphan_rows", "tagged rows of tags that do not exist")):
        if d[key]:
            out.append(Problem(f, f"{d[key]:,} {what}"))
    for plan in d["missing_snapshots"]:
        out.append(Problem(f, f"plan {plan!r} names a decision snapshot the workspace does not hold"))
    return out


def _embeddings(ws: Path, meta: dict, n: int) -> list[Problem]:
    out = []
    for name, dim_key, required in (("image.npy", "image_dim", True), ("text.npy", "text_dim", False),
                                    ("concept.npy", "concept_dim", False)):
        path = ws / "embeddings" / name
        if not path.exists():
            if required or meta.get(dim_key):
                out.append(Problem(str(path), "missing"))
            continue
        try:
            arr = np.load(path, mmap_mode="r")
        except (ValueError, OSError) as exc:
            out.append(Problem(str(path), f"unreadable .npy ({exc})"))
            continue
        dim = meta.get(dim_key)
        if arr.ndim != 2 or arr.shape[0] != n or (dim and arr.shape[1] != int(dim)):
            out.append(Problem(str(path), f"shape {arr.shape}, expected ({n}, {dim}): one row per sample"))
            continue
        bad = sum(int((~np.isfinite(np.asarray(arr[i:i + BLOCK_ROWS], np.float32))).any(axis=1).sum())
                  for i in range(0, n, BLOCK_ROWS))
        if bad:
            out.append(Problem(str(path), f"{bad} rows with NaN or inf"))
    return out


def _centroids(ws: Path, meta: dict, k: int) -> list[Problem]:
    path = ws / "centroids.npy"
    if not path.exists():
        return [Problem(str(path), "missing")]
    try:
        c = np.load(path)
    except (ValueError, OSError) as exc:
        return [Problem(str(path), f"unreadable .npy ({exc})")]
    dim = meta.get("concept_dim") or meta.get("image_dim")  # the space the concepts were clustered in
    if c.ndim != 2 or c.shape[0] != k or (dim and c.shape[1] != int(dim)):
        return [Problem(str(path), f"shape {c.shape}, expected ({k}, {dim}): one centroid per row of clusters")]
    if not np.isfinite(c).all():
        return [Problem(str(path), "NaN or inf in the centroids")]
    norms = np.linalg.norm(c.astype(np.float64), axis=1)
    if np.abs(norms - 1).max() > 1e-3:
        return [Problem(str(path), f"centroids are not unit vectors (norms {norms.min():.4f}..{norms.max():.4f})")]
    return []


def relative_location_problem(ws: Path, meta: dict) -> Problem | None:
    """Samples whose image location is a relative path (densprune.export.writers.relative_locations_error)."""
    from densprune.export.writers import relative_locations_error

    msg = relative_locations_error(ws, meta)
    return None if msg is None else Problem(str(db.db_path(ws)), msg)


def _thumbs(ws: Path, facts: dict) -> list[Problem]:
    path, end = ws / "thumbs.bin", facts["samples"]["thumbs_end"]
    if end is None or int(end) <= 0:  # no thumbnails (released embeddings: offset -1, size 0)
        return []
    if not path.exists():
        return [Problem(str(path), "missing")]
    size = path.stat().st_size
    if size < int(end):
        return [Problem(str(path), f"{size:,} bytes, but the thumbnails of samples reach byte {int(end):,}")]
    return []


def _plans(ws: Path, facts: dict, n: int, k: int) -> list[Problem]:
    from densprune.prune.plans import plan_file

    out = []
    pool = db.load_sample_arrays(ws, ("split",))["split"] == "pool" if len(facts["plans"]) else None
    pc = facts["plan_clusters"].set_index("plan")
    listed = set()
    for row in facts["plans"].itertuples(index=False):
        try:
            path = plan_file(ws, row.keep_file, row.name)
        except ValueError as exc:
            out.append(Problem(str(db.db_path(ws)), str(exc)))
            continue
        listed.add(path)
        if row.name not in pc.index or int(pc.loc[row.name, "n_clusters"]) != k:
            have = 0 if row.name not in pc.index else int(pc.loc[row.name, "n_clusters"])
            out.append(Problem(str(db.db_path(ws)), f"plan {row.name}: {have} plan_clusters rows, expected {k}"))
        elif int(pc.loc[row.name, "kept"]) != int(row.n_kept):
            out.append(Problem(str(db.db_path(ws)), f"plan {row.name}: plan_clusters keep "
                                                    f"{int(pc.loc[row.name, 'kept'])}, plans.n_kept is {row.n_kept}"))
        out += _plan_mask(path, row, n, pool)
    plans_dir = ws / "plans"
    for stray in sorted(plans_dir.glob("*.npy")) if plans_dir.exists() else ():
        if stray.resolve() not in listed:
            out.append(Problem(str(stray), STRAY_MASK + " (left by an interrupted plan save or delete): not a plan; "
                                           "`densprune verify --repair` removes it"))
    return out


def _plan_mask(path: Path, row, n: int, pool: np.ndarray | None) -> list[Problem]:
    if not path.exists():
        return [Problem(str(path), f"missing: the mask of plan {row.name}")]
    try:
        keep = np.load(path)
    except (ValueError, OSError) as exc:
        return [Problem(str(path), f"unreadable .npy ({exc})")]
    if keep.dtype != bool or keep.shape != (n,):
        return [Problem(str(path), f"{keep.dtype} {keep.shape}, expected bool ({n},): one flag per sample")]
    out = []
    if int(keep.sum()) != int(row.n_kept):
        out.append(Problem(str(path), f"keeps {int(keep.sum())} rows, plan {row.name} says n_kept = {row.n_kept}"))
    if pool is not None and (keep & ~pool).any():
        out.append(Problem(str(path), f"keeps {int((keep & ~pool).sum())} held-out (eval) rows"))
    return out


# --------------------------------------------------------------------------------------------
# exports
# --------------------------------------------------------------------------------------------

def verify_export(path: str | os.PathLike) -> list[Problem]:
    """Problems of one export (its file or folder, or its ``.manifest.json``)."""
    from densprune.export.writers import manifest_path, read_manifest, sha256_file

    man_path = manifest_path(path)
    if not man_path.exists():
        return [Problem(str(man_path), "missing: no manifest, so the export is incomplete (interrupted?) or not "
                                       "densprune's; export it again")]
    try:
        man = read_manifest(man_path)
        files, fmt, kept = man["files"], man["format"], int(man["counts"]["kept"])
    except ValueError as exc:
        return [Problem(str(man_path), str(exc).split(": ", 1)[-1])]
    out = []
    for f in files:
        p = Path(f["path"])
        if not p.exists():
            out.append(Problem(str(p), f"missing (listed in {man_path.name})"))
        elif p.stat().st_size != int(f["bytes"]):
            out.append(Problem(str(p), f"{p.stat().st_size:,} bytes, the manifest says {int(f['bytes']):,}"))
        elif sha256_file(p) != f["sha256"]:
            out.append(Problem(str(p), "sha256 differs from the manifest's: the file changed after the export"))
    if out:
        return out
    try:
        found = _count_kept(Path(man["out"]), fmt, files)
    except Exception as exc:  # a file of the wrong format: say so, whatever the reader raised
        return [Problem(man["out"], f"cannot read it as {fmt} ({type(exc).__name__}: {exc})")]
    if found is not None and found != kept:
        out.append(Problem(man["out"], f"holds {found} samples, the manifest says {kept} kept"))
    return out


def _count_kept(out: Path, fmt: str, files: list[dict]) -> int | None:
    """The number of kept samples the export's own files hold."""
    if fmt == "parquet":
        return pq.ParquetFile(out).metadata.num_rows
    if fmt == "csv":
        with open(out, "rb") as fh:
            return sum(1 for _ in fh) - 1  # header; captions have tabs and newlines replaced
    if fmt == "datacomp":
        return int(np.load(out).shape[0])
    if fmt == "mask":
        return int(np.load(out).sum())
    if fmt == "keys":
        return sum(1 for line in out.read_text().splitlines() if line)
    if fmt == "webdataset":
        keys = set()
        for f in files:
            with tarfile.open(f["path"]) as tf:
                keys.update(m.name.split("/")[-1].split(".", 1)[0] for m in tf.getmembers() if m.isfile())
        return len(keys)
    return None


def _exports_folder(ws: Path) -> list[Problem]:
    """Every manifest in DIR/exports, and every export there without one."""
    from densprune.export.writers import manifest_path

    d = ws / "exports"
    if not d.exists():
        return []
    out = []
    for entry in sorted(d.iterdir()):
        if entry.name.startswith("."):  # a writer's temporary file (.NAME.tmp-PID): never looks complete
            continue
        if entry.name.endswith(".manifest.json"):
            out += verify_export(entry)
        elif entry.is_dir() and entry.name.endswith("_images"):  # a csv export's images, in its manifest
            continue
        elif not manifest_path(entry).exists():
            out.append(Problem(str(entry), "an export with no manifest (interrupted?): not complete; export again"))
    return out
