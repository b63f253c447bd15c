"""The 2-D concept map: UMAP of a row sample together with the centroids, on an exact faiss kNN graph."""

from __future__ import annotations

import logging
import warnings

import numpy as np

log = logging.getLogger(__name__)

MIN_UMAP_POINTS = 16  # fewer rows + centroids than this are laid out by PCA


def pca_2d(data: np.ndarray) -> np.ndarray:
    """(n, d) -> (n, 2) float32: the first two principal components (zeros where there are fewer)."""
    centred = data.astype(np.float64) - data.mean(axis=0, keepdims=True)
    u, sv, _ = np.linalg.svd(centred, full_matrices=False)
    out = np.zeros((data.shape[0], 2), np.float32)
    k = min(2, sv.size)
    out[:, :k] = (u[:, :k] * sv[:k]).astype(np.float32)
    return out


def cache_umap_kernels() -> int:
    """Have numba keep UMAP's compiled kernels on disk; returns how many kernels it now caches.

    umap-learn compiles its kernels (the fuzzy graph, the layout epochs) with numba on the first call
    in every process and does not cache them: ~8-10 s on 2 cores, whatever the size of the map. The
    cache lies beside umap's source (numba's ``__pycache__``, or its user-wide cache where that is not
    writable) and is keyed by the source file and the CPU, so a later process loads the same machine
    code in milliseconds. Where numba finds nowhere to write, the kernels are compiled as before.
    """
    import umap.layouts
    import umap.umap_
    import umap.utils
    from numba.core.caching import NullCache
    from numba.core.dispatcher import Dispatcher

    n = 0
    for module in (umap.umap_, umap.layouts, umap.utils):
        for kernel in vars(module).values():
            if not isinstance(kernel, Dispatcher):
                continue
            if isinstance(kernel._cache, NullCache):
                try:
                    kernel.enable_caching()
                except RuntimeError as e:  # numba: "cannot cache function ...: no locator available"
                    log.debug("UMAP kernels compile in every process: %s", e)
                    return n
            n += 1
    return n


def umap_layout(x: np.ndarray, centroids: np.ndarray, rows: np.ndarray, seed: int,
                n_neighbors: int = 15, n_epochs: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """2-D UMAP of the sampled rows together with all centroids.

    The k-nearest-neighbour graph is computed exactly with faiss (inner product on the
    L2-normalised vectors) and handed to UMAP, which skips NN-descent and its JIT warm-up.
    Returns (len(rows), 2) and (K, 2) float32 coordinates.
    """
    data = np.ascontiguousarray(np.concatenate([np.asarray(x[rows], dtype=np.float32),
                                                np.asarray(centroids, dtype=np.float32)]))
    n = data.shape[0]
    if n < MIN_UMAP_POINTS:  # UMAP's spectral/PCA initialisation fails on a handful of points
        xy = pca_2d(data)
        return xy[: rows.size], xy[rows.size:]
    import faiss
    import umap

    cache_umap_kernels()
    nn = int(min(n_neighbors, max(2, n - 1)))
    index = faiss.IndexFlatIP(data.shape[1])
    index.add(data)
    sims, knn = index.search(data, nn)
    knn_dist = np.clip(1.0 - sims, 0.0, 2.0).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # UMAP warns that precomputed_knn disables transform(): we never call it
        reducer = umap.UMAP(n_neighbors=nn, min_dist=0.1, metric="cosine", random_state=seed, init="pca",
                            n_epochs=n_epochs, precomputed_knn=(knn, knn_dist, None))
        xy = reducer.fit_transform(data).astype(np.float32)
    return xy[: rows.size], xy[rows.size:]
