"""On paper: LAION-400M and DataComp-large from the per-stage throughputs measured by scale.py.

Reads ``benchmarks/results/scale.json`` (two or more pool sizes) and fits, per stage, CPU seconds
= a + b * N through the smallest and largest measured N (a: what does not grow with N, such as
k-means training on its fixed sample and the 20k-row map; b: the per-row cost). SemDeDup is
priced per pair compared, at the largest run's pairs per row: under the ``--dedup-clusters auto``
rule the groups stay at about 2,000 rows, so the pairs grow like N once concepts outgrow that.
Memory: peak RssAnon = c + m * N the same way.
Then it writes a table of hours and memory for

- one machine of C cores, assuming the BLAS-bound stages (cluster, dedup, layout) use all C cores
  and the rest (scan, copy, concepts, write) one core;
- a Ray cluster of M such machines, where assignment and SemDeDup (``--engine ray``) split over all
  M x C cores, and everything else stays on the driver.

Nothing here is measured at those sizes: it is arithmetic on the measured rates, and it ignores
I/O limits (the vectors alone are N x d x 2 bytes per file) and load from other jobs.

    python benchmarks/extrapolate.py [--cores 64] [--nodes 16]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
PARALLEL = ("cluster", "dedup", "layout")  # BLAS-bound: all cores of a machine
ON_RAY = ("cluster", "dedup")  # split over the Ray cluster (assignment dominates 'cluster' at scale)
SERIAL = ("scan", "copy", "concepts", "write", "index")  # index: the plan index, built and stored after the write
TARGETS = {"LAION-400M (clip-retrieval, 512-d)": 400e6, "DataComp-large (1.28B, B/32 512-d)": 1.28e9}


def fit(x0: float, y0: float, x1: float, y1: float) -> tuple[float, float]:
    """(a, b) of y = a + b x through two points (a clipped at 0)."""
    b = (y1 - y0) / (x1 - x0)
    return max(y0 - b * x0, 0.0), b


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cores", type=int, default=64, help="cores per machine")
    ap.add_argument("--nodes", type=int, default=16, help="machines in the Ray cluster")
    ap.add_argument("--measured-cores", type=int, default=2, help="cores of the machine scale.py ran on")
    args = ap.parse_args()
    runs = sorted(json.loads((RESULTS / "scale.json").read_text())["results"], key=lambda r: r["rows"])
    lo, hi = runs[0], runs[-1]
    big_path = RESULTS / "scale_10m.json"
    big = json.loads(big_path.read_text())["results"][-1] if big_path.exists() else None
    rates = {s: fit(lo["rows"], lo["stage_cpu_s"][s], hi["rows"], hi["stage_cpu_s"][s])
             for s in PARALLEL + SERIAL}
    # SemDeDup: under the auto rule the groups stay at ~2,000 rows once concepts outgrow that, so its
    # cost per row stops growing; take it at the largest run
    last = big or hi
    rates["dedup"] = (0.0, last["stage_cpu_s"]["dedup"] / last["rows"])
    mem = fit(lo["rows"], lo["peak_anon_mib"] * 2**20, last["rows"], last["peak_anon_mib"] * 2**20)
    lines = ["# On paper: LAION-400M and DataComp-large from the measured rates", "",
             (f"`python benchmarks/extrapolate.py --cores {args.cores} --nodes {args.nodes}`, from "
              f"benchmarks/results/scale.json ({lo['rows']:,} and {hi['rows']:,} rows) and scale_10m.json "
              "(10M rows), K=500, 512-d float16, SemDeDup groups by the auto rule. Not measured at these "
              "sizes: arithmetic on measured rates."), "",
             (f"CPU seconds per stage, fitted as a + b x N through {lo['rows']:,} and {hi['rows']:,} rows "
             "(SemDeDup: its CPU per row at the largest run):"), "",
             "| stage | a (s) | b (us per row) |", "|---|---|---|"]
    lines += [f"| {s} | {a:.1f} | {b * 1e6:.2f} |" for s, (a, b) in rates.items()]
    lines += ["", (f"SemDeDup at {last['rows']:,} rows: {last['dedup_pairs'] / last['rows']:,.0f} pairs per row, "
                   f"{last['stage_cpu_s']['dedup'] / last['dedup_pairs'] * 1e9:.0f} CPU ns per pair."), "",
              (f"Peak RssAnon: {mem[0] / 2**20:,.0f} MiB + {mem[1]:.0f} bytes per row (fitted through "
               f"{lo['rows']:,} and {last['rows']:,} rows)."), ""]
    if big is not None:
        lines += [(f"Check: this fit against the measured {big['rows']:,}-row run (which has no caption vectors, "
                   "so its scan and copy read half the bytes):"), "",
                  "| stage | predicted CPU s | measured CPU s |", "|---|---|---|"]
        lines += [f"| {st} | {a + b * big['rows']:,.0f} | {big['stage_cpu_s'][st]:,.0f} |"
                  for st, (a, b) in rates.items() if st != "dedup"]
        lines += [(f"| dedup (its CPU per row at {hi['rows']:,}) | "
                   f"{hi['stage_cpu_s']['dedup'] / hi['rows'] * big['rows']:,.0f}"
                   f" | {big['stage_cpu_s']['dedup']:,.0f} |"), ""]
    lines += [(f"| pool | rows | CPU hours in all | one {args.cores}-core machine: hours | "
               f"{args.nodes} x {args.cores}-core Ray cluster: hours | driver RAM (RssAnon) | "
               "vectors on disk (image + text, fp16) |"),
              "|---|---|---|---|---|---|---|"]
    for name, n in TARGETS.items():
        cpu = {s: a + b * n for s, (a, b) in rates.items()}
        total = sum(cpu.values())
        serial = sum(cpu[s] for s in SERIAL)
        one = serial + sum(cpu[s] for s in PARALLEL) / args.cores
        ray = serial + cpu["layout"] / args.cores + sum(cpu[s] for s in ON_RAY) / (args.cores * args.nodes)
        ram = (mem[0] + mem[1] * n) / 2**30
        disk = n * 512 * 2 * 2 / 1e12
        lines.append(f"| {name} | {n:,.0f} | {total / 3600:,.0f} | {one / 3600:,.1f} | {ray / 3600:,.1f} | "
                     f"{ram:,.0f} GiB | {disk:,.2f} TB |")
    lines += ["", ("The serial stages (scan, copy, write: reading and writing the vectors and the table once) "
              "set the floor on a cluster; they are I/O: at 1 GB/s the 0.8 TB of LAION-400M vectors take "
              "about 15 minutes to read once. GPU figures are not measured (no GPU was lent to this work).")]
    out = RESULTS / "extrapolation.md"
    out.write_text("\n".join(lines) + "\n")
    print(out.read_text())


if __name__ == "__main__":
    main()
