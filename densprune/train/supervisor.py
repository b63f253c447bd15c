"""The run supervisor: exports the plan, runs open_clip's trainer as a subprocess, turns its log lines
into progress, evaluates the checkpoint; ``python -m densprune.train.supervisor WS RUN...``
is the background process the app and ``launch_runs`` start.

The database only ever sees short write transactions (a progress update every ``db_every_s``, the
state changes); a write that cannot get the lock is retried with the next update, so no run holds
the workspace. The run's lock (a file lock on ``RUN/.lock``, held for the supervisor's lifetime) is
how others tell a live run from an orphan.
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
from pathlib import Path
from typing import Callable

from filelock import FileLock, Timeout

from densprune import db
from densprune.devices import resolve_device
from densprune.train.records import (
    FINAL,
    PER_IMAGE,
    Recorder,
    now,
    read_run_json,
    run_dir,
    trainer_command,
    write_json,
    write_npz,
)
from densprune.train.schedule import Schedule
from densprune.train.trainer import error_summary, parse_train_line

log = logging.getLogger(__name__)


def run_lock(rdir: Path) -> FileLock:
    """The run's lock (``RUN/.lock``): held by the process supervising the run for as long as it works,
    so a run whose lock is free has no live supervisor (robust to recycled pids and zombies)."""
    return FileLock(rdir / ".lock", is_singleton=False)


def is_supervised(workspace: str | os.PathLike, name: str) -> bool:
    """Whether a live process holds run ``name``'s lock."""
    rdir = run_dir(workspace, name)
    if not rdir.exists():
        return False
    lock = run_lock(rdir)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return True
    lock.release()
    return False


def kill_trainer(rdir: Path) -> bool:
    """SIGTERM the run's trainer process group, if one is running (its pid file exists)."""
    try:
        pid = int((rdir / "trainer.pid").read_text().strip())
    except (FileNotFoundError, ValueError):
        return False
    kill_group(pid)
    return True


def kill_group(pid: int, sig: int = signal.SIGTERM) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def execute_run(workspace: str | os.PathLike, name: str, echo: Callable[[dict], None] | None = None,
                db_every_s: float = 2.0) -> dict:
    """Supervise run ``name`` from ``queued`` to ``done``/``failed``/``cancelled``; returns its final row.

    Exports the plan, runs the trainer, records progress, evaluates the checkpoint. ``echo`` is called
    with every progress event (the CLI prints them). Holds the run's lock while it works.
    """
    ws = Path(workspace).resolve()
    info = read_run_json(ws, name)
    rdir = run_dir(ws, name)
    try:
        with run_lock(rdir).acquire(timeout=5.0):
            return _execute(ws, name, info, rdir, echo, db_every_s)
    except Timeout:
        raise RuntimeError(f"run {name!r} is already being supervised by another process") from None


def _execute(ws: Path, name: str, info: dict, rdir: Path, echo: Callable[[dict], None] | None,
             db_every_s: float) -> dict:
    row = json.loads((rdir / "status.json").read_text())
    if row.get("status") in FINAL:  # finished before: nothing to do
        return row
    rec = Recorder(ws, name, rdir, row, db_every_s=db_every_s)
    sched = Schedule(**info["schedule"])
    if (rdir / "CANCEL").exists():
        rec.set(status="cancelled", phase="", finished_at=now(), error="cancelled before it started")
        return rec.row
    rec.set(status="running", phase="export", started_at=now(), pid=os.getpid())
    try:
        return _supervise(ws, name, info, rdir, rec, sched, echo)
    except KeyboardInterrupt:  # Ctrl-C in the foreground, SIGTERM in the background
        (rdir / "CANCEL").touch()
        kill_trainer(rdir)
        rec.set(status="cancelled", phase="", eta_s=None, finished_at=now(), error="cancelled")
        return rec.row


def _supervise(ws: Path, name: str, info: dict, rdir: Path, rec: Recorder, sched: Schedule,
               echo: Callable[[dict], None] | None) -> dict:
    """Export, train, evaluate; every failure ends in a ``failed`` row with its reason."""
    problem = _export_train_csv(ws, info, rdir, sched)
    if problem:
        rec.set(status="failed", phase="", finished_at=now(), error=f"export failed: {problem}")
        return rec.row
    rec.set(status="running", phase="train")
    command, extra_env = trainer_command(info)
    try:
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                                errors="replace", env={**os.environ, "PYTHONUNBUFFERED": "1", **extra_env}, cwd=rdir,
                                start_new_session=True)
    except OSError as exc:
        rec.set(status="failed", phase="", finished_at=now(), error=f"could not start the trainer: {exc}")
        return rec.row
    (rdir / "trainer.pid").write_text(str(proc.pid))
    t0 = time.monotonic()
    try:
        tail, cancelled = _watch_trainer(proc, rdir, rec, sched, echo, t0)
    except KeyboardInterrupt:
        (rdir / "CANCEL").touch()
        kill_group(proc.pid)
        proc.wait()
        (rdir / "trainer.pid").unlink(missing_ok=True)
        rec.set(wall_s=round(time.monotonic() - t0, 2))
        raise
    rc = proc.wait()
    (rdir / "trainer.pid").unlink(missing_ok=True)  # never signal a recycled pid later
    return _finish(ws, name, rdir, rec, sched, echo, rc, tail, cancelled, round(time.monotonic() - t0, 2))


def _export_train_csv(ws: Path, info: dict, rdir: Path, sched: Schedule) -> str | None:
    """Export the run's plan as open_clip CSV into the run folder; the problem, or None when it worked."""
    from densprune.export.writers import export_plan

    try:
        out = export_plan(ws, info["plan"]["name"], "csv", rdir / "train.csv")
        kept = json.loads(out.with_name(out.name + ".manifest.json").read_text())["counts"]["kept"]
        if kept != sched.n_train:
            return (f"plan {info['plan']['name']!r} keeps {kept} samples now, {sched.n_train} when the run was "
                    "created (it was overwritten); start a new run")
    except Exception as exc:  # noqa: BLE001 - any export failure fails the run, with its message
        return str(exc)
    return None


def _watch_trainer(proc: subprocess.Popen, rdir: Path, rec: Recorder, sched: Schedule,
                   echo: Callable[[dict], None] | None, t0: float) -> tuple[list[str], bool]:
    """Copy the trainer's output to stdout.log, turn its log lines into progress, stop it when CANCEL
    appears. Returns (the last 40 lines, whether it was cancelled)."""
    lines: queue.Queue = queue.Queue()

    def pump() -> None:
        for ln in proc.stdout:
            lines.put(ln)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    tail: list[str] = []
    first: tuple[float, int] | None = None
    cancelled = False
    with open(rdir / "stdout.log", "a") as out:
        while True:
            try:
                ln = lines.get(timeout=0.5)
            except queue.Empty:
                ln = ""
            if (rdir / "CANCEL").exists() and not cancelled:
                cancelled = True
                kill_group(proc.pid)
            if ln is None:
                return tail, cancelled
            if not ln:
                continue
            out.write(ln)
            out.flush()
            tail = (tail + [ln])[-40:]
            p = parse_train_line(ln, sched)
            if p is None:
                continue
            now_t = time.monotonic()
            if first is None:
                first = (now_t, p["samples_seen"])
            _record_progress(p, rec, sched, echo, now_t - t0, first, now_t)


def _record_progress(p: dict, rec: Recorder, sched: Schedule, echo: Callable[[dict], None] | None,
                     elapsed: float, first: tuple[float, int], now_t: float) -> None:
    """One parsed trainer line -> a progress event (progress.jsonl, echo) and the run's row."""
    rate = (p["samples_seen"] - first[1]) / (now_t - first[0]) if now_t > first[0] else 0.0
    eta = (sched.samples_seen - p["samples_seen"]) / rate if rate > 0 else None
    ev = {**p, "t": time.time(), "elapsed_s": round(elapsed, 2), "eta_s": None if eta is None else round(eta, 1),
          "total_steps": sched.total_steps, "target_samples": sched.samples_seen}
    rec.event(ev)
    if echo:
        echo(ev)
    loss = p["loss"] if math.isfinite(p["loss"]) else None
    rec.set(force=False, step=p["step"], samples_seen=p["samples_seen"], loss=loss, elapsed_s=round(elapsed, 2),
            eta_s=ev["eta_s"], metrics=[("train/loss", p["loss"], p["step"], p["samples_seen"]),
                                        ("train/lr", p["lr"], p["step"], p["samples_seen"])])


def _finish(ws: Path, name: str, rdir: Path, rec: Recorder, sched: Schedule, echo: Callable[[dict], None] | None,
            rc: int, tail: list[str], cancelled: bool, wall: float) -> dict:
    """The trainer has exited: record cancelled/failed, or evaluate the checkpoint and record done."""
    ckpt = rdir / "checkpoints" / f"epoch_{sched.epochs}.pt"
    if cancelled:
        rec.set(status="cancelled", phase="", wall_s=wall, elapsed_s=wall, eta_s=None, finished_at=now(),
                error="cancelled")
        return rec.row
    if rc != 0 or not ckpt.exists():
        err = error_summary(tail, rc) if rc != 0 else f"the trainer wrote no checkpoint ({error_summary(tail, rc)})"
        rec.set(status="failed", phase="", wall_s=wall, elapsed_s=wall, eta_s=None, finished_at=now(), error=err)
        return rec.row
    rec.set(phase="eval", wall_s=wall, elapsed_s=wall, eta_s=0.0, samples_seen=sched.samples_seen,
            step=sched.total_steps, checkpoint=str(ckpt))
    try:
        metrics = evaluate_run(ws, name)
    except Exception as exc:  # noqa: BLE001 - the checkpoint stays; `densprune eval` can retry
        log.exception("run %s: evaluation failed", name)
        rec.set(status="failed", phase="", finished_at=now(),
                error=f"evaluation failed: {exc} (the checkpoint is kept: retry with `densprune eval {ws} {name}`)")
        return rec.row
    if echo:
        echo({"event": "eval", **metrics})
    rec.set(status="done", phase="", finished_at=now(), error=None)
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
        feats = ev.encode_eval(net, preprocess, tokenizer, evalset, ev.CLIPART_TEMPLATES, dev)
        out.update({f"eval/{k}": v for k, v in ev.evaluation_metrics(*feats, evalset.labels).items()})
        # per eval image, for paired comparisons with intervals over images (benchmarks/powered_experiment.py)
        write_npz(rdir / PER_IMAGE, ev.per_image_outcomes(*feats, evalset.labels))
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
    write_json(rdir / "metrics.json", {**old, **out})
    if image_folder is None:
        st = json.loads((rdir / "status.json").read_text())
        if st.get("status") == "failed" and str(st.get("error") or "").startswith("evaluation failed"):
            st.update(status="done", error=None)
            write_json(rdir / "status.json", st)
            db.update_run(ws, name, {"status": "done", "error": None}, timeout_s=120.0)
    return out


def _main(argv: list[str]) -> int:
    """``python -m densprune.train.supervisor WS RUN [RUN...]``: the background supervisor, one run after
    another."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ws, names = argv[0], argv[1:]
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
            row = execute_run(ws, name)
        except KeyboardInterrupt:
            (run_dir(ws, name) / "CANCEL").touch()
            row = execute_run(ws, name)
        log.info("run %s: %s %s", name, row["status"], row.get("error") or "")
        ok = ok and row["status"] == "done"
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
