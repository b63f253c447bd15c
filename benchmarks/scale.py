"""Web scale from released embeddings: peak memory and per-stage time of ``densprune precompute`` at N rows.

The pool is synthetic but shaped like CLIP embeddings of a web crawl: 512-d float16 unit vectors
around 2,000 concept centres on the sphere, with log-normal (very uneven) concept sizes and
spreads that differ per concept, plus 5% near-copies of other rows (what SemDeDup finds);
captions draw words from a per-concept vocabulary. It is written in LAION's clip-retrieval layout
(``img_emb/``, ``text_emb/``, ``metadata/``, 500k-row shards), streamed shard by shard.

For each N the script runs ``densprune precompute POOL --workspace WS -k 500`` in a
child process and records, sampled every 0.2 s from /proc, its peak resident memory (VmHWM: the
kernel's high-water mark of the child's own address space) and the peak of its anonymous memory
(RssAnon: the heap, without the page cache of the vector files). (Not ``wait4``'s ru_maxrss: Linux
carries the parent's high-water mark into a child across fork and exec, so a child of this script,
which has just generated the pool, would report the generator's memory.) The stages' wall times
come from the workspace's
``meta.timings_s``. Then, on the finished workspace, densprune's clustering stage (sample, train,
assign in blocks, distances, ranks) runs side by side with bare faiss doing the same work
(``faiss.Kmeans`` on the same sample, ``IndexFlatIP.search`` of every row in the same blocks),
interleaved, median of ``--runs``.

    python benchmarks/scale.py --rows 200000 2000000 --work /var/tmp/densprune-scale

The machine is shared (2 cores, other engineers' jobs): times are wall-clock under that load.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import re
import shutil
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's densprune first
from _util import densprune_command, interleaved_medians, table

log = logging.getLogger("scale")

DIM = 512
N_CONCEPTS = 2000
SHARD_ROWS = 500_000
DUP_FRACTION = 0.05
LETTERS = np.array(list("abcdefghijklmnopqrstuvwxyz"))


# --------------------------------------------------------------------------------------------
# the synthetic pool
# --------------------------------------------------------------------------------------------

def concept_plan(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(C, d) centres, (C,) sizes summing to n (log-normal, sigma 1.2: a few huge concepts, many small),
    (C,) spreads (noise norm 0.35-1.1: cosine to the centre ~0.95 down to ~0.67)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(N_CONCEPTS, DIM)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    w = rng.lognormal(0.0, 1.2, N_CONCEPTS)
    sizes = np.floor(w / w.sum() * n).astype(np.int64)
    sizes[np.argsort(-w)[: n - sizes.sum()]] += 1
    spreads = rng.uniform(0.35, 1.1, N_CONCEPTS).astype(np.float32)
    return centres, sizes, spreads


def words(ids: np.ndarray) -> np.ndarray:
    """Integer word ids -> 3-letter pseudo-words ("aab"), so the caption vectoriser sees letters only."""
    return np.char.add(np.char.add(LETTERS[ids // 676 % 26], LETTERS[ids // 26 % 26]), LETTERS[ids % 26])


def write_pool(root: Path, n: int, seed: int = 0, text: bool = True) -> None:
    """The clip-retrieval folder of an n-row pool, shard by shard (never more than one shard in memory);
    ``text=False`` leaves out ``text_emb/`` (the CLIP score then comes from the ``similarity`` column)."""
    centres, sizes, spreads = concept_plan(n, seed)
    concept_of_row = np.random.default_rng(seed + 1).permutation(np.repeat(np.arange(N_CONCEPTS), sizes))
    for sub in ("img_emb", "metadata") + (("text_emb",) if text else ()):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for k, start in enumerate(range(0, n, SHARD_ROWS)):
        rng = np.random.default_rng([seed, k])
        c = concept_of_row[start:start + SHARD_ROWS]
        m = c.size
        img = centres[c] + spreads[c, None] * rng.standard_normal((m, DIM), dtype=np.float32) / np.sqrt(DIM)
        dup = np.flatnonzero(rng.random(m) < DUP_FRACTION)  # near-copies of an earlier row of the shard
        src = (dup * rng.random(dup.size)).astype(np.int64)
        img[dup] = img[src] + 0.02 * rng.standard_normal((dup.size, DIM), dtype=np.float32) / np.sqrt(DIM)
        img /= np.linalg.norm(img, axis=1, keepdims=True)
        txt = img + 0.9 * rng.standard_normal((m, DIM), dtype=np.float32) / np.sqrt(DIM)
        txt /= np.linalg.norm(txt, axis=1, keepdims=True)
        np.save(root / "img_emb" / f"img_emb_{k}.npy", img.astype(np.float16))
        if text:
            np.save(root / "text_emb" / f"text_emb_{k}.npy", txt.astype(np.float16))
        del img, txt
        vocab = c[:, None] * 7 + rng.integers(0, 7, (m, 3))  # 7 words per concept, 3 per caption
        w = words(vocab % 17_576)
        caps = np.char.add(np.char.add(np.char.add(w[:, 0], " "), np.char.add(w[:, 1], " ")), w[:, 2])
        keys = np.char.mod("%09d", np.arange(start, start + m))
        pq.write_table(pa.table({
            "caption": pa.array(caps.astype(object)), "url": pa.array(np.char.add(np.char.add(
                "https://img.example.invalid/", keys), ".jpg").astype(object)),
            "key": pa.array(keys.astype(object)), "similarity": rng.uniform(0.15, 0.4, m),
            "width": rng.integers(64, 4096, m).astype(np.int32), "height": rng.integers(64, 4096, m).astype(np.int32),
        }), root / "metadata" / f"metadata_{k}.parquet", row_group_size=65_536)
        log.info("pool %s: shard %d (%d rows)", root, k, m)
    (root / "DONE").write_text(json.dumps({"rows": n, "seed": seed, "text": text}))


# --------------------------------------------------------------------------------------------
# measuring one precompute
# --------------------------------------------------------------------------------------------

def _proc_kib(pid: int, field: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def run_precompute(pool: Path, ws: Path, k: int) -> dict:
    """Run the CLI in a child; its wall time, peak RSS (VmHWM) and peak RssAnon (both sampled), and timings."""
    cmd = [densprune_command(), "precompute", str(pool), "--workspace", str(ws), "-k", str(k), "--force"]
    t0 = time.perf_counter()
    load_before = os.getloadavg()[0]
    with open(ws.with_suffix(".log"), "w") as err:
        child = subprocess.Popen(cmd, cwd=Path(__file__).resolve().parent.parent, stdout=subprocess.DEVNULL, stderr=err)
    timeline: list[tuple[str, int]] = []  # (HH:MM:SS, RssAnon KiB) every 0.2 s
    hwm = [0]  # the child's VmHWM (KiB): monotone, so the last value read before it exits
    done = threading.Event()  # set once wait4 has reaped the child: the sampler must not reap it (poll would)

    def sample() -> None:
        while not done.is_set():
            timeline.append((time.strftime("%H:%M:%S"), _proc_kib(child.pid, "RssAnon")))
            hwm[0] = max(hwm[0], _proc_kib(child.pid, "VmHWM"))
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, status, usage = os.wait4(child.pid, 0)
    done.set()
    child.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    load_after = os.getloadavg()[0]
    sampler.join()
    if child.returncode != 0:
        raise RuntimeError(f"precompute failed ({child.returncode}): see {ws.with_suffix('.log')}")
    from densprune import db

    meta = db.load_meta(ws)
    peak_anon = [max((a for _, a in timeline), default=0)]
    return {"stage_peak_anon_mib": stage_peaks(ws.with_suffix(".log"), timeline), "wall_s": wall,
            "cpu_s": usage.ru_utime + usage.ru_stime, "peak_rss_mib": hwm[0] / 1024,
            "peak_anon_mib": peak_anon[0] / 1024, "timings_s": meta["timings_s"], "stage_cpu_s": meta.get("cpu_s", {}),
            "n_samples": meta["n_samples"], "k": meta["k"], "dedup_groups": meta.get("dedup_groups"),
            "dedup_pairs": meta.get("dedup_pairs"), "load_before": load_before, "load_after": load_after}


def stage_peaks(log_path: Path, timeline: list[tuple[str, int]]) -> dict[str, float]:
    """Peak RssAnon (MiB) of each stage: the child logs "HH:MM:SS ... [k/7]" as each stage starts."""
    starts = []
    for line in log_path.read_text().splitlines():
        m = re.match(r"^(\d\d:\d\d:\d\d) INFO \S+: \[(\d)/7\]", line)  # the stage lines, whichever module logs them
        if m:
            starts.append((m.group(1), STAGES[int(m.group(2)) - 1]))
    peaks: dict[str, float] = {}
    for stamp, kib in timeline:
        stage = next((name for t, name in reversed(starts) if t <= stamp), "startup")
        peaks[stage] = max(peaks.get(stage, 0.0), kib / 1024)
    return peaks


# --------------------------------------------------------------------------------------------
# clustering: densprune's stage vs bare faiss, same work
# --------------------------------------------------------------------------------------------

def cluster_versus_faiss(ws: Path, k: int, runs: int, seed: int = 1234, niter: int = 50) -> dict[str, float]:
    """Median wall time of densprune's cluster stage and of bare faiss doing the same training and search."""
    import faiss

    from densprune.pipeline.config import PrecomputeConfig
    from densprune.pipeline.stages import cluster_stage
    from densprune.vectors import NpyRows

    image = NpyRows(ws / "embeddings" / "image.npy")
    n = image.shape[0]
    rows = np.arange(n)
    cfg = PrecomputeConfig(source="-", workspace=ws, clusters=k, niter=niter, seed=seed)

    def densprune_stage() -> None:
        cluster_stage(cfg, image, rows)

    def bare_faiss() -> None:
        x = np.load(ws / "embeddings" / "image.npy", mmap_mode="r")
        cap = k * 256
        sample_rows = np.sort(np.random.default_rng(seed).choice(n, size=cap, replace=False)) if n > cap else rows
        sample = np.ascontiguousarray(x[sample_rows], dtype=np.float32)
        km = faiss.Kmeans(DIM, k, niter=niter, seed=seed, spherical=True, max_points_per_centroid=256)
        km.train(sample)
        index = faiss.IndexFlatIP(DIM)
        index.add(km.centroids)
        labels = np.empty(n, np.int64)
        for s in range(0, n, 65536):
            _, i = index.search(np.ascontiguousarray(x[s:s + 65536], dtype=np.float32), 1)
            labels[s:s + 65536] = i[:, 0]
        del x

    return interleaved_medians({"densprune": densprune_stage, "faiss": bare_faiss}, runs=runs, warmup=0)


# --------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------

STAGES = ("scan", "copy", "cluster", "concepts", "dedup", "layout", "write", "total")  # the "[k/7]" log markers
# timed stages: the plan index is built and stored after the write (meta.timings_s "index"; its memory
# falls in the write stage of the RssAnon table, which has no log marker of its own for it)
TIMED = STAGES[:-1] + ("index", "total")


def report(results: list[dict], command: str) -> str:
    rows, cpu_rows = [], []
    for r in results:
        t, c = r["timings_s"], r.get("stage_cpu_s", {})
        rows.append([f"{r['rows']:,}", f"{r['peak_rss_mib']:,.0f}", f"{r['peak_anon_mib']:,.0f}"]
                    + [f"{t.get(s, float('nan')):.1f}" for s in TIMED]
                    + [f"{r['wall_s']:.1f}", f"{r['load_before']:.1f} / {r['load_after']:.1f}"])
        cpu_rows.append([f"{r['rows']:,}"] + [f"{c.get(s, float('nan')):.1f}" for s in TIMED]
                        + [f"{r['cpu_s']:.1f}", f"{r['cpu_s'] / 2:.1f}", f"{r.get('dedup_groups')}",
                           f"{r.get('dedup_pairs', 0):.2g}"])
    out = [f"# Scale: precompute from released embeddings (clip-retrieval layout, {DIM}-d float16, K=500)", "",
           f"Command: `{command}`", "",
           (f"Machine: {platform.machine()}, {os.cpu_count()} cores shared with other jobs; "
           f"{datetime.now(timezone.utc).isoformat(timespec='seconds')}"), "",
           ("Wall-clock seconds per stage (the machine's 1-minute load average before / after the run in the last "
           "column: above 2, other jobs shared the 2 cores):"), "",
           table(["rows", "peak RSS MiB", "peak RssAnon MiB"] + [f"{s} s" for s in TIMED]
                 + ["process wall s", "load"], rows), "",
           ("CPU seconds per stage (all threads of the precompute process: the work, whatever the load), the "
           "process total, that total over 2 cores (the wall time an idle 2-core machine would need at best), "
           "and the SemDeDup groups and pairs:"), "",
           table(["rows"] + [f"{s} cpu s" for s in TIMED] + ["process cpu s", "cpu s / 2 cores", "dedup groups",
                                                                "dedup pairs"], cpu_rows), "",
           "Peak RssAnon (MiB) in each stage (write: the plan index stage included):", "",
           table(["rows"] + list(STAGES[:-1]),
                 [[f"{r['rows']:,}"] + [f"{r.get('stage_peak_anon_mib', {}).get(s, float('nan')):,.0f}"
                                        for s in STAGES[:-1]] for r in results])]
    if len(results) >= 2:
        a, b = results[0], results[-1]
        dn = b["rows"] - a["rows"]
        out += ["", (f"Growth from {a['rows']:,} to {b['rows']:,} rows: "
                    f"peak RSS {(b['peak_rss_mib'] - a['peak_rss_mib']) * 2**20 / dn:.0f} bytes/row, "
                    f"peak RssAnon {(b['peak_anon_mib'] - a['peak_anon_mib']) * 2**20 / dn:.0f} bytes/row "
                    "(goal <= 300).")]
    out += ["", "Clustering stage vs bare faiss (same sample, training and blockwise search; interleaved medians):", "",
            table(["rows", "runs", "densprune s", "bare faiss s", "ratio"],
                  [[f"{r['rows']:,}", r["runs"], f"{r['cluster_vs_faiss']['densprune']:.1f}",
                    f"{r['cluster_vs_faiss']['faiss']:.1f}",
                    f"{r['cluster_vs_faiss']['densprune'] / r['cluster_vs_faiss']['faiss']:.2f}x"]
                   for r in results if "cluster_vs_faiss" in r])]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, nargs="+", default=[200_000, 2_000_000])
    p.add_argument("--work", type=Path, default=Path("/var/tmp/densprune-scale"), help="pools and workspaces")
    p.add_argument("--clusters", "-k", type=int, default=500)
    p.add_argument("--runs", type=int, default=3, help="runs of the clustering comparison (median)")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "scale")
    p.add_argument("--keep", action="store_true", help="keep pools and workspaces afterwards")
    p.add_argument("--no-text", action="store_true", help="pools without text_emb/ (half the disk)")
    p.add_argument("--compare-up-to", type=int, default=2_000_000,
                   help="run the clustering comparison only up to this many rows (default: %(default)s)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    command = "python benchmarks/scale.py " + " ".join(argv if argv is not None else sys.argv[1:])
    results = []
    for n in args.rows:
        pool = args.work / f"pool-{n}{'-notext' if args.no_text else ''}"
        ws = args.work / f"ws-{n}"
        if not (pool / "DONE").exists():
            shutil.rmtree(pool, ignore_errors=True)
            t = time.perf_counter()
            write_pool(pool, n, text=not args.no_text)
            log.info("pool of %d rows written in %.0f s", n, time.perf_counter() - t)
        ws.parent.mkdir(parents=True, exist_ok=True)
        r = {"rows": n, "text_emb": not args.no_text, **run_precompute(pool, ws, args.clusters)}
        log.info("%d rows: %s", n, json.dumps(r))
        runs = args.runs if n <= 500_000 else max(1, args.runs - 1)
        if n <= args.compare_up_to:
            r["runs"] = runs
            r["cluster_vs_faiss"] = cluster_versus_faiss(ws, args.clusters, runs)
            log.info("%d rows: clustering %s", n, r["cluster_vs_faiss"])
        results.append(r)
        args.out.with_suffix(".json").write_text(json.dumps({"command": command, "results": results}, indent=2))
        args.out.with_suffix(".md").write_text(report(results, command))
        if not args.keep:
            shutil.rmtree(ws, ignore_errors=True)
    print(report(results, command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
