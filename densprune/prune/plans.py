"""Saved plans in a workspace: save, list and load them (the plan index they are computed on:
:mod:`densprune.prune.plan_index`).

A saved plan is a row in ``plans``, its per-cluster counts in ``plan_clusters``, and its keep mask
((N,) bool aligned with row_idx) in the file the row's ``keep_file`` names, ``DIR/plans/NAME.GEN.npy``:
every save writes a new file (a fresh generation GEN), then switches the rows to it in one transaction,
then removes the file the old rows named. A save killed at any point leaves the old plan whole or the
new one whole, never old rows with a new mask; what it leaves behind is a mask no row names, which
``densprune verify`` reports.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from densprune import db
from densprune.names import validate_name
from densprune.prune.curation import snapshot
from densprune.prune.decisions import Decisions
from densprune.prune.selection import PlanParams, PlanResult
from densprune.workspace import PLANS, OutsideWorkspace, resolve_inside, save_npy
from densprune.workspace_lock import holds_shared_lock

log = logging.getLogger(__name__)


def validate_plan_name(name: str) -> str:
    """Plan names become file names: letters, digits, '_', '.', '-', at most 64 chars."""
    return validate_name(name, "plan name", max_len=64)


def params_to_json(params: PlanParams) -> str:
    return json.dumps(asdict(params), sort_keys=True)


def params_from_json(text: str | dict) -> PlanParams:
    data = json.loads(text) if isinstance(text, str) else dict(text)
    return PlanParams(**data)


def _new_keep_path(workspace: Path, name: str) -> Path:
    """A file name no other save of ``name`` uses: ``plans/NAME.GEN.npy``."""
    return Path(workspace) / "plans" / f"{validate_plan_name(name)}.{uuid.uuid4().hex[:12]}.npy"


@holds_shared_lock("densprune plan save")  # refused while a precompute/recluster rewrites the workspace
def save_plan(workspace: str | os.PathLike, name: str, result: PlanResult, *, overwrite: bool = False,
              decisions: Decisions | None = None) -> None:
    """Store a computed plan under ``name``: its mask in a new file, then the rows pointing at it in one
    transaction (which refuses an existing name unless ``overwrite``), then the replaced mask is removed.
    ``decisions``: what ``result`` was computed with (its digest must match), recorded as a snapshot."""
    ws = Path(workspace)
    validate_plan_name(name)
    if db.plan_exists(ws, name) and not overwrite:  # fail before writing anything (checked again under the lock)
        raise FileExistsError(f"plan {name!r} already exists in {ws}; choose another name or overwrite it")
    snap = None
    if result.decisions is not None:
        if decisions is None or decisions.digest != result.decisions:
            raise ValueError(f"plan {name!r} was computed with decisions {result.decisions}; pass those decisions "
                             "to save_plan so that the plan records them")
        snap = (*snapshot(decisions), json.dumps(list(result.effects)))
    path = _new_keep_path(ws, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_npy(path, result.keep, bool)
    k = result.eligible.size
    rows = pd.DataFrame({"plan": name, "cluster": np.arange(k, dtype=np.int32), "eligible": result.eligible,
                         "quota": result.quota, "kept": result.kept, "d_intra": result.d_intra,
                         "complexity": result.complexity})
    try:
        old = db.write_plan(ws, {"name": name, "method": result.params.method, "params": params_to_json(result.params),
                                 "n_kept": int(result.n_kept), "budget": int(result.budget),
                                 "pool_size": int(result.pool_size), "keep_file": str(path.relative_to(ws)),
                                 "notes": "\n".join(result.notes),
                                 "created_at": datetime.now(timezone.utc).replace(tzinfo=None)}, rows,
                            overwrite=overwrite, decisions=snap)
    except BaseException:
        path.unlink(missing_ok=True)  # no row names it
        raise
    if old and old != str(path.relative_to(ws)):
        remove_plan_file(ws, old, name)
    log.info("saved plan %s: %d of %d remaining (%d in the pool) kept", name, result.n_kept, result.n_eligible,
             result.pool_size)


def list_plans(workspace: str | os.PathLike) -> pd.DataFrame:
    """All plans of a workspace, newest first (eligible: the remaining pool the budget counted)."""
    return db.list_plans(workspace)


def load_plan(workspace: str | os.PathLike, name: str) -> tuple[dict, np.ndarray]:
    """The plan's row (as a dict, params parsed) and its (N,) bool keep mask (the file the row names)."""
    ws = Path(workspace)
    validate_plan_name(name)
    for attempt in range(3):
        df = db.load_plan_row(ws, name)
        if df.empty:
            names = ", ".join(list_plans(ws)["name"]) or "none yet"
            raise ValueError(f"no plan named {name!r} in {ws} (plans: {names}); create one with `densprune plan`")
        row = df.iloc[0].to_dict()
        try:
            keep = np.load(plan_file(ws, row["keep_file"], name))
        except FileNotFoundError:
            # overwritten between reading the row and opening its file: the new row names the new file
            if attempt == 2 or db.load_plan_row(ws, name)["keep_file"].tolist() == [row["keep_file"]]:
                raise
            continue
        row["params"] = json.loads(row["params"])
        return row, keep
    raise AssertionError("unreachable")


def load_plan_row(workspace: str | os.PathLike, name: str) -> dict:
    """The ``plans`` row of ``name`` as a dict (params parsed; ``decisions``: the digest of the decisions it
    used, or None); a ValueError naming the plans there are when it has none."""
    df = db.load_plan_row(Path(workspace), validate_plan_name(name))
    if df.empty:
        names = ", ".join(list_plans(workspace)["name"]) or "none yet"
        raise ValueError(f"no plan named {name!r} in {workspace} (plans: {names}); create one with `densprune plan`")
    row = df.iloc[0].to_dict()
    row["params"] = json.loads(row["params"])
    row["decisions"] = row.get("decisions") if isinstance(row.get("decisions"), str) else None
    return row


def plan_clusters(workspace: str | os.PathLike, name: str) -> pd.DataFrame:
    """Per cluster: eligible, quota, kept, and the d_intra / complexity the plan used (NaN for plans
    saved by densprune before they were stored)."""
    return db.load_plan_clusters(workspace, validate_plan_name(name))


def delete_plan(workspace: str | os.PathLike, name: str) -> None:
    """Remove plan ``name``: its rows, then the mask file they named."""
    ws = Path(workspace)
    old = db.delete_plan(ws, validate_plan_name(name))
    if old:
        remove_plan_file(ws, old, name)


def plan_file(workspace: str | os.PathLike, keep_file: str, plan: str) -> Path:
    """The mask file a plan row names (``keep_file``), resolved inside DIR/plans; a ValueError naming the plan
    when the row leads anywhere else (an absolute path, ``..``, a symlink out): it is never read or removed."""
    try:
        return resolve_inside(workspace, keep_file, PLANS)
    except OutsideWorkspace as exc:
        raise ValueError(f"plan {plan!r}: its keep_file {exc}; densprune reads and removes plan masks only inside "
                         "the workspace's plans/ folder (was the workspace copied from elsewhere?)") from None


def remove_plan_file(workspace: str | os.PathLike, keep_file: str, plan: str) -> None:
    """Remove the mask a replaced or deleted plan row named, when it lies inside DIR/plans; a warning otherwise."""
    try:
        plan_file(workspace, keep_file, plan).unlink(missing_ok=True)
    except ValueError as exc:
        log.warning("not removing the old mask of %s", exc)
