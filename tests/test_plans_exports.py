"""Plans stored in a workspace, the CLI around them, and every export format read back by its consumer."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from densprune import db
from densprune.cli.main import main
from densprune.embed.runner import EmbedSettings
from densprune.export.writers import export_plan
from densprune.pipeline.config import PrecomputeConfig
from densprune.pipeline.precompute import precompute
from densprune.prune.compare import compare_saved_plans
from densprune.prune.plan_index import load_index
from densprune.prune.plans import list_plans, load_plan, plan_clusters, save_plan
from densprune.prune.selection import PlanParams

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def planned(demo_workspace):
    """The demo workspace with dbp / random plans at keep 30% (created once per module)."""
    for name, method in (("t-dbp30", "dbp"), ("t-rnd30", "random"), ("t-ssp30", "ssp")):
        assert main(["plan", str(demo_workspace), "--name", name, "--keep", "30%", "--method", method,
                     "--overwrite"]) == 0
    return demo_workspace


def test_plan_rows_mask_and_cluster_counts_agree(planned):
    row, keep = load_plan(planned, "t-dbp30")
    pool = db.query_df(planned, "SELECT count(*) n FROM samples WHERE split = 'pool'").n[0]
    assert row["method"] == "dbp" and row["params"]["keep"] == 0.3
    assert keep.sum() == row["n_kept"] == round(0.3 * pool)
    pc = plan_clusters(planned, "t-dbp30")
    assert pc.kept.sum() == keep.sum() and (pc.kept <= pc.eligible).all()
    clusters = db.load_sample_arrays(planned, ("cluster",))["cluster"]
    np.testing.assert_array_equal(np.bincount(clusters[keep], minlength=len(pc)), pc.kept)
    split = db.load_sample_arrays(planned, ("split",))["split"]
    assert not keep[split == "eval"].any()


def test_dbp_cuts_the_redundant_stars_harder_than_random(planned):
    s = db.query_df(planned, "SELECT category FROM samples ORDER BY row_idx")
    stars = (s.category == "shapes/stars").to_numpy()
    _, dbp = load_plan(planned, "t-dbp30")
    _, rnd = load_plan(planned, "t-rnd30")
    assert dbp[stars].mean() < 0.5 * rnd[stars].mean()


def test_existing_plan_name_is_refused_without_overwrite(planned, capsys):
    assert main(["plan", str(planned), "--name", "t-dbp30", "--keep", "0.2"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["plan", str(planned), "--name", "bad name!", "--keep", "0.2"]) == 2


def test_plans_listing_and_compare(planned, capsys):
    assert {"t-dbp30", "t-rnd30"} <= set(list_plans(planned).name)
    cmp = compare_saved_plans(planned, "t-dbp30", "t-rnd30")
    _, a = load_plan(planned, "t-dbp30")
    _, b = load_plan(planned, "t-rnd30")
    assert cmp.both + cmp.only_a.size == a.sum() and cmp.both + cmp.only_b.size == b.sum()
    assert np.array_equal(cmp.only_a, np.flatnonzero(a & ~b))
    assert (cmp.per_cluster["diff"] == cmp.per_cluster.kept_b - cmp.per_cluster.kept_a).all()
    assert main(["compare", str(planned), "t-dbp30", "t-rnd30", "--top", "2"]) == 0
    assert json.loads(capsys.readouterr().out)["both"] == cmp.both


def test_offline_workspace_refuses_clip_filters_clearly(planned, capsys):
    assert main(["plan", str(planned), "--name", "t-clip", "--keep", "0.3", "--clip-keep", "0.5"]) == 2
    assert "no CLIP scores" in capsys.readouterr().err


def _check_manifest(out: Path, n_kept: int) -> dict:
    man = json.loads(out.with_name(out.name + ".manifest.json").read_text())
    assert man["counts"]["kept"] == n_kept and man["embedder"] == "offline" and man["k"] > 0
    assert man["plan"]["params"]["keep"] == 0.3
    for f in man["files"]:
        assert hashlib.sha256(Path(f["path"]).read_bytes()).hexdigest() == f["sha256"]
    return man


def test_export_parquet_read_by_pandas_and_duckdb(planned, tmp_path):
    _, keep = load_plan(planned, "t-dbp30")
    out = export_plan(planned, "t-dbp30", "parquet", tmp_path / "keep.parquet")
    df = pd.read_parquet(out)
    assert len(df) == keep.sum() and set(df.row_idx) == set(np.flatnonzero(keep))
    assert {"uid", "row_idx", "caption", "image_ref", "cluster", "clip_score", "dist_to_centroid"} <= set(df.columns)
    assert duckdb.connect().execute(f"SELECT count(DISTINCT uid) FROM read_parquet('{out}')").fetchone()[0] == \
        keep.sum()
    _check_manifest(out, int(keep.sum()))
    assert not list(tmp_path.glob(".*tmp*"))


def test_export_csv_loads_in_open_clip_train(planned, tmp_path):
    from open_clip import get_tokenizer
    from open_clip_train.data import CsvDataset
    from torchvision import transforms

    _, keep = load_plan(planned, "t-dbp30")
    out = export_plan(planned, "t-dbp30", "csv", tmp_path / "train.csv")
    ds = CsvDataset(str(out), transforms.Compose([transforms.Resize((32, 32)), transforms.ToTensor()]),
                    img_key="filepath", caption_key="title", sep="\t", tokenizer=get_tokenizer("RN50"))
    assert len(ds) == keep.sum()
    img, tokens = ds[0]
    assert tuple(img.shape) == (3, 32, 32) and tokens.shape[-1] == 77
    man = _check_manifest(out, int(keep.sum()))
    assert len(man["files"]) == 1 + keep.sum()  # the csv and every image written out of the parquet bundle


def test_export_datacomp_mask_keys(planned, tmp_path):
    row, keep = load_plan(planned, "t-dbp30")
    uids = db.query_df(planned, "SELECT uid FROM samples ORDER BY row_idx").uid.to_numpy()
    dc = np.load(export_plan(planned, "t-dbp30", "datacomp", tmp_path / "subset.npy"))
    assert dc.dtype == np.dtype("u8,u8") and len(dc) == keep.sum()
    pairs = [tuple(r) for r in dc.tolist()]
    assert pairs == sorted(pairs)
    assert {f"{a:016x}{b:016x}" for a, b in pairs} == set(uids[keep])
    mask = np.load(export_plan(planned, "t-dbp30", "mask", tmp_path / "mask.npy"))
    assert mask.dtype == bool and np.array_equal(mask, keep)
    keys = export_plan(planned, "t-dbp30", "keys", tmp_path / "keys.txt").read_text().split()
    assert keys == list(uids[keep])


def test_export_webdataset_from_the_demo_bundle(planned, tmp_path):
    import webdataset as wds

    _, keep = load_plan(planned, "t-dbp30")
    out = export_plan(planned, "t-dbp30", "webdataset", tmp_path / "shards")
    urls = sorted(str(p) for p in out.glob("*.tar"))
    samples = list(wds.WebDataset(urls, shardshuffle=False).decode("pil"))
    assert len(samples) == keep.sum()
    first = samples[0]
    assert "txt" in first and "json" in first and any(k in first for k in ("webp", "jpg", "png"))


def test_webdataset_source_round_trip_keeps_original_members(wds_shards, tmp_path):
    import webdataset as wds

    ws = precompute(PrecomputeConfig(source=str(wds_shards[0].parent), workspace=tmp_path / "ws", embedder="offline",
                                     clusters=3, embed=EmbedSettings(batch_size=8, workers=0)))
    index = load_index(ws)
    result = index.compute(PlanParams(method="dbp", keep=0.5))
    save_plan(ws, "half", result)
    out = export_plan(ws, "half", "webdataset", tmp_path / "kept")
    got = list(wds.WebDataset(sorted(str(p) for p in out.glob("*.tar")), shardshuffle=False))
    assert len(got) == result.n_kept
    kept_keys = {k.split("/", 1)[1] for k in db.query_df(ws, "SELECT key FROM samples").key[result.keep]}
    assert {g["__key__"] for g in got} == kept_keys
    assert all({"jpg", "txt", "json"} <= set(g) for g in got)  # every original member copied
    uid = json.loads(got[0]["json"])["uid"]
    assert len(uid) == 32


def test_plan_index_complexity_equals_the_workspace_clusters_table(demo_workspace):
    c = db.load_clusters(demo_workspace)
    index = load_index(demo_workspace)
    np.testing.assert_allclose(index.complexity(20), c.complexity, rtol=1e-6)
    np.testing.assert_allclose(index.d_intra, c.d_intra, rtol=1e-6)


def test_keep_counts_what_remains_after_dedup_and_the_plan_stores_its_statistics(planned, capsys):
    """--keep 0.3 with --dedup-eps: 30% of what SemDeDup left (the paper's convention), and the
    plan stores the d_intra / complexity it measured on that remaining pool."""
    assert main(["plan", str(planned), "--name", "t-dedup30", "--keep", "0.3", "--dedup-eps", "0.05",
                 "--overwrite"]) == 0
    out = capsys.readouterr().out
    row, keep = load_plan(planned, "t-dedup30")
    pc = plan_clusters(planned, "t-dedup30")
    remaining = int(pc.eligible.sum())
    assert remaining < row["pool_size"]
    assert keep.sum() == row["n_kept"] == row["budget"] == round(0.3 * remaining)
    assert f"{round(0.3 * remaining):,} = 30.0% of the {remaining:,} remaining" in out
    arr = db.load_sample_arrays(planned, ("cluster", "dist_to_centroid", "split", "dup_max_sim"))
    elig = (arr["split"] == "pool") & (arr["dup_max_sim"] <= 0.95)
    k = len(pc)
    with np.errstate(invalid="ignore"):
        direct = np.bincount(arr["cluster"][elig], weights=arr["dist_to_centroid"][elig], minlength=k) \
            / np.bincount(arr["cluster"][elig], minlength=k)
    np.testing.assert_allclose(pc.d_intra, direct, rtol=1e-9)
    index = load_index(planned)
    np.testing.assert_allclose(pc.complexity, index.d_inter(20) * direct, rtol=1e-9)
    listed = list_plans(planned).set_index("name").loc["t-dedup30"]
    assert listed["eligible"] == remaining and listed["pool_size"] == row["pool_size"]


def test_a_count_beyond_what_remains_is_an_error_with_the_numbers(planned, capsys):
    assert main(["plan", str(planned), "--name", "t-toomany", "--keep", "7000", "--dedup-eps", "0.05"]) == 2
    err = capsys.readouterr().err
    pool = db.load_meta(planned)["n_pool"]
    assert "a budget of 7,000 samples is more than the" in err and f"the pool holds {pool:,}" in err
    assert "SemDeDup eps=0.05 removed" in err
    assert "t-toomany" not in set(list_plans(planned).name)


def test_a_workspace_without_the_newer_plan_columns_still_opens_and_gains_them(planned, tmp_path):
    """Schema version 1 had plan_clusters(plan, cluster, eligible, quota, kept): reading its plans gives
    NaN statistics, and the next save adds the columns."""
    import shutil

    old = tmp_path / "old"
    shutil.copytree(planned, old, ignore=shutil.ignore_patterns("embeddings", "thumbs.bin", "exports", "runs"))
    with duckdb.connect(str(old / db.DB_NAME)) as con:
        con.execute("ALTER TABLE plan_clusters DROP COLUMN d_intra")
        con.execute("ALTER TABLE plan_clusters DROP COLUMN complexity")
    pc = plan_clusters(old, "t-dbp30")
    assert len(pc) > 0 and pc.d_intra.isna().all() and pc.complexity.isna().all()
    assert "t-dbp30" in set(list_plans(old).name)
    save_plan(old, "t-new", load_index(old).compute(PlanParams(keep=0.2)))
    assert plan_clusters(old, "t-new").d_intra.notna().any()
    assert plan_clusters(old, "t-dbp30").d_intra.isna().all()  # older rows stay as they were


def test_a_name_saved_by_another_process_meanwhile_is_refused_under_the_lock(planned, monkeypatch):
    """The early exists-check passed (the other process had not saved yet); the transaction that switches
    the rows checks again under the write lock: refused, the new mask removed, the other plan untouched."""
    ws = planned
    row, keep = load_plan(ws, "t-rnd30")
    masks = set((ws / "plans").glob("t-rnd30.*"))
    result = load_index(ws).compute(PlanParams(method="dbp", keep=0.5))
    monkeypatch.setattr(db, "plan_exists", lambda *a: False)
    with pytest.raises(FileExistsError, match="already exists"):
        save_plan(ws, "t-rnd30", result)
    after, keep_after = load_plan(ws, "t-rnd30")
    assert after["keep_file"] == row["keep_file"] and after["n_kept"] == row["n_kept"]
    np.testing.assert_array_equal(keep_after, keep)
    assert set((ws / "plans").glob("t-rnd30.*")) == masks


def test_overwrite_writes_a_new_mask_and_removes_the_old_one(planned, tmp_path):
    import shutil

    ws = Path(shutil.copytree(planned, tmp_path / "ws",
                              ignore=shutil.ignore_patterns(".densprune.lock", "exports", "runs")))
    old, _ = load_plan(ws, "t-ssp30")
    save_plan(ws, "t-ssp30", load_index(ws).compute(PlanParams(method="ssp", keep=0.5)), overwrite=True)
    new, keep = load_plan(ws, "t-ssp30")
    assert new["keep_file"] != old["keep_file"] and not (ws / old["keep_file"]).exists()
    assert int(keep.sum()) == new["n_kept"] > old["n_kept"]
    assert [p.name for p in (ws / "plans").glob("t-ssp30.*")] == [Path(new["keep_file"]).name]


def test_a_reader_holding_the_row_of_an_overwritten_plan_gets_the_new_plan(planned, tmp_path, monkeypatch):
    """Between a reader's row and its mask file another process overwrote the plan (and removed the
    old mask): the reader reads the row again and returns the new row with its own mask."""
    import shutil

    ws = Path(shutil.copytree(planned, tmp_path / "ws",
                              ignore=shutil.ignore_patterns(".densprune.lock", "exports", "runs")))
    stale = db.load_plan_row(ws, "t-dbp30")
    save_plan(ws, "t-dbp30", load_index(ws).compute(PlanParams(method="dbp", keep=0.5)), overwrite=True)
    real, calls = db.load_plan_row, []

    def first_stale(workspace, name):
        calls.append(name)
        return stale if len(calls) == 1 else real(workspace, name)

    monkeypatch.setattr(db, "load_plan_row", first_stale)
    row, keep = load_plan(ws, "t-dbp30")
    assert len(calls) >= 2 and row["keep_file"] != stale.iloc[0]["keep_file"]
    assert int(keep.sum()) == row["n_kept"] > int(stale.iloc[0]["n_kept"])
