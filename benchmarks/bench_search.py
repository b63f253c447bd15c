"""Benchmark: image / text similarity search and caption search on a workspace (goals of issue "Find and
select": exact query < 3 s, approximate < 300 ms with recall@100 >= 0.95, caption search < 1 s, at 10M rows).

What is timed, median of ``--runs`` single queries after a warm-up (the vectors' file then sits in the
page cache, as it does in a running app; the first query after a reboot reads it from disk):

- **exact**: ``queries.nearest(..., exact=True)``: every stored vector scored in blocks (float16
  matmul, float32 re-score of each block's candidates), side by side with the **baseline**: faiss
  ``IndexFlatIP.search`` over the same blocks converted to float32 (what one writes with faiss when
  the N x d matrix does not fit in memory as float32), both asked for the same k on the same queries.
- **approximate**: ``queries.nearest(...)`` at its default (the concepts nearest the query until they
  hold 1.5% of the rows), its recall@k against exact on ``--queries`` queries, its rows read, and its
  time as a ratio of exact's.
- **caption**: ``queries.caption_search`` (one DuckDB ILIKE scan + per-concept counts from the plan
  index) side by side with a bare DuckDB ``SELECT row_idx, cluster ... WHERE caption ILIKE`` plus a
  ``GROUP BY cluster`` (the two queries one would write by hand).

Queries: ``--queries`` stored image vectors of random rows (more like this; the row itself left out),
and as many random unit directions (no concept near them: the approximation's hard case). Text
queries are not measured where the workspace has no text tower: a text query is one text-tower
forward pass (model-dependent) plus the same search. Recall counts a returned row as right when its
exact similarity reaches the exact k-th similarity (ties at the edge do not count as misses).

    python benchmarks/bench_search.py --workspace workspaces/ws-10m --queries 100 --runs 5
"""

from __future__ import annotations

import argparse
import logging
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path[:0] = [str(Path(__file__).resolve().parent.parent), str(Path(__file__).resolve().parent)]  # this checkout
from _util import median_time, publish, table  # noqa: E402

from densprune import db  # noqa: E402
from densprune.prune.plan_index import load_index  # noqa: E402
from densprune.search import queries  # noqa: E402
from densprune.search.similarity import BLOCK_ROWS, normalise, top_k  # noqa: E402
from densprune.workspace import image_vectors  # noqa: E402

logger = logging.getLogger("bench_search")


def faiss_flat(vectors: np.ndarray, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The baseline: faiss IndexFlatIP over float32 blocks of the memmap, merged per query."""
    import faiss

    best_s, best_r = None, None
    for lo in range(0, vectors.shape[0], BLOCK_ROWS):
        block = np.asarray(vectors[lo:lo + BLOCK_ROWS], dtype=np.float32)
        index = faiss.IndexFlatIP(block.shape[1])
        index.add(block)
        s, r = index.search(q, k)
        r = r + lo
        if best_s is None:
            best_s, best_r = s, r
        else:
            cs, cr = np.concatenate([best_s, s], 1), np.concatenate([best_r, r], 1)
            o = np.argsort(-cs, axis=1)[:, :k]
            best_s, best_r = np.take_along_axis(cs, o, 1), np.take_along_axis(cr, o, 1)
    return best_r, best_s


def recall(vectors, qs: np.ndarray, got: list[np.ndarray], k: int, exclude: list[int | None]) -> np.ndarray:
    """(Q,) recall@k of ``got`` against the exact top-k (one batched exact pass), ties counted right."""
    ref_r, ref_s = [], []
    for lo in range(0, len(qs), 25):
        ex = np.array([e for e in exclude[lo:lo + 25] if e is not None], dtype=np.int64)
        r, s = top_k(vectors, qs[lo:lo + 25], k + len(ex), exclude=None)
        for i in range(r.shape[0]):
            keep = ~np.isin(r[i], ex) if exclude[lo + i] is not None else np.ones(r.shape[1], bool)
            ref_r.append(r[i][keep][:k])
            ref_s.append(s[i][keep][:k])
    out = []
    for q, g, rs in zip(qs, got, ref_s):
        sims = np.asarray(vectors[np.sort(g)], dtype=np.float32) @ q
        out.append(np.count_nonzero(sims >= rs[-1] - 1e-6) / k)
    return np.array(out)


def anon_mb() -> float:
    """This process's anonymous resident memory (RssAnon, MB): what it holds itself, without the pages of
    the memory-mapped vector file (file-backed page cache, which the OS can drop and share)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workspace", type=Path, required=True)
    ap.add_argument("--queries", type=int, default=100, help="queries of each kind for recall")
    ap.add_argument("--runs", type=int, default=5, help="timed single queries per measurement")
    ap.add_argument("-k", type=int, default=100)
    ap.add_argument("--captions", nargs="*", default=None, help="caption queries (default: 3 frequent words)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    ws, k = args.workspace, args.k
    vectors = np.load(image_vectors(ws), mmap_mode="r")
    n, d = vectors.shape
    index = load_index(ws)  # held, as the app holds it
    rng = np.random.default_rng(0)
    rows = np.sort(rng.choice(n, args.queries, replace=False))
    row_q = normalise(np.asarray(vectors[rows], dtype=np.float32))
    rand_q = normalise(rng.normal(size=(args.queries, d)))
    logger.info("warming the page cache: one exact pass over %s", image_vectors(ws))
    t = time.perf_counter()
    top_k(vectors, row_q[:1], k)
    cold = time.perf_counter() - t

    def exact(i: int = 0):
        return queries.nearest(ws, row_q[i], k, kind="like", label="", provenance={}, exact=True,
                               exclude=np.array([rows[i]]), index=index)

    def approx(q, ex=None):
        return queries.nearest(ws, q, k, kind="like", label="", provenance={}, exact=False,
                               exclude=None if ex is None else np.array([ex]), index=index)

    res = []
    anon = [anon_mb()]
    ex_t, ex_ts = median_time(lambda: exact(0), args.runs)
    anon.append(anon_mb())
    base_t, base_ts = median_time(lambda: faiss_flat(vectors, row_q[:1], k + 1), max(2, args.runs // 2))
    ours, base = exact(0).rows, faiss_flat(vectors, row_q[:1], k + 1)[0][0]
    agree = len(set(ours) & set(base[base != rows[0]][:k])) / k
    res.append(["exact (densprune)", f"{ex_t * 1000:,.0f}", f"{n:,}", "1.00 (reference)",
                f"baseline {base_t * 1000:,.0f} ms, baseline / densprune = {base_t / ex_t:.2f}; "
                f"same rows: {agree:.2f}"])
    for name, qs, exc in (("rows", row_q, list(rows)), ("random directions", rand_q, [None] * args.queries)):
        got, ts, searched = [], [], []
        for i, q in enumerate(qs):
            t = time.perf_counter()
            sel = approx(q, exc[i])
            ts.append(time.perf_counter() - t)
            got.append(sel.rows)
            searched.append(sel.searched)
        anon.append(anon_mb())
        rec = recall(vectors, qs, got, k, exc)
        med = statistics.median(ts)
        res.append([f"approximate, {name} ({len(qs)} queries)", f"{med * 1000:,.0f}",
                    f"{int(np.median(searched)):,} (median)",
                    f"{rec.mean():.3f} mean, {np.percentile(rec, 5):.2f} 5th pct, {rec.min():.2f} min",
                    f"exact / approximate = {ex_t / med:.1f}"])
    # captions
    words = args.captions
    if not words:
        sample = db.query_df(ws, "SELECT caption FROM samples USING SAMPLE 2000 ROWS")["caption"].dropna()
        counts = sample.str.lower().str.split().explode().value_counts()
        words = [w for w in counts.index if len(w) >= 3][:2] + ["no such words here"]
    cap_rows = []
    for w in words:
        ours_t, _ = median_time(lambda: queries.caption_search(ws, w, index=index), args.runs)

        def bare(w=w):
            like = "%" + w + "%"
            with db.connect(ws) as con:
                con.execute("SELECT row_idx, cluster FROM samples WHERE caption ILIKE ? ORDER BY row_idx",
                            [like]).fetchnumpy()
                con.execute("SELECT cluster, count(*) FROM samples WHERE caption ILIKE ? GROUP BY cluster",
                            [like]).fetchall()

        bare_t, _ = median_time(bare, args.runs)
        total = queries.caption_search(ws, w, index=index).total
        cap_rows.append([repr(w), f"{total:,}", f"{ours_t * 1000:,.0f}", f"{bare_t * 1000:,.0f}",
                         f"{bare_t / ours_t:.2f}"])
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    text = "\n\n".join([
        f"Workspace: {ws} ({n:,} rows, {d}-d {vectors.dtype}, {vectors.nbytes / 1e9:.1f} GB of vectors; "
        f"{index.n_clusters:,} concepts), k = {k}.",
        f"First exact pass (reading the vectors from disk or cache): {cold:,.1f} s. The vectors are read in blocks "
        f"of {BLOCK_ROWS:,} rows, never whole: this process's own (anonymous) memory after the exact and "
        f"approximate searches: {max(anon):,.0f} MB at most; its peak resident set, {peak:,.0f} MB, also counts "
        "the pages of the memory-mapped vector file it touched (file-backed page cache, shared and evictable) "
        "and the float32 blocks of the faiss baseline.",
        table(["query", "median ms", "rows compared", "recall@100 vs exact", "vs"], res),
        f"Exact single query, all runs (s): {', '.join(f'{t:.2f}' for t in ex_ts)}; baseline: "
        f"{', '.join(f'{t:.2f}' for t in base_ts)}.",
        "Caption search over every row (case-insensitive, literal):",
        table(["words", "matches", "densprune ms", "bare DuckDB ms (2 queries)", "ratio"], cap_rows),
        "Not shown: text queries from a real CLIP text tower (this workspace has none; a text query adds one "
        "text-tower pass to the same search), nor a cold page cache beyond the first pass above.",
    ])
    publish(text, args.out, f"search_{n // 1_000_000}m.md" if n >= 1_000_000 else "search_small.md")


if __name__ == "__main__":
    main()
