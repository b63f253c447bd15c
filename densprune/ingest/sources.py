"""Readers for the data sources densprune ingests: they enumerate samples, they do not decode.

A source is one of
- ``demo``: the bundled Open Clip Art bundle (parquet shards with image bytes) in ``data/``;
- a folder of images (caption from a sidecar ``.txt`` beside each image, or none);
- a CSV/TSV/parquet table with an image path column and a caption column
  (or, for parquet, a column of image bytes);
- webdataset tar shards as img2dataset writes them (``key.jpg`` + ``key.txt`` + ``key.json``),
  given as a folder, a file, a glob or a brace pattern (``shards/{00000..00009}.tar``).

Every sample becomes a :class:`SampleRef`; the bytes are read later (in DataLoader workers) by
:func:`read_bytes`. Problems found while enumerating are returned as :class:`Reject` records.
"""

from __future__ import annotations

import functools
import glob
import json
import logging
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from densprune.ingest.media import IMAGE_EXTS, group_tar_members
from densprune.ingest.uids import normalize_uid, uid_from_key

log = logging.getLogger(__name__)

PATH_COLUMNS = ("filepath", "image_path", "path", "file", "filename", "image", "url")
CAPTION_COLUMNS = ("caption", "title", "text", "prompt", "description")
BYTES_COLUMNS = ("image", "jpg", "image_bytes", "bytes")


@dataclass(frozen=True, slots=True)
class SampleRef:
    """One sample of a source, before decoding.

    ``loc`` says how to read the bytes: ("file", path) | ("tar", path, offset, size) |
    ("parquet", path, row, column).
    """

    key: str
    uid: str
    caption: str
    image_ref: str
    loc: tuple
    category: str | None = None
    orig_width: int = -1
    orig_height: int = -1


@dataclass(frozen=True, slots=True)
class Reject:
    """An input that did not become a sample, and why."""

    key: str
    image_ref: str
    stage: str
    reason: str


@dataclass
class SourceListing:
    """The samples of a source in a stable order, plus what was rejected while listing."""

    kind: str
    spec: str
    refs: list[SampleRef]
    rejects: list[Reject] = field(default_factory=list)
    has_categories: bool = False


class SourceError(ValueError):
    """A source that cannot be read at all (wrong path, missing columns...)."""


def demo_data_dir() -> Path:
    """The bundled demo folder: ``$DENSPRUNE_DEMO_DATA``, else the package's ``densprune.demo_data``
    (the repository's ``data/`` folder, shipped inside the wheel), else ``data/openclipart`` of a checkout."""
    env = os.environ.get("DENSPRUNE_DEMO_DATA")
    if env:
        return Path(env)
    try:
        import densprune.demo_data as demo_pkg

        return Path(demo_pkg.__file__).resolve().parent / "openclipart"
    except ImportError:  # running from a checkout that was never installed
        return Path(__file__).resolve().parents[2] / "data" / "openclipart"


def list_source(spec: str, image_column: str | None = None, caption_column: str | None = None) -> SourceListing:
    """Enumerate the samples of ``spec`` (see the module docstring) in a stable order."""
    if spec == "demo":
        root = demo_data_dir()
        if not root.is_dir():
            raise SourceError(f"the bundled demo data is missing: {root} (reinstall densprune, or rebuild it with data/build_demo.py in a checkout)")
        listing = _list_parquet_files(sorted(root.glob("*.parquet")), str(root), image_column, caption_column)
        listing.kind, listing.spec = "demo", "demo"
        return listing
    tars = _expand_tars(spec)
    if tars:
        return _list_webdataset(tars, spec)
    path = Path(spec)
    if not path.exists():
        raise SourceError(f"source not found: {spec} (give a folder, a .csv/.tsv/.parquet file, tar shards, or 'demo')")
    if path.is_dir():
        parquets = sorted(path.glob("*.parquet"))
        if parquets:
            return _list_parquet_files(parquets, str(path), image_column, caption_column)
        return _list_folder(path)
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv", ".txt"):
        return _list_csv(path, image_column, caption_column)
    if suffix == ".parquet":
        return _list_parquet_files([path], str(path), image_column, caption_column)
    raise SourceError(f"unsupported source file type {suffix!r}: {spec}")


def _expand_tars(spec: str) -> list[str]:
    if "{" in spec and ".." in spec:
        import braceexpand

        return [p for p in braceexpand.braceexpand(spec)]
    if any(ch in spec for ch in "*?["):
        return sorted(p for p in glob.glob(spec) if p.endswith(".tar"))
    if spec.endswith(".tar"):
        return [spec]
    if os.path.isdir(spec):
        tars = sorted(glob.glob(os.path.join(spec, "*.tar")))
        return tars
    return []


def _list_folder(root: Path) -> SourceListing:
    refs: list[SampleRef] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            if not name.lower().endswith(IMAGE_EXTS):
                continue
            full = Path(dirpath) / name
            rel = full.relative_to(root).as_posix()
            sidecar = full.with_suffix(".txt")
            caption = sidecar.read_text(encoding="utf-8", errors="replace").strip() if sidecar.exists() else ""
            parent = Path(rel).parent.as_posix()
            refs.append(
                SampleRef(
                    key=rel,
                    uid=uid_from_key(rel),
                    caption=caption,
                    image_ref=str(full),
                    loc=("file", str(full)),
                    category=None if parent == "." else parent,
                )
            )
    if not refs:
        raise SourceError(f"no images ({', '.join(IMAGE_EXTS)}) found under {root}")
    has_cat = any(r.category for r in refs)
    return SourceListing("folder", str(root), refs, has_categories=has_cat)


def _pick(columns: list[str], wanted: str | None, candidates: tuple[str, ...], what: str, source: str) -> str:
    if wanted:
        if wanted not in columns:
            raise SourceError(f"{source}: no column {wanted!r} (columns: {', '.join(columns)})")
        return wanted
    for cand in candidates:
        if cand in columns:
            return cand
    raise SourceError(
        f"{source}: cannot find the {what} column among {', '.join(columns)}; name it with "
        f"--{'image' if what == 'image' else 'caption'}-column"
    )


def _list_csv(path: Path, image_column: str | None, caption_column: str | None) -> SourceListing:
    import pandas as pd

    sep = "\t" if path.suffix.lower() in (".tsv", ".txt") else None
    df = pd.read_csv(path, sep=sep, engine="python", dtype=str, keep_default_na=False)
    cols = list(df.columns)
    img_col = _pick(cols, image_column, PATH_COLUMNS, "image", str(path))
    cap_col = _pick(cols, caption_column, CAPTION_COLUMNS, "caption", str(path)) if (caption_column or any(c in cols for c in CAPTION_COLUMNS)) else None
    return _table_refs(df.to_dict("records"), img_col, cap_col, path, "csv")


def _table_refs(records: list[dict], img_col: str, cap_col: str | None, path: Path, kind: str) -> SourceListing:
    refs: list[SampleRef] = []
    rejects: list[Reject] = []
    base = path.parent
    for i, rec in enumerate(records):
        raw = str(rec.get(img_col) or "").strip()
        key = f"{path.name}:{i + 2 if kind == 'csv' else i}"
        if not raw:
            rejects.append(Reject(key, "", "list", f"{path} row {key.split(':')[1]}: empty {img_col!r}"))
            continue
        full = Path(raw) if os.path.isabs(raw) else base / raw
        if not full.exists():
            rejects.append(Reject(key, str(full), "list", f"{path} row {key.split(':')[1]}: file not found: {full}"))
            continue
        uid = normalize_uid(rec.get("uid")) or uid_from_key(raw)
        cat = rec.get("category") or None
        refs.append(
            SampleRef(key=raw, uid=uid, caption=str(rec.get(cap_col) or "") if cap_col else "",
                      image_ref=str(full), loc=("file", str(full)), category=str(cat) if cat else None)
        )
    if not refs:
        raise SourceError(f"{path}: no usable rows ({len(rejects)} rejected, first: {rejects[0].reason if rejects else '-'})")
    return SourceListing(kind, str(path), refs, rejects, has_categories=any(r.category for r in refs))


def _list_parquet_files(files: list[Path], spec: str, image_column: str | None, caption_column: str | None) -> SourceListing:
    if not files:
        raise SourceError(f"no parquet files in {spec}")
    refs: list[SampleRef] = []
    rejects: list[Reject] = []
    table_records: list[dict] = []
    bytes_mode = None
    for f in files:
        schema = pq.read_schema(f)
        cols = list(schema.names)
        binary_cols = [n for n in cols if str(schema.field(n).type) in ("binary", "large_binary")]
        if image_column:
            img_col = _pick(cols, image_column, (), "image", str(f))
        elif binary_cols:
            img_col = next((c for c in BYTES_COLUMNS if c in binary_cols), binary_cols[0])
        else:
            img_col = _pick(cols, None, PATH_COLUMNS, "image", str(f))
        is_bytes = img_col in binary_cols
        if bytes_mode is None:
            bytes_mode = is_bytes
        cap_col = _pick(cols, caption_column, CAPTION_COLUMNS, "caption", str(f)) if (caption_column or any(c in cols for c in CAPTION_COLUMNS)) else None
        meta_cols = [c for c in cols if c != img_col]
        meta = pq.read_table(f, columns=meta_cols).to_pylist()
        if not is_bytes:
            table_records.extend(meta)
            refs_listing = _table_refs(meta, img_col, cap_col, Path(f), "parquet")
            refs.extend(refs_listing.refs)
            rejects.extend(refs_listing.rejects)
            continue
        for row, rec in enumerate(meta):
            key = str(rec.get("key") or f"{Path(f).name}:{row}")
            uid = normalize_uid(rec.get("uid")) or uid_from_key(f"{Path(f).name}/{key}")
            cat = rec.get("category")
            refs.append(
                SampleRef(
                    key=key,
                    uid=uid,
                    caption=str(rec.get(cap_col) or "") if cap_col else "",
                    image_ref=f"{Path(f).resolve()}#row={row}",
                    loc=("parquet", str(Path(f).resolve()), row, img_col),
                    category=str(cat) if cat else None,
                    orig_width=int(rec.get("width") or rec.get("original_width") or -1),
                    orig_height=int(rec.get("height") or rec.get("original_height") or -1),
                )
            )
    return SourceListing("parquet", spec, refs, rejects, has_categories=any(r.category for r in refs))


def _list_webdataset(tars: list[str], spec: str) -> SourceListing:
    refs: list[SampleRef] = []
    rejects: list[Reject] = []
    for tar_path in tars:
        if not os.path.exists(tar_path):
            rejects.append(Reject(tar_path, tar_path, "list", f"shard not found: {tar_path}"))
            continue
        shard = Path(tar_path).name
        groups: dict[str, dict[str, tarfile.TarInfo]] = {}
        try:
            with tarfile.open(tar_path, "r") as tf:
                groups = group_tar_members(tf)
                texts = {k: _read_member(tf, g.get("txt")) for k, g in groups.items()}
                jsons = {k: _read_member(tf, g.get("json")) for k, g in groups.items()}
        except (tarfile.TarError, OSError) as exc:
            rejects.append(Reject(shard, tar_path, "list", f"{tar_path}: unreadable tar shard ({exc}); samples listed before the error kept"))
        for k in groups:
            g = groups[k]
            img_ext = next((e for e in ("jpg", "jpeg", "png", "webp") if e in g), None)
            ref = f"{Path(tar_path).resolve()}#{k}"
            if img_ext is None:
                rejects.append(Reject(f"{shard}/{k}", ref, "list", f"{tar_path}: sample {k} has no image member ({', '.join(sorted(g))})"))
                continue
            meta: dict = {}
            if jsons.get(k):
                try:
                    meta = json.loads(jsons[k])
                except json.JSONDecodeError:
                    meta = {}
            info = g[img_ext]
            uid = normalize_uid(meta.get("uid")) or uid_from_key(f"{shard}/{k}")
            refs.append(
                SampleRef(
                    key=f"{shard}/{k}",
                    uid=uid,
                    caption=(texts.get(k) or meta.get("caption") or "").strip(),
                    image_ref=f"{ref}.{img_ext}",
                    loc=("tar", str(Path(tar_path).resolve()), info.offset_data, info.size),
                    orig_width=int(meta.get("original_width") or meta.get("width") or -1),
                    orig_height=int(meta.get("original_height") or meta.get("height") or -1),
                )
            )
    if not refs:
        raise SourceError(f"no samples in webdataset shards {spec}")
    return SourceListing("webdataset", spec, refs, rejects)


def _read_member(tf: tarfile.TarFile, info: tarfile.TarInfo | None) -> str | None:
    if info is None:
        return None
    fh = tf.extractfile(info)
    return fh.read().decode("utf-8", errors="replace") if fh else None


@functools.lru_cache(maxsize=64)
def _row_group_starts(path: str) -> np.ndarray:
    """First row of each row group of a parquet file, and its row count at the end: (groups + 1,)."""
    meta = pq.ParquetFile(path).metadata
    return np.cumsum([0] + [meta.row_group(g).num_rows for g in range(meta.num_row_groups)])


@functools.lru_cache(maxsize=4)
def _parquet_row_group(path: str, column: str, group: int) -> list:
    return pq.ParquetFile(path).read_row_group(group, columns=[column]).column(0).to_pylist()


def read_bytes(loc: tuple) -> bytes:
    """Read the encoded image bytes of a sample located by ``SampleRef.loc``."""
    kind = loc[0]
    if kind == "file":
        with open(loc[1], "rb") as fh:
            return fh.read()
    if kind == "tar":
        _, path, offset, size = loc
        with open(path, "rb") as fh:
            fh.seek(offset)
            return fh.read(size)
    if kind == "parquet":
        _, path, row, column = loc
        starts = _row_group_starts(path)
        if not 0 <= row < starts[-1]:
            raise OSError(f"{path} has no row {row}")
        group = int(np.searchsorted(starts, row, side="right")) - 1
        value = _parquet_row_group(path, column, group)[row - starts[group]]
        return bytes(value) if value is not None else b""
    raise ValueError(f"unknown sample location {loc!r}")
