"""How the embedding stage runs (kept apart from the runner so that reading it does not import torch)."""

from __future__ import annotations

from dataclasses import dataclass

from densprune.ingest.images import DEFAULT_MAX_PIXELS

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
    # auto: JPEGs decoded on the GPU when the model is on CUDA; cpu: PIL in the workers;
    # device: always on the model's device
    decode: str = "auto"
    dtype: str = "float32"  # of the vectors in the shards (float16 halves them)
    prefetch: int = 2  # batches decoded ahead per worker
    write_queue: int = 4  # embedded batches waiting for the writer thread

    def __post_init__(self) -> None:
        if self.decode not in DECODE_MODES:
            raise ValueError(f"decode must be one of {', '.join(DECODE_MODES)}, not {self.decode!r}")
        if self.batch_size < 1 or self.shard_size < 1 or self.workers < 0:
            raise ValueError("batch_size and shard_size must be >= 1 and workers >= 0")
