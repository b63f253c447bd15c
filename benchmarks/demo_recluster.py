"""The demo with concepts measured per plan after dedup, and with `densprune recluster` (k-means on
the deduplicated pool, the paper's LAION-DeDup-280M variant), side by side.

Copies the demo workspace to a temporary folder, reclusters the copy at ``--dedup-eps`` (same K),
and reports for both workspaces: how concentrated the duplicates are (concepts that lose more than
half their pool to dedup), where the near-identical stars sit (concepts holding at least 10 of
them), and what DBP keeps at ``--keep`` of what remains (stars, icons, the overlap of the two kept
sets), with the time of a recluster and of a plan. Written, headed by the command, to
benchmarks/results/demo_recluster.md (``--out``).

    python benchmarks/demo_recluster.py [--workspace DIR] [--dedup-eps 0.05] [--keep 0.3]
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]  # this checkout

from _util import median_time, publish, table  # noqa: E402

from densprune import db  # noqa: E402
from densprune.pipeline.recluster import recluster  # noqa: E402
from densprune.prune.plan_index import load_index  # noqa: E402
from densprune.prune.selection import PlanParams  # noqa: E402
from densprune.prune.semdedup import is_duplicate  # noqa: E402
from densprune.workspace import default_demo_workspace  # noqa: E402


def describe(ws: Path, params: PlanParams, eps: float) -> tuple[list[str], np.ndarray]:
    """One table column for ``ws`` and the plan's keep mask."""
    s = db.query_df(ws, "SELECT category, split, cluster, dup_max_sim FROM samples ORDER BY row_idx")
    pool = (s.split == "pool").to_numpy()
    stars = (s.category == "shapes/stars").to_numpy() & pool
    icons = s.category.str.startswith("computer/icons").to_numpy() & pool
    cl = s.cluster.to_numpy()
    k = int(cl.max()) + 1
    dup = is_duplicate(s.dup_max_sim.to_numpy(), eps) & pool
    lost = np.bincount(cl[dup], minlength=k) / np.maximum(np.bincount(cl[pool], minlength=k), 1)
    index = load_index(ws)
    t, _ = median_time(lambda: index.compute(params), 7)
    r = index.compute(params)
    star_clusters = np.bincount(cl[stars], minlength=k)
    col = [f"{k}", f"{int((lost > 0.5).sum())}", f"{int((star_clusters >= 10).sum())}",
           f"{int(np.bincount(cl[pool], minlength=k).max()):,}", f"{r.n_kept:,} of {r.n_eligible:,}",
           f"{int(r.keep[stars].sum())} ({r.keep[stars].mean():.1%})",
           f"{int(r.keep[icons].sum())} ({r.keep[icons].mean():.1%})", f"{t * 1000:.1f} ms"]
    return col, r.keep


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workspace", type=Path, default=None)
    ap.add_argument("--dedup-eps", type=float, default=0.05)
    ap.add_argument("--keep", type=float, default=0.3)
    ap.add_argument("--temperature", type=float, default=0.1)
    ap.add_argument("--out", type=Path, default=None, help="default: benchmarks/results/demo_recluster.md")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    ws = (args.workspace or default_demo_workspace()).resolve()
    if not db.is_complete(ws):
        ap.error(f"no workspace at {ws}: build it with `densprune demo --no-app --workspace {ws}`")
    params = PlanParams(method="dbp", keep=args.keep, temperature=args.temperature, dedup_eps=args.dedup_eps)
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "ws"
        shutil.copytree(ws, copy, ignore=shutil.ignore_patterns("exports", "runs", "plans", "thumbs.bin"))
        for name in db.list_plans(copy)["name"]:
            db.delete_plan(copy, name)
        t = time.perf_counter()
        rep = recluster(copy, args.dedup_eps)
        rc_s = time.perf_counter() - t
        a, keep_a = describe(ws, params, args.dedup_eps)
        b, keep_b = describe(copy, params, args.dedup_eps)
    overlap = int((keep_a & keep_b).sum()) / max(int((keep_a | keep_b).sum()), 1)
    labels = ["concepts K", f"concepts losing > 50% of their pool to dedup (eps {args.dedup_eps:g})",
              "concepts holding >= 10 of the 1,378 stars", "largest concept (pool images)",
              f"DBP keep {args.keep:.0%} (tau {args.temperature:g}): kept of what remains", "stars kept", "icons kept",
              "plan time (median of 7)"]
    rows = [[lab, x, y] for lab, x, y in zip(labels, a, b)]
    rows.append(["kept sets: overlap (intersection / union)", f"{overlap:.1%}", ""])
    rows.append(["cost", "none: d_intra re-measured per plan", f"recluster {rc_s:.1f} s (k-means on "
                 f"{rep.train_rows:,} of {rep.pool_rows:,} pool rows, assignment, labels)"])
    meta = db.load_meta(ws)
    text = (f"demo workspace ({meta['n_pool']:,} pool images, {meta['embedder']} embedder), SemDeDup eps "
            f"{args.dedup_eps:g}: concepts of the whole pool measured per plan, and reclustered on the deduplicated "
            "pool\n\n" + table(["", "per plan (clusters of the whole pool)", "densprune recluster"], rows))
    publish(text, args.out, "demo_recluster.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
