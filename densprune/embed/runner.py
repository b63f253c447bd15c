"""The embedding stage: decode and embed a source into resumable shards, keeping the model busy.

Three things run at once. DataLoader workers read and decode batch k+1 (and the ones after it)
into whole-batch arrays (:mod:`densprune.embed.batches`); the main thread moves batch k to the
device (pinned memory, non-blocking copies), decodes its JPEGs there when device decoding is on,
and runs the model; a writer thread (:class:`densprune.embed.shards.ShardWriter`) waits for batch
k-1's vectors to reach the host and writes the shards.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from densprune.embed.batches import BatchDataset, DecodedBatch, ShardBatches, no_collate
from densprune.embed.pixels import decode_jpegs, resize_crop
from densprune.embed.shards import BatchResult, ShardWriter, shard_bounds, shard_path
from densprune.ingest.images import DEFAULT_MAX_PIXELS, ImageDecodeError, decode_image
from densprune.ingest.sources import SampleRef

log = logging.getLogger(__name__)

DECODE_MODES = ("auto", "cpu", "device")


@dataclass(frozen=True, slots=True)
class EmbedSettings:
    """How the embedding stage runs."""

    batch_size: int = 64
    workers: int = 2
    shard_size: int = 4096  # samples per resumable shard
    max_pixels: int = DEFAULT_MAX_PIXELS
    thumb_size: int = 128
    thumbnails: bool = True  # workers make a thumbnail of every row (``--thumbnails all``)
    decode: str = "auto"  # auto: JPEGs decoded on the GPU when the model is on CUDA; cpu: PIL in the workers; device: always on the model's device
    dtype: str = "float32"  # of the vectors in the shards (float16 halves them)
    prefetch: int = 2  # batches decoded ahead per worker
    write_queue: int = 4  # embedded batches waiting for the writer thread

    def __post_init__(self) -> None:
        if self.decode not in DECODE_MODES:
            raise ValueError(f"decode must be one of {', '.join(DECODE_MODES)}, not {self.decode!r}")
        if self.batch_size < 1 or self.shard_size < 1 or self.workers < 0:
            raise ValueError("batch_size and shard_size must be >= 1 and workers >= 0")


def uses_device_decode(decode: str, embedder) -> bool:
    """Whether JPEGs are decoded on the model's device: ``device`` always (when the embedder's
    preprocess can be reproduced on tensors), ``auto`` only on CUDA, ``cpu`` never."""
    if decode == "cpu":
        return False
    spec = getattr(embedder, "pixel_spec", None)
    if spec is None:
        if decode == "device":
            log.warning("device decoding is not available for this embedder; decoding with PIL in the workers")
        return False
    return decode == "device" or embedder.device.type == "cuda"


def embed_source(refs: list[SampleRef], embedder, wd: Path, settings: EmbedSettings, *,
                 only_shards: list[int] | None = None, progress: bool = True,
                 on_shard: Callable[[int, Path], None] | None = None) -> list[Path]:
    """Embed every ref into shard files under ``wd``, skipping shards already done.

    Args:
        only_shards: embed only these shard numbers (a distributed worker's share).
        on_shard: called as ``on_shard(n_written, path)`` after each new shard is in place (from the
            writer thread); an exception it raises stops the stage and is raised here.
    Returns:
        The shard paths, in order.
    """
    wd.mkdir(parents=True, exist_ok=True)
    bounds = shard_bounds(len(refs), settings.shard_size)
    paths = [shard_path(wd, k) for k in range(len(bounds))]
    todo = [(k, b) for k, (b, p) in enumerate(zip(bounds, paths))
            if not p.exists() and (only_shards is None or k in only_shards)]
    if only_shards is None and len(todo) < len(bounds):
        log.info("resuming: %d of %d shards already embedded in %s", len(bounds) - len(todo), len(bounds), wd)
    if not todo:
        return paths
    device_decode = uses_device_decode(settings.decode, embedder)
    prep = embedder.worker_prep()
    dataset = BatchDataset(refs, prep, max_pixels=settings.max_pixels, thumb_size=settings.thumb_size,
                           thumbnails=settings.thumbnails, device_decode=device_decode)
    loader = DataLoader(dataset, sampler=ShardBatches([b for _, b in todo], settings.batch_size), batch_size=None,
                        collate_fn=no_collate, num_workers=settings.workers,
                        pin_memory=embedder.device.type == "cuda",
                        prefetch_factor=settings.prefetch if settings.workers > 0 else None)
    writer = ShardWriter([(paths[k], e - s) for k, (s, e) in todo], embedder.has_text, on_shard,
                         depth=settings.write_queue)
    bar = tqdm(total=sum(e - s for _, (s, e) in todo), desc="embed", unit="img", disable=None if progress else True)
    writer.start()
    try:
        for batch in loader:
            writer.put(encode_batch(batch, embedder, prep, settings, device_decode))
            bar.update(len(batch.idx))
        writer.finish()
    finally:
        writer.stop()
        bar.close()
    return paths


def encode_batch(batch: DecodedBatch, embedder, prep, settings: EmbedSettings, device_decode: bool) -> BatchResult:
    """Run one decoded batch through the model; the vectors are copied to the host without waiting.

    JPEGs left to the device are decoded and resized there; one that fails is decoded with PIL here
    (and rejected with PIL's reason when that fails too).
    """
    dev = embedder.device
    non_blocking = dev.type == "cuda"
    reasons = list(batch.reasons)
    parts: list[tuple[np.ndarray, torch.Tensor]] = []
    if batch.pixels is not None:
        parts.append((batch.pixel_rows, batch.pixels.to(dev, non_blocking=non_blocking)))
    if batch.jpeg_rows.size:
        parts += _device_jpegs(batch, embedder, prep, settings.max_pixels, reasons)
    rows = np.flatnonzero([not r for r in reasons])
    image = text = ready = None
    if rows.size:
        first = parts[0][1]
        pixels = torch.empty((len(reasons), *first.shape[1:]), dtype=first.dtype, device=dev)
        for pos, t in parts:
            pixels[torch.as_tensor(pos, device=dev)] = t
        pixels = pixels[torch.as_tensor(rows, device=dev)]
        tokens = batch.tokens[torch.as_tensor(rows)].to(dev, non_blocking=non_blocking) if batch.tokens is not None else None
        img, txt = embedder.embed(pixels, tokens)
        out_dtype = getattr(torch, settings.dtype)
        image, text, ready = _to_host([img.to(out_dtype), txt.to(out_dtype) if txt is not None else None], dev)
    return BatchResult(batch.idx, reasons, batch.sizes, batch.thumbs, batch.thumb_offsets, image, text, ready)


def _device_jpegs(batch: DecodedBatch, embedder, prep, max_pixels: int, reasons: list[str]) -> list[tuple[np.ndarray, torch.Tensor]]:
    """Decode and resize the batch's JPEGs on the embedder's device: [(positions, uint8 (n, 3, S, S))].

    Files the device cannot decode go through PIL on the CPU; rows PIL rejects get its reason.
    """
    dev = embedder.device
    images, why = decode_jpegs(batch.jpeg_data, batch.jpeg_offsets, dev)
    good = [i for i, im in enumerate(images) if im is not None]
    parts = []
    if good:
        parts.append((batch.jpeg_rows[good], resize_crop([images[i] for i in good], embedder.pixel_spec)))
    for i in (i for i, im in enumerate(images) if im is None):
        pos = int(batch.jpeg_rows[i])
        data = batch.jpeg_data[int(batch.jpeg_offsets[i]):int(batch.jpeg_offsets[i + 1])].numpy().tobytes()
        log.debug("%s; decoding sample %d with PIL", why[i], int(batch.idx[pos]))
        try:
            parts.append((np.array([pos]), prep.image(decode_image(data, max_pixels))[None].to(dev)))
        except ImageDecodeError as exc:
            reasons[pos] = str(exc)
    return parts


def _to_host(tensors: list[torch.Tensor | None], dev: torch.device) -> list:
    """Start copying device tensors into pinned host memory; returns the host tensors and a CUDA event
    that completes with the copies (None on the CPU, where nothing needs copying)."""
    if dev.type != "cuda":
        return [*tensors, None]
    hosts = []
    for t in tensors:
        if t is None:
            hosts.append(None)
            continue
        h = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
        h.copy_(t, non_blocking=True)
        hosts.append(h)
    ready = torch.cuda.Event()
    ready.record()
    return [*hosts, ready]
