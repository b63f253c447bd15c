"""``densprune recluster``: k-means on the deduplicated pool rewrites the workspace's clusters atomically."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from densprune import db
from densprune.cli.main import main
from densprune.prune.plan_index import load_index
from densprune.prune.plans import list_plans, save_plan
from densprune.prune.selection import PlanParams
from densprune.prune.semdedup import is_duplicate
from densprune.workspace import CENTROIDS, finish_centroids, sha256_file

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def reclustered(demo_workspace: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A copy of the demo with one saved plan, reclustered at eps 0.05 with K=40 through the CLI."""
    ws = tmp_path_factory.mktemp("recluster") / "ws"
    shutil.copytree(demo_workspace, ws, ignore=shutil.ignore_patterns("exports", "runs", "plans"))
    for name in list_plans(ws)["name"]:
        db.delete_plan(ws, name)
    before = {"clusters": db.load_sample_arrays(ws, ("cluster",))["cluster"], "k": db.load_meta(ws)["k"],
              "index": load_index(ws)}
    save_plan(ws, "old", before["index"].compute(PlanParams(keep=0.3)))
    assert main(["recluster", str(ws), "--dedup-eps", "0.05", "--clusters", "40"]) == 2  # refused: a saved plan
    assert db.load_meta(ws)["k"] == before["k"] and not (ws / (CENTROIDS + ".tmp")).exists()
    assert main(["recluster", str(ws), "--dedup-eps", "0.05", "--clusters", "40", "--drop-plans"]) == 0
    return {"ws": ws, **before}


def test_every_row_goes_to_its_nearest_new_centroid(reclustered):
    ws = reclustered["ws"]
    meta = db.load_meta(ws)
    cent = np.load(ws / CENTROIDS)
    assert cent.shape[0] == meta["k"] == 40 and meta["reclustered"]["dedup_eps"] == 0.05
    assert meta["centroids_sha256"] == sha256_file(ws / CENTROIDS)
    x = np.load(ws / "embeddings" / "image.npy")
    arr = db.load_sample_arrays(ws, ("cluster", "dist_to_centroid", "rank_in_cluster", "split", "dup_max_sim"))
    sims = x @ cent.T
    assert (sims[np.arange(len(x)), arr["cluster"]] >= sims.max(axis=1) - 1e-5).all()
    np.testing.assert_allclose(arr["dist_to_centroid"], 1 - sims.max(axis=1), atol=1e-5)
    for j in np.unique(arr["cluster"]):  # rank 0 = nearest its (new) centroid, ranks 0..n-1
        rows = np.flatnonzero(arr["cluster"] == j)
        assert sorted(arr["rank_in_cluster"][rows]) == list(range(rows.size))
        assert arr["rank_in_cluster"][rows[np.argmin(arr["dist_to_centroid"][rows])]] == 0
    train = (arr["split"] == "pool") & ~is_duplicate(arr["dup_max_sim"], 0.05)
    assert meta["reclustered"]["train_rows"] == int(train.sum())
    c = db.load_clusters(ws)
    assert len(c) == 40 and c["size"].sum() == len(x) and c["label"].str.len().gt(0).any()
    pool = arr["split"] == "pool"
    np.testing.assert_array_equal(c["pool_size"], np.bincount(arr["cluster"][pool], minlength=40))
    lay = db.load_layout(ws)
    np.testing.assert_array_equal(lay["cluster"], arr["cluster"][lay["row_idx"]])
    assert np.isfinite(c[["x", "y"]].to_numpy()).all()


def test_plans_dropped_and_new_plans_use_the_new_clusters(reclustered):
    ws = reclustered["ws"]
    assert list_plans(ws).empty and not (ws / "plans" / "old.npy").exists()
    index = load_index(ws)  # not the cached index of the old clustering
    assert index is not reclustered["index"] and index.n_clusters == 40
    r = index.compute(PlanParams(keep=0.3, dedup_eps=0.05))
    assert r.n_kept == round(0.3 * r.n_eligible)
    save_plan(ws, "new", r)
    assert main(["info", str(ws)]) == 0


def test_an_interrupted_recluster_is_finished_on_the_next_load(reclustered, tmp_path):
    """The database commits first; if the process dies before the centroid file is renamed, loading
    the workspace completes the rename (and a stray temporary file the database does not describe is
    ignored)."""
    ws = tmp_path / "ws"
    shutil.copytree(reclustered["ws"], ws)
    good = np.load(ws / CENTROIDS)
    shutil.copy(ws / CENTROIDS, ws / (CENTROIDS + ".tmp"))
    np.save(ws / CENTROIDS, np.roll(good, 1, axis=0))  # the old clustering's file, still in place
    assert load_index(ws).n_clusters == 40
    np.testing.assert_array_equal(np.load(ws / CENTROIDS), good)
    assert not (ws / (CENTROIDS + ".tmp")).exists()
    np.save(ws / (CENTROIDS + ".tmp"), good[:3])  # not what the database describes: left alone
    assert not finish_centroids(ws, db.load_meta(ws)["centroids_sha256"])
    np.testing.assert_array_equal(np.load(ws / CENTROIDS), good)


def test_recluster_refuses_what_it_cannot_do(reclustered, capsys):
    ws = reclustered["ws"]
    assert main(["recluster", str(ws), "--dedup-eps", "1.5"]) == 2
    assert "[0, 1]" in capsys.readouterr().err
    assert main(["recluster", str(ws), "--dedup-eps", "0.05", "--clusters", "100000", "--drop-plans"]) == 2
    assert "fewer than K=100000" in capsys.readouterr().err
