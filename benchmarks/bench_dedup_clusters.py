"""SemDeDup inside whole concepts vs inside finer groups (``--dedup-clusters``): cost and what changes.

On a workspace's vectors (default: the 200k-row synthetic pool of benchmarks/scale.py), cluster its
first ``--rows`` rows into K concepts (few, so that concepts are large: 100k rows in K=25 gives
~4,000 rows each), then run SemDeDup

- inside the concepts (the reference: ``--dedup-clusters concepts``), and
- inside groups of about T rows (T = 2,000, the ``auto`` rule, and smaller), split by k-means inside
  every concept (``densprune.cluster.subclusters``),

and report, per setting: pairs compared, CPU time (split + SemDeDup, median of ``--runs``), and
at each eps the kept fraction and how the duplicate set compares with the reference (Jaccard,
and the share of the reference's duplicates that are still flagged).

    python benchmarks/bench_dedup_clusters.py --ws /var/tmp/densprune-scale/ws-200000 --rows 100000 --k 25
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _util import table

from densprune.cluster.kmeans import assign, train_spherical_kmeans
from densprune.cluster.subclusters import groups_per_concept, pair_count, split_concepts
from densprune.prune.semdedup import is_duplicate, semdedup
from densprune.vectors import NpyRows

EPS = (0.01, 0.05, 0.1)


class FirstRows:
    """The first ``n`` rows of an array-like (slices and sorted index arrays)."""

    def __init__(self, x, n: int) -> None:
        self.x, self.shape, self.dtype, self.ndim = x, (min(n, x.shape[0]), x.shape[1]), x.dtype, 2

    def __getitem__(self, item):
        if isinstance(item, slice):
            a, b, _ = item.indices(self.shape[0])
            return self.x[a:b]
        return self.x[item]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ws", type=Path, default=Path("/var/tmp/densprune-scale/ws-200000"))
    ap.add_argument("--k", type=int, default=25)
    ap.add_argument("--rows", type=int, default=100_000, help="use the first ROWS rows (the pool is shuffled)")
    ap.add_argument("--targets", type=int, nargs="+", default=[2000, 1000, 500])
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "dedup_clusters")
    args = ap.parse_args()
    x = FirstRows(NpyRows(args.ws / "embeddings" / "image.npy"), args.rows)
    n = x.shape[0]
    cent = train_spherical_kmeans(x, args.k, niter=20, seed=1234)
    labels, sims = assign(x, cent)
    dist = np.clip(1.0 - sims.astype(np.float64), 0.0, 2.0)
    sizes = np.bincount(labels, minlength=args.k)

    def run(setting: int | str) -> dict:
        split_s, dedup_s = [], []  # CPU seconds of this process (all threads): robust to other jobs' load
        for _ in range(args.runs):
            t = time.process_time()
            per = groups_per_concept(sizes, setting)
            groups, gdist, n_groups = split_concepts(x, labels, dist, per, seed=1234)
            t1 = time.process_time()
            max_sim, dup_of = semdedup(x, groups, gdist)
            split_s.append(t1 - t)
            dedup_s.append(time.process_time() - t1)
        return {"split_s": statistics.median(split_s), "dedup_s": statistics.median(dedup_s), "groups": groups,
                "n_groups": n_groups, "pairs": pair_count(np.bincount(groups)), "max_sim": max_sim, "dup_of": dup_of}

    ref = run("concepts")
    rows = [["concepts", ref["n_groups"], f"{ref['pairs']:.3g}", "-", f"{ref['dedup_s']:.1f}", "1.00x"]
            + [f"{1 - is_duplicate(ref['max_sim'], e).mean():.4f} (ref)" for e in EPS]]
    record = {"n": n, "k": args.k, "concepts": {k: ref[k] for k in ("dedup_s", "pairs", "n_groups")}}
    for target in args.targets:
        r = run(int(np.ceil(sizes / target).sum()))
        cells = []
        for e in EPS:
            dup = is_duplicate(ref["max_sim"], e)
            i = np.flatnonzero(dup)
            together = (r["groups"][i] == r["groups"][ref["dup_of"][i]]).mean() if i.size else 1.0
            cells.append(f"{1 - is_duplicate(r['max_sim'], e).mean():.4f} ({together:.1%} of pairs together)")
        total = r["split_s"] + r["dedup_s"]
        rows.append([f"~{target:,} rows", r["n_groups"], f"{r['pairs']:.3g}", f"{r['split_s']:.1f}",
                     f"{r['dedup_s']:.1f}", f"{ref['dedup_s'] / total:.2f}x"] + cells)
        record[str(target)] = {k: r[k] for k in ("split_s", "dedup_s", "pairs", "n_groups")}
    md = (f"# SemDeDup inside concepts vs inside finer groups\n\n`python benchmarks/bench_dedup_clusters.py "
          f"--ws {args.ws} --rows {args.rows} --k {args.k} --runs {args.runs}`: {n:,} rows, 512-d float16, "
          f"K={args.k} concepts (largest {sizes.max():,} rows); CPU seconds (all threads of the process, so other "
          "jobs' load on the shared 2-core machine does not count; "
          f"load average {os.getloadavg()[0]:.1f} at the end).\n\n"
          + table(["groups of", "groups", "pairs", "split CPU s", "SemDeDup CPU s", "speed-up (split included)"]
                  + [f"kept at eps {e}" for e in EPS], rows)
          + "\n\n'pairs together': of the duplicate pairs SemDeDup finds inside whole concepts at that eps "
            "(a row and the earlier member it duplicates), the share whose two rows fall in the same group, so "
            "that the grouped run can find them too.\n")
    args.out.with_suffix(".md").write_text(md)
    args.out.with_suffix(".json").write_text(json.dumps(record, indent=2))
    print(md)


if __name__ == "__main__":
    main()
