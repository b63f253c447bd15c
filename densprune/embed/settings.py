"""How the embedding stage runs (kept apart from the runner so that reading it does not import torch)."""

from __future__ import annotations

from dataclasses import dataclass

from densprune.ingest.images import DEFAULT_MAX_PIXELS


@dataclass(frozen=True, slots=True)
class EmbedSettings:
    """How the embedding stage runs."""

    batch_size: int = 64
    workers: int = 2
    shard_size: int = 4096  # samples per resumable shard
    max_pixels: int = DEFAULT_MAX_PIXELS
    thumb_size: int = 128
