"""Run the densprune CLI and stop it dead at a named point, for SIGKILL tests (tests/test_crash_safety.py).

    python tests/crash_harness.py POINT MARKER -- precompute SOURCE --workspace DIR ...

At POINT the process writes the file MARKER and sleeps until it is killed; the test kills it with
SIGKILL there. Nothing in densprune changes: the points are wrappers around its own functions.
``pause:POINT`` instead waits there until the test deletes MARKER, then carries on (to run another
command while this one is at POINT, holding what it holds there).

POINT: embedding (after the 2nd embedding shard is saved), after-embedding (the .npy files assembled,
before clustering), clustering (inside k-means), dedup (inside SemDeDup), duckdb-write (densprune.duckdb.tmp
created, two tables filled), plan-save (mask renamed into place, rows not written), plan-switched (rows
committed, pointing at the new mask; the mask they replaced not yet removed), export (data file written,
manifest not), before-reset (the source listed and the embedder loaded, the old build not yet
removed), after-reset (``--force``: the old database and plans removed, nothing embedded yet),
concepts (before the concept statistics), layout (before the 2-D map), plan-index (densprune.duckdb
renamed into place, the plan index not yet stored), released-copy (released embeddings: the first block
copied into embeddings/image.npy.tmp), recluster (`densprune recluster`: k-means done, the
transaction that rewrites the clusters not begun).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's densprune, not an installed one


PAUSE = False  # pause:POINT: wait until MARKER is deleted instead of until SIGKILL


def stop_here(marker: Path) -> None:
    marker.write_text("stopped")
    while True:  # until SIGKILL (or, pausing, until the marker is gone)
        if PAUSE and not marker.exists():
            return
        time.sleep(0.1 if PAUSE else 1)


def after_calls(module, name: str, n: int, marker: Path, before: bool = False) -> None:
    """Wrap ``module.name``: stop after (or before) its ``n``-th call."""
    real, calls = getattr(module, name), [0]

    def wrapper(*a, **k):
        calls[0] += 1
        if before and calls[0] == n:
            stop_here(marker)
        out = real(*a, **k)
        if not before and calls[0] == n:
            stop_here(marker)
        return out

    setattr(module, name, wrapper)


def install(point: str, marker: Path) -> None:
    from densprune import db
    from densprune.embed import shards
    from densprune.export import writers
    from densprune.pipeline import from_images, from_released, stages

    if point == "embedding":
        after_calls(shards, "save_shard", 2, marker)
    elif point == "after-embedding":
        after_calls(from_images, "split_stage", 1, marker, before=True)
    elif point == "clustering":
        after_calls(stages, "train_spherical_kmeans", 1, marker, before=True)
    elif point == "dedup":
        after_calls(from_images, "dedup_stage", 1, marker, before=True)
    elif point == "duckdb-write":
        real_connect = db.duckdb.connect

        class Con:  # the real connection, stopped at its 3rd table
            def __init__(self, con):
                self._con, self._n = con, 0

            def register(self, *a):
                self._n += 1
                if self._n == 3:
                    stop_here(marker)
                return self._con.register(*a)

            def __getattr__(self, name):
                return getattr(self._con, name)

        db.duckdb.connect = lambda path, *a, **k: Con(real_connect(path, *a, **k)) if str(path).endswith(".tmp") \
            else real_connect(path, *a, **k)
    elif point == "before-reset":
        after_calls(from_images, "reset_workspace", 1, marker, before=True)
    elif point == "after-reset":
        after_calls(from_images, "reset_workspace", 1, marker)
    elif point == "concepts":
        after_calls(from_images, "concepts_stage", 1, marker, before=True)
    elif point == "layout":
        after_calls(from_images, "layout_stage", 1, marker, before=True)
    elif point == "plan-index":
        after_calls(from_images, "store_plan_index", 1, marker, before=True)
    elif point == "released-copy":
        after_calls(from_released, "_write_rows", 1, marker)
    elif point == "recluster":
        after_calls(db, "rewrite_clusters", 1, marker, before=True)
    elif point == "plan-save":
        after_calls(db, "write_plan", 1, marker, before=True)
    elif point == "plan-switched":
        after_calls(db, "write_plan", 1, marker)
    elif point == "export":
        after_calls(writers, "sha256_file", 1, marker, before=True)
    elif point == "export-claimed":  # the claim on the path is written, no file of the export yet
        after_calls(writers, "_write", 1, marker, before=True)
    else:
        raise SystemExit(f"unknown point {point!r}")


if __name__ == "__main__":
    point, marker, sep, *argv = sys.argv[1:]
    assert sep == "--", "usage: crash_harness.py [pause:]POINT MARKER -- densprune arguments"
    PAUSE, point = point.startswith("pause:"), point.removeprefix("pause:")
    install(point, Path(marker))
    from densprune.cli.main import main

    sys.exit(main(argv))
