"""Nothing lost, nothing stale: what a precompute destroys, shares and reuses (docs/reliability.md).

- ``--force`` with a bad input (missing source, weights that cannot load, a missing vocabulary) removes
  nothing: the inputs are checked before the old build is;
- one writer per workspace (densprune.workspace_lock): a second precompute, a plan save, an export
  are refused with "WS is in use by PID N (densprune precompute, started at ...)" (exit 2), and the
  first one's result is whole; a lock left by a SIGKILLed process is taken over;
- a resume reuses only the embedding shards whose input files are unchanged;
- image locations are stored absolute; a workspace that has relative ones is reported and not exported;
- SIGKILL at the stages tests/test_crash_safety.py does not cover (after the ``--force`` reset, after the
  database is in place, during the copy of released embeddings), then verify clean and a rerun equal
  to an uninterrupted run.

The CLI runs as the installed console command (tests/console.py), the kill points through
tests/crash_harness.py (this checkout's ``densprune.cli.main``, stopped at a named point).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import COLORS, SHAPES, encode, make_image
from console import run_densprune
from PIL import Image
from test_crash_safety import HARNESS, ROOT, kill_at, precompute_args, state

from densprune import db
from densprune.cli.main import main
from densprune.pipeline.verify import verify_workspace
from densprune.prune import plan_index, plans
from densprune.workspace_lock import (
    HOLDERS_NAME,
    WorkspaceInUse,
    exclusive_lock,
    holders,
    shared_lock,
    workspace_lock,
)


def make_source(root: Path) -> Path:
    """48 images in 4 colour folders with captions (6 embedding shards of 8), as tests/test_crash_safety.py."""
    for i, (color, rgb) in enumerate(COLORS.items()):
        (root / color).mkdir(parents=True)
        for j in range(12):
            (root / color / f"s{j}.png").write_bytes(encode(make_image(rgb, SHAPES[j % 2], seed=20 * i + j), "PNG"))
            (root / color / f"s{j}.txt").write_text(f"a {color} {SHAPES[j % 2]} {j}")
    return root


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    return make_source(tmp_path_factory.mktemp("nl") / "images")


def cli(*args) -> subprocess.CompletedProcess:
    """The installed ``densprune`` with ARGS, from the checkout (stderr kept for the messages)."""
    return run_densprune(*args, cwd=ROOT, timeout=300)


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def clean(source, tmp_path_factory) -> Path:
    """An uninterrupted build of ``source``."""
    ws = tmp_path_factory.mktemp("nl-clean") / "ws"
    ok(cli(*precompute_args(source, ws)))
    return ws


def same_build(ws: Path, want: Path) -> None:
    """``ws`` holds what the uninterrupted build ``want`` holds: tables, clusters, vectors, thumbnails."""
    got, exp = state(ws), state(want)
    pd.testing.assert_frame_equal(got[0], exp[0], check_exact=False, rtol=1e-5)
    np.testing.assert_array_equal(got[1], exp[1])
    np.testing.assert_allclose(got[2], exp[2], atol=1e-6)
    np.testing.assert_allclose(np.load(ws / "embeddings/image.npy"), np.load(want / "embeddings/image.npy"), atol=1e-6)
    assert (ws / "thumbs.bin").read_bytes() == (want / "thumbs.bin").read_bytes()
    cols = "SELECT key, caption, thumb_offset, thumb_size FROM samples ORDER BY row_idx"
    pd.testing.assert_frame_equal(db.query_df(ws, cols), db.query_df(want, cols))


def verify_clean(ws: Path) -> None:
    out = ok(cli("verify", ws))
    assert out.stdout.startswith("ok:"), out.stdout


def in_use(ws: Path, pid: int, what: str) -> re.Pattern:
    return re.compile(rf"error: {re.escape(str(ws))} is in use by PID {pid} \({what}, started at [0-9T:+-]+\)")


def start_paused(point: str, args: list[str], tmp_path: Path) -> tuple[subprocess.Popen, Path, Path]:
    """Run the CLI under the harness until it pauses at ``point``; (process, marker, log). Deleting the
    marker lets it go on."""
    marker, log = tmp_path / f"{point}.paused", tmp_path / f"{point}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, str(HARNESS), f"pause:{point}", str(marker), "--", *map(str, args)],
                                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 240
    while not marker.exists():
        if proc.poll() is not None:
            pytest.fail(f"{point}: ended (rc {proc.returncode}) before the point: {log.read_text()[-2000:]}")
        assert time.monotonic() < deadline, f"{point} not reached in time"
        time.sleep(0.05)
    return proc, marker, log


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------------------------
# item 2: --force destroys nothing before the inputs are checked
# --------------------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("bad", ["source", "weights", "vocabulary"])
def test_force_with_a_bad_input_leaves_the_old_workspace_whole(bad, source, clean, tmp_path):
    ws = Path(shutil.copytree(clean, tmp_path / "ws"))
    ok(cli("plan", ws, "--name", "half", "--keep", "0.5"))
    before = sha256(db.db_path(ws))
    args = {
        "source": ["precompute", tmp_path / "TYPO", "--workspace", ws, "--force", "--embedder", "offline"],
        "weights": ["precompute", source, "--workspace", ws, "--force", "--embedder", "openclip",
                    "--model", "densprune-tiny", "--weights", tmp_path / "missing.pt"],
        "vocabulary": ["precompute", source, "--workspace", ws, "--force", "--embedder", "openclip",
                       "--model", "densprune-tiny", "--pretrained", "none",
                       "--label-vocabulary", tmp_path / "none.txt"],
    }[bad]
    proc = cli(*args)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert {"source": "source not found", "weights": "file not found", "vocabulary": "no such file"}[bad] in proc.stderr
    assert "Traceback" not in proc.stderr
    assert db.is_complete(ws) and sha256(db.db_path(ws)) == before  # not removed, not rewritten
    assert list(plans.list_plans(ws)["name"]) == ["half"] and plans.load_plan(ws, "half")[1].size == 48
    verify_clean(ws)


def test_a_missing_source_into_a_new_folder_leaves_no_folder(tmp_path):
    ws = tmp_path / "ws"
    assert main(["precompute", str(tmp_path / "TYPO"), "--workspace", str(ws), "--embedder", "offline"]) == 2
    assert not (tmp_path / "ws").exists()


# --------------------------------------------------------------------------------------------
# item 3: one writer per workspace
# --------------------------------------------------------------------------------------------

def test_shared_holders_coexist_and_exclude_a_writer(tmp_path):
    ws = tmp_path / "ws"
    ws.mkdir()
    busy = rf"in use by PID {os.getpid()} \(densprune (plan save|export), started at .*\) and 1 other process"
    with shared_lock(ws, "densprune plan save"), shared_lock(ws, "densprune export"), \
            pytest.raises(WorkspaceInUse, match=busy), exclusive_lock(ws, "densprune precompute"):  # saves + exports
        pass
    with exclusive_lock(ws, "densprune recluster"):
        busy = rf"{re.escape(str(ws))} is in use by PID {os.getpid()} \(densprune recluster, started at "
        with pytest.raises(WorkspaceInUse, match=busy), shared_lock(ws, "densprune plan save"):
            pass
        assert [h["what"] for h in holders(ws)] == ["densprune recluster"]
    assert holders(ws) == []  # released: no record left
    with exclusive_lock(ws, "densprune precompute"):
        pass


def test_a_workspace_this_process_cannot_write_is_still_read(tmp_path, monkeypatch):
    """Plan saves and exports of a read-only workspace (another user's, a read-only mount) are not stopped
    by a lock file they cannot create: an existing one is locked read-only, a missing one is not needed."""
    import errno

    from densprune import workspace_lock

    ws = tmp_path / "ws"
    ws.mkdir()
    real_open = os.open

    def read_only_fs(path, flags, *a):
        if flags & (os.O_CREAT | os.O_RDWR | os.O_WRONLY):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, flags, *a)

    monkeypatch.setattr(workspace_lock.os, "open", read_only_fs)
    with shared_lock(ws, "densprune export"):  # no lock file, none can be made
        pass
    monkeypatch.setattr(workspace_lock.os, "open", real_open)
    with exclusive_lock(ws, "densprune precompute"):  # makes the file
        pass
    monkeypatch.setattr(workspace_lock.os, "open", read_only_fs)
    with shared_lock(ws, "densprune export"), shared_lock(ws, "densprune plan save"):  # locked read-only
        pass
    with pytest.raises(PermissionError):
        with exclusive_lock(ws, "densprune precompute"):
            pass


HOLD_AND_FORK = """
import os, sys, time
from densprune.workspace_lock import exclusive_lock
ws, marker = sys.argv[1:]
with exclusive_lock(ws, "densprune precompute"):
    child = os.fork()
    if child == 0:  # a DataLoader worker, say: it outlives its parent for a while
        time.sleep(60)
        os._exit(0)
    open(marker, "w").write(str(child))
    time.sleep(60)
"""


def test_a_forked_child_does_not_keep_the_lock_of_its_dead_parent(tmp_path, caplog):
    ws, marker = tmp_path / "ws", tmp_path / "child.pid"
    ws.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", HOLD_AND_FORK, str(ws), str(marker)])
    child = None
    try:
        deadline = time.monotonic() + 60
        while not marker.exists() or not marker.read_text():
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        child = int(marker.read_text())
        with pytest.raises(WorkspaceInUse, match=rf"in use by PID {proc.pid} \(densprune precompute"), \
                exclusive_lock(ws, "test"):
            pass
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
        caplog.set_level("WARNING")
        # the child still runs, holding nothing: no wait for it
        with workspace_lock(ws, "densprune precompute", exclusive=True, orphan_wait_s=0):
            assert f"taking over the lock of PID {proc.pid} (densprune precompute" in caplog.text
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        if child:
            try:
                os.kill(child, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait(30)


@pytest.mark.slow
def test_two_precomputes_into_one_workspace_one_refused_the_other_whole(source, clean, image_folder, tmp_path):
    """A precompute paused mid-build (k-means) holds the workspace: a second precompute from another
    source, a plan save and an export are refused with the in-use message; the first ends whole."""
    ws = tmp_path / "ws"
    first, marker, log = start_paused("clustering", precompute_args(source, ws), tmp_path)
    try:
        msg = in_use(ws, first.pid, "densprune precompute")
        second = cli(*precompute_args(image_folder, ws))
        assert second.returncode == 2 and msg.search(second.stderr), second.stderr[-3000:]
        assert "Traceback" not in second.stderr
    finally:
        marker.unlink(missing_ok=True)
    assert first.wait(300) == 0, log.read_text()[-3000:]
    same_build(ws, clean)  # nothing of the other source in it
    assert list((ws / HOLDERS_NAME).iterdir()) == []
    verify_clean(ws)
    ok(cli("plan", ws, "--name", "half", "--keep", "0.5"))  # free again


@pytest.mark.slow
def test_a_plan_save_and_an_export_during_a_force_rebuild_are_refused(source, clean, tmp_path):
    """``--force`` paused after listing its source, before it removes the old build: a plan saved now
    would print success and then vanish with the old database; it is refused instead, as is an export."""
    ws = Path(shutil.copytree(clean, tmp_path / "ws"))
    ok(cli("plan", ws, "--name", "old", "--keep", "0.5"))
    first, marker, log = start_paused("before-reset", [*precompute_args(source, ws), "--force"], tmp_path)
    try:
        msg = in_use(ws, first.pid, "densprune precompute")
        for args in (["plan", ws, "--name", "new", "--keep", "0.3"],
                     ["export", ws, "--plan", "old", "--format", "csv"]):
            proc = cli(*args)
            assert proc.returncode == 2 and msg.search(proc.stderr), (args, proc.stderr[-3000:])
            assert "Traceback" not in proc.stderr
        assert not (ws / "exports").exists()
    finally:
        marker.unlink(missing_ok=True)
    assert first.wait(300) == 0, log.read_text()[-3000:]
    same_build(ws, clean)
    assert plans.list_plans(ws).empty  # --force drops the old build's plans; "new" was never written
    verify_clean(ws)


@pytest.mark.slow
def test_a_plan_save_during_a_recluster_is_refused(clean, tmp_path):
    ws = Path(shutil.copytree(clean, tmp_path / "ws"))
    rec, marker, log = start_paused("recluster", ["recluster", ws, "--dedup-eps", "0.05"], tmp_path)
    try:
        proc = cli("plan", ws, "--name", "half", "--keep", "0.5")
        assert proc.returncode == 2 and in_use(ws, rec.pid, "densprune recluster").search(proc.stderr), proc.stderr
        with pytest.raises(WorkspaceInUse, match=rf"in use by PID {rec.pid} \(densprune recluster"):
            plans.save_plan(ws, "lib", plan_index.load_index(ws).compute(plans.PlanParams(keep=0.5)))
    finally:
        marker.unlink(missing_ok=True)
    assert rec.wait(300) == 0, log.read_text()[-3000:]
    assert plans.list_plans(ws).empty  # nothing was saved
    verify_clean(ws)


HOLD = """
import sys, time
from pathlib import Path
from densprune.workspace_lock import exclusive_lock
ws, marker = sys.argv[1:]
with exclusive_lock(ws, "densprune precompute"):
    Path(marker).write_text("held")
    while Path(marker).exists():
        time.sleep(0.1)
"""


@pytest.mark.slow
def test_the_app_refuses_a_plan_save_with_the_same_message(small_workspace, tmp_path):
    from test_app_pages import button, no_errors, open_app

    ws = Path(shutil.copytree(small_workspace, tmp_path / "ws", ignore=shutil.ignore_patterns(".densprune*")))
    at = open_app(ws, "budget")
    marker = tmp_path / "held"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(ws), str(marker)], cwd=ROOT)
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert holder.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        at.text_input(key="budget_save_name").input("during-precompute")
        button(at, "Save plan").click().run()
        no_errors(at)
        shown = " ".join(w.value for w in at.warning)
        assert f"is in use by PID {holder.pid} (densprune precompute, started at" in shown.replace("\\", ""), shown
        assert not any("Saved plan" in s.value for s in at.success)
    finally:
        marker.unlink(missing_ok=True)
        assert holder.wait(60) == 0
    assert "during-precompute" not in set(plans.list_plans(ws)["name"])


@pytest.mark.slow
def test_a_lock_left_by_a_sigkilled_precompute_is_taken_over(source, clean, tmp_path):
    ws = tmp_path / "ws"
    kill_at("clustering", precompute_args(source, ws), tmp_path)
    (dead,) = holders(ws)  # the killed process's record is still there; its flock went with it
    assert not dead["alive"] and dead["what"] == "densprune precompute"
    rerun = ok(cli(*precompute_args(source, ws)))
    assert f"taking over the lock of PID {dead['pid']} (densprune precompute, started at" in rerun.stderr
    assert holders(ws) == []
    verify_clean(ws)
    same_build(ws, clean)


# --------------------------------------------------------------------------------------------
# item 4: a resume reuses only the shards whose inputs are unchanged
# --------------------------------------------------------------------------------------------

def test_shard_input_keys_follow_the_files(source, tmp_path, wds_shards):
    from densprune.embed.shards import shard_input_keys
    from densprune.ingest.sources import list_source

    src = Path(shutil.copytree(source, tmp_path / "images"))
    refs = list_source(str(src)).refs
    before = shard_input_keys(refs, 8)
    assert len(before) == 6 and len(set(before)) == 6
    target = Path(refs[9].loc[1])  # shard 1
    os.utime(target, ns=(target.stat().st_atime_ns, target.stat().st_mtime_ns + 1_000_000))
    after = shard_input_keys(refs, 8)
    assert [a != b for a, b in zip(before, after)] == [False, True, False, False, False, False]
    assert shard_input_keys(refs, 8, [2]) == [None, None, after[2], None, None, None]
    # tar shards: the shard file's size and mtime stand for its members
    wrefs = list_source(str(wds_shards[0].parent / "*.tar")).refs
    k0 = shard_input_keys(wrefs, 10)
    with tarfile.open(wds_shards[1], "a") as tf:
        info = tarfile.TarInfo("zzz.txt")
        tf.addfile(info)
    k1 = shard_input_keys(wrefs, 10)
    assert k0[0] == k1[0] and k0[1] != k1[1]


@pytest.mark.slow
def test_resume_embeds_again_the_shards_whose_images_changed(source, tmp_path):
    """Killed after 2 of 6 shards; a blue image of shard 0 is then replaced by a yellow one (same name,
    same count). The rerun embeds shard 0 again (not its blue vectors and thumbnail), keeps shard 1, and
    equals an uninterrupted build of the changed folder."""
    src = Path(shutil.copytree(source, tmp_path / "images"))
    ws = tmp_path / "ws"
    kill_at("embedding", precompute_args(src, ws), tmp_path)
    assert len(list((ws / ".work").rglob("shard-*.npz"))) == 2
    changed = src / "blue" / "s0.png"  # row 0: the folder is listed sorted, blue first
    changed.write_bytes(encode(make_image(COLORS["yellow"], "circle", seed=999), "PNG"))
    rerun = ok(cli(*precompute_args(src, ws)))
    row = db.query_df(ws, "SELECT thumb_offset, thumb_size FROM samples WHERE key = 'blue/s0.png'").iloc[0]
    thumb = (ws / "thumbs.bin").read_bytes()[int(row.thumb_offset):int(row.thumb_offset + row.thumb_size)]
    r, g, b = np.asarray(Image.open(io.BytesIO(thumb)).convert("RGB"), np.float64)[24:40, 24:40].mean(axis=(0, 1))
    assert r > 150 and g > 150 and b < 100, (r, g, b)  # the yellow image's thumbnail, not the blue one's
    want = tmp_path / "want"
    ok(cli(*precompute_args(src, want)))
    same_build(ws, want)  # vectors too
    assert "1 of 6 embedding shards" in rerun.stderr and "resuming: 1 of 6 shards" in rerun.stderr, rerun.stderr
    verify_clean(ws)


# --------------------------------------------------------------------------------------------
# item 5: image locations are absolute
# --------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_a_relative_source_gives_locations_that_hold_from_anywhere(tmp_path):
    make_source(tmp_path / "build" / "images")
    ok(run_densprune(*precompute_args(Path("images"), Path("ws")), cwd=tmp_path / "build"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    ws = Path("../build/ws")
    ok(run_densprune("plan", ws, "--name", "all", "--keep", "1.0", cwd=elsewhere))
    ok(run_densprune("export", ws, "--plan", "all", "--format", "csv", "--out", "all.csv", cwd=elsewhere))
    files = pd.read_csv(elsewhere / "all.csv", sep="\t")["filepath"]
    assert len(files) == 48 and all(Path(f).is_file() for f in files)
    ok(run_densprune("export", ws, "--plan", "all", "--format", "webdataset", "--out", "wds", cwd=elsewhere))
    with tarfile.open(next((elsewhere / "wds").glob("*.tar"))) as tf:
        assert sum(m.name.endswith(".png") for m in tf.getmembers()) == 48
    out = ok(run_densprune("verify", ws, cwd=elsewhere))
    assert out.stdout.startswith("ok:")
    assert db.load_meta(tmp_path / "build" / "ws")["source"] == str(tmp_path / "build" / "images")


@pytest.mark.slow
def test_a_workspace_with_relative_locations_is_reported_and_not_exported(tmp_path, monkeypatch, capsys):
    """As densprune before this fix built it from a relative SOURCE: verify names the problem, an export
    that copies images refuses with the reason instead of listing files that are not there."""
    from densprune.embed.runner import EmbedSettings
    from densprune.pipeline import precompute as pre
    from densprune.pipeline.config import PrecomputeConfig

    make_source(tmp_path / "build" / "images")
    monkeypatch.chdir(tmp_path / "build")
    monkeypatch.setattr(pre, "absolute_source", lambda spec: spec, raising=False)  # the old behaviour: SOURCE as given
    ws = pre.precompute(PrecomputeConfig(source="images", workspace=Path("ws"), embedder="offline", clusters=4,
                                             layout_rows=1000, embed=EmbedSettings(batch_size=8, workers=0)))
    ws = ws.resolve()
    plans.save_plan(ws, "all", plan_index.load_index(ws).compute(plans.PlanParams(keep=1.0)))
    assert json.loads(db.query_df(ws, "SELECT image_loc FROM samples LIMIT 1").image_loc[0])[1].startswith("images/")
    monkeypatch.chdir(tmp_path)
    problems = verify_workspace(ws)
    assert len(problems) == 1 and "48 samples have relative image locations" in problems[0].message
    assert problems[0].file == str(db.db_path(ws))
    capsys.readouterr()
    assert main(["verify", str(ws)]) == 1
    for fmt in ("csv", "webdataset"):
        assert main(["export", str(ws), "--plan", "all", "--format", fmt, "--out", str(tmp_path / f"x-{fmt}")]) == 2
        err = capsys.readouterr().err
        assert f"cannot export {fmt}: 48 samples have relative image locations" in err and "--force" in err
        assert not (tmp_path / f"x-{fmt}").exists()
    assert main(["export", str(ws), "--plan", "all", "--format", "parquet", "--out", str(tmp_path / "x.parquet")]) == 0


# --------------------------------------------------------------------------------------------
# SIGKILL at the stages test_crash_safety.py does not reach
# --------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_killed_after_the_force_reset_then_rerun_matches_a_clean_run(source, clean, tmp_path):
    ws = Path(shutil.copytree(clean, tmp_path / "ws"))
    ok(cli("plan", ws, "--name", "half", "--keep", "0.5"))
    args = [*precompute_args(source, ws), "--force"]
    kill_at("after-reset", args, tmp_path)
    assert not db.is_complete(ws) and not (ws / "plans").exists()
    assert verify_workspace(ws)[0].message.startswith("missing")
    ok(cli(*args))
    same_build(ws, clean)
    verify_clean(ws)


@pytest.mark.slow
def test_killed_after_the_database_is_in_place_leaves_a_complete_workspace(source, clean, tmp_path):
    ws = tmp_path / "ws"
    kill_at("plan-index", precompute_args(source, ws), tmp_path)
    assert db.is_complete(ws) and not any((ws / ".work").rglob("*.npz"))  # the shards went before the index
    verify_clean(ws)  # the plan index is built on first use
    same_build(ws, clean)
    ok(cli("plan", ws, "--name", "half", "--keep", "0.5"))
    proc = cli(*precompute_args(source, ws))  # complete: a rerun needs --force, as for any workspace
    assert proc.returncode == 2 and "--force" in proc.stderr


@pytest.mark.slow
def test_released_copy_killed_then_rerun_matches_a_clean_run(tmp_path):
    from test_released import write_clip_retrieval

    write_clip_retrieval(tmp_path / "src", [40, 55, 25], d=16)
    args = ["precompute", str(tmp_path / "src"), "--workspace", str(tmp_path / "ws"), "-k", "5", "--layout-rows", "60"]
    ok(cli(*[a.replace(str(tmp_path / "ws"), str(tmp_path / "clean")) for a in args]))
    kill_at("released-copy", args, tmp_path)
    ws = tmp_path / "ws"
    assert not db.is_complete(ws) and not (ws / "embeddings" / "image.npy").exists()
    ok(cli(*args))
    got, want = state(ws), state(tmp_path / "clean")
    pd.testing.assert_frame_equal(got[0], want[0], check_exact=False, rtol=1e-5)
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_array_equal(np.load(ws / "embeddings/image.npy"),
                                  np.load(tmp_path / "clean" / "embeddings" / "image.npy"))
    verify_clean(ws)
