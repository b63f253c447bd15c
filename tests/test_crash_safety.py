"""SIGKILL at named points (tests/crash_harness.py): the rerun of precompute gives the clusters and centroids
of an uninterrupted run; a killed plan save or export leaves nothing that looks complete."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import COLORS, SHAPES, encode, make_image

from densprune import db
from densprune.pipeline.verify import verify_workspace
from densprune.prune import plans

ROOT = Path(__file__).resolve().parent.parent
HARNESS = ROOT / "tests" / "crash_harness.py"
PRECOMPUTE_POINTS = ["embedding", "after-embedding", "clustering", "concepts", "dedup", "layout", "duckdb-write"]
# more precompute points (after the --force reset, after the database is in place, released embeddings, two
# writers, a stale lock): tests/test_nothing_lost_precompute.py


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """48 images in 4 colour folders with captions (6 embedding shards of 8)."""
    root = tmp_path_factory.mktemp("crash") / "images"
    for i, (color, rgb) in enumerate(COLORS.items()):
        (root / color).mkdir(parents=True)
        for j in range(12):
            (root / color / f"s{j}.png").write_bytes(encode(make_image(rgb, SHAPES[j % 2], seed=20 * i + j), "PNG"))
            (root / color / f"s{j}.txt").write_text(f"a {color} {SHAPES[j % 2]} {j}")
    return root


def precompute_args(source: Path, ws: Path) -> list[str]:
    return ["precompute", str(source), "--workspace", str(ws), "--embedder", "offline", "--clusters", "4",
            "--shard-size", "8", "--batch-size", "8", "--workers", "0", "--layout-rows", "1000"]


def run_cli(args: list[str]) -> None:
    proc = subprocess.run([sys.executable, "-m", "densprune", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]


def kill_at(point: str, args: list[str], tmp_path: Path) -> None:
    """Run the CLI under the harness, SIGKILL it once it reaches ``point``."""
    marker = tmp_path / f"{point}.reached"
    proc = subprocess.Popen([sys.executable, str(HARNESS), point, str(marker), "--", *args], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not marker.exists():
        if proc.poll() is not None:
            pytest.fail(f"{point}: the process ended (rc {proc.returncode}) before the point: "
                        f"{proc.stderr.read()[-2000:]}")
        assert time.monotonic() < deadline, f"{point} not reached in time"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(30) == -signal.SIGKILL


def state(ws: Path) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    clusters = db.load_clusters(ws)[["cluster", "size", "pool_size", "d_intra", "d_inter", "complexity", "label"]]
    samples = db.load_sample_arrays(ws, ("cluster",))["cluster"]
    return clusters, samples, np.load(ws / "centroids.npy")


@pytest.fixture(scope="module")
def clean(source, tmp_path_factory) -> Path:
    ws = tmp_path_factory.mktemp("clean") / "ws"
    run_cli(precompute_args(source, ws))
    return ws


@pytest.mark.slow
@pytest.mark.parametrize("point", PRECOMPUTE_POINTS)
def test_precompute_killed_then_rerun_matches_a_clean_run(point, source, clean, tmp_path):
    ws = tmp_path / "ws"
    kill_at(point, precompute_args(source, ws), tmp_path)
    assert not db.is_complete(ws), "a killed precompute left a workspace that looks complete"
    assert [p.message for p in verify_workspace(ws)][0].startswith("missing")
    run_cli(precompute_args(source, ws))  # the same command again
    got, want = state(ws), state(clean)
    pd.testing.assert_frame_equal(got[0], want[0], check_exact=False, rtol=1e-5)
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_allclose(got[2], want[2], atol=1e-6)
    assert verify_workspace(ws) == []
    assert not list(ws.glob("*.tmp")) and not any((ws / ".work").rglob("*.npz"))  # no leftovers


@pytest.mark.slow
def test_killed_plan_save_leaves_no_plan(small_workspace, tmp_path):
    import shutil

    ws = Path(shutil.copytree(small_workspace, tmp_path / "ws", ignore=shutil.ignore_patterns(".densprune.lock")))
    kill_at("plan-save", ["plan", str(ws), "--name", "killed", "--keep", "0.3"], tmp_path)
    assert "killed" not in set(plans.list_plans(ws)["name"])  # the mask may be there, the plan is not
    with pytest.raises(ValueError, match="no plan named"):
        plans.load_plan(ws, "killed")
    problems = verify_workspace(ws)
    assert len(problems) == 1 and "no plan row" in problems[0].message
    assert Path(problems[0].file).parent == ws / "plans" and Path(problems[0].file).name.startswith("killed.")
    run_cli(["plan", str(ws), "--name", "killed", "--keep", "0.3"])  # saving again works
    Path(problems[0].file).unlink()  # what verify says to do with the stray mask
    assert verify_workspace(ws) == []


def plan_state(ws: Path, name: str) -> tuple[int, int, int, str]:
    """(n_kept of the row, kept summed over plan_clusters, flags set in the mask the row names, its file)."""
    row, keep = plans.load_plan(ws, name)
    return int(row["n_kept"]), int(plans.plan_clusters(ws, name)["kept"].sum()), int(keep.sum()), row["keep_file"]


@pytest.mark.slow
@pytest.mark.parametrize("point", ["plan-save", "plan-switched"])
def test_killed_overwrite_keeps_the_old_plan_or_the_new_one_whole(small_workspace, tmp_path, point):
    """SIGKILL an overwriting `densprune plan --overwrite` before and after its rows switch: the plan is the
    old one whole (rows and mask) or the new one whole, never old rows with the new mask; verify names
    the one mask left over, and saving again leaves nothing over."""
    import shutil

    ws = Path(shutil.copytree(small_workspace, tmp_path / "ws", ignore=shutil.ignore_patterns(".densprune.lock")))
    old_kept, _, _, old_file = plan_state(ws, "half")
    new_args = ["plan", str(ws), "--name", "half", "--keep", "0.9", "--overwrite"]
    kill_at(point, new_args, tmp_path)
    n_kept, cluster_kept, mask_kept, keep_file = plan_state(ws, "half")
    assert n_kept == cluster_kept == mask_kept, "the plan's rows and its mask disagree"
    if point == "plan-save":  # killed before the switch: the old plan, untouched
        assert (n_kept, keep_file) == (old_kept, old_file)
    else:  # killed after the switch: the new plan, complete
        assert n_kept > old_kept and keep_file != old_file
    problems = verify_workspace(ws)
    assert len(problems) == 1 and "no plan row" in problems[0].message, problems
    stray = Path(problems[0].file)
    assert stray.parent == ws / "plans" and stray.name.startswith("half.") and str(stray) != str(ws / keep_file)
    assert (point == "plan-switched") == (stray == ws / old_file)  # after the switch, the old mask is the stray
    run_cli(new_args)  # saving again works; the stray stays until removed as verify says
    stray.unlink()
    assert verify_workspace(ws) == []
    n_kept, cluster_kept, mask_kept, _ = plan_state(ws, "half")
    assert n_kept == cluster_kept == mask_kept > old_kept
    assert len(list((ws / "plans").glob("half.*"))) == 1


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["parquet", "webdataset"])
def test_killed_export_leaves_nothing_complete(small_workspace, tmp_path, fmt):
    import shutil

    ws = Path(shutil.copytree(small_workspace, tmp_path / "ws", ignore=shutil.ignore_patterns(".densprune.lock")))
    out = ws / "exports" / ("half-wds" if fmt == "webdataset" else "half.parquet")
    man = out.with_name(out.name + ".manifest.json")
    run_cli(["export", str(ws), "--plan", "half", "--format", fmt])  # a complete export first
    assert man.exists() and verify_workspace(ws) == []
    kill_at("export", ["export", str(ws), "--plan", "all", "--format", fmt, "--out", str(out)], tmp_path)
    assert not man.exists(), "the old manifest still vouches for the overwritten export"
    problems = {p.file: p.message for p in verify_workspace(ws)}
    pending = out.with_name(f".{man.name}.pending")  # the claim the killed export holds on its path
    assert set(problems) == {str(out), str(pending)} and "no manifest" in problems[str(out)], problems
    run_cli(["export", str(ws), "--plan", "all", "--format", fmt, "--out", str(out)])  # export again: it replaces them
    assert verify_workspace(ws) == [] and json.loads(man.read_text())["plan"]["name"] == "all"


@pytest.mark.slow
def test_export_killed_before_it_writes_leaves_the_old_export_data(small_workspace, tmp_path):
    """Killed after its claim, before any file: the old data is untouched; the rerun replaces it."""
    import shutil

    ws = Path(shutil.copytree(small_workspace, tmp_path / "ws", ignore=shutil.ignore_patterns(".densprune*lock*")))
    out = ws / "exports" / "half.parquet"
    run_cli(["export", str(ws), "--plan", "half", "--format", "parquet"])
    before = out.read_bytes()
    kill_at("export-claimed", ["export", str(ws), "--plan", "all", "--format", "parquet"], tmp_path)
    assert out.read_bytes() == before
    run_cli(["export", str(ws), "--plan", "all", "--format", "parquet"])
    assert verify_workspace(ws) == []
