"""Training runs: a plan's keep set trained with open_clip's own trainer, watched, evaluated, recorded.

A run lives in ``DIR/runs/RUN/``:

    run.json             the spec, the schedule derived from it and the exact trainer command
    status.json          the run's latest state (the file the ``runs`` row mirrors)
    train.csv            the plan exported for open_clip_train (+ train_images/ for sources whose
                         images live inside parquet/tar files)
    model/               open_clip_config.json of a preset's own model (``--model local-dir:``)
    stdout.log           the trainer's stdout and stderr
    progress.jsonl       one event per parsed trainer log line
    out.log, params.txt, checkpoints/epoch_E.pt     written by open_clip_train (--logs DIR/runs --name RUN)
    metrics.json         the evaluation
    CANCEL               asks the supervisor to stop the trainer

``create_run`` validates and records a run (status ``queued``); ``execute_run`` (the supervisor)
exports the plan, runs ``python -m open_clip_train.main`` as a subprocess from an argument list,
parses its log lines into progress, then evaluates the checkpoint. ``launch_run`` does both with the
supervisor in a background process (the app); ``densprune train`` runs it in the foreground.

The database only ever sees short write transactions (a progress update every ``db_every_s``, the
state changes); a write that cannot get the lock is retried with the next update, so no run holds
the workspace. Two comparison modes: equal compute (``samples_seen``: epochs = samples / plan size,
rounded to whole epochs) and equal epochs (``epochs``); every run records the samples it saw and its
wall time.
"""

from __future__ import annotations

import json
import logging
import math
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import duckdb

from densprune import db
from densprune.devices import resolve_device
from densprune.names import validate_name
from densprune.train.command import (  # noqa: F401  (re-exported: the run API lives here)
    RunSpec,
    Schedule,
    command_line,
    error_summary,
    fmt_seconds,
    make_schedule,
    parse_train_line,
    trainer_args,
)
from densprune.train.presets import get_preset

log = logging.getLogger(__name__)

STATUSES = ("queued", "running", "done", "failed", "cancelled")
FINAL = ("done", "failed", "cancelled")


def run_command_line(workspace: str | os.PathLike, name: str) -> str:
    """Run ``name``'s exact trainer command as one shell line (environment settings in front)."""
    info = read_run_json(workspace, name)
    return command_line(info["command"], info.get("env"))




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


# --------------------------------------------------------------------------------------------
# run folders and records
# --------------------------------------------------------------------------------------------

def runs_dir(workspace: str | os.PathLike) -> Path:
    return Path(workspace).resolve() / "runs"


def run_dir(workspace: str | os.PathLike, name: str) -> Path:
    return runs_dir(workspace) / name


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, default=str))
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
        _write_json(rdir / "model" / "open_clip_config.json", {"model_cfg": preset.model_cfg, "preprocess_cfg": {}})
        model = f"local-dir:{rdir / 'model'}"
    else:
        model = preset.model
    workers = int(spec.workers if spec.workers is not None else preset.workers)
    args = trainer_args(preset, model=model, train_csv=rdir / "train.csv", logs_dir=rdir.parent, run_name=name,
                        schedule=schedule, device=device, seed=spec.seed, workers=workers, extra=spec.trainer_args)
    command = [sys.executable, "-m", "open_clip_train.main", *args]
    env = {"OMP_NUM_THREADS": str(preset.threads)} if preset.threads else {}
    info = {"name": name, "workspace": str(ws), "spec": asdict(spec), "preset": asdict(preset), "model": model,
            "device": device, "schedule": asdict(schedule), "command": command, "env": env,
            "plan": {"name": spec.plan, "method": plan_row["method"], "params": plan_row["params"],
                     "n_kept": n_train, "pool_size": int(plan_row["pool_size"])},
            "created_at": _now().isoformat(timespec="seconds")}
    _write_json(rdir / "run.json", info)
    row = {"name": name, "plan": spec.plan, "preset": preset.name, "model": model, "mode": schedule.mode,
           "seed": spec.seed, "device": device, "n_train": n_train, "batch_size": batch, "epochs": schedule.epochs,
           "total_steps": schedule.total_steps, "target_samples": schedule.samples_seen, "status": "queued",
           "phase": "", "error": None, "step": 0, "samples_seen": 0, "loss": None, "elapsed_s": 0.0, "eta_s": None,
           "wall_s": None, "command": json.dumps(command), "run_dir": str(rdir), "checkpoint": None,
           "pid": None, "created_at": _now(), "started_at": None, "finished_at": None}
    _write_json(rdir / "status.json", row)
    db.ensure_run_tables(ws)
    db.upsert_run(ws, row)
    log.info("run %s: plan %s (%d samples), %s, %d epochs x %d steps x %d = %d samples seen, on %s",
             name, spec.plan, n_train, preset.name, schedule.epochs, schedule.steps_per_epoch, batch,
             schedule.samples_seen, device)
    return info


class _Recorder:
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
        _write_json(self.rdir / "status.json", self.row)
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
        except (duckdb.IOException, duckdb.TransactionException) as exc:  # locked: retry with the next update
            log.warning("run %s: could not write progress to the workspace yet (%s)", self.name, exc)
            return False
        self.pending_fields, self.pending_metrics = {}, []
        self.last_db = time.monotonic()
        return True


def _lock(rdir: Path, wait_s: float = 0.0) -> int | None:
    """Take the run's lock (an flock on ``RUN/.lock``); returns its fd, or None when another process
    holds it (after waiting up to ``wait_s``). The lock lives as long as the fd (in any process) is open."""
    import fcntl

    fd = os.open(rdir / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() >= deadline:
                os.close(fd)
                return None
            time.sleep(0.1)


def is_supervised(workspace: str | os.PathLike, name: str) -> bool:
    """Whether a live process holds run ``name``'s lock (robust to recycled pids and zombies)."""
    rdir = run_dir(workspace, name)
    if not rdir.exists():
        return False
    fd = _lock(rdir)
    if fd is None:
        return True
    os.close(fd)
    return False


def _kill_trainer(rdir: Path) -> bool:
    """SIGTERM the run's trainer process group, if one is running (its pid file exists)."""
    try:
        pid = int((rdir / "trainer.pid").read_text().strip())
    except (FileNotFoundError, ValueError):
        return False
    _kill_group(pid)
    return True


def _kill_group(pid: int, sig: int = signal.SIGTERM) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def execute_run(workspace: str | os.PathLike, name: str, echo: Callable[[dict], None] | None = None,
                db_every_s: float = 2.0, locked: bool = False) -> dict:
    """Supervise run ``name`` from ``queued`` to ``done``/``failed``/``cancelled``; returns its final row.

    Exports the plan, runs the trainer, records progress, evaluates the checkpoint. ``echo`` is called
    with every progress event (the CLI prints them). Holds the run's lock file while it works
    (``locked``: the caller already holds it), which is how others tell a live run from an orphan.
    """
    ws = Path(workspace).resolve()
    info = read_run_json(ws, name)
    rdir = run_dir(ws, name)
    fd = None
    if not locked:
        fd = _lock(rdir, wait_s=5.0)
        if fd is None:
            raise RuntimeError(f"run {name!r} is already being supervised by another process")
    try:
        return _execute(ws, name, info, rdir, echo, db_every_s)
    finally:
        if fd is not None:
            os.close(fd)


def _execute(ws: Path, name: str, info: dict, rdir: Path, echo: Callable[[dict], None] | None,
             db_every_s: float) -> dict:
    row = json.loads((rdir / "status.json").read_text())
    if row.get("status") in FINAL:  # finished before: nothing to do
        return row
    rec = _Recorder(ws, name, rdir, row, db_every_s=db_every_s)
    sched = Schedule(**info["schedule"])
    if (rdir / "CANCEL").exists():
        rec.set(status="cancelled", phase="", finished_at=_now(), error="cancelled before it started")
        return rec.row
    rec.set(status="running", phase="export", started_at=_now(), pid=os.getpid())
    try:
        return _supervise(ws, name, info, rdir, rec, sched, echo)
    except KeyboardInterrupt:  # Ctrl-C in the foreground, SIGTERM in the background
        (rdir / "CANCEL").touch()
        _kill_trainer(rdir)
        rec.set(status="cancelled", phase="", eta_s=None, finished_at=_now(), error="cancelled")
        return rec.row


def _supervise(ws: Path, name: str, info: dict, rdir: Path, rec: _Recorder, sched: Schedule,
               echo: Callable[[dict], None] | None) -> dict:
    from densprune.export.writers import export_plan

    try:
        out = export_plan(ws, info["plan"]["name"], "csv", rdir / "train.csv")
        kept = json.loads(out.with_name(out.name + ".manifest.json").read_text())["counts"]["kept"]
        if kept != sched.n_train:
            raise ValueError(f"plan {info['plan']['name']!r} keeps {kept} samples now, {sched.n_train} when the run "
                             "was created (it was overwritten); start a new run")
    except Exception as exc:  # noqa: BLE001 - any export failure fails the run, with its message
        rec.set(status="failed", phase="", finished_at=_now(), error=f"export failed: {exc}")
        return rec.row

    rec.set(status="running", phase="train")
    tail: list[str] = []
    t0 = time.monotonic()
    first: tuple[float, int] | None = None
    cancelled = False
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **info.get("env", {})}
    try:
        proc = subprocess.Popen(info["command"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                bufsize=1, errors="replace", env=env, cwd=rdir, start_new_session=True)
    except OSError as exc:
        rec.set(status="failed", phase="", finished_at=_now(), error=f"could not start the trainer: {exc}")
        return rec.row
    (rdir / "trainer.pid").write_text(str(proc.pid))
    lines: queue.Queue = queue.Queue()

    def pump() -> None:
        for ln in proc.stdout:
            lines.put(ln)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    try:
        with open(rdir / "stdout.log", "a") as out:
            while True:
                try:
                    ln = lines.get(timeout=0.5)
                except queue.Empty:
                    ln = ""
                if (rdir / "CANCEL").exists() and not cancelled:
                    cancelled = True
                    _kill_group(proc.pid)
                if ln is None:
                    break
                if not ln:
                    continue
                out.write(ln)
                out.flush()
                tail = (tail + [ln])[-40:]
                p = parse_train_line(ln, sched)
                if p is None:
                    continue
                now = time.monotonic()
                elapsed = now - t0
                if first is None:
                    first = (now, p["samples_seen"])
                rate = (p["samples_seen"] - first[1]) / (now - first[0]) if now > first[0] else 0.0
                eta = (sched.samples_seen - p["samples_seen"]) / rate if rate > 0 else None
                ev = {**p, "t": time.time(), "elapsed_s": round(elapsed, 2), "eta_s": None if eta is None else round(eta, 1),
                      "total_steps": sched.total_steps, "target_samples": sched.samples_seen}
                rec.event(ev)
                if echo:
                    echo(ev)
                loss = p["loss"] if math.isfinite(p["loss"]) else None
                rec.set(force=False, step=p["step"], samples_seen=p["samples_seen"], loss=loss,
                        elapsed_s=round(elapsed, 2), eta_s=ev["eta_s"],
                        metrics=[("train/loss", p["loss"], p["step"], p["samples_seen"]),
                                 ("train/lr", p["lr"], p["step"], p["samples_seen"])])
    except KeyboardInterrupt:
        (rdir / "CANCEL").touch()
        _kill_group(proc.pid)
        proc.wait()
        (rdir / "trainer.pid").unlink(missing_ok=True)
        rec.set(wall_s=round(time.monotonic() - t0, 2))
        raise
    rc = proc.wait()
    (rdir / "trainer.pid").unlink(missing_ok=True)  # never signal a recycled pid later
    wall = round(time.monotonic() - t0, 2)
    ckpt = rdir / "checkpoints" / f"epoch_{sched.epochs}.pt"
    if cancelled:
        rec.set(status="cancelled", phase="", wall_s=wall, elapsed_s=wall, eta_s=None, finished_at=_now(),
                error="cancelled")
        return rec.row
    if rc != 0 or not ckpt.exists():
        err = error_summary(tail, rc) if rc != 0 else f"the trainer wrote no checkpoint ({error_summary(tail, rc)})"
        rec.set(status="failed", phase="", wall_s=wall, elapsed_s=wall, eta_s=None, finished_at=_now(), error=err)
        return rec.row
    rec.set(phase="eval", wall_s=wall, elapsed_s=wall, eta_s=0.0, samples_seen=sched.samples_seen,
            step=sched.total_steps, checkpoint=str(ckpt))
    try:
        metrics = evaluate_run(ws, name)
    except Exception as exc:  # noqa: BLE001 - the checkpoint stays; `densprune eval` can retry
        log.exception("run %s: evaluation failed", name)
        rec.set(status="failed", phase="", finished_at=_now(),
                error=f"evaluation failed: {exc} (the checkpoint is kept: retry with `densprune eval {ws} --run {name}`)")
        return rec.row
    if echo:
        echo({"event": "eval", **metrics})
    rec.set(status="done", phase="", finished_at=_now(), error=None)
    return rec.row


def evaluate_run(workspace: str | os.PathLike, name: str, device: str = "auto", image_folder: str | None = None,
                 templates: str = "clipart") -> dict[str, float]:
    """Evaluate run ``name``'s checkpoint on the workspace's held-out set (and an ImageFolder, if given);
    stores the metrics (``eval/...``, ``folder/<name>/...``) and returns them.

    The held-out set always uses the clip-art prompts, so every run is measured alike; ``templates``
    ('clipart' or 'photo') chooses the prompts for the ImageFolder."""
    from densprune.train import evaluation as ev

    ws = Path(workspace).resolve()
    info = read_run_json(ws, name)
    sched = Schedule(**info["schedule"])
    rdir = run_dir(ws, name)
    ckpt = rdir / "checkpoints" / f"epoch_{sched.epochs}.pt"
    if not ckpt.exists():
        raise ValueError(f"run {name!r} has no final checkpoint ({ckpt}); it has not finished training")
    dev = resolve_device(device)
    t0 = time.monotonic()
    net, preprocess, tokenizer = ev.load_model(info["model"], ckpt, dev)
    out: dict[str, float] = {}
    try:
        evalset = ev.workspace_eval_set(ws)
    except ValueError as exc:
        if image_folder is None:
            raise
        log.warning("%s", exc)
    else:
        out.update({f"eval/{k}": v for k, v in ev.evaluate_model(net, preprocess, tokenizer, evalset,
                                                                  ev.CLIPART_TEMPLATES, dev).items()})
    if image_folder is not None:
        fset = ev.image_folder_eval_set(image_folder)
        res = ev.evaluate_model(net, preprocess, tokenizer, fset, ev.TEMPLATE_SETS[templates], dev)
        out.update({f"folder/{fset.name}/{k}": v for k, v in res.items()})
    out["eval/seconds"] = round(time.monotonic() - t0, 2)
    step, samples = sched.total_steps, sched.samples_seen
    for prefix in ("eval/", f"folder/{Path(image_folder).name}/" if image_folder else None):
        if prefix:
            db.replace_run_metrics(ws, name, [(k, v, step, samples) for k, v in out.items() if k.startswith(prefix)],
                                      prefix, timeout_s=120.0)
    old = json.loads((rdir / "metrics.json").read_text()) if (rdir / "metrics.json").exists() else {}
    _write_json(rdir / "metrics.json", {**old, **out})
    if image_folder is None:
        st = json.loads((rdir / "status.json").read_text())
        if st.get("status") == "failed" and str(st.get("error") or "").startswith("evaluation failed"):
            st.update(status="done", error=None)
            _write_json(rdir / "status.json", st)
            db.update_run(ws, name, {"status": "done", "error": None}, timeout_s=120.0)
    return out


# --------------------------------------------------------------------------------------------
# launching, cancelling, listing
# --------------------------------------------------------------------------------------------

def launch_run(workspace: str | os.PathLike, spec: RunSpec) -> str:
    """Create run ``spec`` and supervise it in a background process (returns at once with its name)."""
    return launch_runs(workspace, [spec])[0]


def launch_runs(workspace: str | os.PathLike, specs: list[RunSpec]) -> list[str]:
    """Create every run (all validated before any starts), then train them one after another in one
    background process: runs sharing a machine would only slow each other down."""
    names = [create_run(workspace, spec)["name"] for spec in specs]
    start_supervisor(workspace, names)
    return names


def start_supervisor(workspace: str | os.PathLike, names: list[str] | str) -> int:
    """Start ``python -m densprune.training WS RUN...`` detached from the caller; returns its pid."""
    ws = Path(workspace).resolve()
    names = [names] if isinstance(names, str) else list(names)
    fds = []
    try:
        for name in names:  # locked here and inherited, so the runs never look orphaned
            fd = _lock(run_dir(ws, name))
            if fd is None:
                raise RuntimeError(f"run {name!r} is already being supervised by another process")
            fds.append(fd)
        with open(run_dir(ws, names[0]) / "supervisor.log", "ab") as fh:
            proc = subprocess.Popen([sys.executable, "-m", "densprune.train.runs", "--locked", str(ws), *names],
                                    stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True, pass_fds=fds)
    finally:
        for fd in fds:
            os.close(fd)
    for name in names:
        db.update_run(ws, name, {"pid": proc.pid})
    return proc.pid


def cancel_run(workspace: str | os.PathLike, name: str) -> None:
    """Stop run ``name``: a queued run is cancelled at once; a running one's supervisor kills the trainer
    and records ``cancelled``."""
    ws = Path(workspace).resolve()
    rdir = run_dir(ws, name)
    read_run_json(ws, name)
    st = json.loads((rdir / "status.json").read_text())
    if st.get("status") in FINAL:
        return
    (rdir / "CANCEL").touch()
    if _kill_trainer(rdir):
        return
    if st.get("status") == "queued":
        st.update(status="cancelled", phase="", error="cancelled before it started", finished_at=_now())
        _write_json(rdir / "status.json", st)
        db.update_run(ws, name, {k: st[k] for k in ("status", "phase", "error", "finished_at")})


def refresh_runs(workspace: str | os.PathLike) -> int:
    """Bring ``queued``/``running`` rows whose supervisor is gone up to date from their status.json
    (a final state the database missed) or mark them failed. Returns the number of rows changed."""
    ws = Path(workspace).resolve()
    df = db.load_runs(ws)
    changed = 0
    for r in df[df.status.isin(["queued", "running"])].itertuples(index=False):
        if is_supervised(ws, r.name):
            continue
        if r.status == "queued" and not r.pid and (_now() - r.created_at).total_seconds() < 300:
            continue  # created a moment ago: its launcher is about to start it
        status_file = Path(r.run_dir) / "status.json"
        st = json.loads(status_file.read_text()) if status_file.exists() else {}
        if st.get("status") in FINAL:
            fields = {k: st.get(k) for k in ("status", "phase", "error", "step", "samples_seen", "loss", "elapsed_s",
                                             "eta_s", "wall_s", "checkpoint", "finished_at")}
        else:
            fields = {"status": "failed", "phase": "", "finished_at": _now(),
                      "error": f"the run's supervisor (pid {r.pid}) exited without finishing it"
                      if r.pid else "no process supervises it (it was never started)"}
        db.update_run(ws, r.name, fields)
        metrics_file = Path(r.run_dir) / "metrics.json"
        if fields["status"] == "done" and metrics_file.exists():
            m = json.loads(metrics_file.read_text())
            step, seen = int(st.get("step") or 0), int(st.get("samples_seen") or 0)
            db.replace_run_metrics(ws, r.name, [(k, v, step, seen) for k, v in m.items() if k.startswith("eval/")], "eval/")
        changed += 1
    return changed


def list_runs(workspace: str | os.PathLike, refresh: bool = True):
    """All runs (a DataFrame, newest first), stale ones brought up to date first."""
    if refresh:
        try:
            refresh_runs(workspace)
        except (duckdb.IOException, duckdb.TransactionException) as exc:
            log.debug("could not refresh runs: %s", exc)
    return db.load_runs(workspace)


def loss_curve(workspace: str | os.PathLike, name: str) -> list[dict]:
    """The progress events of run ``name`` from its progress.jsonl (live while it trains)."""
    path = run_dir(workspace, name) / "progress.jsonl"
    if not path.exists():
        return []
    out = []
    for ln in path.read_text().splitlines():
        try:
            out.append(json.loads(ln))
        except json.JSONDecodeError:  # a line being written
            continue
    return out


def results_table(workspace: str | os.PathLike):
    """One row per run: plan, method, mode, seed, samples seen, wall time, status and eval metrics."""
    import pandas as pd

    runs = list_runs(workspace, refresh=False)
    if runs.empty:
        return runs
    m = db.load_run_metrics(workspace, prefix="eval/")
    if not m.empty:
        wide = m.pivot_table(index="run", columns="name", values="value", aggfunc="last")
        wide.columns = [c.split("/", 1)[1] for c in wide.columns]
        runs = runs.merge(wide, left_on="name", right_index=True, how="left")
    plans = db.query_df(workspace, "SELECT name AS plan, method, n_kept, pool_size FROM plans")
    return runs.merge(plans, on="plan", how="left") if not plans.empty else runs.assign(method=pd.NA)


def _main(argv: list[str]) -> int:
    """``python -m densprune.training [--locked] WS RUN [RUN...]``: the background supervisor, one run
    after another (``--locked``: the launcher passed it the runs' locks)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    locked = bool(argv) and argv[0] == "--locked"
    ws, names = argv[int(locked)], argv[int(locked) + 1:]
    terminated = False

    def on_term(signum, frame):  # stop the trainer too, record the cancellation, skip what is left
        nonlocal terminated
        terminated = True
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    ok = True
    for name in names:
        if terminated:
            (run_dir(ws, name) / "CANCEL").touch()
        try:
            row = execute_run(ws, name, locked=locked)
        except KeyboardInterrupt:
            (run_dir(ws, name) / "CANCEL").touch()
            row = execute_run(ws, name, locked=locked)
        log.info("run %s: %s %s", name, row["status"], row.get("error") or "")
        ok = ok and row["status"] == "done"
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
