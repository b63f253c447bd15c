"""Benchmark: what the text tower adds to a text query (issue "Find and select"): one open_clip
``encode_text`` pass of one query on this machine's CPU, per model architecture.

The weights are random (``pretrained=None``: no model hub is reachable here), which changes what the
vectors mean, not what the pass costs: the same layers, widths and 77-token context run the same
arithmetic. The baseline is the search the text vector then feeds (benchmarks/results/search_10m.md:
exact 424 ms, approximate 73 ms at 10M rows), so the ratio says how much of a text query is the tower.
Median of ``--runs`` passes after one warm-up, with the tokenizer's time included.

    python benchmarks/bench_text_tower.py --models ViT-B-32 ViT-L-14 --runs 20
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent.parent), str(Path(__file__).resolve().parent)]  # this checkout
from _util import median_time, publish, table  # noqa: E402

SEARCH_10M_MS = {"exact": 424.0, "approximate": 73.0}  # benchmarks/results/search_10m.md, same machine class


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=["ViT-B-32", "ViT-L-14"])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--query", default="a dog on a beach at sunset")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    import open_clip
    import torch

    torch.manual_seed(0)
    rows = []
    for name in args.models:
        model = open_clip.create_model(name, pretrained=None).eval()
        tok = open_clip.get_tokenizer(name)

        def once():
            with torch.inference_mode():
                return model.encode_text(tok([args.query]))

        med, _ = median_time(once, args.runs)
        ms, v = 1000 * med, once()
        params = sum(p.numel() for p in model.transformer.parameters()) / 1e6
        rows.append([name, f"{params:.0f}M", str(v.shape[1]), f"{ms:.1f}",
                     f"{ms / SEARCH_10M_MS['exact']:.3f}", f"{ms / SEARCH_10M_MS['approximate']:.2f}"])
    text = ("One text query through the text tower (random weights: the cost of the pass, not its answers), "
            f"CPU, {torch.get_num_threads()} threads, median of {args.runs}:\n\n"
            + table(["model", "text transformer params", "dim", "median ms",
                     f"/ exact search at 10M ({SEARCH_10M_MS['exact']:.0f} ms)",
                     f"/ approximate search at 10M ({SEARCH_10M_MS['approximate']:.0f} ms)"], rows)
            + "\n\nNot shown: the one-time load of real weights (from the hub's cache or --text-weights), "
              "which the app and CLI pay once per process.")
    publish(text, args.out, "text_tower.md")


if __name__ == "__main__":
    main()
