"""A large workspace for latency benchmarks, made by tiling a real (precomputed) workspace T times.

Used when a real build at the target size cannot run (here: a 10M-row build from released embeddings
takes ~1,300 CPU seconds, and the shared 2-core machine gave it ~15% of one core). Every row of the
source workspace is repeated T times as a new row ``t * N + row`` (t = 0..T-1), in row order:

- uid = md5 of the new 9-digit key, the url and image location rebuilt from that key (unique rows);
- caption, size, split, CLIP score, cluster, distance to the centroid and SemDeDup similarity are
  the source row's; ``rank_in_cluster`` = rank * T + t (still a permutation inside each concept,
  nearest first); ``dup_of`` points into the same tile;
- the clusters table: sizes times T, the same d_intra / d_inter / labels / map positions; the
  centroids, the 2-D map sample (20,000 rows of the first tile, as a real build samples at most
  that many) and the eps curve are the source's; meta counts times T; plans are dropped;
- the vector files are NOT tiled (nothing the app, the plans or the exports read needs them), so
  the result is for timing plans, exports and the app, not for re-clustering.

So the cluster sizes, the per-row columns and the table sizes are those of a T x N build with the
same K; the values repeat T times. Measurements on such a workspace say so.

    python benchmarks/tile_workspace.py workspaces/ws-100k-k500 workspaces/ws-10m-tiled --times 100
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from pathlib import Path

import duckdb

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from densprune import db  # noqa: E402

log = logging.getLogger("tile_workspace")

SCALED_META = ("n_samples", "n_pool", "n_eval", "n_source_rows", "n_rejects", "dedup_pairs")


def tile(src: Path, dst: Path, times: int) -> None:
    """Write ``dst``: ``src`` tiled ``times`` times (see the module docstring)."""
    if dst.exists():
        raise FileExistsError(f"{dst} exists: remove it first")
    dst.mkdir(parents=True)
    shutil.copy2(src / "centroids.npy", dst / "centroids.npy")
    shutil.copy2(src / db.DB_NAME, dst / db.DB_NAME)
    n = db.load_meta(src)["n_samples"]
    con = duckdb.connect(str(dst / db.DB_NAME))
    try:
        con.execute("SET memory_limit = '1GB'")
        con.execute("CREATE TEMP TABLE src AS SELECT * FROM samples ORDER BY row_idx")
        con.execute("DELETE FROM samples")
        con.execute("CHECKPOINT")
        for t in range(times):
            off = t * n
            con.execute(f"""
                INSERT INTO samples
                SELECT row_idx + {off} AS row_idx, md5(printf('%09d', row_idx + {off})) AS uid,
                       printf('%09d', row_idx + {off}) AS key, caption,
                       'https://img.example.invalid/' || printf('%09d', row_idx + {off}) || '.jpg' AS image_ref,
                       '["url", "https://img.example.invalid/' || printf('%09d', row_idx + {off}) || '.jpg"]' AS image_loc,
                       width, height, category, top_category, split, clip_score, cluster, dist_to_centroid,
                       rank_in_cluster * {times} + {t} AS rank_in_cluster, dup_max_sim,
                       CASE WHEN dup_of >= 0 THEN dup_of + {off} ELSE dup_of END AS dup_of, thumb_offset, thumb_size
                FROM src ORDER BY row_idx""")
            if t % 10 == 9:
                log.info("tile %d of %d written", t + 1, times)
        con.execute(f"UPDATE clusters SET size = size * {times}, pool_size = pool_size * {times}")
        con.execute("DELETE FROM plan_clusters")
        con.execute("DELETE FROM plans")
        meta = dict(con.execute("SELECT key, value FROM meta").fetchall())
        for key in SCALED_META:
            if key in meta and meta[key] not in (None, "null"):
                con.execute("UPDATE meta SET value = ? WHERE key = ?", [json.dumps(json.loads(meta[key]) * times), key])
        con.execute("INSERT INTO meta VALUES ('tiled_from', ?)", [json.dumps({"workspace": str(src.resolve()),
                                                                              "times": times})])
        con.execute("CHECKPOINT")
    finally:
        con.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", type=Path, help="a complete workspace")
    p.add_argument("dest", type=Path, help="the tiled workspace to write (must not exist)")
    p.add_argument("--times", type=int, default=100)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    t = time.perf_counter()
    tile(args.source, args.dest, args.times)
    log.info("%s: %s tiled %d times in %.0f s", args.dest, args.source, args.times, time.perf_counter() - t)
    return 0


if __name__ == "__main__":
    sys.exit(main())
