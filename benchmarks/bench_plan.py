"""Benchmark: interactive plan latency of densprune.prune.selection.PlanIndex.compute.

Builds a synthetic index (lognormal cluster sizes, d=32 centroids), times the one-off build, then
the median of ``--repeat`` runs (after one warm-up) of several plans, and compares DBP against a
naive implementation written the obvious way: per plan, group rows by cluster, measure d_intra on
the eligible rows, and argsort inside each cluster in a Python loop. Both sides get the same cached
statistics: d_inter is computed once (the index caches it per ``neighbors``; the naive side is handed
the same array), and both measure d_intra of the remaining pool on every plan. Each naive plan is
checked to select the rows densprune selects (exactly, except where d_intra summed in another
order tips the rounding of a quota by one unit: see check_same_plan). Every time is reported twice: wall clock and
the process's CPU time. The code is single-threaded numpy, so on an idle machine the two agree; on
a shared machine (the load average is recorded in the result file) the CPU time is what the plan
costs and the wall time what it took while others ran; the speed-up is the ratio of CPU times.
Prints a markdown table and writes it, headed by the command, to benchmarks/results/plan.md (``--out``).
With ``--workspace DIR`` the same plans run on an existing workspace instead of synthetic arrays: the
one-off costs are then ``plan_index.build_index`` (reading the columns from DuckDB and building the index:
what precompute does once per build) and ``plan_index.load_index`` (mapping the index stored in the
workspace: what each new app process does), and the naive side gets the same columns.

    python benchmarks/bench_plan.py                      # N = 1M, K = 1000
    python benchmarks/bench_plan.py --sizes 1000000 10000000
    python benchmarks/bench_plan.py --workspace workspaces/ws-10000000 --out benchmarks/results/plan_10m.md
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

sys.path[:0] = [str(Path(__file__).resolve().parent.parent), str(Path(__file__).resolve().parent)]  # this checkout
from _util import command_line, machine, publish  # noqa: E402

from densprune import db  # noqa: E402
from densprune.cluster.concepts import inter_distance  # noqa: E402
from densprune.prune import plan_index  # noqa: E402
from densprune.prune.quotas import dbp_quotas  # noqa: E402
from densprune.prune.selection import PlanIndex, PlanParams  # noqa: E402
from densprune.prune.semdedup import is_duplicate  # noqa: E402

logger = logging.getLogger("bench_plan")


def synthetic(n: int, k: int, d: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Clustered rows with skewed cluster sizes, distances, dedup similarities and CLIP scores."""
    rng = np.random.default_rng(seed)
    w = rng.lognormal(0.0, 1.0, size=k)
    clusters = rng.choice(k, size=n, p=w / w.sum()).astype(np.int64)
    return dict(
        clusters=clusters,
        dist=rng.beta(2.0, 5.0, size=n).astype(np.float32),
        centroids=rng.normal(size=(k, d)).astype(np.float32),
        in_pool=rng.random(n) > 0.01,  # 1% eval rows
        dup=np.clip(rng.normal(0.8, 0.1, size=n), -1, 1).astype(np.float32),
        clip=rng.normal(0.3, 0.05, size=n).astype(np.float32),
    )


def workspace_data(ws: Path) -> dict[str, np.ndarray]:
    """The arrays :func:`synthetic` makes, read from a workspace (what ``plan_index.load_index`` reads)."""
    cols = db.load_sample_arrays(ws, ("cluster", "dist_to_centroid", "split", "dup_max_sim", "clip_score"))
    clip = cols["clip_score"]
    return dict(clusters=cols["cluster"].astype(np.int64), dist=cols["dist_to_centroid"],
                centroids=np.load(ws / "centroids.npy"), in_pool=cols["split"] == "pool",
                dup=cols["dup_max_sim"], clip=None if np.all(np.isnan(clip)) else clip)


def naive_dbp(data: dict[str, np.ndarray], p: PlanParams, d_inter: np.ndarray) -> np.ndarray:
    """The same DBP plan without an index: a Python loop over clusters. ``d_inter`` (K,) is the cached
    statistic both sides share; d_intra is measured on the eligible rows per plan, as densprune does."""
    clusters, dist = data["clusters"], data["dist"].astype(np.float64)
    k = data["centroids"].shape[0]
    eligible = data["in_pool"].copy()
    if p.dedup_eps is not None:
        eligible &= ~is_duplicate(np.maximum(data["dup"], 0), p.dedup_eps)
    order = np.argsort(clusters, kind="stable")
    bounds = np.searchsorted(clusters[order], np.arange(k + 1))
    members = [order[bounds[j]:bounds[j + 1]] for j in range(k)]
    members = [m[eligible[m]] for m in members]
    counts = np.array([m.size for m in members])
    d_intra = np.array([dist[m].mean() if m.size else np.nan for m in members])
    n_remaining = int(counts.sum())  # the budget counts what remains after dedup (the paper's convention)
    budget = int(np.floor(p.keep * n_remaining + 0.5)) if isinstance(p.keep, float) else p.keep
    quota = dbp_quotas(d_inter * d_intra, counts, budget, p.temperature, p.balance)
    keep = np.zeros(len(clusters), dtype=bool)
    for j in range(k):
        m = members[j][np.lexsort((members[j], -dist[members[j]]))]  # farthest first, ties by row
        keep[m[:quota[j]]] = True
    return keep


def check_same_plan(naive: np.ndarray, result, clusters: np.ndarray) -> int:
    """Assert that the naive plan is densprune's: the same kept count per cluster, up to one unit of
    quota moved between a few clusters (d_intra summed in another order differs in its last bits,
    which can tip a largest-remainder rounding), and exactly the same rows in every other cluster.
    Returns how many clusters differ by that unit."""
    k = result.kept.size
    diff = np.bincount(clusters[naive], minlength=k) - result.kept
    assert diff.sum() == 0 and np.abs(diff).max(initial=0) <= 1 and (diff != 0).sum() <= 4, diff[diff != 0]
    same = (diff == 0)[clusters]
    np.testing.assert_array_equal(naive[same], result.keep[same])
    return int((diff != 0).sum())


def median_ms(fn: Callable[[], object], repeat: int) -> tuple[float, float]:
    """Median wall and CPU milliseconds of ``fn`` over ``repeat`` runs after one warm-up."""
    fn()  # warm-up: fills caches (random orders, d_inter) as the first click would
    wall, cpu = [], []
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return 1e3 * float(np.median(wall)), 1e3 * float(np.median(cpu))


CASES: list[tuple[str, PlanParams, bool]] = [  # (label, params, also time the naive baseline)
    ("dbp keep=0.1 tau=0.1", PlanParams(keep=0.1, temperature=0.1), True),
    ("dbp keep=0.3 tau=0.1", PlanParams(keep=0.3, temperature=0.1), True),
    ("dbp keep=0.5 tau=0.5", PlanParams(keep=0.5, temperature=0.5), True),
    ("dbp keep=0.3 tau=0.1 eps=0.07", PlanParams(keep=0.3, dedup_eps=0.07), True),
    ("dbp keep=0.3 easy", PlanParams(keep=0.3, within="easy"), False),
    ("dbp keep=0.3 within=random", PlanParams(keep=0.3, within="random"), False),
    ("dbp keep=0.3 eps=0.07 clip_keep=0.5", PlanParams(keep=0.3, dedup_eps=0.07, clip_keep=0.5), False),
    ("ssp keep=0.3", PlanParams(method="ssp", keep=0.3), False),
    ("random keep=0.3", PlanParams(method="random", keep=0.3), False),
    ("clip-score keep=0.3", PlanParams(method="clip-score", keep=0.3), False),
    ("dedup keep=0.3", PlanParams(method="dedup", keep=0.3), False),
]


Timing = tuple[float, float]  # (wall ms, CPU ms)


def run(n: int, k: int, d: int, repeat: int, naive: bool) -> tuple[Timing, dict[str, tuple[Timing, Timing | None]]]:
    data = synthetic(n, k, d)
    t0, c0 = time.perf_counter(), time.process_time()
    index = PlanIndex.build(data["clusters"], data["dist"], data["centroids"], data["in_pool"],
                            data["dup"], data["clip"])
    build = (1e3 * (time.perf_counter() - t0), 1e3 * (time.process_time() - c0))
    return build, time_plans(index, data, repeat, naive)


def run_workspace(ws: Path, repeat: int, naive: bool) -> tuple[Timing, dict[str, tuple[Timing, Timing | None]]]:
    """The plans on a workspace's index; the one-off times are ``plan_index.build_index`` (read the columns
    from DuckDB, build) and ``plan_index.load_index`` (map the index stored in the workspace), the second
    returned under the key ONCE_MAPPED of the plans."""
    t0, c0 = time.perf_counter(), time.process_time()
    plan_index.build_index(ws.resolve())
    build = (1e3 * (time.perf_counter() - t0), 1e3 * (time.process_time() - c0))
    t0, c0 = time.perf_counter(), time.process_time()
    index = plan_index.load_index(ws)
    mapped = (1e3 * (time.perf_counter() - t0), 1e3 * (time.process_time() - c0))
    data = workspace_data(ws) if naive else {}
    return build, {ONCE_MAPPED: (mapped, None), **time_plans(index, data, repeat, naive)}


ONCE_MAPPED = "plan_index.load_index: the index stored in the workspace, mapped (once per process)"


def time_plans(index: PlanIndex, data: dict[str, np.ndarray], repeat: int,
               naive: bool) -> dict[str, tuple[Timing, Timing | None]]:
    """Median times of every case of CASES on ``index`` (and of the naive baseline on ``data``)."""
    n = index.n_rows
    if naive:
        d_inter = inter_distance(data["centroids"], 20)  # the cached statistic, handed to the naive side
        np.testing.assert_array_equal(d_inter, index.d_inter(20))
    out: dict[str, tuple[Timing, Timing | None]] = {}
    for label, p, with_naive in CASES:
        if (p.method == "clip-score" or p.clip_keep is not None) and not index.has_clip_scores:
            continue
        fast = median_ms(lambda: index.compute(p), repeat)
        slow = None
        if naive and with_naive:
            moved = check_same_plan(naive_dbp(data, p, d_inter), index.compute(p), data["clusters"])
            if moved:
                logger.info("N=%d %s: one unit of quota rounded differently in %d clusters", n, label, moved)
            slow = median_ms(lambda: naive_dbp(data, p, d_inter), max(3, repeat // 2))
        out[label] = (fast, slow)
        logger.info("N=%d %s: %.1f ms wall, %.1f ms CPU (naive %s)", n, label, *fast,
                    "-" if slow is None else f"{slow[0]:.0f} ms wall, {slow[1]:.0f} ms CPU")
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1_000_000], help="N values to benchmark")
    ap.add_argument("--clusters", type=int, default=1000, help="K")
    ap.add_argument("--dim", type=int, default=32, help="centroid dimension")
    ap.add_argument("--workspace", type=Path, default=None,
                    help="time the plans on this workspace instead of synthetic arrays "
                         "(--sizes, --clusters, --dim unused)")
    ap.add_argument("--repeat", type=int, default=7, help="timed runs per case (median)")
    ap.add_argument("--no-naive", action="store_true", help="skip the naive per-cluster baseline")
    ap.add_argument("--out", type=Path, default=None, help="result file (default: benchmarks/results/plan.md; "
                                                          "with --workspace also a .json beside it)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.workspace is not None:
        meta = db.load_meta(args.workspace)
        columns = {f"workspace N={meta['n_samples']:,}": run_workspace(args.workspace, args.repeat, not args.no_naive)}
        k, once = meta["k"], "plan_index.build_index: read the columns from DuckDB + build (once per build)"
    else:
        columns = {f"N={n:,}": run(n, args.clusters, args.dim, args.repeat, not args.no_naive) for n in args.sizes}
        k, once = args.clusters, "index build (once)"
    head = " | ".join(f"{c}: wall ms | CPU ms | naive CPU ms | speed-up" for c in columns)
    lines = [f"| plan (K={k}) | {head} |", "|---" * (1 + 4 * len(columns)) + "|"]
    lines.append(f"| {once} | " + " | ".join(f"{b[0]:,.0f} | {b[1]:,.0f} | | " for b, _ in columns.values()) + "|")
    if args.workspace is not None:
        lines.append(f"| {ONCE_MAPPED} | "
                     + " | ".join(f"{out[ONCE_MAPPED][0][0]:,.0f} | {out[ONCE_MAPPED][0][1]:,.0f} | | "
                                  for _, out in columns.values()) + "|")
    for label, _, _ in CASES:
        if not all(label in out for _, out in columns.values()):
            continue
        cells = []
        for _, out in columns.values():
            fast, slow = out[label]
            cells.append(f"{fast[0]:.1f} | {fast[1]:.1f} | {'' if slow is None else f'{slow[1]:,.0f}'} | "
                         f"{'' if slow is None else f'{slow[1] / fast[1]:.0f}x'}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    text = f"median of {args.repeat} runs (naive: of {max(3, args.repeat // 2)})\n\n" + "\n".join(lines)
    path = publish(text, args.out, "plan.md")
    if args.workspace is not None:
        path.with_suffix(".json").write_text(json.dumps({
            "command": command_line(), "machine": machine(), "workspace": str(args.workspace), "k": k,
            "repeat": args.repeat, "results": {c: {"load_index_ms": {"wall": b[0], "cpu": b[1]}, "plans": {
                label: {"wall_ms": f[0], "cpu_ms": f[1], "naive_wall_ms": None if sl is None else sl[0],
                        "naive_cpu_ms": None if sl is None else sl[1]} for label, (f, sl) in out.items()}}
                for c, (b, out) in columns.items()}}, indent=2))


if __name__ == "__main__":
    main()
