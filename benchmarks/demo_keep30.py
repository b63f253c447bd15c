"""The demo at keep 30%: what DBP, SSP and random keep of the redundant and the diverse categories.

    python benchmarks/demo_keep30.py [--workspace DIR] [--keep 0.3] [--dedup-eps EPS] [--runs 7] [--out FILE]

Reports, per method: how many images are kept, as a share of what remains after dedup (what the
budget counts) and of the raw pool, the share of shapes/stars kept, the share of computer/icons
kept, how many top-level categories keep at least 10% of their pool images, the lowest category
share, and the plan time (median). Written, headed by the command, to
benchmarks/results/demo_keep30.md (``demo_keep30_dedup.md`` with --dedup-eps), or ``--out``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path[:0] = [str(Path(__file__).resolve().parent.parent), str(Path(__file__).resolve().parent)]  # this checkout
from _util import median_time, publish, table  # noqa: E402

from densprune import db  # noqa: E402
from densprune.prune.plan_index import load_index  # noqa: E402
from densprune.prune.selection import PlanParams  # noqa: E402
from densprune.workspace import default_demo_workspace  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--workspace", type=Path, default=None)
    ap.add_argument("--keep", type=float, default=0.3)
    ap.add_argument("--temperature", type=float, default=0.1)
    ap.add_argument("--dedup-eps", type=float, default=None, help="SemDeDup eps applied before every method")
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    ws = args.workspace or default_demo_workspace()
    if not db.is_complete(ws):
        from densprune.cli.main import main as cli_main

        cli_main(["demo", "--no-app", "--workspace", str(ws)])
    s = db.query_df(ws, "SELECT category, top_category, split FROM samples ORDER BY row_idx")
    pool = (s.split == "pool").to_numpy()
    stars = (s.category == "shapes/stars").to_numpy() & pool
    icons = s.category.str.startswith("computer/icons").to_numpy() & pool
    tops = s.top_category.to_numpy()
    index = load_index(ws)
    rows = []
    for method in ("dbp", "ssp", "random"):
        params = PlanParams(method=method, keep=args.keep, temperature=args.temperature, dedup_eps=args.dedup_eps)
        t, _ = median_time(lambda: index.compute(params), args.runs)
        r = index.compute(params)
        keep = r.keep
        shares = {c: keep[pool & (tops == c)].mean() for c in np.unique(tops[pool])}
        rows.append([method, f"{r.n_kept:,}", f"{r.n_kept / r.n_eligible:.1%} of {r.n_eligible:,}",
                     f"{r.n_kept / r.pool_size:.1%} of {r.pool_size:,}", f"{keep[stars].mean():.1%}",
                     f"{keep[icons].mean():.1%}",
                     f"{sum(v >= 0.10 for v in shares.values())} of {len(shares)}",
                     f"{min(shares.values()):.1%}", f"{t * 1000:.1f} ms"])
    meta = db.load_meta(ws)
    dedup = "no dedup" if args.dedup_eps is None else f"SemDeDup eps {args.dedup_eps:g} first"
    text = (f"demo workspace: {meta['n_pool']:,} pool images, K={meta['k']}, embedder {meta['embedder']}, "
            f"keep {args.keep:.0%} of what remains, tau {args.temperature}, {dedup}\n\n"
            + table(["method", "kept", "of what remains", "of the raw pool", "shapes/stars kept",
                     "computer/icons kept", "top categories keeping >= 10%", "lowest category share", "plan time"],
                    rows))
    default = "demo_keep30.md" if args.dedup_eps is None else "demo_keep30_dedup.md"
    publish(text, args.out, default)


if __name__ == "__main__":
    main()
