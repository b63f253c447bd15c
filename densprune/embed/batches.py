"""The worker side of the embedding stage: a whole batch decoded into a few big arrays.

A DataLoader worker reads, checks and decodes every sample of a batch and returns one
:class:`DecodedBatch`: stacked model inputs, one token tensor, one (b, 2) array of sizes, the
thumbnails as one byte buffer with offsets, and a reason for every rejected row. The batch crosses
the process boundary once (a handful of shared-memory tensors), not once per sample.

With device decoding, JPEGs are only checked here (header, pixel cap, completeness) and travel as
one byte buffer with offsets; the main process decodes them on the model's device.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from densprune.embed.pixels import device_decodable
from densprune.ingest.images import (
    ImageDecodeError,
    decode_image,
    probe_image,
    reusable_thumbnail,
    set_pil_pixel_limit,
    thumbnail_bytes,
)
from densprune.ingest.sources import SampleRef, read_bytes


@dataclass
class DecodedBatch:
    """One batch of b samples as it leaves a worker. Row positions 0..b-1 follow ``idx``."""

    idx: np.ndarray  # (b,) int64 index into the refs
    reasons: list[str]  # (b,) why a row was rejected; "" while it is usable
    sizes: np.ndarray  # (b, 2) int64 original width, height (0 for rejected rows)
    pixel_rows: np.ndarray  # (c,) int64 positions decoded on the CPU
    pixels: torch.Tensor | None  # (c, ...) their model inputs: uint8 (c, 3, S, S), float, or (c, 720) features
    jpeg_rows: np.ndarray  # (j,) int64 positions left to decode on the device
    jpeg_data: torch.Tensor | None  # (total,) uint8 their JPEG files back to back
    jpeg_offsets: np.ndarray  # (j + 1,) int64 file i is jpeg_data[jpeg_offsets[i]:jpeg_offsets[i + 1]]
    tokens: torch.Tensor | None  # (b, ctx) int64 caption tokens of every row (None: no text tower)
    thumbs: np.ndarray  # (bytes,) uint8 the thumbnails back to back
    thumb_offsets: np.ndarray  # (b + 1,) int64; an empty span where a row has no thumbnail

    def pin_memory(self) -> DecodedBatch:
        """The same batch with its tensors in page-locked memory (called by the DataLoader's pin thread)."""
        pinned = {f.name: getattr(self, f.name).pin_memory() for f in fields(self)
                  if isinstance(getattr(self, f.name), torch.Tensor)}
        return replace(self, **pinned)


class BatchDataset(Dataset):
    """Item = a list of indices into ``refs`` -> the :class:`DecodedBatch` of those samples."""

    def __init__(self, refs: list[SampleRef], prep, *, max_pixels: int, thumb_size: int, thumbnails: bool,
                 device_decode: bool) -> None:
        """prep: the embedder's ``worker_prep()`` (``image(img)``, ``text(captions)``); thumbnails: make them."""
        self.refs, self.prep = refs, prep
        self.max_pixels, self.thumb_size = max_pixels, thumb_size
        self.thumbnails, self.device_decode = thumbnails, device_decode

    def __len__(self) -> int:
        return len(self.refs)

    def __getitem__(self, batch: list[int]) -> DecodedBatch:
        set_pil_pixel_limit(self.max_pixels)  # in this worker process too: --max-pixels is the one limit
        b = len(batch)
        reasons = [""] * b
        sizes = np.zeros((b, 2), np.int64)
        thumbs: list[bytes] = [b""] * b
        pixel_rows, pixels, jpeg_rows, jpegs = [], [], [], []
        for pos, i in enumerate(batch):
            ref = self.refs[i]
            try:
                data = read_bytes(ref.loc)
                if self.device_decode and self._to_device(data, pos, sizes, thumbs):
                    jpeg_rows.append(pos)
                    jpegs.append(data)
                    continue
                img = decode_image(data, self.max_pixels)
                sizes[pos] = img.info.get("original_size", img.size)
                pixels.append(self.prep.image(img))
                pixel_rows.append(pos)
                if self.thumbnails:
                    thumbs[pos] = thumbnail_bytes(img, self.thumb_size, source=data)
            except ImageDecodeError as exc:
                reasons[pos] = str(exc)
            except OSError as exc:
                reasons[pos] = f"cannot read: {exc}"
        for pos, i in enumerate(batch):  # the listing's original size wins (img2dataset resizes)
            ref = self.refs[i]
            if not reasons[pos] and ref.orig_width > 0 and ref.orig_height > 0:
                sizes[pos] = (ref.orig_width, ref.orig_height)
        tokens = self.prep.text([self.refs[i].caption for i in batch])
        return DecodedBatch(
            idx=np.asarray(batch, np.int64), reasons=reasons, sizes=sizes,
            pixel_rows=np.asarray(pixel_rows, np.int64), pixels=_stack(pixels),
            jpeg_rows=np.asarray(jpeg_rows, np.int64), jpeg_data=_bytes_tensor(jpegs),
            jpeg_offsets=_offsets(jpegs), tokens=tokens,
            thumbs=np.frombuffer(b"".join(thumbs), np.uint8), thumb_offsets=_offsets(thumbs),
        )

    def _to_device(self, data: bytes, pos: int, sizes: np.ndarray, thumbs: list[bytes]) -> bool:
        """Check a sample for the device decoder; True when it goes there (its size and thumbnail are set)."""
        fmt, mode, width, height = probe_image(data, self.max_pixels)
        if not device_decodable(fmt, mode, width, height, data):
            return False
        sizes[pos] = (width, height)
        if self.thumbnails:
            if reusable_thumbnail(data, width, height, self.thumb_size):
                thumbs[pos] = data
            else:
                small = decode_image(data, self.max_pixels, target=self.thumb_size)
                thumbs[pos] = thumbnail_bytes(small, self.thumb_size)
        return True


def _stack(items: list) -> torch.Tensor | None:
    if not items:
        return None
    if isinstance(items[0], np.ndarray):
        return torch.from_numpy(np.stack(items))
    return torch.stack(items)


def _offsets(chunks: list[bytes]) -> np.ndarray:
    return np.concatenate([[0], np.cumsum([len(c) for c in chunks], dtype=np.int64)]).astype(np.int64)


def _bytes_tensor(chunks: list[bytes]) -> torch.Tensor | None:
    if not chunks:
        return None
    return torch.frombuffer(bytearray(b"".join(chunks)), dtype=torch.uint8)


def no_collate(batch: DecodedBatch) -> DecodedBatch:
    """The DataLoader's collate_fn: the dataset already returns whole batches."""
    return batch


class ShardBatches(Sampler):
    """Lists of indices (one per batch) that never cross a shard boundary, for the shards still to do."""

    def __init__(self, shards: list[tuple[int, int]], batch_size: int) -> None:
        self.batches = [list(range(s, min(s + batch_size, e)))
                        for start, e in shards for s in range(start, e, batch_size)]

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)
