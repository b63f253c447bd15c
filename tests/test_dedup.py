"""Tests for densprune.prune.semdedup against brute-force pairwise similarity and against a
re-implementation of facebookresearch/SemDeDup's rule (semdedup.py: triu max over a zero-filled
similarity matrix, remove when M > 1 - eps)."""

from __future__ import annotations

import numpy as np
import pytest

from densprune.prune.semdedup import (
    COPY_TOL,
    dup_threshold,
    is_duplicate,
    kept_fraction_curve,
    max_similarity_to_earlier,
    semdedup,
)


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def planted(n: int, d: int, n_dup: int, seed: int) -> np.ndarray:
    """n unit vectors, n_dup of them tiny perturbations of earlier ones (cos ~ 0.999)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    src = rng.integers(0, n, size=n_dup)
    dst = rng.choice(n, size=n_dup, replace=False)
    x[dst] = x[src] + 0.02 * rng.normal(size=(n_dup, d))
    return unit(x)


def brute_force(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(max over earlier members, floored at 0 with 0 for the first; the raw maximum's index, -1 first)."""
    s = x.astype(np.float64) @ x.astype(np.float64).T
    s[np.triu_indices(len(x))] = -np.inf  # only earlier members: column < row
    best, arg = s.max(axis=1), s.argmax(axis=1)
    best[0], arg[0] = 0.0, -1
    return np.maximum(best, 0.0), arg


def assert_same(x, best, arg, ref_best, ref_arg, atol=2e-6):
    np.testing.assert_allclose(best, ref_best, atol=atol)
    assert (arg == ref_arg).mean() > 0.98, f"{(arg != ref_arg).sum()} argmax mismatches"
    # where the index differs (float ties), the chosen member must still attain the maximum
    x64 = x.astype(np.float64)
    i = np.flatnonzero(arg >= 0)
    np.testing.assert_allclose(np.maximum(np.einsum("nd,nd->n", x64[i], x64[arg[i]]), 0), ref_best[i], atol=atol)


@pytest.mark.parametrize("row_block,col_block", [(1024, 8192), (7, 5), (1, 1), (16, 64), (300, 3)])
def test_max_similarity_matches_brute_force(row_block, col_block):
    x = planted(257, 16, 40, seed=0)
    best, arg = max_similarity_to_earlier(x, row_block=row_block, col_block=col_block)
    ref_best, ref_arg = brute_force(x)
    assert best.dtype == np.float32 and arg.dtype == np.int64
    assert_same(x, best, arg, ref_best, ref_arg)
    assert (arg < np.arange(len(x))).all()  # always an EARLIER member
    assert best[0] == 0.0 and arg[0] == -1


def test_exact_duplicates_point_to_the_first_copy():
    base = unit(np.random.default_rng(1).normal(size=(5, 8)))
    x = np.concatenate([base, base[[2, 2, 0]]])  # rows 5, 6 copy row 2; row 7 copies row 0
    for rb, cb in [(2, 3), (1024, 8192)]:
        best, arg = max_similarity_to_earlier(x, row_block=rb, col_block=cb)
        np.testing.assert_allclose(best[5:], 1.0, atol=1e-6)
        assert arg[5:].tolist() == [2, 2, 0]  # ties go to the smallest index


def test_float16_input():
    x = planted(200, 32, 30, seed=2).astype(np.float16)
    best, arg = max_similarity_to_earlier(x, row_block=13, col_block=17)
    ref_best, ref_arg = brute_force(x.astype(np.float32))
    assert best.dtype == np.float32
    assert_same(x, best, arg, ref_best, ref_arg, atol=1e-5)


def test_tiny_inputs():
    best, arg = max_similarity_to_earlier(np.zeros((0, 4), np.float32))
    assert best.shape == (0,) and arg.shape == (0,)
    best, arg = max_similarity_to_earlier(unit(np.ones((1, 4))))
    assert best.tolist() == [0.0] and arg.tolist() == [-1]
    with pytest.raises(ValueError, match="row_block"):
        max_similarity_to_earlier(unit(np.ones((3, 4))), row_block=0)


def direct_semdedup(x, clusters, dist):
    """Per-cluster loop: order by dist desc (ties by row), brute force, map back to global rows."""
    n = len(x)
    max_sim, dup_of = np.full(n, 0.0), np.full(n, -1)
    for c in np.unique(clusters):
        rows = np.flatnonzero(clusters == c)
        rows = rows[np.lexsort((rows, -dist[rows]))]
        best, arg = brute_force(x[rows])
        max_sim[rows] = best
        dup_of[rows] = np.where(arg >= 0, rows[arg], -1)
    return max_sim, dup_of


@pytest.mark.parametrize("row_block,col_block", [(1024, 8192), (4, 6), (1, 1)])
def test_semdedup_against_direct_loop(tmp_path, row_block, col_block):
    rng = np.random.default_rng(3)
    x = planted(400, 12, 60, seed=3)
    clusters = rng.integers(0, 6, size=400) * 3  # sparse, non-contiguous ids
    dist = np.round(rng.random(400), 1)  # many ties: broken by row index
    path = tmp_path / "emb.npy"
    np.save(path, x.astype(np.float16))
    emb = np.load(path, mmap_mode="r")
    max_sim, dup_of = semdedup(emb, clusters, dist, row_block=row_block, col_block=col_block, progress=True)
    ref_sim, ref_dup = direct_semdedup(unit(emb.astype(np.float32)), clusters, dist)  # semdedup renormalises
    ref_sim = np.minimum(ref_sim, 1.0)  # semdedup clips cosines at 1 (float rounding of near-copies)
    assert max_sim.dtype == np.float32 and dup_of.dtype == np.int64
    np.testing.assert_allclose(max_sim, ref_sim, atol=1e-5)
    assert (dup_of == ref_dup).mean() > 0.99
    has = dup_of >= 0
    assert (clusters[dup_of[has]] == clusters[has]).all()  # same cluster
    assert (dist[dup_of[has]] >= dist[has]).all()  # ranked earlier: at least as far from the centroid
    x64 = unit(emb.astype(np.float32)).astype(np.float64)  # dup_of attains max_sim
    np.testing.assert_allclose(np.clip(np.einsum("nd,nd->n", x64[has], x64[dup_of[has]]), 0.0, 1.0), max_sim[has],
                               atol=1e-5)
    # exactly one member without an earlier one per cluster
    assert (~has).sum() == len(np.unique(clusters))


def test_semdedup_validates():
    x = unit(np.ones((4, 3)))
    with pytest.raises(ValueError, match="must both be"):
        semdedup(x, np.zeros(3, int), np.zeros(4))
    with pytest.raises(ValueError, match="finite"):
        semdedup(x, np.zeros(4, int), np.array([0, np.nan, 0, 0]))


def test_is_duplicate_and_curve():
    rng = np.random.default_rng(4)
    max_sim = np.concatenate([rng.uniform(0, 1, 500), [0.0, 0.95, 1.0, 1 - 1e-6, np.nan]]).astype(np.float32)
    eps = np.array([0.0, 0.01, 0.05, 0.07, 0.3, 1.0, 0.05])
    curve = kept_fraction_curve(max_sim, eps)
    direct = np.array([np.mean([not (m > np.float64(1 - max(e, COPY_TOL))) for m in max_sim.astype(np.float64)])
                       for e in eps])
    np.testing.assert_array_equal(curve, direct)
    for e, f in zip(eps, curve):
        assert (~is_duplicate(max_sim, e)).mean() == f
    assert np.all(np.diff(kept_fraction_curve(max_sim, np.linspace(0, 1, 50))) <= 0)  # more eps, fewer kept
    # float32 0.95 is 0.949999988...: not a duplicate at eps = 0.05 (1 - eps = 0.95 in float64)
    assert not is_duplicate(np.float32([0.95]), 0.05)[0]
    assert is_duplicate(np.float32([1.0, 1 - 1e-6, 1 - 1e-4]), 0.0).tolist() == [True, True, False]
    assert dup_threshold(0.05) == 1 - 0.05 and dup_threshold(0.0) == 1 - COPY_TOL
    assert kept_fraction_curve(np.zeros(0), eps).tolist() == [1.0] * len(eps)
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="eps"):
            is_duplicate(max_sim, bad)


def original_semdedup(x: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """facebookresearch/SemDeDup, semdedup.py, for one cluster already sorted farthest first, in numpy:
    pairwise cosine, diagonal to 0, upper triangle, column max; remove when M > 1 - eps (float32, as
    its torch code computes it). Returns (M, removed)."""
    s = x.astype(np.float32) @ x.astype(np.float32).T
    np.fill_diagonal(s, 0.0)
    m = np.triu(s, k=1).max(axis=0)
    return m, m > 1 - eps


def clustered(n: int, d: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit vectors around k centres with exact copies, near copies (cos ~ 0.99) and far members."""
    rng = np.random.default_rng(seed)
    centres = unit(rng.normal(size=(k, d)))
    labels = rng.integers(0, k, size=n)
    x = centres[labels] + rng.normal(scale=rng.choice([0.05, 0.2, 0.6], size=(n, 1)), size=(n, d))
    src = rng.choice(n, size=n // 5, replace=False)
    dst = rng.choice(np.setdiff1d(np.arange(n), src), size=n // 5, replace=False)
    x[dst[: n // 10]] = x[src[: n // 10]]  # exact copies
    x[dst[n // 10:]] = x[src[n // 10:]] + 0.01 * rng.normal(size=(n // 5 - n // 10, d))  # near copies
    labels[dst] = labels[src]
    x = unit(x)
    dist = 1 - np.einsum("nd,nd->n", x.astype(np.float64), centres[labels].astype(np.float64))
    return x, labels, dist


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_semdedup_matches_the_original_rule(seed):
    """Per cluster, sorted farthest first as the original's sort_clusters.py (keep_hard, stable), the
    stored value equals the original's M and the removed set equals its M > 1 - eps for every eps
    (eps = 0: exact copies, the one place the original is at the mercy of float rounding)."""
    x, labels, dist = clustered(300, 24, 4, seed)
    max_sim, dup_of = semdedup(x, labels, dist, row_block=37, col_block=53)
    copy_rows = set()
    for c in range(4):
        rows = np.flatnonzero(labels == c)
        rows = rows[np.argsort(-dist[rows], kind="stable")]
        m, _ = original_semdedup(x[rows], 0.0)
        assert m[0] == 0.0 and max_sim[rows[0]] == 0.0  # the first member: 0 in both
        np.testing.assert_allclose(max_sim[rows], np.minimum(m, 1.0), atol=1e-6)
        copy_rows |= {int(rows[i]) for i in range(1, len(rows)) if np.any(np.all(x[rows[:i]] == x[rows[i]], axis=1))}
        for eps in (0.001, 0.01, 0.05, 0.1, 0.3, 0.6, 1.0):
            _, removed = original_semdedup(x[rows], eps)
            thr_gap = np.abs(m - (1 - eps))
            ours = is_duplicate(max_sim[rows], eps)
            assert np.array_equal(ours[thr_gap > 1e-5], removed[thr_gap > 1e-5]), (c, eps)
    at_zero = set(np.flatnonzero(is_duplicate(max_sim, 0.0)).tolist())
    assert copy_rows and at_zero == copy_rows  # eps = 0 removes the exact copies and nothing else


def test_exact_copies_are_duplicates_at_eps_zero_and_similarity_never_exceeds_one():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(40, 24)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    x[20:] = x[:20]  # exact copies
    near = x[:20] + 1e-2 * rng.normal(size=(20, 24)).astype(np.float32)
    x = np.concatenate([x, unit(near)])  # near copies (cos ~ 0.995): not removed at eps = 0
    for store in (np.float32, np.float16):  # float16 storage: renormalised, copies still at 1
        sim, dup_of = semdedup(x.astype(store), np.zeros(60, dtype=np.int64), rng.random(60))
        assert sim.max() <= 1.0 and sim.min() >= 0.0
        dup0 = is_duplicate(sim, 0.0)
        assert dup0.sum() == 20  # eps = 0: every exact copy after its first occurrence
        assert not dup0[40:].any()
        assert is_duplicate(sim, 0.05).sum() >= 40  # a looser eps takes the near copies too
