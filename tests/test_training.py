"""Training runs: schedules and trainer arguments (pure), then real open_clip_train runs of a few steps
on a tiny workspace: a run end to end through the CLI, cancellation, a failing run, stale runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import COLORS, encode, make_image

from densprune import db
from densprune.app.session import VIEWS
from densprune.cli.main import main
from densprune.train import launch, listing, records, supervisor, trainer
from densprune.train.presets import PRESETS, get_preset
from densprune.train.schedule import RunSpec, make_schedule
from densprune.train.trainer import parse_train_line

TRAIN_LINE = ("2026-11-25,22:10:23 | INFO | Train Epoch: 1 [ 704/7861 (9%)] Data (t): 0.006 Batch (t): 2.879, "
              "144.812/s, 144.812/s/gpu LR: 0.000550 Logit Scale: 14.268 Contrastive_loss: 3.8430 (4.0755) "
              "Loss: 3.8430 (4.0755)")


# --------------------------------------------------------------------------------------------
# pure parts
# --------------------------------------------------------------------------------------------

def test_equal_compute_gives_a_small_plan_more_epochs():
    full = make_schedule(7861, 128, samples_seen=30_000)
    small = make_schedule(2358, 128, samples_seen=30_000)
    assert (full.epochs, full.steps_per_epoch) == (4, 61)
    assert (small.epochs, small.steps_per_epoch) == (13, 18)
    assert full.samples_seen == 4 * 61 * 128 and small.samples_seen == 13 * 18 * 128
    assert abs(full.samples_seen - small.samples_seen) / 30_000 < 0.05  # equal up to whole epochs
    same_epochs = make_schedule(2358, 128, epochs=4)
    assert same_epochs.mode == "epochs" and same_epochs.samples_seen == 4 * 18 * 128
    assert make_schedule(100, 128 // 2, samples_seen=1).epochs == 1  # at least one epoch


@pytest.mark.parametrize("kw, msg", [({"samples_seen": 10, "epochs": 1}, "exactly one"), ({}, "exactly one"),
                                     ({"epochs": 0}, "epochs must be"), ({"samples_seen": 0}, "samples seen")])
def test_schedule_rejects_bad_budgets(kw, msg):
    with pytest.raises(ValueError, match=msg):
        make_schedule(1000, 10, **kw)


def test_schedule_needs_one_full_batch():
    with pytest.raises(ValueError, match="fewer than one batch"):
        make_schedule(20, 32, epochs=1)


def test_trainer_args_are_a_list_with_the_preset_settings(tmp_path):
    preset = PRESETS["cpu-tiny"]
    sched = make_schedule(2358, 128, samples_seen=30_000)
    args = trainer.trainer_args(preset, model="local-dir:/m", train_csv=tmp_path / "t.csv", logs_dir=tmp_path,
                                 run_name="r", schedule=sched, device="cpu", seed=3, workers=1, extra=("--x",))
    assert all(isinstance(a, str) for a in args)
    opts = dict(zip(args[:-1:2], args[1::2]))
    assert opts["--model"] == "local-dir:/m" and opts["--dataset-type"] == "csv"
    assert opts["--epochs"] == "13" and opts["--batch-size"] == "128" and opts["--precision"] == "fp32"
    assert opts["--warmup"] == str(round(0.1 * sched.total_steps)) and opts["--seed"] == "3"
    assert opts["--save-frequency"] == "0" and args[-1] == "--x"
    gpu = trainer.trainer_args(PRESETS["vit-b-32"], model="ViT-B-32", train_csv=tmp_path / "t.csv",
                                logs_dir=tmp_path, run_name="r", schedule=make_schedule(10**6, 4096, epochs=1),
                                device="cuda", seed=0, workers=8)
    gopts = dict(zip(gpu[::2], gpu[1::2]))
    assert gopts["--precision"] == "amp" and gopts["--lr"] == "0.0005" and gopts["--warmup"] == "500"


def test_presets_accept_open_clip_model_names():
    assert get_preset("cpu-tiny").model_cfg["vision_cfg"]["image_size"] == 48
    p = get_preset("RN50")
    assert p.model == "RN50" and p.batch_size == PRESETS["vit-b-32"].batch_size
    with pytest.raises(ValueError, match="unknown preset"):
        get_preset("no-such-model")


def test_parse_train_line():
    sched = make_schedule(7861, 64, epochs=2)  # 122 steps per epoch
    p = parse_train_line(TRAIN_LINE, sched)
    assert p == {"epoch": 1, "step": 122 + 11, "samples_seen": 122 * 64 + 704, "loss": 3.843, "loss_avg": 4.0755,
                 "lr": 0.00055}
    assert parse_train_line("2026 | INFO | Start epoch 0", sched) is None


def test_error_summary_picks_the_error_line():
    tail = ["usage: main.py [-h] ...\n", "main.py: error: unrecognized arguments: --bogus\n"]
    assert trainer.error_summary(tail, 2) == "exit code 2: main.py: error: unrecognized arguments: --bogus"
    assert trainer.error_summary([], 1) == "exit code 1: no output"


# --------------------------------------------------------------------------------------------
# real runs on a tiny workspace
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """48 coloured shapes in 3 colour folders (12 held out for eval), one plan keeping the whole pool."""
    from densprune.embed.runner import EmbedSettings
    from densprune.pipeline.config import PrecomputeConfig
    from densprune.pipeline.precompute import precompute
    from densprune.prune.plan_index import load_index
    from densprune.prune.plans import save_plan
    from densprune.prune.selection import PlanParams

    root = tmp_path_factory.mktemp("train") / "images"
    i = 0
    for color, rgb in list(COLORS.items())[:3]:
        for shape in ("circle", "square"):
            d = root / color / shape
            d.mkdir(parents=True)
            for j in range(8):
                (d / f"{j}.png").write_bytes(encode(make_image(rgb, shape, seed=i), "PNG"))
                (d / f"{j}.txt").write_text(f"a {color} {shape}")
                i += 1
    ws = precompute(PrecomputeConfig(source=str(root), workspace=root.parent / "ws", embedder="offline", clusters=4,
                                     layout_rows=1000, eval_per_category=4, eval_min_category=10,
                                     embed=EmbedSettings(batch_size=16, workers=0, shard_size=64)))
    save_plan(ws, "all", load_index(ws).compute(PlanParams(method="random", keep=1.0)))
    return ws


def _wait(cond, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _row(ws: Path, name: str) -> dict:
    df = db.load_runs(ws)
    return df[df.name == name].iloc[0].to_dict()


def test_train_end_to_end_writes_checkpoint_progress_and_metrics(tiny_ws, capsys):
    rc = main(["train", str(tiny_ws), "--plan", "all", "--preset", "cpu-tiny", "--epochs", "2", "--batch-size", "8",
               "--workers", "0", "--device", "cpu", "--seed", "1", "--name", "e2e"])
    out = capsys.readouterr().out
    assert rc == 0, out
    rdir = tiny_ws / "runs" / "e2e"
    assert (rdir / "checkpoints" / "epoch_2.pt").exists()
    assert "open_clip_train.main" in out and "step      8/8" in out
    events = listing.loss_curve(tiny_ws, "e2e")
    assert [e["step"] for e in events] == list(range(1, 9)) and events[-1]["samples_seen"] == 64
    row = _row(tiny_ws, "e2e")
    assert row["status"] == "done" and row["error"] is None and row["phase"] == ""
    assert row["samples_seen"] == row["target_samples"] == 2 * (36 // 8) * 8  # 36 pool images, 4 steps/epoch
    assert row["wall_s"] > 0 and row["checkpoint"].endswith("epoch_2.pt") and row["mode"] == "epochs"
    cmd = json.loads(row["command"])
    assert cmd[1:3] == ["-m", "open_clip_train.main"] and "--train-data" in cmd
    m = db.load_run_metrics(tiny_ws, ["e2e"])
    assert (m.name == "train/loss").sum() == 8
    ev = dict(zip(m.name, m.value))
    assert ev["eval/n_images"] == 12 and ev["eval/n_classes"] == 3
    assert 0 <= ev["eval/zeroshot_top1"] <= 1 and 0 <= ev["eval/i2t_r5"] <= 1
    assert json.loads((rdir / "metrics.json").read_text())["eval/zeroshot_top1"] == ev["eval/zeroshot_top1"]
    # re-evaluating the checkpoint gives the same numbers; the runs table shows the run
    folder = tiny_ws.parent / "images"  # ImageFolder-style: one subfolder per colour
    assert main(["eval", str(tiny_ws), "--run", "e2e", "--device", "cpu", "--image-folder", str(folder),
                 "--templates", "photo"]) == 0
    again = dict(zip(*db.load_run_metrics(tiny_ws, ["e2e"])[["name", "value"]].T.values))
    assert again["eval/zeroshot_top1"] == pytest.approx(ev["eval/zeroshot_top1"])
    assert again["folder/images/n_images"] == 48 and again["folder/images/n_classes"] == 3
    capsys.readouterr()
    assert main(["runs", str(tiny_ws)]) == 0
    assert "e2e" in capsys.readouterr().out
    table = listing.results_table(tiny_ws)
    assert table.set_index("name").loc["e2e", "method"] == "random"


def test_cancel_stops_a_background_run(tiny_ws):
    [name] = launch.launch_runs(tiny_ws, [RunSpec(plan="all", epochs=500, batch_size=8, workers=0, device="cpu",
                                                  name="to-cancel")])
    rdir = tiny_ws / "runs" / name
    _wait(lambda: listing.loss_curve(tiny_ws, name), 90, "the first training step")
    assert _row(tiny_ws, name)["status"] == "running"
    assert supervisor.is_supervised(tiny_ws, name) and listing.refresh_runs(tiny_ws) == 0  # alive: left alone
    trainer_pid = int((rdir / "trainer.pid").read_text())
    assert main(["cancel", str(tiny_ws), "--run", name]) == 0  # as README documents it
    row = _wait(lambda: (r := _row(tiny_ws, name))["status"] != "running" and r, 60, "the cancellation")
    assert row["status"] == "cancelled" and row["wall_s"] > 0
    assert not (rdir / "checkpoints" / "epoch_500.pt").exists()
    with pytest.raises(ProcessLookupError):
        os.kill(trainer_pid, 0)


def test_bad_trainer_arguments_fail_the_run_with_the_error(tiny_ws):
    info = records.create_run(tiny_ws, RunSpec(plan="all", epochs=1, batch_size=8, workers=0, device="cpu",
                                                name="bad-args", trainer_args=("--no-such-flag",)))
    row = supervisor.execute_run(tiny_ws, info["name"])
    assert row["status"] == "failed"
    assert "unrecognized arguments: --no-such-flag" in row["error"] and row["error"].startswith("exit code 2")
    db = _row(tiny_ws, "bad-args")
    assert db["status"] == "failed" and db["error"] == row["error"]


def test_create_run_validates_before_anything_runs(tiny_ws):
    with pytest.raises(ValueError, match="no plan named"):
        records.create_run(tiny_ws, RunSpec(plan="nope"))
    with pytest.raises(ValueError, match="fewer than one batch"):
        records.create_run(tiny_ws, RunSpec(plan="all", name="big-batch", epochs=1))  # batch 128 > 36 images
    assert not (tiny_ws / "runs" / "big-batch").exists()
    with pytest.raises(SystemExit):  # argparse: the two budgets exclude each other
        main(["train", str(tiny_ws), "--plan", "all", "--epochs", "1", "--samples-seen", "5"])


def test_a_run_whose_supervisor_died_is_marked_failed(tiny_ws):
    records.create_run(tiny_ws, RunSpec(plan="all", epochs=1, batch_size=8, name="orphan"))
    dead = subprocess.Popen(["true"])
    dead.wait()
    db.update_run(tiny_ws, "orphan", {"status": "running", "pid": dead.pid})
    assert listing.refresh_runs(tiny_ws) >= 1
    row = _row(tiny_ws, "orphan")
    assert row["status"] == "failed" and "supervisor" in row["error"]


def test_train_page_launches_watches_and_compares(tiny_ws, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setattr(sys, "argv", ["app.py", "--workspace", str(tiny_ws)])  # the server's own workspace

    at = AppTest.from_file(str(Path(__file__).resolve().parent.parent / "app.py"), default_timeout=90)
    at.session_state["workspace"] = str(tiny_ws)
    at.run()
    at.switch_page(str(VIEWS / "train.py")).run()
    assert not at.exception, [e.value for e in at.exception]
    at.multiselect(key="train_plans").set_value(["all"])
    at.radio(key="train_mode").set_value("epochs").run()
    at.number_input(key="train_epochs").set_value(1)
    at.number_input(key="train_batch").set_value(8)
    at.number_input(key="train_workers").set_value(0)
    at.selectbox(key="train_device").set_value("cpu").run()
    assert at.dataframe[0].value["samples seen"].tolist() == [32]
    [launch] = [b for b in at.button if b.key == "train_launch"]
    launch.click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.success and "Started 1 run" in at.success[0].value
    name = at.success[0].value.split(": ")[-1]
    _wait(lambda: _row(tiny_ws, name)["status"] in records.FINAL, 120, "the page's run")
    assert _row(tiny_ws, name)["status"] == "done"
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    shown = at.dataframe[-1].value
    assert name in shown["run"].tolist()
    assert any("open_clip_train.main" in c.value for c in at.code)


def test_summary_groups_seeds_of_the_same_schedule():
    import pandas as pd

    from densprune.app import run_charts as runcharts

    base = {"plan": "dbp30", "preset": "cpu-tiny", "method": "dbp", "mode": "samples", "n_train": 2358,
            "samples_seen": 32256, "status": "done", "i2t_r1": 0.1, "i2t_r5": 0.3, "t2i_r1": 0.1, "t2i_r5": 0.2}
    rows = [{**base, "name": "a", "seed": 0, "epochs": 14, "wall_s": 100.0, "zeroshot_top1": 0.10},
            {**base, "name": "b", "seed": 1, "epochs": 14, "wall_s": 120.0, "zeroshot_top1": 0.20},
            {**base, "name": "c", "seed": 0, "epochs": 4, "wall_s": 30.0, "zeroshot_top1": 0.05, "mode": "epochs"},
            {**base, "name": "d", "seed": 2, "epochs": 14, "wall_s": 1.0, "zeroshot_top1": None, "status": "failed"}]
    s = runcharts.summary_by_plan(pd.DataFrame(rows)).set_index("mode")
    assert s.loc["samples", "seeds"] == 2 and s.loc["epochs", "seeds"] == 1
    assert s.loc["samples", "zeroshot_top1_mean"] == pytest.approx(15.0)
    assert s.loc["samples", "zeroshot_top1_std"] == pytest.approx(7.0710678)
    assert s.loc["samples", "wall_s"] == pytest.approx(110.0)
    view = runcharts.summary_view(s.reset_index())
    assert view.loc[0, "zero-shot top-1 %"] == "15.0 ± 7.1"
