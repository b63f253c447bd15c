"""The plan index stored in the workspace (densprune.prune.plan_index) and PlanIndex.members."""

from __future__ import annotations

import logging
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from densprune import db
from densprune.prune import plan_index
from densprune.prune.plan_index import build_index, load_index
from densprune.prune.selection import PlanIndex, PlanParams


def synthetic_index(n: int = 3000, k: int = 12, seed: int = 0, ties: bool = False) -> PlanIndex:
    rng = np.random.default_rng(seed)
    cl = rng.integers(0, k - 1, n)  # cluster k-1 stays empty
    dist = rng.uniform(0.05, 0.9, n)
    if ties:
        dist = np.round(dist, 1)  # many equal distances inside each cluster
    cen = rng.normal(size=(k, 8))
    return PlanIndex.build(cl, dist, cen / np.linalg.norm(cen, axis=1, keepdims=True), in_pool=rng.random(n) > 0.1,
                           dup_max_sim=rng.uniform(0, 1, n), clip_score=rng.uniform(0.1, 0.4, n),
                           negclip_score=rng.normal(size=n))


PARAMS = [PlanParams(keep=0.3), PlanParams(keep=0.5, dedup_eps=0.2, clip_keep=0.8),
          PlanParams(keep=0.2, within="random", seed=3), PlanParams(keep=0.4, within="easy"),
          PlanParams(keep=0.3, method="ssp"), PlanParams(keep=0.3, method="random", seed=5),
          PlanParams(keep=0.25, method="clip-score"), PlanParams(keep=0.25, method="dedup"),
          PlanParams(keep=0.25, method="negclip")]


def assert_same_plans(a: PlanIndex, b: PlanIndex) -> None:
    for p in PARAMS:
        ra, rb = a.compute(p), b.compute(p)
        np.testing.assert_array_equal(ra.keep, rb.keep, err_msg=str(p))
        np.testing.assert_array_equal(ra.quota, rb.quota)
        np.testing.assert_array_equal(ra.complexity, rb.complexity)


def test_arrays_round_trip_gives_the_same_plans(tmp_path):
    index = synthetic_index()
    arrays = index.arrays()
    assert set(arrays) == set(PlanIndex.STORED) and arrays["order"].dtype == np.int32
    for name, arr in arrays.items():  # through files mapped read-only, as the store reads them
        np.save(tmp_path / f"{name}.npy", arr)
    restored = PlanIndex.from_arrays({n: np.load(tmp_path / f"{n}.npy", mmap_mode="r") for n in arrays})
    assert not restored.inv.flags.writeable  # the stored inverse, mapped, not computed again
    np.testing.assert_array_equal(restored.inv, index.inv)
    assert_same_plans(index, restored)
    np.testing.assert_array_equal(index.rows_cluster(), restored.rows_cluster())
    np.testing.assert_array_equal(index.rows_in_pool(), restored.rows_in_pool())


def test_an_index_stored_before_its_inverse_was_loads_the_same():
    index = synthetic_index()
    arrays = {k: v for k, v in index.arrays().items() if k != "inv"}
    restored = PlanIndex.from_arrays(arrays)
    np.testing.assert_array_equal(restored.inv, index.inv)
    assert_same_plans(index, restored)


def test_an_index_without_dedup_or_clip_round_trips():
    rng = np.random.default_rng(1)
    index = PlanIndex.build(rng.integers(0, 5, 400), rng.uniform(0, 1, 400), np.eye(5))
    arrays = index.arrays()
    assert "dup_h" not in arrays and "clip_rank" not in arrays
    restored = PlanIndex.from_arrays(arrays)
    assert not restored.has_dedup and not restored.has_clip_scores
    np.testing.assert_array_equal(index.compute(PlanParams(keep=0.3)).keep, restored.compute(PlanParams(keep=0.3)).keep)


@pytest.mark.parametrize("change, message", [
    (lambda a: a.update(order=a["order"][:-1]), "rows in order"),
    (lambda a: a.update(dist_h=a["dist_h"][:-1]), "dist_h has shape"),
    (lambda a: a.pop("dup_rank"), "global order"),
    (lambda a: a.pop("pool_h"), "needs the arrays"),
    (lambda a: a.update(d_intra=a["d_intra"][:3]), "do not fit"),
    (lambda a: a.update(inv=a["inv"][:-1]), "inv has shape"),
    (lambda a: a.update(inv=np.roll(a["inv"], 1)), "not the inverse"),
    (lambda a: a.update(inv=a["inv"].astype(np.float64)), "not the inverse"),
])
def test_from_arrays_refuses_arrays_that_do_not_fit(change, message):
    arrays = dict(synthetic_index(n=200).arrays())
    change(arrays)
    with pytest.raises(ValueError, match=message):
        PlanIndex.from_arrays(arrays)


def reference_members(index: PlanIndex, cluster: int, limit: int, nearest_first: bool) -> np.ndarray:
    """What ``ORDER BY rank_in_cluster [DESC] LIMIT`` returns: rows by (distance, row), or that reversed."""
    rows = index.order[index.offsets[cluster]:index.offsets[cluster + 1]]
    dist = index._dist_h[index.offsets[cluster]:index.offsets[cluster + 1]]
    by_rank = rows[np.lexsort((rows, dist))]
    return (by_rank if nearest_first else by_rank[::-1])[:limit]


@pytest.mark.parametrize("ties", [False, True])
def test_members_follow_rank_in_cluster(ties):
    index = synthetic_index(n=2000, k=6, ties=ties)
    for c in range(index.n_clusters):
        for limit in (0, 1, 7, 50, 10_000):
            for nearest in (True, False):
                got = index.members(c, limit, nearest)
                np.testing.assert_array_equal(got, reference_members(index, c, limit, nearest),
                                              err_msg=f"cluster {c} limit {limit} nearest {nearest}")
    assert index.members(index.n_clusters - 1, 10).size == 0  # the empty cluster
    with pytest.raises(ValueError, match="cluster must be"):
        index.members(index.n_clusters, 3)


def test_members_match_the_workspace_query(demo_workspace):
    index = load_index(demo_workspace)
    for c in (0, 5, int(np.argmax(index.sizes))):
        for nearest in (True, False):
            want = db.query_df(demo_workspace, "SELECT row_idx FROM samples WHERE cluster = ? ORDER BY rank_in_cluster "
                               + ("ASC" if nearest else "DESC") + " LIMIT 40", [c])["row_idx"].to_numpy()
            np.testing.assert_array_equal(index.members(c, 40, nearest), want)


@pytest.fixture
def workspace_copy(small_workspace: Path, tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    shutil.copytree(small_workspace, ws)
    return ws


def test_precompute_stores_the_index_and_a_new_process_maps_it(small_workspace, caplog):
    meta = db.load_meta(small_workspace)
    assert meta.get("build_id")
    stored = plan_index.stored_path(small_workspace, plan_index.index_key(small_workspace, meta))
    assert stored.is_dir() and {p.stem for p in stored.glob("*.npy")} >= {"order", "dist_h", "pool_h"}
    with caplog.at_level(logging.INFO, logger="densprune.prune.plan_index"):
        mapped = load_index(small_workspace)
    assert "mapped from" in caplog.text
    assert isinstance(mapped._dist_h.base, np.memmap) or isinstance(mapped._dist_h, np.memmap)
    assert_same_plans_on_workspace(mapped, build_index(small_workspace))


def assert_same_plans_on_workspace(a: PlanIndex, b: PlanIndex) -> None:
    for p in (PlanParams(keep=0.5), PlanParams(keep=0.5, dedup_eps=0.1), PlanParams(keep=0.5, method="random")):
        np.testing.assert_array_equal(a.compute(p).keep, b.compute(p).keep)


def test_a_changed_build_gets_a_new_index_and_the_old_one_goes(workspace_copy):
    ws = workspace_copy
    old = plan_index.stored_path(ws, plan_index.index_key(ws, db.load_meta(ws)))
    assert old.is_dir()
    db.set_meta(ws, "reclustered", {"at": "now"})  # what recluster changes with the clusters
    new_key = plan_index.index_key(ws, db.load_meta(ws))
    assert plan_index.load_stored(ws, new_key) is None
    load_index(ws)
    assert plan_index.stored_path(ws, new_key).is_dir() and not old.exists()


def test_a_damaged_stored_index_is_rebuilt(workspace_copy, caplog):
    ws = workspace_copy
    key = plan_index.index_key(ws, db.load_meta(ws))
    path = plan_index.stored_path(ws, key) / "dist_h.npy"
    path.write_bytes(path.read_bytes()[:100])  # truncated
    with caplog.at_level(logging.WARNING, logger="densprune.prune.plan_index"):
        index = load_index(ws)
    assert "cannot be used" in caplog.text
    assert_same_plans_on_workspace(index, build_index(ws))


def test_a_workspace_that_cannot_hold_the_index_still_opens(workspace_copy, caplog):
    ws = workspace_copy
    shutil.rmtree(ws / plan_index.INDEX_DIR)
    (ws / plan_index.INDEX_DIR).write_text("not a folder")  # mkdir under it fails, as on a read-only mount
    with caplog.at_level(logging.WARNING, logger="densprune.prune.plan_index"):
        index = load_index(ws)
    assert "could not store the plan index" in caplog.text
    assert index.n_rows == db.load_sample_arrays(ws, ("row_idx",))["row_idx"].size
    assert not list(ws.glob(".plan-*"))


def test_racing_writers_leave_one_complete_index(workspace_copy):
    """Writers that race (each round four at once) all return the one complete folder; a writer
    cleaning up while another renames its temporary folder away is no error (it once was)."""
    ws = workspace_copy
    key = plan_index.index_key(ws, db.load_meta(ws))
    index = build_index(ws)
    final = plan_index.stored_path(ws, key)
    for _ in range(15):
        shutil.rmtree(ws / plan_index.INDEX_DIR)
        start = threading.Barrier(4)

        def write() -> Path | None:
            start.wait()
            return plan_index.store(ws, key, index)

        with ThreadPoolExecutor(4) as pool:
            done = list(pool.map(lambda _: write(), range(4)))
        assert done == [final] * 4
        assert list((ws / plan_index.INDEX_DIR).iterdir()) == [final]  # no temporary folder left behind
    assert_same_plans_on_workspace(plan_index.load_stored(ws, key), index)


def test_duplicates_of_a_cluster_most_similar_first():
    index = synthetic_index(n=1500, k=5, ties=False)
    for c in range(index.n_clusters):
        lo, hi = index.offsets[c], index.offsets[c + 1]
        rows, sims = index.order[lo:hi], index._dup_h[lo:hi]
        hit = sims > 1 - 0.3
        want = rows[hit][np.lexsort((rows[hit], -sims[hit]))]
        got, total = index.duplicates(c, 0.3, 7)
        assert total == hit.sum()
        np.testing.assert_array_equal(got, want[:7])
    with pytest.raises(ValueError, match="no SemDeDup"):
        PlanIndex.build(np.zeros(3, int), np.zeros(3), np.eye(2)).duplicates(0, 0.1, 5)


def test_index_columns_come_in_row_order_whatever_order_the_table_holds(workspace_copy):
    """A samples table whose rows are stored out of row_idx order (possible in a workspace written by
    another tool or an older version) still gives the index its columns in row order."""
    import duckdb

    ws = workspace_copy
    want = build_index(ws)
    con = duckdb.connect(str(db.db_path(ws)))
    con.execute("CREATE TABLE shuffled AS SELECT * FROM samples ORDER BY hash(row_idx * 7919)")
    con.execute("DROP TABLE samples")
    con.execute("ALTER TABLE shuffled RENAME TO samples")
    con.close()
    assert db.query_df(ws, "SELECT row_idx FROM samples")["row_idx"].tolist() != sorted(
        db.query_df(ws, "SELECT row_idx FROM samples")["row_idx"].tolist())
    cols = db.index_columns(ws)
    assert cols["cluster"].dtype == np.int32 and cols["pool"].dtype == np.bool_
    assert_same_plans_on_workspace(build_index(ws), want)


def test_an_index_stored_without_its_inverse_gets_it_on_its_first_open(workspace_copy, monkeypatch):
    ws = workspace_copy
    folder = plan_index.stored_path(ws, plan_index.index_key(ws, db.load_meta(ws)))
    (folder / "inv.npy").unlink()  # as stored before the inverse was
    first = load_index(ws)
    assert (folder / "inv.npy").is_file() and not list(folder.glob(".*.tmp"))
    second = load_index(ws)
    assert not second.inv.flags.writeable  # mapped from the file now
    np.testing.assert_array_equal(second.inv, first.inv)
    assert_same_plans_on_workspace(second, build_index(ws))
    (folder / "inv.npy").unlink()

    def read_only(*args):
        raise PermissionError(13, "Read-only file system")

    monkeypatch.setattr(plan_index.os, "replace", read_only)  # a folder this process cannot write
    assert_same_plans_on_workspace(load_index(ws), first)  # it opens, computing the inverse
    assert not (folder / "inv.npy").exists() and not list(folder.glob(".*.tmp"))
