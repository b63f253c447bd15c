"""SemDeDup groups inside large concepts (--dedup-clusters): the size rule, nesting, and what dedup finds."""

from __future__ import annotations

import numpy as np
import pytest

from densprune.cli.main import build_parser
from densprune.cluster.subclusters import (
    DEDUP_TARGET_ROWS,
    groups_per_concept,
    pair_count,
    parse_dedup_clusters,
    split_concepts,
)
from densprune.prune.semdedup import is_duplicate, semdedup


def test_groups_per_concept_rules():
    sizes = np.array([0, 1, DEDUP_TARGET_ROWS, DEDUP_TARGET_ROWS + 1, 10 * DEDUP_TARGET_ROWS])
    assert groups_per_concept(sizes, "auto").tolist() == [1, 1, 1, 2, 10]
    assert groups_per_concept(sizes, "concepts").tolist() == [1, 1, 1, 1, 1]
    total = groups_per_concept(np.array([100, 300, 600]), 20)
    assert total.tolist() == [2, 6, 12]
    with pytest.raises(ValueError, match="fewer than the 3 concepts"):
        groups_per_concept(np.array([100, 300, 600]), 2)
    assert pair_count(np.array([1, 2, 4])) == 0 + 1 + 6


def test_parse_and_cli_flag(capsys):
    assert parse_dedup_clusters("AUTO") == "auto" and parse_dedup_clusters("5000") == 5000
    with pytest.raises(ValueError, match="'auto', 'concepts' or a number"):
        parse_dedup_clusters("many")
    args = build_parser().parse_args(["precompute", "x", "-w", "y", "--dedup-clusters", "concepts"])
    assert args.dedup_clusters == "concepts"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["precompute", "x", "-w", "y", "--dedup-clusters", "0"])
    assert "must be at least 1" in capsys.readouterr().err


def _pool(seed: int = 0):
    """3 concepts of 600 / 300 / 100 rows made of 12 tight blobs, with 40 planted near-copies."""
    rng = np.random.default_rng(seed)
    d = 24
    blob_centres = rng.normal(size=(12, d))
    blob = np.repeat(np.arange(12), [150, 150, 150, 150, 75, 75, 75, 75, 25, 25, 25, 25])
    x = blob_centres[blob] + 0.6 * rng.normal(size=(blob.size, d))
    copies = rng.choice(blob.size, 40, replace=False)
    sources = rng.choice(np.setdiff1d(np.arange(blob.size), copies), 40, replace=False)
    x[copies] = x[sources] + 1e-3 * rng.normal(size=(40, d))
    blob[copies] = blob[sources]
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    labels = blob // 4  # concept = 4 blobs
    cent = np.stack([x[labels == j].mean(0) for j in range(3)])
    cent /= np.linalg.norm(cent, axis=1, keepdims=True)
    dist = 1.0 - np.einsum("ij,ij->i", x, cent[labels])
    return x.astype(np.float32), labels, dist, copies, sources


def test_split_groups_nest_inside_concepts_and_keep_the_duplicates():
    x, labels, dist, copies, sources = _pool()
    per = groups_per_concept(np.bincount(labels), 10)  # 6 + 3 + 1
    groups, gdist, n = split_concepts(x, labels, dist, per, seed=0)
    assert n == per.sum() == 10
    assert set(np.unique(groups)) <= set(range(10))
    for g in np.unique(groups):  # each group inside one concept
        assert np.unique(labels[groups == g]).size == 1
    assert np.all(groups[labels == 2] == 9) and np.array_equal(gdist[labels == 2], dist[labels == 2])
    assert gdist.min() >= 0 and gdist.max() <= 2
    again = split_concepts(x, labels, dist, per, seed=0)
    assert np.array_equal(groups, again[0])  # seeded
    sim_c, _ = semdedup(x, labels, dist)
    sim_g, dup_of = semdedup(x, groups, gdist)
    found_c, found_g = is_duplicate(sim_c, 0.01), is_duplicate(sim_g, 0.01)
    pair_found = found_g[copies] | found_g[sources]  # whichever of the pair ranks later is flagged
    assert pair_found.all(), "a near-copy and its source fell into different groups"
    assert found_g.sum() == found_c.sum() == 40
    assert np.all(labels[dup_of[found_g]] == labels[found_g])
    group_pairs = pair_count(np.bincount(groups))
    assert group_pairs < pair_count(np.bincount(labels)) / 3
