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

Hostile inputs end as rejects with their reason, never as a hang or a lost row: only regular files
are read (a FIFO, a device or a link to one is refused without being opened), none larger than
``MAX_FILE_BYTES``; a folder's symbolic links whose target lies outside it are refused unless
``follow_links``; a tar member name that repeats, that would extract outside its folder (absolute,
``..``), or that is a link or special file is rejected (densprune.ingest.media holds the checks).
"""

from __future__ import annotations

import csv
import functools
import glob
import io
import json
import logging
import math
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from densprune.ingest.media import (
    IMAGE_EXTS,
    MAX_FILE_BYTES,
    MAX_TEXT_BYTES,
    collect_tar_members,
    file_problem,
    read_regular,
    tar_end_problem,
    tar_member_kind,
    unsafe_member_name,
)
from densprune.ingest.text import decode_text, storable
from densprune.ingest.uids import normalize_uid, uid_from_key

log = logging.getLogger(__name__)

PATH_COLUMNS = ("filepath", "image_path", "path", "file", "filename", "image", "url")
CAPTION_COLUMNS = ("caption", "title", "text", "prompt", "description")
BYTES_COLUMNS = ("image", "jpg", "image_bytes", "bytes")


@dataclass(frozen=True, slots=True)
class SampleRef:
    """One sample of a source, before decoding.

    ``loc`` says how to read the bytes: ("file", path) | ("tar", path, offset, size) |
    ("parquet", path, row, column). ``key``, ``caption`` and ``image_ref`` are valid UTF-8 (undecodable
    bytes as U+FFFD, densprune.ingest.text); ``caption_flag`` is "invalid UTF-8" when the caption had
    such bytes, else None.
    """

    key: str
    uid: str
    caption: str
    image_ref: str
    loc: tuple
    category: str | None = None
    orig_width: int = -1
    orig_height: int = -1
    caption_flag: str | None = None


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


def list_source(spec: str, image_column: str | None = None, caption_column: str | None = None, *,
                follow_links: bool = False) -> SourceListing:
    """Enumerate the samples of ``spec`` (see the module docstring) in a stable order.

    ``follow_links``: read the files (and walk the folders) that a folder source's symbolic links
    point to outside it; off, such links are rejected with their reason."""
    if spec == "demo":
        root = demo_data_dir()
        if not root.is_dir():
            raise SourceError(f"the bundled demo data is missing: {root} (reinstall densprune, or rebuild it with "
                              "data/build_demo.py in a checkout)")
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
        return _list_folder(path, follow_links)
    problem = file_problem(path, max_bytes=None)
    if problem:
        raise SourceError(f"{spec}: {problem} (give a folder, a .csv/.tsv/.parquet file, tar shards, or 'demo')")
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv", ".txt"):
        return _list_csv(path, image_column, caption_column)
    if suffix == ".parquet":
        return _list_parquet_files([path], str(path), image_column, caption_column)
    raise SourceError(f"unsupported source file type {suffix!r}: {spec}")


def _expand_tars(spec: str) -> list[str]:
    if "{" in spec and ".." in spec:
        import braceexpand

        return list(dict.fromkeys(braceexpand.braceexpand(spec)))  # a shard named twice is read once
    if any(ch in spec for ch in "*?["):
        return sorted(p for p in glob.glob(spec) if p.endswith(".tar"))
    if spec.endswith(".tar"):
        return [spec]
    if os.path.isdir(spec):
        tars = sorted(glob.glob(os.path.join(spec, "*.tar")))
        return tars
    return []


def _list_folder(root: Path, follow_links: bool = False) -> SourceListing:
    """The images under ``root`` (sorted, recursively), each with its ``.txt`` sidecar caption.

    An image name that is not a readable regular file inside ``root`` (a FIFO, a device, a broken link,
    a link out of ``root`` without ``follow_links``, a file over ``MAX_FILE_BYTES``), or whose sidecar
    is not, is a Reject with its reason; so is a link to a folder outside ``root`` that is not followed.
    """
    refs: list[SampleRef] = []
    rejects: list[Reject] = []
    real_root = os.path.realpath(root)
    for full, sidecar, problem in _walk_images(root, real_root, follow_links):
        rel = full.relative_to(root).as_posix()
        key = storable(rel)
        if problem is None and sidecar is not None:
            sidecar_problem = file_problem(sidecar, root=real_root, follow_links=follow_links, max_bytes=MAX_TEXT_BYTES)
            problem = f"its caption file {storable(sidecar.name)}: {sidecar_problem}" if sidecar_problem else None
        if problem:
            rejects.append(Reject(key, storable(str(full))[:1000], "list", f"{storable(str(full))[:300]}: {problem}"))
            continue
        caption, flag = ("", None)
        if sidecar is not None:
            try:
                caption, flag = decode_text(read_regular(sidecar, max_bytes=MAX_TEXT_BYTES))
            except OSError as exc:  # gone or replaced since it was checked
                rejects.append(Reject(key, storable(str(full))[:1000], "list",
                                      f"{storable(str(full))[:300]}: its caption file cannot be read ({exc})"))
                continue
        parent = Path(rel).parent.as_posix()
        refs.append(
            SampleRef(
                key=key,
                uid=uid_from_key(rel),
                caption=caption.strip(),
                image_ref=storable(str(full)),
                loc=("file", str(full)),
                category=None if parent == "." else storable(parent),
                caption_flag=flag,
            )
        )
    if not refs:
        first = f" ({len(rejects)} rejected, first: {rejects[0].reason})" if rejects else ""
        raise SourceError(f"no images ({', '.join(IMAGE_EXTS)}) found under {root}{first}")
    has_cat = any(r.category for r in refs)
    return SourceListing("folder", str(root), refs, rejects, has_categories=has_cat)


def _walk_images(root: Path, real_root: str, follow_links: bool):
    """(image path, its sidecar path or None, problem or None) for every image name under ``root``, in
    sorted order. Folders are walked without following links, except, with ``follow_links``, links to
    folders outside ``root`` (each real folder once: a link cycle ends). A link to a folder inside
    ``root`` is skipped (its images are listed where they are); one to a folder outside it, when not
    followed, is yielded with its problem so that it is reported."""
    seen = {real_root}
    stack = [Path(root)]
    while stack:
        folder = stack.pop()
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            yield folder, None, f"folder cannot be listed ({type(exc).__name__}: {exc.strerror or exc})"
            continue
        names = {e.name for e in entries}
        subdirs = []
        for e in entries:
            full = Path(e.path)
            try:
                is_link, is_dir = e.is_symlink(), e.is_dir()  # is_dir follows a link
            except OSError:
                is_link, is_dir = True, False
            if is_dir:
                if not is_link:
                    subdirs.append(full)
                    continue
                target = os.path.realpath(full)
                if os.path.commonpath([target, real_root]) == real_root or target in seen:
                    continue  # inside the source (listed where it is) or already walked
                if follow_links:
                    seen.add(target)
                    subdirs.append(full)
                else:
                    yield full, None, (f"symbolic link to a folder out of the source folder (to {target!r}): its "
                                       "images are not listed; pass --follow-links to read them")
                continue
            if not e.name.lower().endswith(IMAGE_EXTS):
                continue
            sidecar = full.with_suffix(".txt")
            problem = file_problem(full, root=real_root, follow_links=follow_links)
            yield full, (sidecar if sidecar.name in names else None), problem
        stack.extend(reversed(subdirs))


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
    records, cols, ragged = _read_delimited(path)
    img_col = _pick(cols, image_column, PATH_COLUMNS, "image", str(path))
    has_caption = caption_column or any(c in cols for c in CAPTION_COLUMNS)
    cap_col = _pick(cols, caption_column, CAPTION_COLUMNS, "caption", str(path)) if has_caption else None
    return _table_refs(records, img_col, cap_col, path, "csv", ragged)


def _read_delimited(path: Path) -> tuple[list[dict], list[str], list[Reject]]:
    """The records of a CSV/TSV file ({column: str}, numbered by their first line under ``"_line"``), its
    columns, and a Reject for every line with more fields than the header.

    Bytes that are not UTF-8 travel as lone surrogates (``surrogateescape``): a path keeps them (the
    file can be opened), a caption gets U+FFFD in their place and is flagged. ``.csv`` files have their
    delimiter sniffed among , ; | and tab; ``.tsv``/``.txt`` are tab-separated.
    """
    text = path.read_bytes().decode("utf-8", errors="surrogateescape").removeprefix("\ufeff")
    tab = path.suffix.lower() in (".tsv", ".txt")
    try:
        dialect = csv.excel_tab if tab else csv.Sniffer().sniff(text[:65536].split("\n", 1)[0], delimiters=",;|\t")
    except csv.Error:
        dialect = csv.excel
    csv.field_size_limit(max(csv.field_size_limit(), 1 << 28))  # a 200 kB caption is a caption
    reader = csv.reader(io.StringIO(text, newline=""), dialect)
    records, ragged, line = [], [], 1
    try:
        header = [storable(h).strip() for h in next(reader, [])]
        if not header:
            raise SourceError(f"{path}: empty table (no header line)")
        cols = list(dict.fromkeys(header))  # a repeated column name: its first occurrence counts
        for fields in reader:
            first, line = line + 1, reader.line_num
            if not any(f.strip() for f in fields):
                continue  # a blank line is no row
            if len(fields) > len(header):
                ragged.append(Reject(f"{path.name}:{first}", "", "list",
                                     f"{path} row {first}: {len(fields)} fields, the header has {len(header)}; "
                                     "fix its quoting or delimiters"))
                continue
            rec = {"_line": first}
            for name, value in zip(header, fields):
                rec.setdefault(name, value)
            records.append(rec)
    except csv.Error as exc:
        raise SourceError(f"{path} line {reader.line_num}: cannot be read as {'TSV' if tab else 'CSV'} "
                          f"({exc})") from exc
    return records, cols, ragged


def _table_refs(records: list[dict], img_col: str, cap_col: str | None, path: Path, kind: str,
                rejects: list[Reject] | None = None) -> SourceListing:
    """Samples of a table of image paths (CSV rows are numbered by their line, parquet rows from 0)."""
    refs: list[SampleRef] = []
    rejects = list(rejects or [])
    base = path.parent
    for i, rec in enumerate(records):
        cell = rec.get(img_col)  # a str keeps undecodable bytes (surrogates): the file can still be found
        raw = (cell if isinstance(cell, str) else decode_text(cell)[0]).strip()
        key = f"{path.name}:{rec.get('_line', i + 2) if kind == 'csv' else i}"
        if not raw:
            rejects.append(Reject(key, "", "list", f"{path} row {key.split(':')[1]}: empty {img_col!r}"))
            continue
        full = Path(raw) if os.path.isabs(raw) else base / raw
        problem = file_problem(full)  # the one check of every input file (densprune.ingest.media)
        if problem:
            rejects.append(Reject(key, storable(str(full))[:1000], "list",
                                  f"{path} row {key.split(':')[1]}: {problem}: {storable(str(full))[:300]}"))
            continue
        uid = normalize_uid(rec.get("uid")) or uid_from_key(raw)
        cat = decode_text(rec.get("category"))[0] or None
        caption, flag = decode_text(rec.get(cap_col)) if cap_col else ("", None)
        refs.append(
            SampleRef(key=storable(raw), uid=uid, caption=caption, image_ref=storable(str(full)),
                      loc=("file", str(full)), category=cat, caption_flag=flag)
        )
    if not refs:
        first = rejects[0].reason if rejects else "-"
        raise SourceError(f"{path}: no usable rows ({len(rejects)} rejected, first: {first})")
    return SourceListing(kind, str(path), refs, rejects, has_categories=any(r.category for r in refs))


def _dim(*values: object) -> int:
    """The first of ``values`` that is a whole number of pixels in 1 .. 2**31 - 1, else -1 (unknown)."""
    for v in values:
        try:
            f = float(v)
        except (TypeError, ValueError):
            continue
        if math.isfinite(f) and f == int(f) and 0 < f < 2**31:
            return int(f)
    return -1


def _list_parquet_files(files: list[Path], spec: str, image_column: str | None,
                        caption_column: str | None) -> SourceListing:
    if not files:
        raise SourceError(f"no parquet files in {spec}")
    refs: list[SampleRef] = []
    rejects: list[Reject] = []
    table_records: list[dict] = []
    bytes_mode = None
    for f in files:
        problem = file_problem(f, max_bytes=None)  # a FIFO named x.parquet would block the reader for ever
        if problem:
            raise SourceError(f"{f}: {problem}, not a readable parquet file")
        try:
            schema = pq.read_schema(f)
        except (OSError, pa.ArrowException) as exc:
            raise SourceError(f"{f}: not a readable parquet file ({exc})") from exc
        cols = list(schema.names)
        binary_cols = [n for n in cols if str(schema.field(n).type) in ("binary", "large_binary")
                       and n != caption_column and (n in BYTES_COLUMNS or n not in CAPTION_COLUMNS)]
        if image_column:
            img_col = _pick(cols, image_column, (), "image", str(f))
        elif binary_cols:
            img_col = next((c for c in BYTES_COLUMNS if c in binary_cols), binary_cols[0])
        else:
            img_col = _pick(cols, None, PATH_COLUMNS, "image", str(f))
        is_bytes = img_col in binary_cols
        if bytes_mode is None:
            bytes_mode = is_bytes
        has_caption = caption_column or any(c in cols for c in CAPTION_COLUMNS)
        cap_col = _pick(cols, caption_column, CAPTION_COLUMNS, "caption", str(f)) if has_caption else None
        meta_cols = [c for c in cols if c != img_col] if is_bytes else cols  # a path column is read with the rest
        try:
            meta = pq.read_table(f, columns=meta_cols).to_pylist()
        except (OSError, pa.ArrowException) as exc:
            raise SourceError(f"{f}: cannot read its columns {', '.join(meta_cols)} ({exc})") from exc
        if not is_bytes:
            table_records.extend(meta)
            refs_listing = _table_refs(meta, img_col, cap_col, Path(f), "parquet")
            refs.extend(refs_listing.refs)
            rejects.extend(refs_listing.rejects)
            continue
        for row, rec in enumerate(meta):
            key = decode_text(rec.get("key"))[0] or f"{Path(f).name}:{row}"
            uid = normalize_uid(rec.get("uid")) or uid_from_key(f"{Path(f).name}/{key}")
            cat = decode_text(rec.get("category"))[0] or None
            caption, flag = decode_text(rec.get(cap_col)) if cap_col else ("", None)
            refs.append(
                SampleRef(
                    key=key,
                    uid=uid,
                    caption=caption,
                    image_ref=f"{Path(f).resolve()}#row={row}",
                    loc=("parquet", str(Path(f).resolve()), row, img_col),
                    category=cat,
                    orig_width=_dim(rec.get("width"), rec.get("original_width")),
                    orig_height=_dim(rec.get("height"), rec.get("original_height")),
                    caption_flag=flag,
                )
            )
    return SourceListing("parquet", spec, refs, rejects, has_categories=any(r.category for r in refs))


def _list_webdataset(tars: list[str], spec: str) -> SourceListing:
    refs: list[SampleRef] = []
    rejects: list[Reject] = []
    for tar_path in tars:
        shard = Path(tar_path).name
        shard_problem = file_problem(tar_path, max_bytes=None)
        if shard_problem == "file not found":
            rejects.append(Reject(tar_path, tar_path, "list", f"shard not found: {tar_path}"))
            continue
        if shard_problem:
            rejects.append(Reject(shard, tar_path, "list", f"{tar_path}: unreadable tar shard ({shard_problem})"))
            continue
        groups: dict[str, dict[str, tarfile.TarInfo]] = {}
        dups: dict[tuple[str, int], dict[str, tarfile.TarInfo]] = {}
        strays: list[tarfile.TarInfo] = []
        others: list[tarfile.TarInfo] = []
        texts: dict[str, bytes | None] = {}
        jsons: dict[str, bytes | None] = {}
        problems: dict[str, str] = {}
        try:
            with tarfile.open(tar_path, "r") as tf:
                # fills groups as it goes: kept on an error
                problem = collect_tar_members(tf, groups, strays, dups, others)
                problem = problem or tar_end_problem(tf, tar_path)
                for k, g in groups.items():
                    problems[k] = _member_problem(g)
                    if not problems[k]:
                        texts[k], jsons[k] = _read_member(tf, g.get("txt")), _read_member(tf, g.get("json"))
        except (tarfile.TarError, OSError) as exc:
            problem = str(exc) or type(exc).__name__
        if problem:
            rejects.append(Reject(shard, tar_path, "list", f"{tar_path}: unreadable tar shard ({problem}); samples "
                                                           "listed before the error kept"))
        where = Path(tar_path).resolve()
        for info in strays:
            name = storable(info.name)
            rejects.append(Reject(f"{shard}/{name}", f"{where}#{name}", "list",
                                  f"{tar_path}: member {name!r} belongs to no sample (no file extension)"))
        for info in others:
            name = storable(info.name)
            rejects.append(Reject(f"{shard}/{name}", f"{where}#{name}", "list",
                                  f"{tar_path}: member {name!r} is a {storable(tar_member_kind(info))}, not a file: "
                                  "tar links and special files are not read"))
        for (k, n), g in dups.items():
            name = storable(k)
            rejects.append(Reject(f"{shard}/{name}#{n}", f"{where}#{name}", "list",
                                  f"{tar_path}: duplicate sample {name!r} (occurrence {n} of its members "
                                  f"{', '.join(sorted(storable(k + '.' + e) for e in g))}): the first one is kept"))
        for k, g in groups.items():
            if problems.get(k):
                name = storable(k)
                rejects.append(Reject(f"{shard}/{name}", f"{where}#{name}", "list", f"{tar_path}: {problems[k]}"))
                continue
            refs_or_reject = _tar_sample(tar_path, shard, k, g, texts.get(k), jsons.get(k))
            (refs if isinstance(refs_or_reject, SampleRef) else rejects).append(refs_or_reject)
    if not refs:
        first = f" ({len(rejects)} rejected, first: {rejects[0].reason})" if rejects else ""
        raise SourceError(f"no samples in webdataset shards {spec}{first}")
    return SourceListing("webdataset", spec, refs, rejects)


def _member_problem(g: dict[str, tarfile.TarInfo]) -> str:
    """Why a tar sample's members must not be read ("" when they may): an unsafe name (absolute, with
    ``..``), an image member over MAX_FILE_BYTES, a .txt/.json member over MAX_TEXT_BYTES."""
    for ext, info in g.items():
        why = unsafe_member_name(info.name)
        if why:
            return (f"unsafe member name {storable(info.name)!r} ({why}: it would extract outside its folder); "
                    "the sample is not read")
        limit = MAX_TEXT_BYTES if ext in ("txt", "json") else MAX_FILE_BYTES
        if info.size > limit:
            return f"member {storable(info.name)!r}: file too large ({info.size:,} bytes, the limit is {limit:,})"
    return ""


def _tar_sample(tar_path: str, shard: str, k: str, g: dict[str, tarfile.TarInfo], text: bytes | None,
                meta_bytes: bytes | None) -> SampleRef | Reject:
    """The sample ``k`` of a shard from its members, or a Reject when it has no image member."""
    name = storable(k)
    img_ext = next((e for e in ("jpg", "jpeg", "png", "webp") if e in g), None)
    ref = f"{Path(tar_path).resolve()}#{name}"
    if img_ext is None:
        return Reject(f"{shard}/{name}", ref, "list",
                      f"{tar_path}: sample {name} has no image member ({', '.join(sorted(storable(e) for e in g))})")
    meta: dict = {}
    if meta_bytes:
        try:
            meta = json.loads(meta_bytes.decode("utf-8", errors="replace"))
        except json.JSONDecodeError:
            meta = {}
        meta = meta if isinstance(meta, dict) else {}  # a .json member that is not an object is ignored
    if text:
        caption, flag = decode_text(text)
    else:
        caption, flag = decode_text(meta.get("caption")) if isinstance(meta.get("caption"), str) else ("", None)
    info = g[img_ext]
    return SampleRef(
        key=f"{shard}/{name}",
        uid=normalize_uid(meta.get("uid")) or uid_from_key(f"{shard}/{k}"),
        caption=caption.strip(),
        image_ref=f"{ref}.{img_ext}",
        loc=("tar", str(Path(tar_path).resolve()), info.offset_data, info.size),
        orig_width=_dim(meta.get("original_width"), meta.get("width")),
        orig_height=_dim(meta.get("original_height"), meta.get("height")),
        caption_flag=flag,
    )


def _read_member(tf: tarfile.TarFile, info: tarfile.TarInfo | None) -> bytes | None:
    """The bytes of a member (None without one; what is there of a member the file cuts short)."""
    if info is None:
        return None
    tf.fileobj.seek(info.offset_data)
    return tf.fileobj.read(info.size)


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
    if kind == "file":  # regular files only, bounded (a FIFO put there since the listing is refused at once)
        return read_regular(loc[1])
    if kind == "tar":
        _, path, offset, size = loc
        return read_regular(path, offset, size)
    if kind == "parquet":
        _, path, row, column = loc
        starts = _row_group_starts(path)
        if not 0 <= row < starts[-1]:
            raise OSError(f"{path} has no row {row}")
        group = int(np.searchsorted(starts, row, side="right")) - 1
        value = _parquet_row_group(path, column, group)[row - starts[group]]
        return bytes(value) if value is not None else b""
    raise ValueError(f"unknown sample location {loc!r}")
