"""Decode and embed a source in resumable shards, then assemble the ``.npy`` memmaps.

Images are decoded in a torch DataLoader with workers (RGB, transparency onto white, pixel cap);
each worker also makes the sample's thumbnail. Results go to ``DIR/.work/<fingerprint>/shard-NNNNN.npz``,
written atomically, so an interrupted run resumes at the first missing shard.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm.auto import tqdm

from densprune.ingest.images import (
    DEFAULT_MAX_PIXELS,
    ImageDecodeError,
    decode_image,
    thumbnail_bytes,
)
from densprune.embed.settings import EmbedSettings  # noqa: F401 (re-exported: its historical home)
from densprune.ingest.sources import Reject, SampleRef, read_bytes

log = logging.getLogger(__name__)


class _DecodeDataset(Dataset):
    """Item i -> decoded, transformed sample i of ``refs`` (or the reason it failed)."""

    def __init__(self, refs: list[SampleRef], embedder, settings: EmbedSettings) -> None:
        self.refs = refs
        self.embedder = embedder
        self.settings = settings

    def __len__(self) -> int:
        return len(self.refs)

    def __getitem__(self, i: int) -> dict:
        ref = self.refs[i]
        try:
            data = read_bytes(ref.loc)
            img = decode_image(data, self.settings.max_pixels)
            width, height = img.info.get("original_size", img.size)
            if ref.orig_width > 0 and ref.orig_height > 0:
                width, height = ref.orig_width, ref.orig_height
            image_input, text_input = self.embedder.transform(img, ref.caption)
            thumb = thumbnail_bytes(img, self.settings.thumb_size, source=data)
            return {"i": i, "ok": True, "image": image_input, "text": text_input, "thumb": thumb,
                    "width": width, "height": height, "reason": ""}
        except ImageDecodeError as exc:
            reason = str(exc)
        except OSError as exc:
            reason = f"cannot read: {exc}"
        return {"i": i, "ok": False, "reason": reason}


def _collate(items: list[dict]) -> list[dict]:
    return items


class _ShardBatches(Sampler):
    """Batches of indices that never cross a shard boundary, for the shards still to do."""

    def __init__(self, shards: list[tuple[int, int]], batch_size: int) -> None:
        self.batches = [list(range(s, min(s + batch_size, e))) for start, e in shards for s in range(start, e, batch_size)]

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def work_dir(workspace: Path, source_spec: str, embedder, n_refs: int) -> Path:
    """Per-run staging folder, keyed by source, embedder and sample count so a resume matches."""
    key = hashlib.sha1(f"{source_spec}|{embedder.fingerprint}|{n_refs}".encode()).hexdigest()[:12]
    return workspace / ".work" / f"embed-{key}"


def shard_path(wd: Path, s: int) -> Path:
    return wd / f"shard-{s:05d}.npz"


def _save_shard(path: Path, idx: list[int], results: dict[int, dict], has_text: bool) -> None:
    ok = np.array([results[i]["ok"] for i in idx], dtype=bool)
    good = [results[i] for i in idx if results[i]["ok"]]
    thumbs = [r["thumb"] for r in good]
    offsets = np.cumsum([0] + [len(t) for t in thumbs]).astype(np.int64)
    arrays = {
        "idx": np.asarray(idx, dtype=np.int64),
        "ok": ok,
        "reasons": np.array([results[i]["reason"] for i in idx], dtype=object).astype(str),
        "image": np.stack([r["emb_image"] for r in good]).astype(np.float32) if good else np.zeros((0, 0), np.float32),
        "width": np.array([r["width"] for r in good], dtype=np.int64),
        "height": np.array([r["height"] for r in good], dtype=np.int64),
        "thumbs": np.frombuffer(b"".join(thumbs), dtype=np.uint8),
        "thumb_offsets": offsets,
    }
    if has_text:
        arrays["text"] = np.stack([r["emb_text"] for r in good]).astype(np.float32) if good else np.zeros((0, 0), np.float32)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def shard_bounds(n: int, shard_size: int) -> list[tuple[int, int]]:
    """[start, end) sample ranges of the resumable shards."""
    return [(s, min(s + shard_size, n)) for s in range(0, n, shard_size)]


def embed_source(refs: list[SampleRef], embedder, wd: Path, settings: EmbedSettings,
                 stop_after_shards: int | None = None, only_shards: list[int] | None = None,
                 progress: bool = True) -> list[Path]:
    """Embed every ref into shard files under ``wd``, skipping shards already done.

    Args:
        stop_after_shards: stop after writing this many new shards (simulates an interruption in tests).
        only_shards: embed only these shard numbers (a distributed worker's share).
    Returns:
        The shard paths, in order.
    """
    wd.mkdir(parents=True, exist_ok=True)
    n = len(refs)
    bounds = shard_bounds(n, settings.shard_size)
    paths = [shard_path(wd, k) for k in range(len(bounds))]
    todo = [(k, b) for k, (b, p) in enumerate(zip(bounds, paths))
            if not p.exists() and (only_shards is None or k in only_shards)]
    if only_shards is None and len(todo) < len(bounds):
        log.info("resuming: %d of %d shards already embedded in %s", len(bounds) - len(todo), len(bounds), wd)
    if not todo:
        return paths
    dataset = _DecodeDataset(refs, embedder, settings)
    loader = DataLoader(
        dataset,
        batch_sampler=_ShardBatches([b for _, b in todo], settings.batch_size),
        num_workers=settings.workers,
        collate_fn=_collate,
        persistent_workers=False,
        prefetch_factor=4 if settings.workers > 0 else None,
    )
    pending: dict[int, dict] = {}
    current = 0
    written = 0
    bar = tqdm(total=sum(e - s for _, (s, e) in todo), desc="embed", unit="img", disable=None if progress else True)
    for items in loader:
        good = [it for it in items if it["ok"]]
        if good:
            img_emb, txt_emb = embedder.embed([it["image"] for it in good], [it["text"] for it in good])
            for j, it in enumerate(good):
                it["emb_image"] = img_emb[j]
                it["emb_text"] = txt_emb[j] if txt_emb is not None else None
                it.pop("image"), it.pop("text")
        for it in items:
            pending[it["i"]] = it
        bar.update(len(items))
        k, (s, e) = todo[current]
        if all(i in pending for i in range(s, e)):
            _save_shard(paths[k], list(range(s, e)), pending, embedder.has_text)
            pending = {i: v for i, v in pending.items() if i >= e}
            current += 1
            written += 1
            if stop_after_shards is not None and written >= stop_after_shards:
                bar.close()
                raise KeyboardInterrupt(f"stopped after {written} shards (test hook)")
    bar.close()
    return paths


@dataclass
class Assembled:
    """What the shards hold, in source order, for the accepted samples only."""

    source_idx: np.ndarray  # (N,) int64 index into refs
    width: np.ndarray  # (N,)
    height: np.ndarray  # (N,)
    rejects: list[Reject]
    thumb_offsets: np.ndarray  # (N + 1,) int64 into thumbs.bin
    image_dim: int
    text_dim: int


def assemble(refs: list[SampleRef], shard_paths: list[Path], embedder, out_dir: Path, *, dtype: str = "float32") -> Assembled:
    """Concatenate shards into ``out_dir/embeddings/{image,text}.npy`` and ``out_dir/thumbs.bin``.

    Offline embeddings are reduced by ``embedder.finalize`` over all rows. Files are written under
    temporary names and renamed, so a crash leaves no complete-looking output.
    """
    emb_dir = out_dir / "embeddings"
    emb_dir.mkdir(parents=True, exist_ok=True)
    source_idx, widths, heights, rejects, img_parts, txt_parts, offsets = [], [], [], [], [], [], [np.zeros(1, np.int64)]
    thumbs_tmp = out_dir / "thumbs.bin.tmp"
    base = 0
    with open(thumbs_tmp, "wb") as thumbs:
        for p in shard_paths:
            with np.load(p, allow_pickle=False) as z:
                idx, ok = z["idx"], z["ok"]
                for i, reason in zip(idx[~ok], z["reasons"][~ok]):
                    r = refs[int(i)]
                    rejects.append(Reject(r.key, r.image_ref, "decode", str(reason)))
                source_idx.append(idx[ok])
                widths.append(z["width"])
                heights.append(z["height"])
                if ok.any():
                    img_parts.append(z["image"])
                    if "text" in z:
                        txt_parts.append(z["text"])
                thumbs.write(z["thumbs"].tobytes())
                offsets.append(z["thumb_offsets"][1:] + base)
                base += int(z["thumb_offsets"][-1])
    if not img_parts:
        raise ValueError("no image could be decoded: see the rejects for the reasons")
    src = np.concatenate(source_idx)
    raw = np.concatenate(img_parts)
    captions = [refs[int(i)].caption for i in src]
    image = embedder.finalize(raw, captions)
    _save_npy(emb_dir / "image.npy", image, dtype)
    text_dim = 0
    if txt_parts:
        text = embedder.finalize(np.concatenate(txt_parts), captions)
        _save_npy(emb_dir / "text.npy", text, dtype)
        text_dim = text.shape[1]
    os.replace(thumbs_tmp, out_dir / "thumbs.bin")
    return Assembled(src, np.concatenate(widths), np.concatenate(heights), rejects,
                     np.concatenate(offsets), image.shape[1], text_dim)


def _save_npy(path: Path, arr: np.ndarray, dtype: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        np.save(fh, np.ascontiguousarray(arr, dtype=dtype))
    os.replace(tmp, path)
