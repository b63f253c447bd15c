"""Run records: the run folder, run.json (the validated parameters), status.json and the ``runs`` rows.

A run lives in ``DIR/runs/RUN/``:

    run.json             the spec, the preset, the schedule derived from them (the trainer command is
                         rebuilt from these by the supervisor, never read back as an argv)
    status.json          the run's latest state (the file the ``runs`` row mirrors)
    train.csv            the plan exported for open_clip_train (+ train_images/ for sources whose
                         images live inside parquet/tar files)
    model/               open_clip_config.json of a preset's own model (``--model local-dir:``)
    stdout.log           the trainer's stdout and stderr
    progress.jsonl       one event per parsed trainer log line
    out.log, params.txt, checkpoints/epoch_E.pt     written by open_clip_train (--logs DIR/runs --name RUN)
    metrics.json         the evaluation
    CANCEL               asks the supervisor to stop the trainer

Two comparison modes: equal compute (``samples_seen``: epochs = samples / plan size, rounded to whole
epochs) and equal epochs (``epochs``); every run records the samples it saw and its wall time.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

from densprune import db
from densprune.devices import resolve_device
from densprune.names import validate_name
from densprune.train.presets import get_preset
from densprune.train.schedule import RunSpec, Schedule, make_schedule
from densprune.train.trainer import command_line, trainer_args
from densprune.workspace import RUNS

log = logging.getLogger(__name__)

FINAL = ("done", "failed", "cancelled")


def run_command_line(workspace: str | os.PathLike, name: str) -> str:
    """Run ``name``'s exact trainer command as one shell line (environment settings in front)."""
    command, env = trainer_command(read_run_json(workspace, name))
    return command_line(command, env)


def trainer_command(info: dict) -> tuple[list[str], dict[str, str]]:
    """(argv, extra environment) of the trainer for a run, rebuilt from its validated parameters
    (preset by name, the run's own model folder, schedule, device, seed): a run.json edited by hand
    cannot make the supervisor execute anything but ``python -m open_clip_train.main``."""
    spec = RunSpec(**{**info["spec"], "trainer_args": tuple(info["spec"].get("trainer_args") or ())})
    name = validate_name(info["name"], "run name")
    preset = get_preset(spec.preset)
    rdir = run_dir(info["workspace"], name)
    model = f"local-dir:{rdir / 'model'}" if preset.model_cfg is not None else preset.model
    schedule = Schedule(**info["schedule"])
    device = str(info["device"])
    if device not in ("cpu", "cuda", "mps") and not re.fullmatch(r"cuda:\d+", device):
        raise ValueError(f"run {name!r}: device {device!r} in run.json is not cpu, cuda, cuda:N or mps")
    workers = int(spec.workers if spec.workers is not None else preset.workers)
    args = trainer_args(preset, model=model, train_csv=rdir / "train.csv", logs_dir=rdir.parent, run_name=name,
                        schedule=schedule, device=device, seed=int(spec.seed), workers=workers,
                        extra=spec.trainer_args)
    env = {"OMP_NUM_THREADS": str(preset.threads)} if preset.threads else {}
    return [sys.executable, "-m", "open_clip_train.main", *args], env


def preview_schedules(workspace: str | os.PathLike, plan_names: list[str], preset: str,
                      samples_seen: int | None = None, epochs: int | None = None, batch_size: int | None = None):
    """What each plan's run would train (a DataFrame: plan, kept, epochs, steps, samples seen), or the
    reason it cannot (column ``problem``)."""
    import pandas as pd

    from densprune.prune.plans import list_plans

    p = get_preset(preset)
    saved = list_plans(workspace).set_index("name")
    if samples_seen is None and epochs is None:
        samples_seen = p.samples_seen
    rows = []
    for name in plan_names:
        n = int(saved.loc[name, "n_kept"])
        try:
            s = make_schedule(n, batch_size or p.batch_size, samples_seen=samples_seen, epochs=epochs)
            rows.append({"plan": name, "kept": n, "epochs": s.epochs, "steps": s.total_steps,
                         "samples seen": s.samples_seen, "problem": ""})
        except ValueError as exc:
            rows.append({"plan": name, "kept": n, "epochs": None, "steps": None, "samples seen": None,
                         "problem": str(exc)})
    return pd.DataFrame(rows)


def runs_dir(workspace: str | os.PathLike) -> Path:
    return Path(workspace).resolve() / RUNS


def run_dir(workspace: str | os.PathLike, name: str) -> Path:
    """DIR/runs/NAME, with ``name`` validated (it never escapes the runs folder)."""
    return runs_dir(workspace) / validate_name(name, "run name")


def now() -> datetime:
    """UTC now without tzinfo (the runs table's TIMESTAMP)."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


def write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(tmp, path)


PER_IMAGE = "eval_per_image.npz"  # a run's per-eval-image outcomes (evaluation.per_image_outcomes)


def write_npz(path: Path, arrays: dict) -> None:
    """``arrays`` (name -> array) to ``path`` whole or not at all (a temporary file renamed)."""
    import numpy as np

    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
    os.replace(tmp, path)


def read_run_json(workspace: str | os.PathLike, name: str) -> dict:
    path = run_dir(workspace, name) / "run.json"
    if not path.exists():
        raise ValueError(f"no run named {name!r} in {workspace} (no {path})")
    return json.loads(path.read_text())


def create_run(workspace: str | os.PathLike, spec: RunSpec) -> dict:
    """Validate ``spec``, make the run folder and record the run as ``queued``. Returns the run.json dict."""
    from densprune.prune.plans import load_plan

    ws = Path(workspace).resolve()
    preset = get_preset(spec.preset)
    plan_row, _ = load_plan(ws, spec.plan)
    n_train = int(plan_row["n_kept"])
    batch = int(spec.batch_size or preset.batch_size)
    samples = spec.samples_seen if (spec.samples_seen is not None or spec.epochs is not None) else preset.samples_seen
    schedule = make_schedule(n_train, batch, samples_seen=samples, epochs=spec.epochs)
    device = resolve_device(spec.device)
    name = spec.name or f"{spec.plan}-{preset.name.replace(':', '_').replace('/', '_')}-s{spec.seed}-" \
                        f"{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    validate_name(name, "run name")
    rdir = run_dir(ws, name)
    if rdir.exists():
        raise FileExistsError(f"run {name!r} already exists in {ws} ({rdir}); choose another --name")
    rdir.mkdir(parents=True)
    if preset.model_cfg is not None:
        (rdir / "model").mkdir()
        write_json(rdir / "model" / "open_clip_config.json", {"model_cfg": preset.model_cfg, "preprocess_cfg": {}})
        model = f"local-dir:{rdir / 'model'}"
    else:
        model = preset.model
    info = {"name": name, "workspace": str(ws), "spec": asdict(spec), "preset": asdict(preset), "model": model,
            "device": device, "schedule": asdict(schedule),
            "plan": {"name": spec.plan, "method": plan_row["method"], "params": plan_row["params"],
                     "n_kept": n_train, "pool_size": int(plan_row["pool_size"])},
            "created_at": now().isoformat(timespec="seconds")}
    command, _ = trainer_command(info)  # checks that the parameters give a command
    write_json(rdir / "run.json", info)
    row = {"name": name, "plan": spec.plan, "preset": preset.name, "model": model, "mode": schedule.mode,
           "seed": spec.seed, "device": device, "n_train": n_train, "batch_size": batch, "epochs": schedule.epochs,
           "total_steps": schedule.total_steps, "target_samples": schedule.samples_seen, "status": "queued",
           "phase": "", "error": None, "step": 0, "samples_seen": 0, "loss": None, "elapsed_s": 0.0, "eta_s": None,
           "wall_s": None, "command": json.dumps(command), "run_dir": str(rdir), "checkpoint": None,
           "pid": None, "created_at": now(), "started_at": None, "finished_at": None}
    write_json(rdir / "status.json", row)
    db.ensure_run_tables(ws)
    db.upsert_run(ws, row)
    log.info("run %s: plan %s (%d samples), %s, %d epochs x %d steps x %d = %d samples seen, on %s",
             name, spec.plan, n_train, preset.name, schedule.epochs, schedule.steps_per_epoch, batch,
             schedule.samples_seen, device)
    return info


class Recorder:
    """The run's state: every change goes to status.json (and progress events to progress.jsonl) at
    once, and to the database in short transactions at most every ``db_every_s`` (state changes at once)."""

    def __init__(self, ws: Path, name: str, rdir: Path, row: dict, db_every_s: float = 2.0):
        self.ws, self.name, self.rdir, self.row = ws, name, rdir, row
        self.db_every_s = db_every_s
        self.pending_fields: dict = {}
        self.pending_metrics: list[tuple] = []
        self.last_db = 0.0

    def set(self, force: bool = True, metrics: list[tuple] = (), **fields) -> None:
        self.row.update(fields)
        self.pending_fields.update(fields)
        self.pending_metrics.extend(metrics)
        write_json(self.rdir / "status.json", self.row)
        if force or time.monotonic() - self.last_db >= self.db_every_s:
            self.flush(timeout_s=60.0 if force else 2.0)

    def event(self, ev: dict) -> None:
        with open(self.rdir / "progress.jsonl", "a") as fh:
            fh.write(json.dumps(ev) + "\n")

    def flush(self, timeout_s: float) -> bool:
        if not self.pending_fields and not self.pending_metrics:
            return True
        try:
            db.update_run(self.ws, self.name, self.pending_fields, self.pending_metrics, timeout_s=timeout_s)
        except db.WorkspaceBusy as exc:  # locked: retry with the next update
            log.warning("run %s: could not write progress to the workspace yet (%s)", self.name, exc)
            return False
        self.pending_fields, self.pending_metrics = {}, []
        self.last_db = time.monotonic()
        return True


