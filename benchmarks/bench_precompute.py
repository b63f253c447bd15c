"""Demo precompute wall time with the offline embedder (goal: under 60 s on a 2-core machine).

    python benchmarks/bench_precompute.py [--runs 3]

Each run builds the demo workspace from scratch in a fresh folder (UMAP included) in a new
process, as `densprune demo --no-app --force` would; per-stage times come from the workspace meta.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import densprune_command, publish, table  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None, help="default: benchmarks/results/precompute.md")
    args = ap.parse_args()
    walls, stages = [], []
    for _ in range(args.runs):
        ws = Path(tempfile.mkdtemp()) / "ws"
        t = time.perf_counter()
        subprocess.run([densprune_command(), "demo", "--no-app", "--workspace", str(ws)],
                       check=True, capture_output=True)
        walls.append(time.perf_counter() - t)
        info = subprocess.run([densprune_command(), "info", str(ws), "--json"],
                              check=True, capture_output=True, text=True).stdout
        stages.append(json.loads(info)["timings_s"])
    med = {k: statistics.median(s[k] for s in stages) for k in stages[0]}
    rows = [[k, f"{v:.1f}"] for k, v in med.items()]
    rows.append(["wall (process)", f"{statistics.median(walls):.1f}"])
    text = (table(["stage", "median seconds"], rows)
            + f"\n\nruns: {', '.join(f'{w:.1f}' for w in walls)} s; goal < 60 s")
    publish(text, args.out, "precompute.md")


if __name__ == "__main__":
    main()
