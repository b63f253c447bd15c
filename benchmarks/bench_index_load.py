"""Benchmark: opening a stored plan index, with its row -> position inverse stored (now) and without it
(the format before, where every process computed it from the order).

For each ``--rows`` a synthetic index (benchmarks/bench_plan.py's clustered rows with dedup and CLIP
columns) is stored twice as ``.npy`` files, once with ``inv.npy`` and once without; each side is then
opened ``--repeat`` times as densprune.prune.plan_index.load_stored opens it (every array memory-mapped
read-only, then PlanIndex.from_arrays), the sides taking turns; the files stay in the page cache, as on a
server that opened them before. Medians, and the ratio without / with.

    python benchmarks/bench_index_load.py --rows 1000000 10000000 --repeat 7 --out benchmarks/results/index_load.md
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]  # this checkout

from _util import command_line, machine, publish, table  # noqa: E402
from bench_plan import synthetic  # noqa: E402

from densprune.prune.selection import PlanIndex  # noqa: E402


def store(index: PlanIndex, folder: Path, with_inv: bool) -> Path:
    folder.mkdir(parents=True)
    for name, arr in index.arrays().items():
        if name != "inv" or with_inv:
            np.save(folder / f"{name}.npy", np.ascontiguousarray(arr), allow_pickle=False)
    return folder


def open_stored(folder: Path) -> PlanIndex:
    """What plan_index.load_stored does with a folder of arrays."""
    arrays = {p.stem: np.load(p, mmap_mode="r", allow_pickle=False) for p in folder.glob("*.npy")}
    return PlanIndex.from_arrays(arrays)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    ap.add_argument("--clusters", type=int, default=500)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--out", type=Path, default=None, help="default benchmarks/results/index_load.md (+ .json)")
    args = ap.parse_args(argv)
    rows, raw = [], {}
    for n in args.rows:
        d = synthetic(n, args.clusters, 16)
        index = PlanIndex.build(d["clusters"], d["dist"], d["centroids"], in_pool=d["in_pool"], dup_max_sim=d["dup"],
                                clip_score=d["clip"])
        tmp = Path(tempfile.mkdtemp(prefix="densprune-index-load-"))
        try:
            sides = {"inverse stored": store(index, tmp / "with", True),
                     "computed (before)": store(index, tmp / "without", False)}
            times: dict[str, list[float]] = {s: [] for s in sides}
            for folder in sides.values():  # once each, unmeasured: the files into the page cache
                open_stored(folder)
            for i in range(args.repeat):
                for side in (list(sides) if i % 2 == 0 else list(sides)[::-1]):
                    t = time.perf_counter()
                    opened = open_stored(sides[side])
                    times[side].append(time.perf_counter() - t)
                    assert np.array_equal(opened.inv, index.inv)
            inv_mb = (tmp / "with" / "inv.npy").stat().st_size / 1e6
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        with_s, without_s = statistics.median(times["inverse stored"]), statistics.median(times["computed (before)"])
        rows.append([f"{n:,}", f"{1000 * without_s:.0f}", f"{1000 * with_s:.0f}", f"{without_s / with_s:.1f}x",
                     f"{inv_mb:.0f}"])
        raw[str(n)] = times
    text = (f"PlanIndex opened from stored arrays (memory-mapped, in the page cache), K={args.clusters}, median of "
            f"{args.repeat}, the two sides taking turns\n\n"
            + table(["rows", "inverse computed (before), ms", "inverse stored, ms", "before / now", "inv.npy, MB"],
                    rows))
    path = publish(text, args.out, "index_load.md")
    path.with_suffix(".json").write_text(json.dumps({"command": command_line(), "machine": machine(), "runs": raw},
                                                    indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
