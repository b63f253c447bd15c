"""The 2-D concept map: UMAP of a row sample together with the centroids, on an exact faiss kNN graph."""

from __future__ import annotations

import warnings

import numpy as np

MIN_UMAP_POINTS = 16  # fewer rows + centroids than this are laid out by PCA


def pca_2d(data: np.ndarray) -> np.ndarray:
    """(n, d) -> (n, 2) float32: the first two principal components (zeros where there are fewer)."""
    centred = data.astype(np.float64) - data.mean(axis=0, keepdims=True)
    u, sv, _ = np.linalg.svd(centred, full_matrices=False)
    out = np.zeros((data.shape[0], 2), np.float32)
    k = min(2, sv.size)
    out[:, :k] = (u[:, :k] * sv[:k]).astype(np.float32)
    return out


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
