"""Benchmark: what bounds the keep mask's row pass (densprune.prune.masks.write_mask): bare numba loops
over N rows of random synthetic columns, each writing ``keep[r] = pos[r] < cut[concept[r]] and
dl[r] > b`` (and a CLIP test), with the CLIP rank in 4 bytes (what the kernel reads) and two 2-byte
variants that were tried: coarse ranks with the cut's bucket decided by the full rank (a branch),
and the coarse test alone (inexact: the floor of what 2 bytes could give). All loops run on every
core, interleaved, medians.

    python benchmarks/bench_row_pass.py --rows 100000000 --clusters 5000 --runs 7
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent.parent), str(Path(__file__).resolve().parent)]  # this checkout
import numba as nb  # noqa: E402
import numpy as np  # noqa: E402
from _util import interleaved_times, publish, table  # noqa: E402


@nb.njit(parallel=True, nogil=True)
def no_clip(pos, cl, dl, b, cut, out):
    for r in nb.prange(out.size):
        out[r] = (pos[r] < cut[cl[r]]) & (dl[r] > b)


@nb.njit(parallel=True, nogil=True)
def clip4(pos, cl, dl, b, clip, cc, cut, out):
    for r in nb.prange(out.size):
        out[r] = (pos[r] < cut[cl[r]]) & (dl[r] > b) & (clip[r] <= cc)


@nb.njit(parallel=True, nogil=True)
def clip2_exact(pos, cl, dl, b, cq, qc, exact, cc, cut, out):
    for r in nb.prange(out.size):
        q = cq[r]
        ok = q < qc
        if q == qc:
            ok = exact[r] <= cc
        out[r] = (pos[r] < cut[cl[r]]) & (dl[r] > b) & ok


@nb.njit(parallel=True, nogil=True)
def clip2_coarse_only(pos, cl, dl, b, cq, qc, cut, out):
    for r in nb.prange(out.size):
        out[r] = (pos[r] < cut[cl[r]]) & (dl[r] > b) & (cq[r] < qc)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000_000)
    ap.add_argument("--clusters", type=int, default=5000)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--out", type=Path, default=None, help="default benchmarks/results/row_pass.md")
    args = ap.parse_args(argv)
    n, k = args.rows, args.clusters
    rng = np.random.default_rng(0)
    pos = rng.permutation(n).astype(np.int32)
    cl = rng.integers(0, k, n).astype(np.int16)
    dl = rng.integers(0, 60, n).astype(np.uint8)
    clip = rng.permutation(n).astype(np.int32)
    shift = max(0, n.bit_length() - 16)
    cq = (clip >> shift).astype(np.uint16)
    cut = rng.integers(0, n, k).astype(np.int64)
    cc = n // 2
    out = np.empty(n, dtype=bool)
    sides = {
        "no CLIP test (7 bytes read per row)": lambda: no_clip(pos, cl, dl, 3, cut, out),
        "CLIP rank int32, as write_mask (11 bytes)": lambda: clip4(pos, cl, dl, 3, clip, cc, cut, out),
        "CLIP rank uint16 + full rank in the cut's bucket (9 bytes, a branch)":
            lambda: clip2_exact(pos, cl, dl, 3, cq, cc >> shift, clip, cc, cut, out),
        "CLIP rank uint16, coarse test only (9 bytes, inexact)":
            lambda: clip2_coarse_only(pos, cl, dl, 3, cq, cc >> shift, cut, out),
    }
    times = interleaved_times(sides, args.runs)
    rows = [[name, f"{1e3 * statistics.median(ts):.1f}", f"{n / 1e9 / statistics.median(ts):.2f}"]
            for name, ts in times.items()]
    text = "\n".join([f"{n:,} rows, K = {k:,}; median of {args.runs} interleaved runs, both cores", "",
                      table(["row pass", "ms", "G rows / s"], rows)])
    publish(text, args.out, "row_pass.md")


if __name__ == "__main__":
    main()
