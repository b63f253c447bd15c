"""Clustering stage (densprune) against bare faiss k-means + assignment on the same vectors.

    python benchmarks/bench_clustering.py [--n 200000] [--d 512] [--k 100] [--runs 3]

densprune: train_spherical_kmeans (seeded sample) + blockwise assign + rank_in_cluster.
baseline:  faiss.Kmeans(spherical=True).train(x) + IndexFlatIP.search(x, 1) on the whole array.
Goal: densprune at most 1.2x the baseline.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import interleaved_medians, publish, table  # noqa: E402

from densprune.cluster.kmeans import assign, rank_in_cluster, train_spherical_kmeans  # noqa: E402


def synthetic(n: int, d: int, k: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(k, d)).astype(np.float32)
    x = centers[rng.integers(0, k, n)] + rng.normal(scale=0.8, size=(n, d)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--d", type=int, default=512)
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--niter", type=int, default=20)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None, help="default: benchmarks/results/clustering.md")
    args = ap.parse_args()
    import faiss

    x = synthetic(args.n, args.d, args.k)

    def ours() -> None:
        cent = train_spherical_kmeans(x, args.k, niter=args.niter, seed=1234)
        labels, sims = assign(x, cent)
        rank_in_cluster(labels, 1.0 - sims)

    rng = np.random.default_rng(1234)
    cap = args.k * 256
    sample_rows = np.sort(rng.choice(args.n, size=min(cap, args.n), replace=False))

    def bare(train: np.ndarray) -> None:
        km = faiss.Kmeans(args.d, args.k, niter=args.niter, seed=1234, spherical=True, max_points_per_centroid=256)
        km.train(train)
        index = faiss.IndexFlatIP(args.d)
        index.add(km.centroids)
        index.search(x, 1)

    med = interleaved_medians({"ours": ours, "full": lambda: bare(x),
                               "same": lambda: bare(np.ascontiguousarray(x[sample_rows]))}, args.runs)
    t_ours, t_full, t_same = med["ours"], med["full"], med["same"]
    rows = [[f"{args.n:,} x {args.d}", args.k, name, f"{t:.2f}", f"{t_ours:.2f}", f"{t_ours / t:.2f}x"]
            for name, t in (("faiss.Kmeans on the whole array (faiss subsamples)", t_full),
                            ("faiss.Kmeans on the same seeded sample", t_same))]
    text = table(["N x d", "K", "baseline", "baseline (s)", "densprune (s)", "ratio"], rows)
    publish(text, args.out, "clustering.md")


if __name__ == "__main__":
    main()
