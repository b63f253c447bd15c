"""The demo's concept labels, listed: how many distinct labels, which concepts share one, and each
concept's label next to its most frequent caption (and its zero-shot name where the workspace has one).

    python benchmarks/demo_labels.py [--workspace DIR] > benchmarks/results/demo_labels.md

Builds the demo workspace first when it is missing (as ``densprune demo --no-app`` would).
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import table  # noqa: E402

from densprune import db  # noqa: E402
from densprune.cluster.labels import shorten  # noqa: E402
from densprune.workspace import default_demo_workspace  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--workspace", type=Path, default=None)
    args = ap.parse_args()
    ws = args.workspace or default_demo_workspace()
    if not db.is_complete(ws):
        from densprune.cli.main import main as cli_main

        cli_main(["demo", "--no-app", "--workspace", str(ws)])
    meta = db.load_meta(ws)
    cl = db.load_clusters(ws).merge(db.top_captions(ws), on="cluster", how="left")
    cl = cl.sort_values(["pool_size", "cluster"], ascending=[False, True])
    counts = Counter(cl["label"].fillna(""))
    shared = {lab: n for lab, n in counts.items() if n > 1}
    has_zs = cl["zs_label"].notna().any()
    print(f"demo workspace: {meta['n_pool']:,} pool images, K={meta['k']}, embedder {meta['embedder']}, "
          f"labels: {meta.get('label_source', 'caption words')}\n")
    print(f"- {len(counts)} distinct labels among {len(cl)} concepts; longest label "
          f"{cl['label'].fillna('').str.len().max()} characters")
    for lab, n in sorted(shared.items(), key=lambda x: -x[1]):
        print(f"- {n} concepts share \"{lab}\" (their captions have the same words)")
    print()
    headers = ["concept", "pool images", "label"] + (["zero-shot name (similarity)"] if has_zs else []) + [
        "most frequent caption (its count)"]
    rows = []
    for r in cl.itertuples():
        zs = [f"{r.zs_label} ({r.zs_similarity:.2f})"] if has_zs else []
        rows.append([f"#{r.cluster}", r.pool_size, r.label or ""] + zs +
                    [f"{shorten(r.caption, 70).replace('|', '/')} ({r.n})"])
    print(table(headers, rows))


if __name__ == "__main__":
    main()
