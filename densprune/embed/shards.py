"""Resumable embedding shards: where they live, the thread that writes them, and their assembly.

A run stages its results in ``DIR/.work/embed-<key>/shard-NNNNN.npz`` (one per ``shard_size``
samples, written atomically), so an interrupted run resumes at the first missing shard. Once all
are there, :func:`assemble` streams them into ``embeddings/{image,text}.npy`` and ``thumbs.bin``.

The folder's key (:func:`work_dir`) is the source spec, the embedder, the sample count, the settings
that shape a shard (dtype, thumbnails, thumbnail size, pixel limit) and the shard format. Each shard
also records the key of its own inputs (:func:`shard_input_keys`: every sample's location with the
size and mtime_ns of its file -- for tar and parquet sources, of the shard file that holds it -- and
its caption), and a shard is reused only while that key is still the inputs' key: a shard whose
images were changed, replaced or renamed is embedded again, the others are kept.

Shard arrays: ``idx`` (n,) int64 sample index, ``ok`` (n,) bool, ``reasons`` (n,) str, ``inputs``
() str (the input key), and for the m accepted rows ``image`` (m, d) [``text`` (m, d)] float16/float32,
``width``/``height`` (m,) int64, ``thumbs`` (bytes,) uint8 with ``thumb_offsets`` (m + 1,) int64.
"""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import threading
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from densprune.ingest.sources import Reject, SampleRef
from densprune.workspace import save_npy

log = logging.getLogger(__name__)

SHARD_FORMAT = "v4"  # part of the work folder's key: shards of another layout are never resumed (v4: ``inputs``)


def work_dir(workspace: Path, source_spec: str, embedder, n_refs: int, settings=None) -> Path:
    """Per-run staging folder, keyed by source, embedder, sample count, the settings that shape a shard
    (``settings``: an EmbedSettings) and the shard format, so a resume matches."""
    shape = "" if settings is None else (f"{settings.dtype}|{settings.thumbnails}|{settings.thumb_size}|"
                                         f"{settings.max_pixels}")
    key = hashlib.sha1(f"{source_spec}|{embedder.fingerprint}|{n_refs}|{shape}|{SHARD_FORMAT}"
                       .encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return workspace / ".work" / f"embed-{key}"


def _file_state(path: str) -> tuple[int, int]:
    """(size, mtime_ns) of a file, (-1, -1) when it cannot be stat'ed (the decoder then rejects it)."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return (-1, -1)
    return (st.st_size, st.st_mtime_ns)


def shard_input_keys(refs: list[SampleRef], shard_size: int, shards: list[int] | None = None) -> list[str | None]:
    """Per shard of ``refs``, the key of what it is made from: a sha1 over its samples' locations, the
    (size, mtime_ns) of the file each is read from (a tar or parquet shard: that file's) and their
    captions. ``shards``: compute only these (the others are None). One ``stat`` per image file."""
    bounds = shard_bounds(len(refs), shard_size)
    want = range(len(bounds)) if shards is None else shards
    out: list[str | None] = [None] * len(bounds)
    containers: dict[str, tuple[int, int]] = {}  # tar and parquet files: stat'ed once, they hold many samples
    for k in want:
        s, e = bounds[k]
        h = hashlib.sha1()
        for r in refs[s:e]:
            kind = r.loc[0] if r.loc else None
            if kind == "file":
                size, mtime = _file_state(r.loc[1])
            elif kind in ("tar", "parquet"):
                if r.loc[1] not in containers:
                    containers[r.loc[1]] = _file_state(r.loc[1])
                size, mtime = containers[r.loc[1]]
            else:
                size, mtime = 0, 0
            h.update(f"{r.loc!r}\0{size}\0{mtime}\0{r.caption}\n".encode("utf-8", "surrogatepass"))
        out[k] = h.hexdigest()
    return out


def shard_inputs(path: Path) -> str | None:
    """The input key a shard was made from (None when it cannot be read or has none)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return str(z["inputs"]) if "inputs" in z.files else None
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None


def shard_is_current(path: Path, key: str | None) -> bool:
    """Whether the shard at ``path`` exists and was made from the inputs ``key`` names."""
    return path.exists() and key is not None and shard_inputs(path) == key


def discard_stale_shards(wd: Path, keys: list[str | None]) -> int:
    """Delete the shards in ``wd`` whose inputs changed since they were embedded (their recorded key is
    not ``keys[k]``), so that any engine embeds them again; returns how many."""
    stale = [shard_path(wd, k) for k, key in enumerate(keys)
             if key is not None and shard_path(wd, k).exists() and not shard_is_current(shard_path(wd, k), key)]
    for p in stale:
        p.unlink(missing_ok=True)
    if stale:
        log.info("%d of %d embedding shards in %s were made from inputs that changed since (files replaced, "
                 "resized or touched, or captions edited): embedding them again", len(stale), len(keys), wd)
    return len(stale)


def shard_path(wd: Path, s: int) -> Path:
    return wd / f"shard-{s:05d}.npz"


def shard_bounds(n: int, shard_size: int) -> list[tuple[int, int]]:
    """[start, end) sample ranges of the resumable shards."""
    return [(s, min(s + shard_size, n)) for s in range(0, n, shard_size)]


@dataclass
class BatchResult:
    """One embedded batch on its way to the writer thread."""

    idx: np.ndarray  # (b,) int64
    reasons: list[str]  # (b,) "" for accepted rows
    sizes: np.ndarray  # (b, 2) int64 width, height
    thumbs: np.ndarray  # (bytes,) uint8
    thumb_offsets: np.ndarray  # (b + 1,) int64
    image: object  # (m, d) torch tensor of the accepted rows (host; may still be filling, see ``ready``)
    text: object  # (m, d) or None
    ready: object = None  # a torch.cuda.Event recorded after the device-to-host copies, or None


class ShardWriter(threading.Thread):
    """Writes shards from embedded batches, in order, while the main thread embeds the next batches.

    Batches arrive through a bounded queue (the main thread waits when the writer is behind).
    ``on_shard(n_written, path)`` is called in this thread after each shard is renamed into place;
    an exception there, or in writing, stops the writer and is re-raised in the main thread by the
    next :meth:`put` or by :meth:`finish`.
    """

    def __init__(self, shards: list[tuple[Path, int] | tuple[Path, int, str | None]], has_text: bool,
                 on_shard: Callable[[int, Path], None] | None = None, depth: int = 4) -> None:
        super().__init__(name="densprune-shard-writer", daemon=True)
        self.shards, self.has_text, self.on_shard = list(shards), has_text, on_shard
        self.queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self.error: BaseException | None = None
        self.stopping = False
        self.written = 0

    def put(self, item: BatchResult) -> None:
        """Hand a batch over (waits while the queue is full); raises the writer's error if it failed."""
        while True:
            if self.error is not None:
                raise self.error
            try:
                self.queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def finish(self) -> None:
        """Write what is left, wait for the thread, and raise its error if it failed."""
        if self.is_alive():
            self.put(None)
            self.join()
        if self.error is not None:
            raise self.error

    def stop(self) -> None:
        """Stop without writing anything more (after an error in the main thread); idempotent."""
        self.stopping = True
        while self.is_alive():
            try:
                self.queue.get_nowait()
            except queue.Empty:
                pass
            try:
                self.queue.put_nowait(None)
            except queue.Full:
                pass
            self.join(timeout=0.1)

    def run(self) -> None:
        pending: list[BatchResult] = []
        rows = 0
        try:
            while not self.stopping:
                item = self.queue.get()
                if item is None or self.stopping:
                    break
                if item.ready is not None:
                    item.ready.synchronize()
                pending.append(item)
                rows += len(item.idx)
                path, size, *key = self.shards[self.written]
                if rows == size:
                    save_shard(path, pending, self.has_text, inputs=key[0] if key else None)
                    pending, rows = [], 0
                    self.written += 1
                    if self.on_shard is not None:
                        self.on_shard(self.written, path)
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread, which raises it
            self.error = exc


def save_shard(path: Path, batches: list[BatchResult], has_text: bool, inputs: str | None = None) -> None:
    """Write one shard from its batches (in order) under a temporary name, then rename it into place;
    ``inputs``: the key of its inputs (shard_input_keys), recorded in the shard."""
    ok = np.concatenate([np.array([not r for r in b.reasons], bool) for b in batches])
    thumbs: list[bytes] = []
    for b in batches:
        buf = b.thumbs.tobytes()
        thumbs += [buf[b.thumb_offsets[p]:b.thumb_offsets[p + 1]] for p in range(len(b.reasons)) if not b.reasons[p]]
    sizes = np.concatenate([b.sizes for b in batches])[ok]
    arrays = {
        "idx": np.concatenate([b.idx for b in batches]).astype(np.int64),
        "ok": ok,
        "reasons": np.array([r for b in batches for r in b.reasons], dtype=str),
        "image": _rows(batches, "image"),
        "width": sizes[:, 0].astype(np.int64),
        "height": sizes[:, 1].astype(np.int64),
        "thumbs": np.frombuffer(b"".join(thumbs), dtype=np.uint8),
        "thumb_offsets": np.concatenate([[0], np.cumsum([len(t) for t in thumbs])]).astype(np.int64),
        "inputs": np.array(inputs or ""),
    }
    if has_text:
        arrays["text"] = _rows(batches, "text")
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def _rows(batches: list[BatchResult], name: str) -> np.ndarray:
    parts = [getattr(b, name).numpy() for b in batches if getattr(b, name) is not None and len(getattr(b, name))]
    return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)


class NothingDecoded(ValueError):
    """Every sample of the source was rejected while decoding (the message gives the first reasons)."""


@dataclass
class Assembled:
    """What the shards hold, in source order, for the accepted samples only."""

    source_idx: np.ndarray  # (N,) int64 index into refs
    width: np.ndarray  # (N,)
    height: np.ndarray  # (N,)
    rejects: list[Reject]
    thumb_offsets: np.ndarray  # (N + 1,) int64 into thumbs.bin (empty spans: no thumbnail)
    image_dim: int
    text_dim: int


def assemble(refs: list[SampleRef], shard_paths: list[Path], embedder, out_dir: Path, *, dtype: str = "float32",
             thumbnails: bool = True) -> Assembled:
    """Gather the shards into ``out_dir/embeddings/{image,text}.npy`` and ``out_dir/thumbs.bin``.

    Row-wise embedders (open_clip) are streamed shard by shard into the ``.npy`` files (memory: one
    shard); the offline embedder's ``finalize`` fits its reductions over all rows at once. Files are
    written under temporary names and renamed, so a crash leaves no complete-looking output.
    ``thumbnails=False`` leaves thumbs.bin empty (every row then reads its image from the source).
    """
    emb_dir = out_dir / "embeddings"
    emb_dir.mkdir(parents=True, exist_ok=True)
    counts, image_dim, text_dim = [], 0, 0
    for p in shard_paths:
        with np.load(p, allow_pickle=False) as z:
            counts.append(int(z["ok"].sum()))
            if counts[-1]:
                image_dim = z["image"].shape[1]
                text_dim = z["text"].shape[1] if "text" in z else 0
    n = sum(counts)
    if n == 0:
        raise NothingDecoded(f"none of the {len(refs):,} samples could be decoded; {_first_reasons(refs, shard_paths)}")
    source_idx, widths, heights, rejects, offsets = [], [], [], [], [np.zeros(1, np.int64)]
    names = ["image"] + (["text"] if text_dim else [])
    if embedder.rowwise:
        outs = {k: np.lib.format.open_memmap(emb_dir / f"{k}.npy.tmp", mode="w+", dtype=dtype,
                                             shape=(n, image_dim if k == "image" else text_dim)) for k in names}
    else:
        raw: dict[str, list[np.ndarray]] = {k: [] for k in names}
    row = base = 0
    with open(out_dir / "thumbs.bin.tmp", "wb") as thumbs:
        for p, m in zip(shard_paths, counts):
            with np.load(p, allow_pickle=False) as z:
                idx, ok = z["idx"], z["ok"]
                rejects += [Reject(refs[int(i)].key, refs[int(i)].image_ref, "decode", str(reason))
                            for i, reason in zip(idx[~ok], z["reasons"][~ok])]
                source_idx.append(idx[ok])
                widths.append(z["width"])
                heights.append(z["height"])
                for k in names if m else []:
                    if embedder.rowwise:
                        outs[k][row:row + m] = embedder.finalize(z[k], [])
                    else:
                        raw[k].append(z[k])
                t_off = z["thumb_offsets"] if thumbnails else np.zeros(m + 1, np.int64)
                if thumbnails:
                    thumbs.write(z["thumbs"].tobytes())
                offsets.append(t_off[1:] + base)
                base += int(t_off[-1])
                row += m
    src = np.concatenate(source_idx)
    if embedder.rowwise:
        for arr in outs.values():
            arr.flush()
        outs.clear()  # closes the memmaps before the rename
        for k in names:
            os.replace(emb_dir / f"{k}.npy.tmp", emb_dir / f"{k}.npy")
    else:
        captions = [refs[int(i)].caption for i in src]
        for k in names:
            vectors = embedder.finalize(np.concatenate(raw[k]), captions)
            image_dim = vectors.shape[1] if k == "image" else image_dim
            save_npy(emb_dir / f"{k}.npy", vectors, dtype)
    os.replace(out_dir / "thumbs.bin.tmp", out_dir / "thumbs.bin")
    return Assembled(src, np.concatenate(widths), np.concatenate(heights), rejects,
                     np.concatenate(offsets), image_dim, text_dim)


def _first_reasons(refs: list[SampleRef], shard_paths: list[Path], show: int = 3) -> str:
    """The first few decode rejects as 'key: reason' (for an error when every sample was rejected)."""
    out: list[str] = []
    for p in shard_paths:
        with np.load(p, allow_pickle=False) as z:
            out += [f"{refs[int(i)].key}: {r}" for i, r in zip(z["idx"][~z["ok"]], z["reasons"][~z["ok"]])]
        if len(out) >= show:
            break
    return "first reasons: " + "; ".join(out[:show]) if out else "no reason was recorded"


class SecondPassMismatch(RuntimeError):
    """Rows that decoded in the first embedding pass failed in a second one (their files changed between)."""


def assemble_rows(refs: list[SampleRef], shard_paths: list[Path], out_path: Path, *, dtype: str = "float32") -> int:
    """Gather the image vectors of a second embedding pass over ``refs`` (the first pass's accepted rows,
    in row order) into one (N, d) ``.npy`` at ``out_path`` (written as ``.tmp`` and renamed).

    Every row must have an embedding: one that decoded in the first pass and not in this one means its
    file changed during the build, and nothing is written (SecondPassMismatch names the rows). Returns d."""
    failed: list[str] = []
    dim = 0
    for p in shard_paths:
        with np.load(p, allow_pickle=False) as z:
            ok = z["ok"]
            failed += [f"{refs[int(i)].key}: {r}" for i, r in zip(z["idx"][~ok], z["reasons"][~ok])]
            if ok.any():
                dim = z["image"].shape[1]
    if failed:
        raise SecondPassMismatch(
            f"{len(failed):,} images that decoded in the first embedding pass failed in the concept pass (were "
            f"their files changed during the build?): {'; '.join(failed[:5])}. Nothing was written; run the same "
            "command again (finished shards are kept).")
    tmp = out_path.with_name(out_path.name + ".tmp")
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=(len(refs), dim))
    try:
        row = 0
        for p in shard_paths:
            with np.load(p, allow_pickle=False) as z:
                m = int(z["ok"].sum())
                if m:
                    out[row:row + m] = z["image"]
                row += m
        if row != len(refs):
            raise SecondPassMismatch(f"the concept pass has {row:,} rows for {len(refs):,} samples")
        out.flush()
        del out
        os.replace(tmp, out_path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return dim
