"""Launching runs in a background supervisor process, and cancelling them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from densprune import db
from densprune.names import validate_name
from densprune.train.records import FINAL, create_run, now, read_run_json, run_dir, write_json
from densprune.train.schedule import RunSpec
from densprune.train.supervisor import kill_trainer


def launch_runs(workspace: str | os.PathLike, specs: list[RunSpec]) -> list[str]:
    """Create every run (all validated before any starts), then train them one after another in one
    background process: runs sharing a machine would only slow each other down."""
    names = [create_run(workspace, spec)["name"] for spec in specs]
    start_supervisor(workspace, names)
    return names


def start_supervisor(workspace: str | os.PathLike, names: list[str] | str) -> int:
    """Start ``python -m densprune.train.supervisor WS RUN...`` detached from the caller; returns its pid
    (recorded in the runs' rows, so a queued run whose supervisor is starting does not look orphaned)."""
    ws = Path(workspace).resolve()
    names = [validate_name(n, "run name") for n in ([names] if isinstance(names, str) else names)]
    with open(run_dir(ws, names[0]) / "supervisor.log", "ab") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "densprune.train.supervisor", str(ws), *names],
                                stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
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
    if kill_trainer(rdir):
        return
    if st.get("status") == "queued":
        st.update(status="cancelled", phase="", error="cancelled before it started", finished_at=now())
        write_json(rdir / "status.json", st)
        db.update_run(ws, name, {k: st[k] for k in ("status", "phase", "error", "finished_at")})


