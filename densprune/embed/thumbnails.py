"""Which rows get a thumbnail in ``thumbs.bin``, and the thumbnails made after clustering.

``--thumbnails all`` makes one per row while embedding (about 3-4 KB each when encoded, the source
bytes themselves when they are already a small JPEG/WebP); ``sample`` makes them after clustering
for the ``--thumbs-per-concept`` rows nearest each centroid, the ones the app shows first;
``none`` makes none. The app reads any other image from its source when it shows it.
``auto`` is ``all`` up to ``AUTO_ALL_MAX_ROWS`` rows and ``sample`` above.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
from torch.utils.data import DataLoader, Dataset

from densprune.ingest.images import (
    DEFAULT_MAX_PIXELS,
    THUMB_SIZE,
    ImageDecodeError,
    thumbnail_from_bytes,
)
from densprune.ingest.sources import SampleRef, read_bytes

log = logging.getLogger(__name__)

THUMBNAIL_MODES = ("auto", "all", "sample", "none")
AUTO_ALL_MAX_ROWS = 1_000_000  # ~3.5 GB of 128 px JPEG thumbnails; above this ``auto`` means ``sample``


def resolve_thumbnails(mode: str, n_rows: int) -> str:
    """``auto`` -> ``all`` for at most AUTO_ALL_MAX_ROWS rows, else ``sample``; other modes unchanged."""
    if mode not in THUMBNAIL_MODES:
        raise ValueError(f"--thumbnails must be one of {', '.join(THUMBNAIL_MODES)}, not {mode!r}")
    if mode == "auto":
        return "all" if n_rows <= AUTO_ALL_MAX_ROWS else "sample"
    return mode


def sample_rows(ranks: np.ndarray, per_concept: int) -> np.ndarray:
    """Rows that get a thumbnail in ``sample`` mode: rank_in_cluster (N,) below ``per_concept``,
    i.e. each concept's members nearest its centroid. Returns sorted int64 row indices."""
    return np.flatnonzero(np.asarray(ranks) < per_concept).astype(np.int64)


class _ThumbDataset(Dataset):
    """Item = a list of rows -> their thumbnails, b"" where the image cannot be read or decoded."""

    def __init__(self, refs: list[SampleRef], size: int, max_pixels: int) -> None:
        self.refs, self.size, self.max_pixels = refs, size, max_pixels

    def __len__(self) -> int:
        return len(self.refs)

    def __getitem__(self, rows: list[int]) -> list[bytes]:
        out = []
        for r in rows:
            try:
                out.append(thumbnail_from_bytes(read_bytes(self.refs[r].loc), self.size, self.max_pixels))
            except (ImageDecodeError, OSError) as exc:
                log.warning("no thumbnail for %s: %s", self.refs[r].image_ref, exc)
                out.append(b"")
        return out


def _identity(x):
    return x


def write_thumbnails(refs: list[SampleRef], rows: np.ndarray, path: Path, *, size: int = THUMB_SIZE,
                     max_pixels: int = DEFAULT_MAX_PIXELS, workers: int = 2, batch_size: int = 256) -> np.ndarray:
    """Write the thumbnails of ``rows`` (sorted) of ``refs`` (the workspace rows) to ``path``, atomically.

    Returns (N + 1,) int64 offsets into the file, N = len(refs): row i's thumbnail is
    ``[offsets[i], offsets[i + 1])``, an empty span for rows without one.
    """
    rows = np.asarray(rows, dtype=np.int64)
    batches = [rows[s:s + batch_size].tolist() for s in range(0, rows.size, batch_size)]
    loader = DataLoader(_ThumbDataset(refs, size, max_pixels), sampler=batches, batch_size=None,
                        collate_fn=_identity, num_workers=workers)
    sizes = np.zeros(len(refs), np.int64)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        for batch_rows, thumbs in zip(batches, loader):
            for r, t in zip(batch_rows, thumbs):
                fh.write(t)
                sizes[r] = len(t)
    os.replace(tmp, path)
    log.info("thumbnails: %d rows, %.1f MB", rows.size, sizes.sum() / 1e6)
    return np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
