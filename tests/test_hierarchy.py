"""Hierarchical balanced sampling (Vo et al. 2024): the k-means tree of the concept centroids, the top-down
equal quotas against a direct recursive implementation, the plan method on the demo and as a user types it."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from console import run_densprune

from densprune.cluster.hierarchy import concept_hierarchy, default_levels, spherical_kmeans
from densprune.prune import plan_index
from densprune.prune.quotas import balanced_quotas, hierarchical_quotas
from densprune.prune.selection import PlanParams


def test_default_levels():
    assert default_levels(500) == (50, 5)
    assert default_levels(89) == (8,)
    assert default_levels(19) == ()
    assert default_levels(5000) == (500, 50, 5)


def test_the_tree_recovers_well_separated_groups():
    rng = np.random.default_rng(0)
    groups = rng.normal(size=(6, 16))
    truth = np.repeat(np.arange(6), 10)
    cent = groups[truth] + 0.05 * rng.normal(size=(60, 16))
    for seed in range(3):
        (par,) = concept_hierarchy(cent, (6,), seed=seed)
        assert par.shape == (60,) and par.max() == 5
        # the same partition up to the labels: every true group maps to one node and back
        pairs = set(zip(truth.tolist(), par.tolist()))
        assert len(pairs) == 6


def test_kmeans_labels_are_nearest_centroids():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(80, 8))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    labels, cent = spherical_kmeans(x, 7, seed=3)
    np.testing.assert_array_equal(labels, np.argmax(x @ cent.T, axis=1))
    np.testing.assert_allclose(np.linalg.norm(cent, axis=1), 1.0)


def _water(caps: list[float], budget: float) -> list[float]:
    """Real-valued equal shares of ``budget`` under ``caps``, written out: give every child that still
    has room the same amount until the budget is spent or every child is full."""
    got = [0.0] * len(caps)
    left = float(min(budget, sum(caps)))
    while left > 1e-9:
        room = [i for i in range(len(caps)) if got[i] < caps[i] - 1e-12]
        step = min(left / len(room), min(caps[i] - got[i] for i in room))
        for i in room:
            got[i] += step
        left -= step * len(room)
    return got


def _direct(caps: dict, children: dict, node, budget: float, out: dict) -> None:
    """Top-down equal sampling over the tree, recursively, in real numbers (leaves: concepts)."""
    if node not in children:
        out[node] = budget
        return
    kids = children[node]
    for kid, share in zip(kids, _water([caps[c] for c in kids], budget)):
        _direct(caps, children, kid, share, out)


def _is_water_filled(q: np.ndarray, cap: np.ndarray) -> bool:
    free = q < cap
    return not free.any() or (q[free].max() - q[free].min() <= 1 and (q[~free] <= q[free].max()).all())


@pytest.mark.parametrize("seed", range(12))
def test_quotas_equal_a_direct_top_down_implementation(seed):
    rng = np.random.default_rng(seed)
    k = int(rng.integers(2, 60))
    counts = rng.integers(0, 200, size=k) * (rng.random(k) > 0.1)
    parents, n = [], k
    for _ in range(int(rng.integers(0, 3))):
        par = np.unique(rng.integers(0, int(rng.integers(1, max(2, n))), size=n), return_inverse=True)[1]
        parents.append(par)
        n = int(par.max()) + 1
    budget = int(rng.integers(0, counts.sum() + 30))
    q = hierarchical_quotas(counts, parents, budget)
    assert q.sum() == min(budget, counts.sum()) and (q >= 0).all() and (q <= counts).all()
    # every node's quota is water-filled among its children, at every level
    chain, caps_l, q_l = [np.arange(k)], [counts], [q]
    for par in parents:
        caps_l.append(np.bincount(par, weights=caps_l[-1]).astype(np.int64))
        q_l.append(np.bincount(par, weights=q_l[-1]).astype(np.int64))
    assert _is_water_filled(q_l[-1], caps_l[-1])
    for level, par in enumerate(parents):
        for g in range(int(par.max()) + 1):
            kids = par == g
            assert _is_water_filled(q_l[level][kids], caps_l[level][kids])
    # and within rounding of the direct real-valued top-down shares
    caps = {(0, i): int(c) for i, c in enumerate(counts)}
    children: dict = {}
    for level, par in enumerate(parents):
        for i, pnt in enumerate(par):
            node = (level + 1, int(pnt))
            children.setdefault(node, []).append((level, i))
            caps[node] = caps.get(node, 0) + caps[(level, i)]
    children["root"] = [(len(parents), i) for i in range(n)]
    out: dict = {}
    _direct(caps, children, "root", budget, out)
    direct = np.array([out[(0, i)] for i in range(k)])
    assert np.abs(q - direct).max(initial=0) <= len(parents) + 1
    assert np.abs(q_l[-1] - np.bincount(chain[0] if not parents else _top_of(parents, k), weights=direct)).max(
        initial=0) <= 1


def _top_of(parents: list[np.ndarray], k: int) -> np.ndarray:
    node = np.arange(k)
    for par in parents:
        node = par[node]
    return node


def test_one_level_is_balanced_sampling():
    counts = np.array([5, 100, 0, 40, 7])
    np.testing.assert_array_equal(hierarchical_quotas(counts, [], 60), balanced_quotas(counts, 60))


def test_a_branch_with_many_concepts_gets_no_more_than_a_branch_with_one():
    counts = np.array([100] * 9 + [100])
    parents = [np.array([0] * 9 + [1])]  # nine concepts in one branch, one in the other
    q = hierarchical_quotas(counts, parents, 100)
    assert q[9] == 50 and q[:9].sum() == 50  # balanced sampling would give the lone concept 10


def test_plan_method_on_the_demo(demo_workspace):
    index = plan_index.load_index(demo_workspace)
    for within in ("hard", "random"):
        p = PlanParams(method="hierarchical", keep=0.3, within=within, seed=2)
        full, fast = index.compute(p), index.compute(p, mask=False)
        np.testing.assert_array_equal(full.kept, hierarchical_quotas(full.eligible, index.hierarchy(2), full.budget))
        np.testing.assert_array_equal(fast.kept, full.kept)
        np.testing.assert_array_equal(np.bincount(index.rows_cluster()[full.keep], minlength=index.n_clusters),
                                      full.kept)
    other = index.compute(PlanParams(method="hierarchical", keep=0.3, seed=5), mask=False)
    assert other.n_kept == full.n_kept  # another seed: another tree, the same budget


def test_plan_command_hierarchical(demo_workspace, tmp_path):
    ws = tmp_path / "ws"
    shutil.copytree(demo_workspace, ws, ignore=shutil.ignore_patterns("exports", ".work", "plans"))
    out = run_densprune("plan", ws, "--name", "hier", "--keep", "0.3", "--method", "hierarchical", "--within",
                        "random")
    assert out.returncode == 0, out.stderr
    listed = json.loads(run_densprune("plans", ws, "--json").stdout)
    row = next(r for r in listed if r["name"] == "hier")
    assert row["method"] == "hierarchical" and json.loads(row["params"])["within"] == "random"
    assert 0 < row["diagnostics"]["jaccard_balanced"] <= 1
