"""Export a plan's keep set in the formats people train with, each with a manifest beside it.

Formats: parquet, csv (open_clip_train's CsvDataset), datacomp (sorted ``u8,u8`` uids), mask
(bool .npy), keys (one uid per line), webdataset (new tar shards with the kept samples only).
Everything is written under a temporary name and renamed into place; the manifest
(``PATH.manifest.json``) is removed first and written last, so an export with a manifest is complete
(an interrupted one has none: ``densprune verify`` reports it). It records the plan, the embedder, K, seed,
source, counts and the sha256 of every file written.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tarfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from densprune import __version__, db
from densprune.ingest.media import image_ext, tar_sample_instances, tar_sample_key, unsafe_member_name
from densprune.ingest.sources import read_bytes
from densprune.ingest.uids import arrow_uids_to_datacomp
from densprune.prune.plans import load_plan
from densprune.workspace import sha256_file
from densprune.workspace_lock import holds_shared_lock

log = logging.getLogger(__name__)

FORMATS = ("parquet", "csv", "datacomp", "mask", "keys", "webdataset")
IMAGE_FORMATS = ("csv", "webdataset")  # formats that copy the images: not for workspaces without image files


def formats_for(meta: dict) -> tuple[str, ...]:
    """The export formats a workspace supports (no image-copying format without image files)."""
    return FORMATS if meta.get("embedder") != "released" else tuple(f for f in FORMATS if f not in IMAGE_FORMATS)
DEFAULT_SUFFIX = {"parquet": ".parquet", "csv": ".csv", "datacomp": ".uids.npy", "mask": ".mask.npy",
                  "keys": ".keys.txt", "webdataset": ""}


def relative_locations_error(ws: Path, meta: dict) -> str | None:
    """What is wrong with a workspace whose samples have relative image locations (built from a relative
    SOURCE by a densprune that stored locations as given; now SOURCE is made absolute first). Such a path
    names a file only from the directory of that build, which nothing recorded. None when there are none."""
    n, example = db.relative_image_locations(ws)
    if not n:
        return None
    return (f"{n:,} samples have relative image locations (e.g. {example!r}, from the relative source "
            f"{meta.get('source')!r}): they resolve against the current directory, not the one the workspace was "
            "built in, so image exports and training would read other files or none; rebuild it from the absolute "
            f"path of its source (`densprune precompute /ABS/SOURCE --workspace {ws} --force`)")


TMP_MARK = ".tmp-"  # an export's temporary name: .NAME.tmp-PID beside NAME
MANIFEST_SUFFIX = ".manifest.json"


def _tmp_path(out: Path) -> Path:
    return out.with_name(f".{out.name}{TMP_MARK}{os.getpid()}")


def manifest_path(out: str | os.PathLike) -> Path:
    """The manifest of the export at ``out`` (its file or folder): ``OUT.manifest.json``; a manifest itself
    as it is."""
    out = Path(out)
    return out if out.name.endswith(MANIFEST_SUFFIX) else out.with_name(out.name + MANIFEST_SUFFIX)


def read_manifest(out: str | os.PathLike) -> dict:
    """The manifest of the export at ``out`` (ValueError naming the file when it is missing or unreadable;
    the format: docs/formats.md)."""
    path = manifest_path(out)
    try:
        man = json.loads(path.read_text())
        if not isinstance(man, dict) or not isinstance(man.get("files"), list) or "format" not in man:
            raise ValueError("not a densprune export manifest")
        int(man["counts"]["kept"])
    except FileNotFoundError:
        raise ValueError(f"{path}: missing") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: unreadable manifest ({type(exc).__name__}: {exc})") from None
    return man


def pending_path(out: str | os.PathLike) -> Path:
    """The claim an export holds on ``out`` while it writes there, ``.OUT.manifest.json.pending``: written
    before anything at ``out`` is touched, removed once the new manifest is in place. A killed export leaves
    it, so its half-finished files are still known as densprune's own (a rerun replaces them; verify reports
    the interrupted export)."""
    man = manifest_path(out)
    return man.with_name(f".{man.name}.pending")


def _claimed(out: Path) -> bool:
    """Whether an interrupted export to ``out`` left its claim (see pending_path)."""
    try:
        return Path(json.loads(pending_path(out).read_text())["out"]).resolve() == out.resolve()
    except (OSError, ValueError, KeyError, TypeError):
        return False


def list_exports(folder: str | os.PathLike) -> list[dict]:
    """One summary per readable manifest in ``folder``: file, plan, format, kept, created, bytes."""
    folder = Path(folder)
    rows = []
    for m in sorted(folder.glob("*" + MANIFEST_SUFFIX)) if folder.is_dir() else []:
        try:
            man = read_manifest(m)
        except ValueError:
            continue
        rows.append({"file": Path(man.get("out", m.name)).name, "plan": (man.get("plan") or {}).get("name"),
                     "format": man["format"], "kept": int(man["counts"]["kept"]), "created": man.get("created"),
                     "bytes": sum(int(f.get("bytes", 0)) for f in man["files"])})
    return rows


def _written_by_us(target: Path, out: Path) -> bool:
    """Whether ``target`` (``out`` itself, or a csv export's images folder) is what an earlier export to
    ``out`` wrote: by its manifest (a file it lists, or a folder all of whose files it lists), or by the claim
    an interrupted export to ``out`` left."""
    if _claimed(out):
        return True
    try:
        man = read_manifest(out)
    except ValueError:
        return False
    if Path(man.get("out", "")).resolve() != out.resolve():
        return False
    listed = {str(Path(f["path"]).resolve()) for f in man["files"]}
    if target.is_dir() and not target.is_symlink():
        inside = [q for q in target.rglob("*") if not q.is_dir()]
        return bool(inside) and all(str(q.resolve()) in listed for q in inside)
    return str(target.resolve()) in listed


def check_target(out: Path, fmt: str, workspace: Path) -> None:
    """Refuse an export path that would replace what densprune did not write (a ValueError saying what to do):
    densprune replaces only a previous export of its own at that path, identified by its manifest."""
    if out.name.endswith(MANIFEST_SUFFIX):
        raise ValueError(f"--out {out}: names ending in {MANIFEST_SUFFIX} are the exports' manifests; choose "
                         "another name")
    if out.name.startswith(".") and TMP_MARK in out.name:
        raise ValueError(f"--out {out}: that is the form of an export's temporary name; choose another name")
    ws = workspace.resolve()
    if out.resolve() == ws or ws.is_relative_to(out.resolve()):
        raise ValueError(f"--out {out} would replace the workspace {ws} (or a folder holding it); choose a new path, "
                         f"for example {ws / 'exports' / out.name}")
    targets = [out] + ([out.with_name(out.stem + "_images")] if fmt == "csv" else [])
    for target in targets:
        if (target.exists() or target.is_symlink()) and not _written_by_us(target, out):
            what = "folder" if target.is_dir() else "file"
            raise ValueError(f"{target} exists and is not an export densprune wrote there (no manifest "
                             f"{manifest_path(out).name} lists it), so it is left alone: choose another --out, or "
                             f"move the {what} away yourself")


def _finish(tmp: Path, out: Path) -> None:
    """Move ``tmp`` into place at ``out``, replacing the previous export there (check_target vouched for it)."""
    if out.is_dir() and not out.is_symlink():
        old = out.with_name(f".{out.name}.old{TMP_MARK}{os.getpid()}")
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
        return
    os.replace(tmp, out)  # a file is replaced by the rename itself


def _remove_tmp(path: Path) -> None:
    """Remove this process's temporary file or folder for ``path`` (after a failed write)."""
    tmp = _tmp_path(path)
    if tmp.is_dir() and not tmp.is_symlink():
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        tmp.unlink(missing_ok=True)


def _loc(value: str) -> tuple:
    return tuple(json.loads(value))


def write_parquet(df: pd.DataFrame, out: Path) -> list[Path]:
    tmp = _tmp_path(out)
    pq.write_table(pa.Table.from_pandas(df.drop(columns=["image_loc"]), preserve_index=False), tmp)
    _finish(tmp, out)
    return [out]


def write_csv(df: pd.DataFrame, out: Path) -> list[Path]:
    """Tab-separated ``filepath``/``title``; images that live inside shards are written out as files."""
    images_dir = out.with_name(out.stem + "_images")
    tmp_dir = _tmp_path(images_dir)
    written: list[Path] = []
    paths = []
    for uid, ref, loc in zip(df.uid, df.image_ref, df.image_loc):
        loc_t = _loc(loc)
        if loc_t[0] == "file":
            paths.append(str(Path(loc_t[1]).resolve()))
            continue
        data = read_bytes(loc_t)
        tmp_dir.mkdir(parents=True, exist_ok=True)
        name = f"{uid}.{image_ext(data, ref)}"
        (tmp_dir / name).write_bytes(data)
        paths.append(str((images_dir / name).resolve()))
    if tmp_dir.exists():
        _finish(tmp_dir, images_dir)
        written.extend(sorted(images_dir.iterdir()))
    titles = df.caption.fillna("").str.replace(r"[\t\r\n]+", " ", regex=True)
    tmp = _tmp_path(out)
    pd.DataFrame({"filepath": paths, "title": titles}).to_csv(tmp, sep="\t", index=False)
    _finish(tmp, out)
    return [out] + written


def write_webdataset(df: pd.DataFrame, out: Path, shard_size: int = 10_000) -> list[Path]:
    """New tar shards ``out/NNNNN.tar`` with only the kept samples.

    For a webdataset source every member of a kept sample (jpg, txt, json, ...) is copied; for other
    sources the shards hold ``key.<ext>``, ``key.txt`` (caption) and ``key.json`` (uid, row_idx, cluster).
    No member name is absolute or has a ``..`` part (a sample key that would give one is replaced by
    the sample's uid), so extracting a shard never writes outside its folder.
    """
    import webdataset as wds  # imported here: it imports torch (seconds), which no other format needs

    tmp_dir = _tmp_path(out)
    tmp_dir.mkdir(parents=True)
    tar_index: dict[str, dict[str, list[dict[str, tarfile.TarInfo]]]] = {}
    with wds.ShardWriter(str(tmp_dir / "%05d.tar"), maxcount=shard_size, verbose=0, mtime=0) as sink:
        for rec in df.itertuples(index=False):
            sink.write(_safe_names(_wds_sample(rec, tar_index), rec.uid))
    _finish(tmp_dir, out)
    return sorted(out.glob("*.tar"))


def _safe_names(sample: dict[str, object], uid: str) -> dict[str, object]:
    """``sample`` with a ``__key__`` that gives safe member names (``key.ext``): its uid when the key would
    not (defence in depth: ingest rejects such names); a ValueError when neither is safe."""
    names = [f"{sample['__key__']}.{ext}" for ext in sample if ext != "__key__"]
    if not any(unsafe_member_name(n) for n in names):
        return sample
    log.warning("webdataset export: sample %s has an unsafe member name (%s): written as %s.*", uid,
                next(n for n in names if unsafe_member_name(n)), uid)
    safe = dict(sample, __key__=uid)
    if not uid or any(unsafe_member_name(f"{uid}.{ext}") for ext in sample if ext != "__key__"):
        raise ValueError(f"webdataset export: sample {uid!r} has no safe member name")
    return safe


def _wds_sample(rec, tar_index: dict) -> dict[str, object]:
    """One kept row as a webdataset sample: its source members, or image + txt + json."""
    loc = _loc(rec.image_loc)
    if loc[0] == "tar":
        prefix = f"{loc[1]}#"  # image_ref is "<tar path>#<key>.<ext>" (the path may hold a '#')
        member = rec.image_ref[len(prefix):] if rec.image_ref.startswith(prefix) else rec.image_ref.split("#", 1)[1]
        key = member.rsplit(".", 1)[0]
        sample: dict[str, object] = {"__key__": key}
        members = _tar_members(tar_index, loc[1], key, loc[2])
        if not members:
            raise ValueError(f"webdataset export: {loc[1]} has no sample {key!r} any more (the shard changed since "
                             "the workspace was built: rebuild it with `densprune precompute --force`)")
        with open(loc[1], "rb") as src:
            for info in members:
                src.seek(info.offset_data)
                sample[tar_sample_key(info.name)[1]] = src.read(info.size)
        return sample
    data = read_bytes(loc)
    meta = {"uid": rec.uid, "row_idx": int(rec.row_idx), "cluster": int(rec.cluster), "caption": rec.caption}
    return {"__key__": rec.uid, image_ext(data, rec.image_ref): data, "txt": (rec.caption or "").encode("utf-8"),
            "json": json.dumps(meta).encode("utf-8")}


def _tar_members(cache: dict, tar_path: str, key: str, image_offset: int) -> list[tarfile.TarInfo]:
    """The members of sample ``key`` in source shard ``tar_path``: of the instance of that key whose image
    starts at ``image_offset`` (a repeated name), else its first (each shard indexed once per export)."""
    if tar_path not in cache:
        from densprune.ingest.text import storable

        with tarfile.open(tar_path, "r") as tf:
            cache[tar_path] = {storable(k): v for k, v in tar_sample_instances(tf).items()}
    instances = cache[tar_path].get(key, [])
    chosen = next((g for g in instances if any(i.offset_data == image_offset for i in g.values())),
                  instances[0] if instances else {})
    return list(chosen.values())


@holds_shared_lock("densprune export")  # refused while a precompute/recluster rewrites the workspace
def export_plan(workspace: str | os.PathLike, plan: str, fmt: str, out: str | os.PathLike | None = None) -> Path:
    """Write plan ``plan`` of ``workspace`` as ``fmt`` to ``out`` (default: DIR/exports/PLAN.<ext>).

    Returns the path written; its manifest is ``<out>.manifest.json``.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}: choose one of {', '.join(FORMATS)}")
    ws = Path(workspace)
    row, keep = load_plan(ws, plan)
    meta = db.load_meta(ws)
    if fmt not in formats_for(meta):
        raise ValueError(f"{ws} was built from released embeddings ({meta.get('source_kind')}) and holds no image "
                         f"files, so it cannot be exported as {fmt}: export 'datacomp' (uids for DataComp's "
                         "resharder) or 'parquet' (url, caption, uid) and download the images with img2dataset")
    if fmt in IMAGE_FORMATS and (problem := relative_locations_error(ws, meta)) is not None:
        raise ValueError(f"cannot export {fmt}: {problem}")
    if out:
        out_path = Path(out)
    else:
        out_path = ws / "exports" / (f"{plan}-wds" if fmt == "webdataset" else f"{plan}{DEFAULT_SUFFIX[fmt]}")
    check_target(out_path, fmt, ws)  # before anything is written or removed
    out_path.parent.mkdir(parents=True, exist_ok=True)
    man, pending = manifest_path(out_path), pending_path(out_path)
    claim = _tmp_path(pending)
    claim.write_text(json.dumps({"out": str(out_path.resolve()), "pid": os.getpid(), "plan": plan, "format": fmt}))
    os.replace(claim, pending)  # our claim on out_path, before anything there is touched
    man.unlink(missing_ok=True)  # the manifest marks a complete export: gone until this one is complete
    try:
        files = _write(ws, fmt, keep, out_path)
    except BaseException:  # a full disk, a kill signal turned exception, a bad source file: no half-written leftovers
        for path in (out_path, out_path.with_name(out_path.stem + "_images"), man):
            _remove_tmp(path)
        pending.unlink(missing_ok=True)  # nothing of ours is left at out_path: the old export or none
        raise
    manifest = _manifest(ws, plan, row, meta, fmt, keep, out_path, files)
    tmp = _tmp_path(man)
    try:
        tmp.write_text(json.dumps(manifest, indent=2, default=str))
        os.replace(tmp, man)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    pending.unlink(missing_ok=True)
    log.info("exported plan %s as %s: %d samples -> %s", plan, fmt, int(keep.sum()), out_path)
    return out_path


def _write(ws: Path, fmt: str, keep: np.ndarray, out_path: Path) -> list[Path]:
    """Write the export's files (each under a temporary name, renamed into place); the files written."""
    df = db.kept_samples(ws, keep) if fmt not in ("mask", "datacomp") else None
    if fmt == "parquet":
        files = write_parquet(df, out_path)
    elif fmt == "csv":
        files = write_csv(df, out_path)
    elif fmt == "datacomp":
        tmp = _tmp_path(out_path)
        with open(tmp, "wb") as fh:
            np.save(fh, arrow_uids_to_datacomp(db.kept_uids(ws, keep)))
        _finish(tmp, out_path)
        files = [out_path]
    elif fmt == "mask":
        tmp = _tmp_path(out_path)
        with open(tmp, "wb") as fh:
            np.save(fh, keep.astype(bool))
        _finish(tmp, out_path)
        files = [out_path]
    elif fmt == "keys":
        tmp = _tmp_path(out_path)
        tmp.write_text("".join(u + "\n" for u in df.uid))
        _finish(tmp, out_path)
        files = [out_path]
    else:
        files = write_webdataset(df, out_path)
    return files


def _manifest(ws: Path, plan: str, row: dict, meta: dict, fmt: str, keep: np.ndarray, out_path: Path,
              files: list[Path]) -> dict:
    """The manifest of an export (docs/formats.md): what was exported, from what, and every file's sha256."""
    return {
        "densprune_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "format": fmt,
        "out": str(out_path.resolve()),
        "plan": {"name": plan, "method": row["method"], "params": row["params"], "notes": row.get("notes") or ""},
        "workspace": str(ws.resolve()),
        "source": meta.get("source"),
        "embedder": meta.get("embedder"), "model": meta.get("model"), "pretrained": meta.get("pretrained"),
        "k": meta.get("k"), "seed": meta.get("seed"),
        "counts": {"kept": int(keep.sum()), "pool": int(row["pool_size"]), "samples": int(keep.size),
                   "budget": int(row["budget"])},
        "files": [{"path": str(f.resolve()), "bytes": f.stat().st_size, "sha256": sha256_file(f)} for f in files],
        "decisions": _decisions(ws, row),
    }


def _decisions(ws: Path, row: dict) -> dict | None:
    """The decision snapshot the plan used (digest, clustering, rules, tags with their row counts, and what
    each decision moved), or None for a plan computed without decisions. Its rows stay in the workspace
    (``snapshot_rows``): re-running the plan from it gives the same mask."""
    digest = row.get("decisions")
    if not isinstance(digest, str) or not digest:
        return None
    got = db.load_snapshot(ws, digest)
    if got is None:
        raise ValueError(f"plan {row['name']!r} names decision snapshot {digest}, which {ws} does not hold")
    snap, _ = got
    effects = row.get("effects")
    return {"digest": digest, "clustering": snap["clustering"], "rules": json.loads(snap["rules"]),
            "tags": json.loads(snap["tags"]), "effects": json.loads(effects) if isinstance(effects, str) else None}
