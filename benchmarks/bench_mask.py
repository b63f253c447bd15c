"""Benchmark: materialising a plan's (N,) keep mask, the compiled two-pass kernels (densprune.prune.masks)
beside the numpy fill they replace, on synthetic indexes (bench_plan.synthetic: lognormal concept sizes,
dedup and CLIP columns).

Both sides do the same work: the plan's quotas from the summary (``compute(p, mask=False)``, timed on
both sides), then the mask from them: ``PlanIndex._fill_at_level`` (a walk of every concept's kept
prefix, then one streaming pass in row order) against ``PlanIndex._fill`` (the eligible mask in hard
order, its cumsum, K binary searches, the kept positions compressed and scattered through the order).
Both masks are checked equal before timing; the runs alternate; medians. The first mask of an index
also builds its row-order columns (concept, dedup level, CLIP rank: one gather each), and
the first random plan of a seed its frame (a permutation and a sort) and that frame's positions and
dedup levels: both reported apart, with their size per row.

    python benchmarks/bench_mask.py --sizes 1000000 10000000 100000000 --clusters 500 5000
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import statistics
import sys
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent.parent), str(Path(__file__).resolve().parent)]  # this checkout
import numpy as np  # noqa: E402
from _util import command_line, interleaved_times, machine, publish  # noqa: E402
from bench_plan import synthetic  # noqa: E402

from densprune.prune.selection import PlanIndex, PlanParams  # noqa: E402

logger = logging.getLogger("bench_mask")

CASES = [("dbp keep=0.3", PlanParams(keep=0.3)),
         ("dbp keep=0.3 eps=0.07 clip_keep=0.5", PlanParams(keep=0.3, dedup_eps=0.07, clip_keep=0.5)),
         ("dbp keep=0.3 easy", PlanParams(keep=0.3, within="easy")),
         ("random keep=0.3", PlanParams(method="random", keep=0.3))]


def run(n: int, k: int, runs: int) -> dict:
    d = synthetic(n, k, 32)
    index = PlanIndex.build(d["clusters"], d["dist"], d["centroids"], d["in_pool"], d["dup"], d["clip"])
    del d
    gc.collect()
    t0 = time.perf_counter()
    index._row_columns()
    columns_s = time.perf_counter() - t0
    cols_bytes = sum(int(a.nbytes) for name, a in index._by_row.items() if name != "dl_h")
    out = {"n": n, "k": k, "row_columns_s": columns_s, "row_columns_bytes_per_row": cols_bytes / n, "cases": {}}
    for label, p in CASES:
        level = index.summary_level(p)

        def new():
            r = index.compute(p, mask=False)
            return index._fill_at_level(p, r.quota, level)

        def old():
            r = index.compute(p, mask=False)
            return index._fill(p, r.quota, None)

        if p.method == "random":  # the seed's frame and its frame-order columns: built once per seed
            t0 = time.perf_counter()
            fc = index._random_frame_columns(p.seed, level[1] > 0)
            out["frame_columns_s"] = time.perf_counter() - t0
            out["frame_columns_bytes_per_row"] = sum(int(a.nbytes) for a in fc.values()) / n
        a, b = new(), old()  # the random frame's caches fill here, outside the timing
        np.testing.assert_array_equal(a, b, err_msg=label)
        np.testing.assert_array_equal(a, index.compute(p).keep, err_msg=label)
        del a, b
        times = interleaved_times({"compiled": new, "numpy": old}, runs)
        med = {name: statistics.median(ts) for name, ts in times.items()}
        out["cases"][label] = {"compiled_ms": 1e3 * med["compiled"], "numpy_ms": 1e3 * med["numpy"],
                               "compiled_gb_per_s": n / 1e9 / med["compiled"], "numpy_gb_per_s": n / 1e9 / med["numpy"]}
        logger.info("N=%d K=%d %s: %.1f ms (%.2f GB/s) vs numpy %.1f ms", n, k, label, 1e3 * med["compiled"],
                    n / 1e9 / med["compiled"], 1e3 * med["numpy"])
    return out


def report(results: list[dict], runs: int) -> str:
    lines = [f"median of {runs} alternating runs; wall ms, and GB of (N,) bool mask written per second; the "
             "quotas from the summary are inside both sides' time", "",
             "| N | K | plan | compiled kernels, ms (GB/s) | numpy fill, ms (GB/s) | speed-up |",
             "|---|---|---|---|---|---|"]
    for r in results:
        for label, c in r["cases"].items():
            lines.append(f"| {r['n']:,} | {r['k']:,} | {label} | **{c['compiled_ms']:,.1f}** "
                         f"({c['compiled_gb_per_s']:.2f}) | {c['numpy_ms']:,.1f} ({c['numpy_gb_per_s']:.2f}) | "
                         f"{c['numpy_ms'] / c['compiled_ms']:.1f}x |")
    lines += ["", "| N | K | row-order columns, built once per index (first mask), s | their size, bytes per row "
              "| a seed's random frame and its frame-order columns, built once per seed, s "
              "| the columns (positions, dedup levels), bytes per row |",
              "|---|---|---|---|---|---|"]
    nan = float("nan")
    lines += [f"| {r['n']:,} | {r['k']:,} | {r['row_columns_s']:.2f} | {r['row_columns_bytes_per_row']:.0f} | "
              f"{r.get('frame_columns_s', nan):.2f} | {r.get('frame_columns_bytes_per_row', nan):.0f} |"
              for r in results]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    ap.add_argument("--clusters", type=int, nargs="+", default=[500, 5000])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--out", type=Path, default=None, help="default benchmarks/results/mask.md (+ .json)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    results = []
    for n in args.sizes:
        for k in args.clusters:
            results.append(run(n, k, args.runs))
            gc.collect()
    path = publish(report(results, args.runs), args.out, "mask.md")
    path.with_suffix(".json").write_text(json.dumps({"command": command_line(), "machine": machine(),
                                                     "results": results}, indent=1))


if __name__ == "__main__":
    main()
