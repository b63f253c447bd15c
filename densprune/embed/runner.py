"""The embedding stage: decode and embed a source into resumable shards, keeping the model busy.

Four things run at once. DataLoader workers read and decode batches k+2, k+3, ... into whole-batch
arrays (:mod:`densprune.embed.batches`); a prefetch thread moves batch k+1 to the device (pinned
memory, non-blocking copies, its own CUDA stream) and decodes its JPEGs there when device decoding
is on; the main thread runs the model on batch k and starts copying its vectors back; a writer
thread (:class:`densprune.embed.shards.ShardWriter`) waits for batch k-1's vectors to reach the
host and writes the shards.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from densprune.embed.batches import BatchDataset, DecodedBatch, ShardBatches, no_collate
from densprune.embed.pixels import decode_jpegs, resize_crop
from densprune.embed.settings import DECODE_MODES, EmbedSettings  # noqa: F401 (EmbedSettings re-exported)
from densprune.embed.shards import (
    BatchResult,
    ShardWriter,
    shard_bounds,
    shard_input_keys,
    shard_is_current,
    shard_path,
)
from densprune.ingest.images import ImageDecodeError, decode_image
from densprune.ingest.sources import SampleRef

log = logging.getLogger(__name__)



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
                 on_shard: Callable[[int, Path], None] | None = None,
                 input_keys: list[str | None] | None = None) -> list[Path]:
    """Embed every ref into shard files under ``wd``, skipping shards already done from the same inputs.

    Args:
        only_shards: embed only these shard numbers (a distributed worker's share).
        on_shard: called as ``on_shard(n_written, path)`` after each new shard is in place (from the
            writer thread); an exception it raises stops the stage and is raised here.
        input_keys: the shards' input keys (densprune.embed.shards.shard_input_keys), when the caller
            has them; computed here otherwise. A shard on disk with another key is embedded again.
    Returns:
        The shard paths, in order.
    """
    wd.mkdir(parents=True, exist_ok=True)
    bounds = shard_bounds(len(refs), settings.shard_size)
    paths = [shard_path(wd, k) for k in range(len(bounds))]
    wanted = [k for k in range(len(bounds)) if only_shards is None or k in only_shards]
    keys = input_keys if input_keys is not None else shard_input_keys(refs, settings.shard_size, wanted)
    todo = [(k, bounds[k]) for k in wanted if not shard_is_current(paths[k], keys[k])]
    redo = sum(paths[k].exists() for k, _ in todo)
    if redo:
        log.info("%d shards in %s were embedded from inputs that changed since: embedding them again", redo, wd)
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
    writer = ShardWriter([(paths[k], e - s, keys[k]) for k, (s, e) in todo], embedder.has_text, on_shard,
                         depth=settings.write_queue)
    feeder = Prefetcher(loader, lambda batch: prepare_batch(batch, embedder, prep, settings.max_pixels),
                        embedder.device)
    bar = tqdm(total=sum(e - s for _, (s, e) in todo), desc="embed", unit="img", disable=None if progress else True)
    writer.start()
    feeder.start()
    try:
        for ready in feeder:
            writer.put(embed_batch(ready, embedder, settings.dtype))
            bar.update(len(ready.batch.idx))
        writer.finish()
    finally:
        feeder.stop()
        writer.stop()
        bar.close()
    return paths


@dataclass
class ReadyBatch:
    """A batch on the model's device: the accepted rows' pixels and tokens, and what the writer needs."""

    batch: DecodedBatch  # sizes, thumbnails and indices of every row, as the worker made them
    reasons: list[str]  # (b,) with the rejects found while decoding on the device
    pixels: torch.Tensor | None  # (m, ...) model inputs of the m accepted rows, in row order
    tokens: torch.Tensor | None  # (m, ctx)
    ready: object = None  # CUDA event recorded on the prefetch stream after the copies and decoding


def prepare_batch(batch: DecodedBatch, embedder, prep, max_pixels: int) -> ReadyBatch:
    """Move a decoded batch to the embedder's device (non-blocking from pinned memory) and decode its
    JPEGs there; one the device cannot decode is decoded with PIL here, and rejected with PIL's reason
    when that fails too. Returns the accepted rows in row order."""
    dev = embedder.device
    non_blocking = dev.type == "cuda"
    reasons = list(batch.reasons)
    parts: list[tuple[np.ndarray, torch.Tensor]] = []
    if batch.pixels is not None:
        parts.append((batch.pixel_rows, batch.pixels.to(dev, non_blocking=non_blocking)))
    if batch.jpeg_rows.size:
        parts += _device_jpegs(batch, embedder, prep, max_pixels, reasons)
    rows = np.flatnonzero([not r for r in reasons])
    if not rows.size:
        return ReadyBatch(batch, reasons, None, None)
    tokens = batch.tokens.to(dev, non_blocking=non_blocking) if batch.tokens is not None else None
    if len(parts) == 1 and np.array_equal(parts[0][0], rows):  # the usual case: one path, no late rejects
        pixels = parts[0][1]
    else:
        first = parts[0][1]
        pixels = torch.empty((len(reasons), *first.shape[1:]), dtype=first.dtype, device=dev)
        for pos, t in parts:
            pixels[torch.as_tensor(pos, device=dev)] = t
        pixels = pixels[torch.as_tensor(rows, device=dev)]
    if tokens is not None and rows.size < len(reasons):
        tokens = tokens[torch.as_tensor(rows, device=dev)]
    return ReadyBatch(batch, reasons, pixels, tokens)


def embed_batch(rb: ReadyBatch, embedder, dtype: str) -> BatchResult:
    """Run the model on a ready batch; the vectors are copied to the host without waiting for them."""
    image = text = done = None
    if rb.pixels is not None:
        img, txt = embedder.embed(rb.pixels, rb.tokens)
        out = getattr(torch, dtype)
        image, text, done = _to_host([img.to(out), txt.to(out) if txt is not None else None], embedder.device)
    b = rb.batch
    return BatchResult(b.idx, rb.reasons, b.sizes, b.thumbs, b.thumb_offsets, image, text, done)


def _device_jpegs(batch: DecodedBatch, embedder, prep, max_pixels: int,
                  reasons: list[str]) -> list[tuple[np.ndarray, torch.Tensor]]:
    """Decode and resize the batch's JPEGs on the embedder's device: [(positions, uint8 (n, 3, S, S))]."""
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
    done = torch.cuda.Event()
    done.record()
    return [*hosts, done]


class _Failed:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


_DONE = object()


class Prefetcher(threading.Thread):
    """Takes batches from the DataLoader and readies them on the device ``depth`` batches ahead, so
    that copying and decoding batch k+1 overlaps the model on batch k.

    On CUDA it works on its own stream; each :class:`ReadyBatch` carries an event the consumer's stream
    waits on (:meth:`__iter__` does it). An exception in this thread is raised by the iteration.
    """

    def __init__(self, loader: Iterable, prepare: Callable[[DecodedBatch], ReadyBatch], device: torch.device,
                 depth: int = 2) -> None:
        super().__init__(name="densprune-prefetch", daemon=True)
        self.loader, self.prepare, self.device = loader, prepare, device
        self.queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self.stopping = False
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None

    def run(self) -> None:
        try:
            with torch.cuda.stream(self.stream) if self.stream is not None else contextlib.nullcontext():
                for batch in self.loader:
                    if self.stopping:
                        return
                    rb = self.prepare(batch)
                    if self.stream is not None:
                        rb.ready = torch.cuda.Event()
                        rb.ready.record(self.stream)
                    self._put(rb)
            self._put(_DONE)
        except BaseException as exc:  # noqa: BLE001 - raised in the consumer
            self._put(_Failed(exc))

    def _put(self, item) -> None:
        while not self.stopping:
            try:
                self.queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def __iter__(self):
        while True:
            item = self.queue.get()
            if item is _DONE:
                return
            if isinstance(item, _Failed):
                raise item.exc
            if item.ready is not None:
                current = torch.cuda.current_stream(self.device)
                current.wait_event(item.ready)
                for t in (item.pixels, item.tokens):
                    if t is not None:
                        t.record_stream(current)  # allocated on the prefetch stream, used on this one
            yield item

    def stop(self, timeout: float = 30.0) -> None:
        """Stop after the batch in hand (the DataLoader's workers end with its iterator); idempotent."""
        self.stopping = True
        while True:
            try:
                self.queue.get_nowait()
            except queue.Empty:
                break
        self.join(timeout)
