"""Benchmark: the cost of one plan move (a knob changed) from the per-concept summary, beside the full
pass over the rows (the engine before the summary), on synthetic indexes of growing N.

Both sides do the same work: every number a plan shows (per concept eligible, d_intra, complexity,
quota, kept; the totals) without the (N,) mask: ``PlanIndex.compute(p, mask=False)`` (the summary,
where it holds the plan's filters) against ``compute(p, mask=False, summary=False)`` (the full pass).
Each case is checked to give the same numbers on both sides before it is timed; runs alternate
between the two sides (``--back-to-back``: a case's moves in a row, then its full passes, since a
full pass over 100M rows between two moves evicts the caches a run of slider moves keeps warm) and
the table gives medians, wall and process CPU. Also reported per size:
the index build, the summary's build and size (bytes per row), and materialising the keep mask of a
DBP plan (``compute(p)``: counts from the summary, then one pass over the rows) as MB of mask per s.

    python benchmarks/bench_plan_moves.py --sizes 1000000 10000000 --clusters 500 5000
    python benchmarks/bench_plan_moves.py --sizes 100000000 --clusters 500 --out benchmarks/results/plan_moves_100m.md

``--extrapolate N`` adds arithmetic (not a measurement) for N rows from the largest size measured:
the summary's size and the move time per K (both independent of N), the builds, the mask and the
full pass per row.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

sys.path[:0] = [str(Path(__file__).resolve().parent.parent), str(Path(__file__).resolve().parent)]  # this checkout
from _util import command_line, machine, publish  # noqa: E402
from bench_plan import CASES, synthetic  # noqa: E402

from densprune.prune.plan_summary import PlanSummary  # noqa: E402
from densprune.prune.selection import PlanIndex, PlanParams  # noqa: E402

logger = logging.getLogger("bench_plan_moves")


def timed(fn) -> tuple[float, float]:
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    return 1e3 * (time.perf_counter() - t0), 1e3 * (time.process_time() - c0)


def median(pairs: list[tuple[float, float]]) -> tuple[float, float]:
    return float(np.median([p[0] for p in pairs])), float(np.median([p[1] for p in pairs]))


def same_numbers(a, b) -> None:
    for name in ("eligible", "quota", "kept", "d_intra"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert (a.budget, a.n_kept, a.n_eligible, a.notes) == (b.budget, b.n_kept, b.n_eligible, b.notes)


def build_index(n: int, k: int) -> tuple[PlanIndex, tuple[float, float]]:
    """A synthetic index (bench_plan.synthetic: lognormal sizes, dedup and CLIP columns) and its build time;
    the input arrays are freed before the plans run."""
    d = synthetic(n, k, 32)
    t0, c0 = time.perf_counter(), time.process_time()
    index = PlanIndex.build(d["clusters"], d["dist"], d["centroids"], d["in_pool"], d["dup"], d["clip"])
    build = 1e3 * (time.perf_counter() - t0), 1e3 * (time.process_time() - c0)
    del d
    gc.collect()
    return index, build


def run(n: int, k: int, repeat: int, full_repeat: int, back_to_back: bool = False) -> dict:
    index, build = build_index(n, k)
    summary_build = timed(lambda: PlanSummary.build(pool_h=index._pool_h, dist_h=index._dist_h, sizes=index.sizes,
                                                    dup_h=index._dup_h, clip_rank=index._clip_rank))
    out = {"n": n, "k": k, "index_build_ms": build, "summary_build_ms": summary_build,
           "summary_bytes": index.summary.n_bytes, "cases": {}}
    for label, p, _ in CASES:
        fast_on = index.summary_level(p) is not None
        fast_r, full_r = index.compute(p, mask=False), index.compute(p, mask=False, summary=False)  # warm-up
        same_numbers(fast_r, full_r)
        fast, full = [], []
        if back_to_back:  # moves in a row, as slider moves come, then the full passes
            fast = [timed(lambda: index.compute(p, mask=False)) for _ in range(repeat)]
            full = [timed(lambda: index.compute(p, mask=False, summary=False)) for _ in range(full_repeat)]
        for i in range(0 if back_to_back else max(repeat, full_repeat)):
            if i < repeat:
                fast.append(timed(lambda: index.compute(p, mask=False)))
            if i < full_repeat:
                full.append(timed(lambda: index.compute(p, mask=False, summary=False)))
        out["cases"][label] = {"summary": fast_on, "move_ms": median(fast), "full_pass_ms": median(full)}
        logger.info("N=%d K=%d %s: %.2f ms (%s) vs full pass %.0f ms", n, k, label, median(fast)[0],
                    "summary" if fast_on else "full pass", median(full)[0])
    p = PlanParams(keep=0.3)
    index.compute(p)
    mask = median([timed(lambda: index.compute(p)) for _ in range(max(3, full_repeat))])
    out["mask_ms"] = mask
    out["mask_mb_per_s"] = n / 1e6 / (mask[0] / 1e3)
    return out


def report(results: list[dict], repeat: int, full_repeat: int, order: str = "alternating") -> str:
    cols = [f"N={r['n']:,} K={r['k']:,}" for r in results]
    lines = [f"median of {repeat} summary runs and {full_repeat} full passes, {order}; wall ms (CPU ms)", "",
             "| plan move | " + " | ".join(f"{c}: summary | full pass | ratio" for c in cols) + " |",
             "|---" * (1 + 3 * len(cols)) + "|"]
    for label, _, _ in CASES:
        cells = []
        for r in results:
            c = r["cases"][label]
            how = "" if c["summary"] else " (full pass: not in the summary)"
            cells.append(f"{c['move_ms'][0]:.2f} ({c['move_ms'][1]:.2f}){how} | {c['full_pass_ms'][0]:,.1f} "
                         f"({c['full_pass_ms'][1]:,.1f}) | {c['full_pass_ms'][0] / c['move_ms'][0]:,.0f}x")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", "| once per build | " + " | ".join(cols) + " |", "|---" * (1 + len(cols)) + "|",
              "| index build (with the summary), s | " + " | ".join(f"{r['index_build_ms'][0] / 1e3:,.1f}"
                                                             for r in results) + " |",
              "| summary build alone, s | " + " | ".join(f"{r['summary_build_ms'][0] / 1e3:,.1f}"
                                                        for r in results) + " |",
              "| summary size, MB (bytes per row) | " + " | ".join(
                  f"{r['summary_bytes'] / 1e6:,.1f} ({r['summary_bytes'] / r['n']:.2f})" for r in results) + " |",
              "| keep mask of dbp keep=0.3 materialised, ms (MB of mask per s) | " + " | ".join(
                  f"{r['mask_ms'][0]:,.0f} ({r['mask_mb_per_s']:,.0f})" for r in results) + " |"]
    return "\n".join(lines)


def extrapolate(results: list[dict], n: int) -> str:
    """Arithmetic for ``n`` rows from the largest measured size, per K (see the module docstring)."""
    largest = max(r["n"] for r in results)
    label = "dbp keep=0.3 eps=0.07 clip_keep=0.5"
    lines = [f"On paper, {n:,} rows (from the N={largest:,} runs; arithmetic on measured rates, "
             "not a measurement):", "",
             "| K | summary size, MB | a move from the summary, ms | index build, min | summary build, min | "
             f"keep mask, s | a full-pass move ({label}), s |", "|---" * 7 + "|"]
    for r in (r for r in results if r["n"] == largest):
        scale = n / r["n"]
        move = max(c["move_ms"][0] for c in r["cases"].values() if c["summary"])
        cells = [f"{r['k']:,}", f"{r['summary_bytes'] / 1e6:,.1f}", f"{move:.2f} (the slowest case at this K)",
                 f"{r['index_build_ms'][0] * scale / 6e4:,.0f}", f"{r['summary_build_ms'][0] * scale / 6e4:,.0f}",
                 f"{r['mask_ms'][0] * scale / 1e3:,.1f}", f"{r['cases'][label]['full_pass_ms'][0] * scale / 1e3:,.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    ap.add_argument("--clusters", type=int, nargs="+", default=[500, 5000])
    ap.add_argument("--repeat", type=int, default=15, help="timed summary moves per case (median)")
    ap.add_argument("--full-repeat", type=int, default=5, help="timed full passes per case (median)")
    ap.add_argument("--extrapolate", type=int, default=None, help="add arithmetic for this many rows")
    ap.add_argument("--back-to-back", action="store_true",
                    help="time each case's summary moves in a row, then its full passes (a full pass between "
                         "two moves evicts the caches a move would find warm)")
    ap.add_argument("--out", type=Path, default=None, help="default benchmarks/results/plan_moves.md (+ .json)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    results = []
    for n in args.sizes:
        for k in args.clusters:
            results.append(run(n, k, args.repeat, args.full_repeat, args.back_to_back))
            gc.collect()
    text = report(results, args.repeat, args.full_repeat,
                  "the moves back to back, then the full passes" if args.back_to_back else "alternating")
    if args.extrapolate:
        text += "\n\n" + extrapolate(results, args.extrapolate)
    path = publish(text, args.out, "plan_moves.md")
    path.with_suffix(".json").write_text(json.dumps({"command": command_line(), "machine": machine(),
                                                     "results": results}, indent=1))


if __name__ == "__main__":
    main()
