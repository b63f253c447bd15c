"""Clustering and concept statistics against direct numpy computations."""

from __future__ import annotations

import numpy as np

from densprune.cluster.concepts import (
    complexity,
    inter_distance,
    intra_distance,
    nearest_concepts,
)
from densprune.cluster.kmeans import (
    assign,
    default_num_clusters,
    rank_in_cluster,
    train_spherical_kmeans,
)


def blobs(n_per: int = 80, k: int = 5, d: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(k, d))
    x = np.concatenate([c + rng.normal(scale=0.05 * (i + 1), size=(n_per, d)) for i, c in enumerate(centers)])
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), np.repeat(np.arange(k), n_per)


def test_kmeans_matches_bare_faiss_and_assignment_matches_numpy():
    import faiss

    x, truth = blobs()
    cent = train_spherical_kmeans(x, 8, niter=30, seed=1)
    km = faiss.Kmeans(16, 8, niter=30, seed=1, spherical=True, max_points_per_centroid=256)
    km.train(x)
    np.testing.assert_allclose(cent, km.centroids / np.linalg.norm(km.centroids, axis=1, keepdims=True), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(cent, axis=1), 1.0, atol=1e-5)
    labels, sims = assign(x, cent, block=37)
    sim_np = x @ cent.T
    np.testing.assert_array_equal(labels, sim_np.argmax(1))
    np.testing.assert_allclose(sims, sim_np.max(1), atol=1e-5)
    # clusters are pure: each holds (almost) one blob only
    for j in np.unique(labels):
        assert np.bincount(truth[labels == j]).max() >= 0.95 * (labels == j).sum()


def test_kmeans_is_seeded():
    x, _ = blobs(seed=3)
    np.testing.assert_array_equal(train_spherical_kmeans(x, 4, seed=7), train_spherical_kmeans(x, 4, seed=7))


def test_kmeans_trains_on_given_rows_only():
    x, truth = blobs()
    cent = train_spherical_kmeans(x, 2, train_rows=np.flatnonzero(truth < 2), seed=0)
    labels, _ = assign(x[truth < 2], cent)
    assert set(np.unique(labels)) == {0, 1}


def test_rank_in_cluster_against_loop():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 6, 300)
    dist = rng.random(300)
    ranks = rank_in_cluster(labels, dist)
    for j in range(6):
        rows = np.flatnonzero(labels == j)
        expect = np.empty(rows.size, int)
        expect[np.argsort(dist[rows], kind="stable")] = np.arange(rows.size)
        np.testing.assert_array_equal(ranks[rows], expect)


def test_cluster_stats_against_direct_numpy():
    x, _ = blobs(k=6)
    cent = train_spherical_kmeans(x, 6, seed=0, nredo=3)
    labels, sims = assign(x, cent)
    dist = 1 - sims.astype(np.float64)
    d_intra = intra_distance(labels, dist, 8)  # two extra, empty clusters
    for j in range(6):
        m = labels == j
        np.testing.assert_allclose(d_intra[j], np.mean(1 - x[m] @ cent[j]), rtol=1e-4)
    assert np.isnan(d_intra[6]) and np.isnan(d_intra[7])
    d_inter = inter_distance(cent, neighbors=3)
    for j in range(6):
        dj = np.sort([1 - cent[j] @ cent[i] for i in range(6) if i != j])[:3]
        np.testing.assert_allclose(d_inter[j], dj.mean(), rtol=1e-5)
    # l = min(l, K-1)
    np.testing.assert_allclose(inter_distance(cent, neighbors=100), inter_distance(cent, neighbors=5))
    np.testing.assert_allclose(complexity(d_intra[:6], d_inter), d_intra[:6] * d_inter)
    order, d = nearest_concepts(cent, 0, 3)
    assert 0 not in order and np.all(np.diff(d) >= 0)


def test_default_k_scales():
    assert default_num_clusters(8121) == 90
    assert default_num_clusters(10) == 3
    assert default_num_clusters(10**9) == 500
