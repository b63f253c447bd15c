"""The worked curation example of README and docs/method.md, on a copy of the bundled demo, through the
installed ``densprune`` command: drop the 11 near-identical "shapes, stars, geometry" concepts (one
rule on the label), protect the small "insect, ladybug, animal" concept (keep whole), and compare the
plan with the pure method at the same budget.

    python benchmarks/demo_curation.py [--workspace workspaces/demo]

Writes benchmarks/results/demo_curation.md: every command, its output, and the per-concept effect.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent.parent), str(Path(__file__).resolve().parent)]
from _util import publish  # noqa: E402

from densprune import db  # noqa: E402
from densprune.prune import plans  # noqa: E402

DENSPRUNE = Path(sys.executable).parent / "densprune"


def run(*args: str) -> str:
    r = subprocess.run([str(DENSPRUNE), *args], capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise SystemExit(f"densprune {' '.join(args)} failed:\n{r.stderr}")
    return r.stdout.strip()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workspace", type=Path, default=Path("workspaces/demo"))
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        ws = Path(tmp) / "demo"
        shutil.copytree(args.workspace, ws, ignore=shutil.ignore_patterns("exports", ".work"))
        steps = [("rule", str(ws), "--label", "shapes, stars, geometry", "--drop"),
                 ("rule", str(ws), "--concept", "11", "--keep-whole"),
                 ("plan", str(ws), "--name", "pure", "--keep", "0.3", "--ignore-decisions"),
                 ("plan", str(ws), "--name", "curated", "--keep", "0.3")]
        shown = []
        for step in steps:
            out = run(*step).replace(str(ws), "DEMO")
            shown.append(f"$ densprune {' '.join(step).replace(str(ws), 'DEMO')}\n{out}")
        names = db.load_clusters(ws).set_index("cluster")["label"]
        pure = plans.plan_clusters(ws, "pure").set_index("cluster")["kept"]
        cur = plans.plan_clusters(ws, "curated").set_index("cluster")["kept"]
        diff = (cur - pure).sort_values()
        rows = ["| concept | label | kept, pure DBP | kept, curated | change |", "|---|---|---|---|---|"]
        for j in diff.index[diff != 0]:
            rows.append(f"| {j} | {names[j]} | {pure[j]} | {cur[j]} | {int(diff[j]):+d} |")
        cmp = json.loads(run("compare", str(ws), "pure", "curated"))
    text = ("```\n" + "\n\n".join(shown) + "\n```\n\n"
            f"Both plans keep {int(pure.sum()):,} images (the budget stays the total kept); "
            f"{cmp['only_b']:,} images differ. Every concept whose kept count changed:\n\n"
            + "\n".join(rows))
    publish(text, args.out, "demo_curation.md")


if __name__ == "__main__":
    main()
