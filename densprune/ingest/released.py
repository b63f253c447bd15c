"""Released embeddings: LAION's clip-retrieval layout and DataComp's metadata layout (read, never written).

Two layouts, both shards of rows aligned by position:

- ``clip-retrieval`` (LAION, clip-retrieval, autofaiss)::

      PATH/img_emb/img_emb_{k}.npy         (n_k, d) float16/float32 image vectors
      PATH/text_emb/text_emb_{k}.npy       (n_k, d) caption vectors (optional, all shards or none)
      PATH/metadata/metadata_{k}.parquet   n_k rows: caption, url, key, similarity, width, height, ...

  Shards are numbered k = 0, 1, ... without gaps; row i of shard k is the same sample in the three
  files (what embedding-reader's ``parquet_npy`` format assumes). Rows are taken in shard order k.
- ``datacomp`` (a DataComp pool's metadata)::

      PATH/{shard}.parquet   uid, url, text, original_width, original_height, clip_b32_similarity_score, ...
      PATH/{shard}.npz       b32_img, b32_txt, l14_img, l14_txt: (n, d) arrays in the parquet's row order

  ``embedding_key`` (default ``b32_img``) chooses the image vectors; its ``_txt`` partner, when
  present, gives the caption vectors. uids are kept exactly as written (lowercase 32-hex), so a
  subset file of kept uids feeds DataComp's resharder unchanged.

Whole-file problems (a missing partner file, a gap in the shard numbers, row counts that differ,
dimensions that differ between shards, a non-float array) raise :class:`ReleasedError` naming the
file. Row problems (NaN/inf or zero vectors, a DataComp uid that is not 32-hex) are found by
:func:`row_problems` and become rejects with their reason. Nothing here writes anything.
"""

from __future__ import annotations

import logging
import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from densprune.ingest.media import file_problem
from densprune.ingest.sources import SourceError
from densprune.ingest.uids import normalize_uid, uid_from_key
from densprune.vectors import NpyRows, row_norms

log = logging.getLogger(__name__)

LAYOUTS = ("clip-retrieval", "datacomp")
DEFAULT_DATACOMP_KEY = "b32_img"
FLOAT_DTYPES = ("float16", "float32", "float64")
MIN_NORM = 1e-6  # a vector shorter than this has no direction: rejected as a zero vector

_SHARD_RE = {"img": re.compile(r"^img_emb_(\d+)\.npy$"), "text": re.compile(r"^text_emb_(\d+)\.npy$"),
             "meta": re.compile(r"^metadata_(\d+)\.parquet$")}


class ReleasedError(SourceError):
    """A released-embeddings folder that cannot be read as its layout says (names the file)."""


@dataclass(frozen=True, slots=True)
class Columns:
    """Which metadata columns hold what (None: the layout's files do not have it)."""

    caption: str | None
    url: str | None
    key: str | None
    uid: str | None
    width: str | None
    height: str | None
    score: str | None  # a CLIP image-caption similarity, used when there are no caption vectors

    def names(self) -> list[str]:
        return sorted({c for c in (self.caption, self.url, self.key, self.uid, self.width, self.height, self.score)
                       if c})


@dataclass(frozen=True, slots=True)
class Shard:
    """One shard: its metadata parquet, its vectors, and its row count."""

    name: str  # "k" of clip-retrieval, the file stem of DataComp
    metadata: Path
    image: Path  # .npy (clip-retrieval) or .npz (datacomp)
    text: Path | None
    rows: int


@dataclass(frozen=True, slots=True)
class ReleasedSource:
    """A validated released-embeddings folder: its shards in row order and what every shard holds."""

    layout: str
    root: Path
    shards: tuple[Shard, ...]
    dim: int
    dtype: str  # of the stored vectors (float16 stays float16)
    image_key: str | None  # npz member of the image vectors (datacomp)
    text_key: str | None  # npz member of the caption vectors (datacomp), None without
    columns: Columns

    @property
    def n_rows(self) -> int:
        return sum(s.rows for s in self.shards)

    @property
    def has_text(self) -> bool:
        return (self.shards[0].text is not None) or (self.text_key is not None)

    @property
    def model(self) -> str:
        """What the vectors are, for the workspace's meta: the DataComp key, or the layout name."""
        return self.image_key or self.layout


def detect_layout(path: str | Path) -> str | None:
    """``clip-retrieval`` for a folder with ``img_emb/``, ``datacomp`` for a folder with ``*.npz``, else None."""
    p = Path(path)
    if not p.is_dir():
        return None
    if (p / "img_emb").is_dir():
        return "clip-retrieval"
    if next(p.glob("*.npz"), None) is not None:
        return "datacomp"
    return None


def open_released(path: str | Path, layout: str | None = None, embedding_key: str | None = None) -> ReleasedSource:
    """List and validate the shards of a released-embeddings folder (headers only: no vector is read).

    Args:
        path: the folder.
        layout: ``clip-retrieval``, ``datacomp``, or None/"auto" to detect it.
        embedding_key: the DataComp npz member of the image vectors (default ``b32_img``).
    Raises:
        ReleasedError naming the folder or file when the layout does not match or a file is inconsistent.
    """
    root = Path(path)
    if not root.is_dir():
        raise ReleasedError(f"released embeddings must be a folder: {root} is not one")
    found = detect_layout(root)
    if layout in (None, "auto"):
        if found is None:
            raise ReleasedError(
                f"{root} matches neither released-embeddings layout: clip-retrieval needs img_emb/img_emb_0.npy + "
                "metadata/metadata_0.parquet, datacomp needs SHARD.parquet + SHARD.npz side by side")
        layout = found
    if layout not in LAYOUTS:
        raise ReleasedError(f"unknown embeddings layout {layout!r}: use one of {', '.join(LAYOUTS)}")
    if embedding_key is not None and layout != "datacomp":
        raise ReleasedError("--embedding-key chooses a member of DataComp's .npz files; the clip-retrieval layout has "
                            "one image vector per row (drop the flag)")
    if layout == "clip-retrieval":
        return _open_clip_retrieval(root)
    return _open_datacomp(root, embedding_key or DEFAULT_DATACOMP_KEY)


# --------------------------------------------------------------------------------------------
# listing and headers
# --------------------------------------------------------------------------------------------

def _numbered(folder: Path, kind: str, ext: str) -> dict[int, Path]:
    """{k: path} of ``folder``'s ``*_{k}.ext`` files; any other ``.ext`` file there is an error."""
    out: dict[int, Path] = {}
    if not folder.is_dir():
        return out
    for f in sorted(folder.glob(f"*{ext}")):
        _check_regular(f)
        m = _SHARD_RE[kind].match(f.name)
        if not m:
            raise ReleasedError(f"{f}: unexpected file name in {folder} (expected {_SHARD_RE[kind].pattern[1:-1]})")
        k = int(m.group(1))
        if k in out:
            raise ReleasedError(f"{f} and {out[k]} are both shard {k}")
        out[k] = f
    return out


def _check_regular(path: Path) -> Path:
    """``path``, or a ReleasedError when it is not a regular file (a FIFO would block its reader for ever,
    a device never end): the one check of densprune.ingest.media."""
    problem = file_problem(path, max_bytes=None)
    if problem:
        raise ReleasedError(f"{path}: {problem}")
    return path


def _read_header(fh) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) from the header of an open .npy stream."""
    version = np.lib.format.read_magic(fh)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, _, dtype = read(fh)
    return tuple(shape), np.dtype(dtype)


def npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) of a ``.npy`` file from its header alone."""
    try:
        with open(path, "rb") as fh:
            shape, dtype = _read_header(fh)
    except (OSError, ValueError) as exc:
        raise ReleasedError(f"{path}: not a readable .npy file ({exc})") from exc
    return shape, dtype


def npz_members(path: Path) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """{member: (shape, dtype)} of a ``.npz`` file, from the member headers alone."""
    out = {}
    try:
        with zipfile.ZipFile(path) as zf:
            for name in zf.namelist():
                if not name.endswith(".npy"):
                    continue
                with zf.open(name) as fh:
                    out[name[:-4]] = _read_header(fh)
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise ReleasedError(f"{path}: not a readable .npz file ({exc})") from exc
    return out


def parquet_rows(path: Path) -> int:
    try:
        return pq.ParquetFile(path).metadata.num_rows
    except (OSError, pa.ArrowException) as exc:
        raise ReleasedError(f"{path}: not a readable parquet file ({exc})") from exc


def _check_vectors(path: Path, shape: tuple[int, ...], dtype: np.dtype, rows: int, meta: Path, dim: int | None,
                   what: str) -> int:
    """The dimension of a (rows, d) float array, checked against the metadata's rows and the first shard's d."""
    if len(shape) != 2:
        raise ReleasedError(f"{path}: {what} vectors must be a 2-D (rows, d) array, got shape {shape}")
    if dtype.name not in FLOAT_DTYPES:
        raise ReleasedError(f"{path}: {what} vectors must be float16/float32, got {dtype}")
    if shape[0] != rows:
        raise ReleasedError(f"{path} has {shape[0]:,} rows but {meta} has {rows:,}: row i of both must be the same "
                            "sample, so their row counts must match")
    if dim is not None and shape[1] != dim:
        raise ReleasedError(f"{path}: {what} vectors are {shape[1]}-d but earlier shards are {dim}-d (mixed models?)")
    return int(shape[1])


def _open_clip_retrieval(root: Path) -> ReleasedSource:
    img = _numbered(root / "img_emb", "img", ".npy")
    meta = _numbered(root / "metadata", "meta", ".parquet")
    text = _numbered(root / "text_emb", "text", ".npy")
    if not img:
        raise ReleasedError(f"{root}/img_emb holds no img_emb_{{k}}.npy files (clip-retrieval layout)")
    expected = range(max(img) + 1)
    for k in expected:
        if k not in img:
            raise ReleasedError(f"missing shard: {root / 'img_emb' / f'img_emb_{k}.npy'} "
                                f"(shards 0..{max(img)} are expected)")
        if k not in meta:
            raise ReleasedError(f"missing shard: {root / 'metadata' / f'metadata_{k}.parquet'} "
                                f"(the metadata of {img[k]})")
        if text and k not in text:
            raise ReleasedError(f"missing shard: {root / 'text_emb' / f'text_emb_{k}.npy'} (other shards have caption "
                                "vectors: all or none must)")
    for extra, files in (("metadata", meta), ("text_emb", text)):
        stray = sorted(set(files) - set(expected))
        if stray:
            missing = root / "img_emb" / f"img_emb_{stray[0]}.npy"
            raise ReleasedError(f"{files[stray[0]]} has no image vectors ({missing} is missing)")
    shards, dim, dtypes = [], None, set()
    for k in expected:
        rows = parquet_rows(meta[k])
        shape, dtype = npy_header(img[k])
        dim = _check_vectors(img[k], shape, dtype, rows, meta[k], dim, "image")
        dtypes.add(dtype.name)
        if text:
            tshape, tdtype = npy_header(text[k])
            _check_vectors(text[k], tshape, tdtype, rows, meta[k], dim, "caption")
        shards.append(Shard(str(k), meta[k], img[k], text.get(k), rows))
    cols = _columns(shards, "clip-retrieval", None)
    return ReleasedSource("clip-retrieval", root, tuple(shards), dim, _widest(dtypes), None, None, cols)


def _open_datacomp(root: Path, key: str) -> ReleasedSource:
    parquets = {p.stem: _check_regular(p) for p in sorted(root.glob("*.parquet"))}
    npzs = {p.stem: _check_regular(p) for p in sorted(root.glob("*.npz"))}
    if not npzs:
        raise ReleasedError(f"{root} holds no SHARD.npz files (datacomp layout: SHARD.parquet + SHARD.npz)")
    for stem in sorted(set(parquets) | set(npzs)):
        if stem not in npzs:
            raise ReleasedError(f"missing shard: {root / (stem + '.npz')} (the vectors of {parquets[stem]})")
        if stem not in parquets:
            raise ReleasedError(f"missing shard: {root / (stem + '.parquet')} (the metadata of {npzs[stem]})")
    text_key = key[:-4] + "_txt" if key.endswith("_img") else None
    shards, dim, dtypes, has_text = [], None, set(), None
    for stem in sorted(npzs):
        rows = parquet_rows(parquets[stem])
        members = npz_members(npzs[stem])
        if key not in members:
            raise ReleasedError(f"{npzs[stem]} has no {key!r} array (it has {', '.join(sorted(members)) or 'none'}); "
                                "choose one with --embedding-key")
        dim = _check_vectors(npzs[stem], *members[key], rows, parquets[stem], dim, "image")
        dtypes.add(members[key][1].name)
        shard_text = text_key in members if text_key else False
        if has_text is not None and shard_text != has_text:
            raise ReleasedError(f"{npzs[stem]}: {'has' if shard_text else 'lacks'} {text_key!r} unlike earlier shards "
                                "(all or none must hold caption vectors)")
        has_text = shard_text
        if shard_text:
            _check_vectors(npzs[stem], *members[text_key], rows, parquets[stem], dim, "caption")
        shards.append(Shard(stem, parquets[stem], npzs[stem], None, rows))
    cols = _columns(shards, "datacomp", key)
    return ReleasedSource("datacomp", root, tuple(shards), dim, _widest(dtypes), key, text_key if has_text else None,
                          cols)


def _widest(dtypes: set[str]) -> str:
    """The workspace dtype: the stored one, or the widest when shards mix them."""
    return max(dtypes, key=lambda d: np.dtype(d).itemsize)


def _columns(shards: list[Shard], layout: str, key: str | None) -> Columns:
    """The metadata columns every shard has (the first shard decides, the others must have them too)."""
    first = list(pq.read_schema(shards[0].metadata).names)

    def pick(*names: str) -> str | None:
        return next((n for n in names if n in first), None)

    if layout == "datacomp":
        model = (key or DEFAULT_DATACOMP_KEY).split("_")[0]
        cols = Columns(caption=pick("text", "caption"), url=pick("url"), key=None, uid=pick("uid"),
                       width=pick("original_width", "width"), height=pick("original_height", "height"),
                       score=pick(f"clip_{model}_similarity_score"))
        if cols.uid is None:
            raise ReleasedError(f"{shards[0].metadata} has no 'uid' column: DataComp metadata always has one "
                                f"(columns: {', '.join(first)})")
    else:
        cols = Columns(caption=pick("caption", "text"), url=pick("url"), key=pick("key"), uid=pick("uid"),
                       width=pick("original_width", "width"), height=pick("original_height", "height"),
                       score=pick("similarity"))
    wanted = cols.names()
    for s in shards[1:]:
        names = set(pq.read_schema(s.metadata).names)
        missing = [c for c in wanted if c not in names]
        if missing:
            raise ReleasedError(f"{s.metadata} lacks column(s) {', '.join(missing)} that {shards[0].metadata} has")
    return cols


# --------------------------------------------------------------------------------------------
# reading rows
# --------------------------------------------------------------------------------------------

@dataclass(slots=True)
class Block:
    """``len(meta)`` consecutive rows of one shard: their vectors as stored and their metadata."""

    shard: Shard
    start: int  # first row, within the shard
    image: np.ndarray  # (m, d) as stored
    text: np.ndarray | None  # (m, d) or None
    meta: pa.Table  # m rows of the chosen metadata columns

    def __len__(self) -> int:
        return self.meta.num_rows


def iter_blocks(src: ReleasedSource, block_rows: int = 16384) -> Iterator[Block]:
    """Every row of ``src`` in order, in blocks of at most ``block_rows`` rows that never cross a shard.

    Memory: a clip-retrieval shard is read block by block (``pread``, never mapped), so a block's
    vectors are all that is resident; a DataComp ``.npz`` member is loaded one shard at a time
    (those shards are small).
    """
    cols = src.columns.names()
    for shard in src.shards:
        npz = np.load(shard.image) if src.layout == "datacomp" else None
        try:
            image = npz[src.image_key] if npz is not None else None
            text = npz[src.text_key] if npz is not None and src.text_key else None
            start = 0
            for part in row_group_slices(shard.metadata, block_rows, cols):
                end = start + part.num_rows
                if npz is None:
                    img = _rows_of_npy(shard.image, start, end)
                    txt = _rows_of_npy(shard.text, start, end) if shard.text is not None else None
                else:
                    img = image[start:end]
                    txt = text[start:end] if text is not None else None
                yield Block(shard, start, img, txt, part)
                start = end
            if start != shard.rows:
                raise ReleasedError(f"{shard.metadata}: read {start:,} rows, its footer says {shard.rows:,}")
        finally:
            if npz is not None:
                npz.close()


def row_group_slices(path: Path, rows: int, columns: list[str] | None = None) -> Iterator[pa.Table]:
    """The rows of a parquet file in order, as tables of at most ``rows`` rows, read one row group at a time.

    (``ParquetFile.iter_batches`` reads ahead across row groups and holds far more than a batch.)
    Memory: one row group of the chosen columns.
    """
    pf = pq.ParquetFile(path)
    for rg in range(pf.metadata.num_row_groups):
        table = pf.read_row_group(rg, columns=columns)
        for off in range(0, table.num_rows, rows):
            yield table.slice(off, rows)


def _rows_of_npy(path: Path, start: int, end: int) -> np.ndarray:
    """Rows [start, end) of a .npy file as an in-memory array (read, not mapped)."""
    return NpyRows(path)[start:end]


def row_problems(image: np.ndarray, text: np.ndarray | None = None) -> np.ndarray:
    """Why each row's vectors cannot be used ("" when they can).

    image: (m, d), text: (m, d) or None -> (m,) object array of reasons: a NaN/inf value or a zero
    vector (norm < MIN_NORM) in the image or caption embedding. Norms are taken in float64 without overflow.
    """
    reasons = np.full(image.shape[0], "", dtype=object)
    for what, x in (("caption", text), ("image", image)):  # image last: its reason wins
        if x is None:
            continue
        norm, finite = row_norms(x)
        reasons[norm < MIN_NORM] = f"{what} embedding is a zero vector"
        reasons[~finite] = f"{what} embedding has NaN or inf values"
    return reasons


def block_uids(src: ReleasedSource, block: Block) -> tuple[list[str | None], list[str]]:
    """The uid of every row of ``block`` and, where there is none, why (else "").

    DataComp: the ``uid`` column exactly, lowercased; a value that is not 32 hex characters is a
    problem. clip-retrieval: a valid ``uid`` column when there is one, else md5 of the ``key``
    column, else md5 of ``metadata_{k}.parquet:row``.
    """
    m = len(block)
    cols = src.columns
    uid_vals = block.meta.column(cols.uid).to_pylist() if cols.uid else [None] * m
    uids: list[str | None] = [normalize_uid(v) for v in uid_vals]
    if src.layout == "datacomp":
        reasons = ["" if u else f"uid {v!r} is not 32 hex characters" for u, v in zip(uids, uid_vals)]
        return uids, reasons
    keys = block.meta.column(cols.key).to_pylist() if cols.key else [None] * m
    name = block.shard.metadata.name
    for i in range(m):
        if uids[i] is None:
            k = keys[i]
            uids[i] = uid_from_key(str(k) if k not in (None, "") else f"{name}:{block.start + i}")
    return uids, [""] * m


def block_keys(src: ReleasedSource, block: Block) -> list[str]:
    """The ``key`` of every row: the key column, else ``metadata_{k}.parquet:row`` (DataComp: the uid)."""
    cols = src.columns
    if src.layout == "datacomp":
        return [str(v) for v in block.meta.column(cols.uid).to_pylist()]
    name = block.shard.metadata.name
    keys = block.meta.column(cols.key).to_pylist() if cols.key else [None] * len(block)
    return [str(k) if k not in (None, "") else f"{name}:{block.start + i}" for i, k in enumerate(keys)]
