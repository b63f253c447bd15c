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

With ``--baseline DIR`` (another checkout, such as a git worktree of the previous commit) the kernels
of DIR's ``densprune/prune/masks.py`` run as a third side on the same index, the same quotas and this
checkout's row-order columns: a side-by-side of two versions of the kernels in one process. Kernels
that walk a random frame through the frame (``frame_cuts(..., dl_h=...)``, before the frame-order
columns) are called that way.

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


def load_kernels(checkout: Path):
    """The ``densprune/prune/masks.py`` of another checkout, imported as a module of its own."""
    import importlib.util

    path = checkout / "densprune" / "prune" / "masks.py"
    spec = importlib.util.spec_from_file_location("baseline_masks", path)
    if spec is None or not path.is_file():
        raise SystemExit(f"{path} not found: --baseline takes a checkout of densprune (a git worktree)")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def baseline_label(checkout: Path) -> str:
    """The checkout and, where it is a git work tree, its commit."""
    import subprocess

    sha = subprocess.run(["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"], capture_output=True,
                         text=True).stdout.strip()
    return f"{checkout} (commit {sha})" if sha else str(checkout)


def baseline_fill(kernels, index: PlanIndex, p: PlanParams, quota: np.ndarray, level: tuple[int, int]) -> np.ndarray:
    """``PlanIndex._fill_at_level`` (no tagged rows) with another version's kernels, on this index's inputs."""
    import inspect

    m = index._mask_inputs(p, level)
    if "dl_h" in inspect.signature(kernels.frame_cuts).parameters:  # the walk reads through the frame, hard order
        cuts = kernels.frame_cuts(m.lo, m.hi, quota, from_end=m.from_end, frame=m.frame,
                                  dl_h=index._row_columns()["dl_h"], level=m.level,
                                  clip_h=None if m.clip_f is None else index._clip_rank, clip_cut=m.clip_cut)
    else:
        cuts = kernels.frame_cuts(m.lo, m.hi, quota, from_end=m.from_end, frame=m.frame, dl_f=m.dl_f, level=m.level,
                                  clip_f=m.clip_f, clip_cut=m.clip_cut)
    return kernels.write_mask(m.pos, m.cl, cuts, from_end=m.from_end, dl=m.dl, level=m.level, clip=m.clip,
                              clip_cut=m.clip_cut)


def run(n: int, k: int, runs: int, baseline=None) -> dict:
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
        sides = {"compiled": new, "numpy": old}
        if baseline is not None:
            def base():
                r = index.compute(p, mask=False)
                return baseline_fill(baseline, index, p, r.quota, level)

            sides["baseline"] = base
        a, b = new(), old()  # the random frame's caches fill here, outside the timing
        np.testing.assert_array_equal(a, b, err_msg=label)
        np.testing.assert_array_equal(a, index.compute(p).keep, err_msg=label)
        if baseline is not None:
            np.testing.assert_array_equal(a, base(), err_msg=label)
        del a, b
        times = interleaved_times(sides, runs)
        med = {name: statistics.median(ts) for name, ts in times.items()}
        out["cases"][label] = {f"{name}_{unit}": v for name, t in med.items()
                               for unit, v in (("ms", 1e3 * t), ("gb_per_s", n / 1e9 / t))}
        logger.info("N=%d K=%d %s: %.1f ms (%.2f GB/s) vs numpy %.1f ms", n, k, label, 1e3 * med["compiled"],
                    n / 1e9 / med["compiled"], 1e3 * med["numpy"])
    return out


def report(results: list[dict], runs: int, baseline: str | None = None) -> str:
    with_base = baseline is not None
    lines = [f"median of {runs} alternating runs; wall ms, and GB of (N,) bool mask written per second; the "
             "quotas from the summary are inside every side's time"
             + (f"; baseline: the kernels of {baseline}" if with_base else ""), "",
             "| N | K | plan | compiled kernels, ms (GB/s) | numpy fill, ms (GB/s) | speed-up |"
             + (" baseline kernels, ms (GB/s) | speed-up over them |" if with_base else ""),
             "|---|---|---|---|---|---|" + ("---|---|" if with_base else "")]
    for r in results:
        for label, c in r["cases"].items():
            line = (f"| {r['n']:,} | {r['k']:,} | {label} | **{c['compiled_ms']:,.1f}** "
                    f"({c['compiled_gb_per_s']:.2f}) | {c['numpy_ms']:,.1f} ({c['numpy_gb_per_s']:.2f}) | "
                    f"{c['numpy_ms'] / c['compiled_ms']:.1f}x |")
            if with_base:
                line += (f" {c['baseline_ms']:,.1f} ({c['baseline_gb_per_s']:.2f}) | "
                         f"{c['baseline_ms'] / c['compiled_ms']:.2f}x |")
            lines.append(line)
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
    ap.add_argument("--baseline", type=Path, default=None,
                    help="another checkout whose mask kernels run as a third side (a git worktree)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    baseline = load_kernels(args.baseline) if args.baseline else None
    results = []
    for n in args.sizes:
        for k in args.clusters:
            results.append(run(n, k, args.runs, baseline))
            gc.collect()
    path = publish(report(results, args.runs, baseline_label(args.baseline) if args.baseline else None), args.out,
                   "mask.md")
    path.with_suffix(".json").write_text(json.dumps({"command": command_line(), "machine": machine(),
                                                     "results": results}, indent=1))


if __name__ == "__main__":
    main()
