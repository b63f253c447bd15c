"""The demo at keep 30%: what DBP, SSP and random keep of the redundant and the diverse categories.

    python benchmarks/demo_keep30.py [--workspace DIR] [--keep 0.3] [--runs 7]

Reports, per method: the share of shapes/stars kept, the share of computer/icons kept, how many
top-level categories keep at least 10% of their pool images, and the plan time (median).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import median_time, table  # noqa: E402

from densprune import db  # noqa: E402
from densprune.cli.main import default_demo_workspace  # noqa: E402
from densprune.prune.plans import load_index  # noqa: E402
from densprune.prune.selection import PlanParams  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--workspace", type=Path, default=None)
    ap.add_argument("--keep", type=float, default=0.3)
    ap.add_argument("--temperature", type=float, default=0.1)
    ap.add_argument("--runs", type=int, default=7)
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
        params = PlanParams(method=method, keep=args.keep, temperature=args.temperature)
        t, _ = median_time(lambda: index.compute(params), args.runs)
        keep = index.compute(params).keep
        shares = {c: keep[pool & (tops == c)].mean() for c in np.unique(tops[pool])}
        rows.append([method, f"{keep[stars].mean():.1%}", f"{keep[icons].mean():.1%}",
                     f"{sum(v >= 0.10 for v in shares.values())} of {len(shares)}",
                     f"{min(shares.values()):.1%}", f"{t * 1000:.1f} ms"])
    meta = db.load_meta(ws)
    print(f"demo workspace: {meta['n_pool']:,} pool images, K={meta['k']}, embedder {meta['embedder']}, "
          f"keep {args.keep:.0%}, tau {args.temperature}")
    print(table(["method", "shapes/stars kept", "computer/icons kept", "top categories keeping >= 10%",
                 "lowest category share", "plan time"], rows))


if __name__ == "__main__":
    main()
