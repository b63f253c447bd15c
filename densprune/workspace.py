"""The workspace's layout: every file and folder name in one place, the atomic ``.npy`` save, the
centroid commit protocol, the build stamp and where the demo workspace lives.

A workspace folder DIR holds::

    DIR/densprune.duckdb          metadata, scores, clusters, plans (renamed into place last: complete)
    DIR/.densprune.lock           the readers/writer lock of the database (filelock)
    DIR/embeddings/image.npy      (N, d) image vectors, L2-normalised (float16 or float32)
    DIR/embeddings/text.npy       (N, d) caption vectors (open_clip and released embeddings with text)
    DIR/embeddings/concept.npy    (N, d_c) vectors of a second embedder the concepts are built on
                                  (``--concept-embedder``; meta ``concept_embedder``), else absent
    DIR/centroids.npy             (K, d) float32, L2-normalised
    DIR/thumbs.bin                concatenated thumbnails, addressed by samples.thumb_offset/thumb_size
    DIR/plans/NAME.GEN.npy        (N,) bool keep masks, named by their ``plans`` row
    DIR/exports/                  exports written from the app, each with NAME.manifest.json
    DIR/index/plan-KEY/           the stored plan index (prune/plan_index.py)
    DIR/runs/RUN/                 training runs
    DIR/.work/                    resumable embedding shards while precompute runs

Shared by every layer (it imports nothing of densprune's).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

DB_NAME = "densprune.duckdb"
LOCK_NAME = ".densprune.lock"
EMBEDDINGS = "embeddings"
IMAGE_VECTORS = "image.npy"
TEXT_VECTORS = "text.npy"
CONCEPT_VECTORS = "concept.npy"
CENTROIDS = "centroids.npy"
THUMBS = "thumbs.bin"
PLANS = "plans"
EXPORTS = "exports"
INDEX = "index"
RUNS = "runs"
WORK = ".work"
TMP_SUFFIX = ".tmp"  # FILE.tmp: a file being written, renamed to FILE when whole


def embeddings_dir(workspace: str | os.PathLike) -> Path:
    return Path(workspace) / EMBEDDINGS


def image_vectors(workspace: str | os.PathLike) -> Path:
    return Path(workspace) / EMBEDDINGS / IMAGE_VECTORS


def text_vectors(workspace: str | os.PathLike) -> Path:
    return Path(workspace) / EMBEDDINGS / TEXT_VECTORS


def concept_vectors(workspace: str | os.PathLike) -> Path:
    """(N, d_c) vectors of the concept embedder (``--concept-embedder``), when the workspace has one."""
    return Path(workspace) / EMBEDDINGS / CONCEPT_VECTORS


def concept_space(workspace: str | os.PathLike, meta: dict) -> Path:
    """The vectors the concepts live in: what k-means, SemDeDup, the map, decontamination and recluster
    read. ``concept.npy`` when the workspace was built with a concept embedder (meta ``concept_dim``),
    else ``image.npy``; the CLIP score, search, negCLIPLoss and zero-shot names always read image.npy."""
    return concept_vectors(workspace) if meta.get("concept_dim") else image_vectors(workspace)


def describe_concept_space(meta: dict) -> str:
    """Which vectors the concepts were built on, in words (the meta's ``concept_embedder``)."""
    ce = meta.get("concept_embedder")
    if not ce:
        return "the embedder's image vectors"
    if ce.get("name") == "vectors":
        return f"precomputed concept vectors ({ce.get('model')}), {meta.get('concept_dim')}-d"
    weights = f" / {ce['pretrained']}" if ce.get("pretrained") else " / random weights"
    size = f", {ce['image_size']} px" if ce.get("image_size") else ""
    return f"{ce.get('name')} ({ce.get('model')}{weights}{size}), {meta.get('concept_dim')}-d"


def negclip_scores(workspace: str | os.PathLike) -> Path:
    """(N,) float32 negCLIPLoss per row, written by ``densprune negclip`` (densprune.pipeline.negclip)."""
    return Path(workspace) / EMBEDDINGS / "negclip.npy"


def centroids_path(workspace: str | os.PathLike) -> Path:
    return Path(workspace) / CENTROIDS


def thumbs_path(workspace: str | os.PathLike) -> Path:
    return Path(workspace) / THUMBS


def plans_dir(workspace: str | os.PathLike) -> Path:
    return Path(workspace) / PLANS


def exports_dir(workspace: str | os.PathLike) -> Path:
    return Path(workspace) / EXPORTS


def work_dir(workspace: str | os.PathLike) -> Path:
    return Path(workspace) / WORK


def tmp_path(path: Path) -> Path:
    """Where ``path`` is written before it is renamed into place."""
    return path.with_name(path.name + TMP_SUFFIX)


class OutsideWorkspace(ValueError):
    """A path stored in a workspace that leads outside the folder it must be in."""


def resolve_inside(workspace: str | os.PathLike, stored: str, folder: str) -> Path:
    """The file a path stored in the workspace names (``stored``, relative to DIR), resolved (symlinks
    followed) and checked to lie directly in ``DIR/folder``; OutsideWorkspace otherwise. Every path read
    from a workspace's tables goes through this before it is opened or removed, so that a shared or
    downloaded workspace cannot make densprune read or delete a file elsewhere."""
    ws = Path(workspace).resolve()
    root = (ws / folder).resolve()
    rel = Path(stored)
    if rel.is_absolute() or ".." in rel.parts or "\x00" in stored:
        raise OutsideWorkspace(f"{stored!r} is not a path inside {root}")
    full = (ws / rel).resolve()
    if full.parent != root:
        raise OutsideWorkspace(f"{stored!r} leads to {full}, outside {root}")
    return full


def save_npy(path: str | os.PathLike, arr: np.ndarray, dtype: str | np.dtype | None = None) -> Path:
    """Write ``arr`` (as ``dtype``, C order) to ``path.tmp``, flush it to disk and rename it to ``path``:
    a reader sees the old file or the new one, whole. The temporary file is removed when writing fails."""
    path = Path(path)
    tmp = tmp_path(path)
    try:
        with open(tmp, "wb") as fh:
            np.save(fh, np.ascontiguousarray(arr, dtype=dtype))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in ``chunk``-byte blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


# --- centroids: the commit protocol -----------------------------------------------------------
# precompute writes centroids.npy before the database exists (a workspace without its database is
# incomplete, so nothing reads them early). recluster replaces them under a live database: it writes
# centroids.npy.tmp, commits the new clusters with the file's sha256 in meta (one transaction), then
# renames the file into place. A process that finds centroids.npy.tmp whose sha256 the database already
# names finishes the rename (finish_centroids); one the database does not name is left alone.

def save_centroids(workspace: str | os.PathLike, centroids: np.ndarray) -> str:
    """Write DIR/centroids.npy (K, d) float32 atomically; returns its sha256 (kept in meta)."""
    path = save_npy(centroids_path(workspace), centroids, np.float32)
    return sha256_file(path)


def stage_centroids(workspace: str | os.PathLike, centroids: np.ndarray) -> str:
    """The first step of a recluster's commit: DIR/centroids.npy.tmp (K, d) float32, flushed; its sha256."""
    tmp = tmp_path(centroids_path(workspace))
    with open(tmp, "wb") as fh:
        np.save(fh, np.ascontiguousarray(centroids, dtype=np.float32))
        fh.flush()
        os.fsync(fh.fileno())
    return sha256_file(tmp)


def finish_centroids(workspace: str | os.PathLike, committed_sha256: str | None) -> bool:
    """Rename a staged centroids.npy.tmp into place when the database names its sha256 (the commit
    happened); True when it did. Another process finishing first is not an error."""
    tmp = tmp_path(centroids_path(workspace))
    if not committed_sha256 or not tmp.exists() or sha256_file(tmp) != committed_sha256:
        return False
    try:
        os.replace(tmp, centroids_path(workspace))
    except FileNotFoundError:  # someone else moved it in the meantime
        return sha256_file(centroids_path(workspace)) == committed_sha256
    return True


def build_stamp(workspace: str | os.PathLike) -> str:
    """Identity of one build of a workspace (its path and its centroid file's time): a cache key that
    changes on a rebuild or a recluster but not when a plan is saved."""
    ws = Path(workspace).resolve()
    cent = centroids_path(ws)
    return f"{ws}|{cent.stat().st_mtime_ns if cent.exists() else 0}"


def default_demo_workspace(package_dir: Path | None = None) -> Path:
    """Where ``densprune demo`` keeps the demo workspace: ``$DENSPRUNE_DEMO_WORKSPACE``, else
    ``workspaces/demo`` in a checkout, else ``$XDG_CACHE_HOME/densprune/demo`` (``~/.cache/...``)."""
    env = os.environ.get("DENSPRUNE_DEMO_WORKSPACE")
    if env:
        return Path(env)
    repo = (package_dir or Path(__file__).resolve().parent).parent
    if (repo / "pyproject.toml").is_file() and (repo / "densprune").is_dir():
        return repo / "workspaces" / "demo"
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "densprune" / "demo"
