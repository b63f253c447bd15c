"""Benchmark: the ``datacomp`` export of a saved plan against writing the same uids with pyarrow directly.

On an existing workspace (``--workspace``; a DBP plan keeping ``--keep`` of the pool is saved as
``--plan`` first when the workspace has no plan of that name), two sides write the same file, timed
in turn round by round (interleaved, so load that drifts on a shared machine hits both), median of
``--runs``:

- densprune: ``densprune.export.writers.export_plan(ws, plan, "datacomp", out)``: the plan's mask
  read from disk, the kept rows' uids read from DuckDB, converted to DataComp's sorted ``u8,u8``
  array, written under a temporary name and renamed, then the manifest (with the sha256 of the file).
- bare pyarrow: what one would write by hand with the same libraries: the mask from ``plans/NAME.npy``,
  ``SELECT row_idx, uid FROM samples`` as an Arrow table filtered by the mask with
  ``pyarrow.compute``, the uids as integers with ``bytes.fromhex`` over the joined strings, a
  structured ``u8,u8`` array sorted with ``np.sort``, ``np.save``. No manifest, no checks.

Both outputs are checked to be identical. The ratio is densprune's wall time over the bare side's.
Also times the CLI once in a fresh process (``densprune export``: interpreter start and
imports included). Writes a markdown table and a JSON beside it, headed by the command.

    python benchmarks/bench_export.py --workspace workspaces/ws-10000000 --runs 5 --out benchmarks/results/export_10m.md
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]  # this checkout

from _util import command_line, densprune_command, interleaved_times, machine, publish, table  # noqa: E402

from densprune import db  # noqa: E402
from densprune.export.writers import export_plan  # noqa: E402
from densprune.prune import plan_index, plans  # noqa: E402
from densprune.prune.selection import PlanParams  # noqa: E402

log = logging.getLogger("bench_export")


def ensure_plan(ws: Path, name: str, keep: float) -> None:
    """Save a DBP plan (tau 0.1, keep ``keep`` of the pool) as ``name`` unless the workspace has one."""
    if not plans.list_plans(ws).query("name == @name").empty:
        return
    t = time.perf_counter()
    result = plan_index.load_index(ws).compute(PlanParams(method="dbp", keep=keep, temperature=0.1))
    plans.save_plan(ws, name, result)
    log.info("saved plan %s (%d kept) in %.1f s", name, result.n_kept, time.perf_counter() - t)


def bare_pyarrow(ws: Path, plan: str, out: Path) -> None:
    """The same uids written by hand: mask, Arrow filter, bytes.fromhex, np.sort, np.save."""
    keep = plans.load_plan(ws, plan)[1]  # the mask file its row names
    con = duckdb.connect(str(ws / db.DB_NAME), read_only=True)
    try:
        rel = con.sql("SELECT row_idx, uid FROM samples")
        t = rel.to_arrow_table() if hasattr(rel, "to_arrow_table") else rel.arrow()
    finally:
        con.close()
    mask = pa.array(keep[t.column("row_idx").to_numpy()])
    uids = pc.filter(t.column("uid"), mask)
    halves = np.frombuffer(bytes.fromhex("".join(uids.to_pylist())), dtype=">u8").reshape(-1, 2)
    arr = np.empty(len(halves), dtype=np.dtype("u8,u8"))
    arr["f0"], arr["f1"] = halves[:, 0], halves[:, 1]
    arr.sort()
    np.save(out, arr)


def cli_once(ws: Path, plan: str, out: Path) -> float:
    """Wall seconds of ``densprune export`` in a fresh process, from this checkout."""
    t = time.perf_counter()
    subprocess.run([densprune_command(), "export", str(ws), "--plan", plan, "--format", "datacomp",
                    "--out", str(out)], cwd=ROOT, check=True, capture_output=True)
    return time.perf_counter() - t


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workspace", type=Path, required=True)
    p.add_argument("--plan", default="bench-export", help="the plan to export (saved first if missing)")
    p.add_argument("--keep", type=float, default=0.3, help="keep fraction of the plan saved when missing")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--out", type=Path, default=None, help="result file (default: benchmarks/results/export.md)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    ws = args.workspace.resolve()
    ensure_plan(ws, args.plan, args.keep)
    n_kept = int(plans.load_plan(ws, args.plan)[1].sum())
    meta = db.load_meta(ws)
    with tempfile.TemporaryDirectory(dir=ws / "exports" if (ws / "exports").exists() else ws) as tmp:
        ours, bare = Path(tmp) / "densprune.uids.npy", Path(tmp) / "bare.uids.npy"
        times = interleaved_times({"densprune": lambda: export_plan(ws, args.plan, "datacomp", ours),
                                   "bare": lambda: bare_pyarrow(ws, args.plan, bare)}, args.runs)
        a, b = np.load(ours), np.load(bare)
        if a.dtype != b.dtype or not np.array_equal(a, b):
            raise AssertionError("densprune's datacomp export differs from the bare pyarrow one")
        cli = cli_once(ws, args.plan, Path(tmp) / "cli.uids.npy")
    med = {k: statistics.median(v) for k, v in times.items()}
    rows = [["densprune `export_plan(..., \"datacomp\")` (manifest and sha256 included)", f"{med['densprune']:.2f}",
             " / ".join(f"{t:.2f}" for t in times["densprune"]), f"{med['densprune'] / med['bare']:.2f}x"],
            ["bare pyarrow: Arrow filter, bytes.fromhex, np.sort, np.save", f"{med['bare']:.2f}",
             " / ".join(f"{t:.2f}" for t in times["bare"]), "1.00x"],
            ["CLI `densprune export --format datacomp` in a fresh process (one run)", f"{cli:.2f}", "", ""]]
    text = (f"`datacomp` export of plan {args.plan} ({n_kept:,} of {meta['n_samples']:,} rows kept, K={meta['k']}), "
            f"interleaved, median of {args.runs} runs (wall seconds; the machine is shared: load average above)\n\n"
            + table(["what", "median s", "runs s", "ratio"], rows))
    path = publish(text, args.out, "export.md")
    path.with_suffix(".json").write_text(json.dumps({
        "command": command_line(), "machine": machine(), "workspace": str(ws), "plan": args.plan, "kept": n_kept,
        "rows": meta["n_samples"], "runs_s": times, "median_s": med, "ratio": med["densprune"] / med["bare"],
        "cli_fresh_process_s": cli}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
