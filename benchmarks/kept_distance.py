"""How far from their concept's centre the members of each training subset lie (the demo, keep 30%).

The training experiment (benchmarks/run_experiment.py) trains on DBP, SSP and random subsets of the
demo at keep 30% (tau 0.1, no dedup). DBP and SSP keep the members farthest from their centroid
("hard"); this script reports the mean cosine distance to the centroid (``dist_to_centroid``) of the
rows each subset keeps, next to the pool's, so the README's reading of the experiment ("hard members
are outliers") rests on a number anyone can reproduce. Seeded subsets report mean +- std over seeds.
Written, headed by the command, to benchmarks/results/kept_distance.md (``--out``).

    python benchmarks/kept_distance.py [--workspace DIR] [--keep 0.3] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]  # this checkout

from _util import publish, table  # noqa: E402

from densprune import db  # noqa: E402
from densprune.prune.plan_index import load_index  # noqa: E402
from densprune.prune.selection import PlanParams  # noqa: E402
from densprune.workspace import default_demo_workspace  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workspace", type=Path, default=None)
    ap.add_argument("--keep", type=float, default=0.3)
    ap.add_argument("--temperature", type=float, default=0.1)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", type=Path, default=None, help="default: benchmarks/results/kept_distance.md")
    args = ap.parse_args(argv)
    ws = (args.workspace or default_demo_workspace()).resolve()
    if not db.is_complete(ws):
        ap.error(f"no workspace at {ws}: build it with `densprune demo --no-app --workspace {ws}`")
    arr = db.load_sample_arrays(ws, ("dist_to_centroid", "split"))
    dist, pool = arr["dist_to_centroid"], arr["split"] == "pool"
    index = load_index(ws)
    k, tau = args.keep, args.temperature
    subsets = [
        ("DBP, hard (the experiment's DBP)", [PlanParams(method="dbp", keep=k, temperature=tau)]),
        ("DBP, random members", [PlanParams(method="dbp", keep=k, temperature=tau, within="random", seed=s)
                                 for s in args.seeds]),
        ("DBP, easy (nearest the centre)", [PlanParams(method="dbp", keep=k, temperature=tau, within="easy")]),
        ("SSP, hard (the experiment's SSP)", [PlanParams(method="ssp", keep=k)]),
        ("random (the experiment's random)", [PlanParams(method="random", keep=k, seed=s) for s in args.seeds]),
    ]
    rows = [["the whole pool", f"{int(pool.sum()):,}", f"{dist[pool].mean():.3f}"]]
    for label, plans in subsets:
        means = np.array([dist[index.compute(p).keep].mean() for p in plans])
        n = index.compute(plans[0]).n_kept
        value = f"{means.mean():.3f}" + (f" +- {means.std(ddof=1):.3f} (seeds {', '.join(map(str, args.seeds))})"
                                          if len(means) > 1 else "")
        rows.append([label, f"{n:,}", value])
    meta = db.load_meta(ws)
    text = (f"Mean distance to the concept centre (1 - cos) of the kept rows; demo workspace, {meta['embedder']} "
            f"embedder, K={meta['k']}, keep {k:.0%}, tau {tau:g}, no dedup\n\n"
            + table(["subset", "images", "mean distance to the centre"], rows))
    publish(text, args.out, "kept_distance.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
