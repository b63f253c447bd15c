"""Nothing lost in exports and verify (issue "Nothing lost"): an export replaces only an export of its own,
a full disk leaves no half-written files, a damaged database is a finding, leftovers are reported and
`densprune verify --repair` removes them. The CLI runs as the installed `densprune` command."""

from __future__ import annotations

import errno
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from console import run_densprune

from densprune.cli.main import main
from densprune.pipeline.verify import verify_workspace


@pytest.fixture
def ws(small_workspace, tmp_path) -> Path:
    return Path(shutil.copytree(small_workspace, tmp_path / "ws", ignore=shutil.ignore_patterns(".densprune*lock*")))


def test_export_out_never_replaces_a_folder_it_did_not_write(ws, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.txt").write_text("years of work")
    out = run_densprune("export", ws, "--plan", "half", "--format", "parquet", "--out", mine)
    assert out.returncode == 2 and "is not an export densprune wrote" in out.stderr, out.stderr
    assert (mine / "thesis.txt").read_text() == "years of work"
    (tmp_path / "notes.parquet").write_text("my own file")
    out = run_densprune("export", ws, "--plan", "half", "--format", "parquet", "--out", tmp_path / "notes.parquet")
    assert out.returncode == 2 and (tmp_path / "notes.parquet").read_text() == "my own file"


def test_export_out_over_the_workspace_is_refused(ws):
    for target in (ws, ws.parent):
        out = run_densprune("export", ws, "--plan", "half", "--format", "webdataset", "--out", target)
        assert out.returncode == 2 and "would replace the workspace" in out.stderr, out.stderr
    assert verify_workspace(ws) == []


def test_a_csv_export_leaves_the_users_images_folder(ws, tmp_path):
    d = tmp_path / "D"
    (d / "train_images").mkdir(parents=True)
    (d / "train_images" / "mine.jpg").write_bytes(b"my photo")
    out = run_densprune("export", ws, "--plan", "half", "--format", "csv", "--out", d / "train.csv")
    assert out.returncode == 2 and "train_images" in out.stderr
    assert (d / "train_images" / "mine.jpg").read_bytes() == b"my photo" and not (d / "train.csv").exists()


@pytest.mark.parametrize("fmt", ["parquet", "webdataset", "keys"])
def test_an_export_replaces_its_own_previous_export(ws, tmp_path, fmt):
    out = tmp_path / ("x-wds" if fmt == "webdataset" else f"x.{fmt}")
    for plan in ("half", "all", "half"):
        res = run_densprune("export", ws, "--plan", plan, "--format", fmt, "--out", out)
        assert res.returncode == 0, res.stderr
        man = json.loads(Path(str(out) + ".manifest.json").read_text())
        assert man["plan"]["name"] == plan
        assert run_densprune("verify", ws, "--export", out).returncode == 0
    assert not list(tmp_path.glob(".*"))  # no temporary file, no claim left


def test_an_export_named_like_a_manifest_is_refused(ws):
    out = run_densprune("export", ws, "--plan", "half", "--format", "keys", "--out", ws / "exports" / "a.manifest.json")
    assert out.returncode == 2 and "manifests" in out.stderr
    assert not (ws / "exports" / "a.manifest.json").exists()


def enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device", "/full/disk")


def test_a_full_disk_during_an_export_leaves_no_temporary_files(ws, monkeypatch, capsys):
    import pyarrow.parquet as pq

    run_densprune("export", ws, "--plan", "half", "--format", "parquet")  # a complete export first
    before = (ws / "exports" / "half.parquet").read_bytes()
    real = pq.write_table

    def half_then_full(table, where, *a, **k):
        real(table, where, *a, **k)  # the temporary file exists, then the disk is full
        enospc()

    monkeypatch.setattr(pq, "write_table", half_then_full)
    assert main(["export", str(ws), "--plan", "all", "--format", "parquet"]) == 2
    err = capsys.readouterr().err
    assert "no space left on the device writing /full/disk" in err and "Traceback" not in err
    assert sorted(p.name for p in (ws / "exports").iterdir() if p.name.startswith(".")) == []
    assert (ws / "exports" / "half.parquet").read_bytes() == before  # the old export's data untouched


def test_a_full_disk_during_a_plan_save_leaves_no_temporary_files(ws, monkeypatch, capsys):
    real = np.save

    def half_then_full(fh, arr, *a, **k):
        real(fh, arr[: len(arr) // 2], *a, **k)
        enospc()

    monkeypatch.setattr(np, "save", half_then_full)
    assert main(["plan", str(ws), "--name", "big", "--keep", "0.4"]) == 2
    assert "no space left on the device" in capsys.readouterr().err
    monkeypatch.undo()
    assert not list((ws / "plans").glob("*.tmp")) and verify_workspace(ws) == []
    assert "big" not in run_densprune("plans", ws).stdout


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_a_damaged_database_is_a_finding_not_a_traceback(ws, damage):
    path = ws / "densprune.duckdb"
    data = path.read_bytes()
    path.write_bytes({"truncated": data[: len(data) // 3], "garbage": os.urandom(len(data)), "empty": b""}[damage])
    out = run_densprune("verify", ws)
    assert out.returncode == 1 and "Traceback" not in out.stderr + out.stdout
    assert f"{path}: cannot be read" in out.stdout, out.stdout
    for cmd in (["info", ws], ["plans", ws]):
        res = run_densprune(*cmd)
        assert res.returncode == 2 and "Traceback" not in res.stderr and str(path) in res.stderr, res.stderr


def test_leftovers_are_reported_and_repair_removes_only_them(ws, tmp_path):
    dead = 2**22 + 12345  # no such process
    leftovers = [ws / "exports" / f".half.parquet.tmp-{dead}", ws / "plans" / "x.0123.npy.tmp",
                 ws / "densprune.duckdb.tmp", ws / "embeddings" / "image.npy.tmp"]
    (ws / "exports").mkdir(exist_ok=True)
    for p in leftovers:
        p.write_bytes(b"half")
        os.utime(p, (time.time() - 3600,) * 2)
    stray = ws / "plans" / "gone.abcdef.npy"
    np.save(stray, np.zeros(3, bool))
    live = ws / "exports" / f".live.parquet.tmp-{os.getpid()}"  # a writer that is still running: not a leftover
    live.write_bytes(b"in progress")
    out = run_densprune("verify", ws)
    assert out.returncode == 1
    for p in [*leftovers, stray]:
        assert str(p) in out.stdout, (p, out.stdout)
    assert str(live) not in out.stdout
    fixed = run_densprune("verify", ws, "--repair")
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert all(f"removed {p}" in fixed.stdout for p in [*leftovers, stray]) and live.exists()
    assert "ok:" in fixed.stdout and (ws / "densprune.duckdb").exists() and (ws / "embeddings" / "image.npy").exists()


def test_a_plan_row_naming_a_file_outside_the_workspace_is_never_read_or_removed(ws, tmp_path):
    import duckdb

    victim = tmp_path / "victim.npy"
    np.save(victim, np.ones(3, bool))
    con = duckdb.connect(str(ws / "densprune.duckdb"))
    for keep_file in (str(victim), f"../{victim.name}", "plans/../../victim.npy"):
        con.execute("UPDATE plans SET keep_file = ? WHERE name = 'half'", [keep_file])
        for cmd in (["export", ws, "--plan", "half", "--format", "mask"],
                    ["plan", ws, "--name", "half", "--keep", "0.2", "--overwrite"]):
            con.close()
            res = run_densprune(*cmd)
            con = duckdb.connect(str(ws / "densprune.duckdb"))
            assert victim.exists(), (keep_file, cmd, res.stderr)
            if cmd[0] == "export":
                assert res.returncode == 2 and "only inside the workspace's plans/ folder" in res.stderr, res.stderr
        con.execute("UPDATE plans SET keep_file = ? WHERE name = 'half'", [keep_file])
    con.close()
    out = run_densprune("verify", ws)
    assert out.returncode == 1 and "only inside the workspace's plans/ folder" in out.stdout
    link = ws / "plans" / "link.npy"
    link.symlink_to(victim)
    con = duckdb.connect(str(ws / "densprune.duckdb"))
    con.execute("UPDATE plans SET keep_file = 'plans/link.npy' WHERE name = 'half'")
    con.close()
    assert run_densprune("recluster", ws, "--dedup-eps", "0.05", "--drop-plans").returncode == 0
    assert victim.exists()
