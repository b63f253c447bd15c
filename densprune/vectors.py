"""Row-wise vector helpers shared by every stage (embeddings, centroids, evaluation features)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def l2_normalize(x: np.ndarray, eps: float = 1e-12, dtype: type = np.float32) -> np.ndarray:
    """Row-wise L2 normalisation. x: (n, d) -> (n, d) of ``dtype``; zero rows stay zero."""
    x = np.asarray(x, dtype=dtype)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), eps)


class NpyRows:
    """Rows of an (N, d) ``.npy`` file, read through a memory map that lives only for one read.

    ``x[a:b]`` and ``x[sorted_rows]`` return in-memory copies, like a read-only memmap does, but the
    map is dropped right after: the pages stay in the OS page cache (shared, reclaimable) and are not
    held by this process, so its resident memory is one block, not the file. Stages that read
    blocks (k-means training sample, assignment, SemDeDup's clusters, the map's sample) take it
    wherever they take an array.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        mm = np.load(self.path, mmap_mode="r")
        self.shape: tuple[int, ...] = mm.shape
        self.dtype: np.dtype = mm.dtype
        del mm
        if len(self.shape) != 2:
            raise ValueError(f"{self.path}: expected an (N, d) array, got shape {self.shape}")

    @property
    def ndim(self) -> int:
        return 2

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, item) -> np.ndarray:
        mm = np.load(self.path, mmap_mode="r")
        try:
            return np.array(mm[item])
        finally:
            del mm

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self[:]
        return out if dtype is None else out.astype(dtype)
