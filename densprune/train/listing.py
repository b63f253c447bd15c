"""Listing runs: rows brought up to date from their folders, progress curves, the results table."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from densprune import db
from densprune.train.records import FINAL, now, run_dir
from densprune.train.supervisor import is_supervised

log = logging.getLogger(__name__)


def refresh_runs(workspace: str | os.PathLike) -> int:
    """Bring ``queued``/``running`` rows whose supervisor is gone up to date from their status.json
    (a final state the database missed) or mark them failed. Returns the number of rows changed."""
    ws = Path(workspace).resolve()
    df = db.load_runs(ws)
    changed = 0
    for r in df[df.status.isin(["queued", "running"])].itertuples(index=False):
        if is_supervised(ws, r.name):
            continue
        if r.status == "queued" and (_alive(r.pid) or (not r.pid and (now() - r.created_at).total_seconds() < 300)):
            continue  # waiting for its supervisor (busy with an earlier run, or about to start)
        status_file = Path(r.run_dir) / "status.json"
        st = json.loads(status_file.read_text()) if status_file.exists() else {}
        if st.get("status") in FINAL:
            fields = {k: st.get(k) for k in ("status", "phase", "error", "step", "samples_seen", "loss", "elapsed_s",
                                             "eta_s", "wall_s", "checkpoint", "finished_at")}
        else:
            fields = {"status": "failed", "phase": "", "finished_at": now(),
                      "error": f"the run's supervisor (pid {r.pid}) exited without finishing it"
                      if r.pid else "no process supervises it (it was never started)"}
        db.update_run(ws, r.name, fields)
        metrics_file = Path(r.run_dir) / "metrics.json"
        if fields["status"] == "done" and metrics_file.exists():
            m = json.loads(metrics_file.read_text())
            step, seen = int(st.get("step") or 0), int(st.get("samples_seen") or 0)
            db.replace_run_metrics(ws, r.name, [(k, v, step, seen) for k, v in m.items() if k.startswith("eval/")],
                                   "eval/")
        changed += 1
    return changed


def _alive(pid: object) -> bool:
    """Whether process ``pid`` exists (a queued run's supervisor that has not reached it yet)."""
    try:
        pid = int(pid)
        if pid <= 0:
            return False
        os.kill(pid, 0)
    except (TypeError, ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def list_runs(workspace: str | os.PathLike, refresh: bool = True):
    """All runs (a DataFrame, newest first), stale ones brought up to date first."""
    if refresh:
        try:
            refresh_runs(workspace)
        except db.WorkspaceBusy as exc:
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
    plans = db.list_plans(workspace)[["name", "method", "n_kept", "pool_size"]].rename(columns={"name": "plan"})
    return runs.merge(plans, on="plan", how="left") if not plans.empty else runs.assign(method=pd.NA)


