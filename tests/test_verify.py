"""``densprune verify``: a clean workspace passes; each thing corrupted on a copy is reported, naming its file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import duckdb
import numpy as np
import pytest

from densprune import db
from densprune.cli.main import main
from densprune.export.writers import FORMATS, export_plan
from densprune.prune import plans


@pytest.fixture
def ws(small_workspace, tmp_path) -> Path:
    """A fresh copy of the built workspace to corrupt."""
    return Path(shutil.copytree(small_workspace, tmp_path / "ws", ignore=shutil.ignore_patterns(".densprune.lock")))


def verify(ws: Path, capsys, *extra: str) -> tuple[int, list[str]]:
    code = main(["verify", str(ws), *extra])
    lines = capsys.readouterr().out.strip().splitlines()
    return code, lines


def only_problem(ws: Path, capsys, file: Path, words: str, *extra: str) -> None:
    code, lines = verify(ws, capsys, *extra)
    assert code == 1, lines
    assert any(line.startswith(f"{file}: ") and words in line for line in lines), lines


def test_clean_workspace_and_every_export_format_pass(ws, capsys):
    for fmt in FORMATS:
        export_plan(ws, "half", fmt)
    code, lines = verify(ws, capsys)
    assert code == 0 and lines[-1].startswith("ok:"), lines


def test_image_embeddings_with_a_row_missing(ws, capsys):
    path = ws / "embeddings" / "image.npy"
    np.save(path, np.load(path)[:-1])
    only_problem(ws, capsys, path, "one row per sample")


def test_image_embeddings_with_a_nan_row(ws, capsys):
    path = ws / "embeddings" / "image.npy"
    x = np.load(path)
    x[3] = np.nan
    np.save(path, x)
    only_problem(ws, capsys, path, "1 rows with NaN or inf")


def test_text_embeddings_of_the_wrong_length(ws, capsys):
    path = ws / "embeddings" / "text.npy"
    np.save(path, np.zeros((5, 8), np.float32))  # the offline embedder writes none; a stray one must fit
    only_problem(ws, capsys, path, "one row per sample")


def test_truncated_thumbnails(ws, capsys):
    path = ws / "thumbs.bin"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    only_problem(ws, capsys, path, "thumbnails of samples reach byte")


def test_centroids_of_the_wrong_count_and_not_unit(ws, capsys):
    path = ws / "centroids.npy"
    c = np.load(path)
    np.save(path, c[:-1])
    only_problem(ws, capsys, path, "one centroid per row of clusters")
    np.save(path, c * 2)
    only_problem(ws, capsys, path, "not unit vectors")


def test_tables_that_disagree(ws, capsys):
    with duckdb.connect(str(db.db_path(ws))) as con:  # a hand edit of the database, as a user might do
        con.execute("DELETE FROM samples WHERE row_idx = 5")
        con.execute("UPDATE clusters SET size = size + 1 WHERE cluster = 0")
    code, lines = verify(ws, capsys)
    dbf = str(db.db_path(ws))
    assert code == 1
    assert any(line.startswith(dbf) and "row_idx is not 0.." in line for line in lines), lines
    assert any(line.startswith(dbf) and "clusters.size says" in line for line in lines), lines
    assert any(line.startswith(dbf) and "meta n_samples" in line for line in lines), lines
    # and the .npy files no longer have one row per sample
    assert any(line.startswith(str(ws / "embeddings" / "image.npy")) for line in lines), lines


def test_plan_mask_that_disagrees_with_its_row(ws, capsys):
    row, keep = plans.load_plan(ws, "half")
    path = ws / row["keep_file"]
    keep = keep.copy()
    keep[np.flatnonzero(~keep)[0]] = True
    np.save(path, keep)
    only_problem(ws, capsys, path, "n_kept")
    np.save(path, keep[:-1])
    only_problem(ws, capsys, path, "one flag per sample")
    path.unlink()
    only_problem(ws, capsys, path, "missing: the mask of plan half")


def test_plan_rows_that_disagree(ws, capsys):
    with duckdb.connect(str(db.db_path(ws))) as con:
        con.execute("DELETE FROM plan_clusters WHERE plan = 'all' AND cluster = 0")
    only_problem(ws, capsys, db.db_path(ws), "plan all: 3 plan_clusters rows, expected 4")


def test_a_mask_without_a_plan_row(ws, capsys):
    stray = ws / "plans" / "orphan.npy"
    np.save(stray, np.zeros(3, bool))
    only_problem(ws, capsys, stray, "no plan row")


def test_missing_database(ws, capsys):
    db.db_path(ws).unlink()
    only_problem(ws, capsys, db.db_path(ws), "incomplete")


@pytest.mark.parametrize("fmt", ["keys", "parquet", "webdataset"])
def test_export_changed_after_it_was_written(ws, capsys, fmt):
    out = export_plan(ws, "half", fmt)
    target = sorted(out.glob("*.tar"))[0] if out.is_dir() else out
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    only_problem(ws, capsys, target, "sha256 differs")


def test_export_with_a_file_missing_or_resized(ws, capsys):
    out = export_plan(ws, "half", "keys")
    with open(out, "a") as fh:
        fh.write("0" * 32 + "\n")
    only_problem(ws, capsys, out, "bytes, the manifest says")
    out.unlink()
    only_problem(ws, capsys, out, "missing (listed in")


def test_export_whose_count_disagrees_with_its_manifest(ws, capsys):
    out = export_plan(ws, "half", "keys")
    man = out.with_name(out.name + ".manifest.json")
    m = json.loads(man.read_text())
    m["counts"]["kept"] += 1
    man.write_text(json.dumps(m))
    only_problem(ws, capsys, out, "the manifest says")


def test_export_without_a_manifest_and_one_outside_the_workspace(ws, capsys, tmp_path):
    out = export_plan(ws, "all", "mask")
    out.with_name(out.name + ".manifest.json").unlink()
    only_problem(ws, capsys, out, "no manifest")
    out.unlink()
    outside = export_plan(ws, "all", "datacomp", tmp_path / "elsewhere" / "all.uids.npy")
    assert verify(ws, capsys, "--export", str(outside))[0] == 0
    np.save(outside, np.load(outside)[:-1])
    only_problem(ws, capsys, outside, "bytes, the manifest says", "--export", str(outside))
    missing = tmp_path / "nothing.parquet"
    only_problem(ws, capsys, missing.with_name(missing.name + ".manifest.json"), "no manifest",
                 "--export", str(missing))
