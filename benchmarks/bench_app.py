"""Benchmark: how fast the app's pages open and how fast a budget change updates the Budget page.

(a) Fresh process: wall time of a real ``python -c`` subprocess that imports Streamlit's AppTest,
    runs the app once on the demo workspace (the router, the plan index, the Overview page) and exits:
    interpreter start and every import included. Median of --fresh-runs.
    Page open: each page through streamlit.testing.v1.AppTest on the demo workspace (a fresh session
    per run, the process already warm: imports loaded, plan index built once), median of --runs;
    and each page's first open, with the cached plans cleared before it (one run: what a page costs
    when its plan is not computed yet).
(b) Budget change: what the Budget page computes when the keep slider moves, i.e. the plan plus SSP
    and random at the same budget (page_data.budget_view), the per-concept and category aggregations,
    and the page's figures serialised to JSON as Streamlit sends them; on the demo and on a synthetic
    1M-row index (PlanIndex.build on random arrays, K=500, 20 categories). Every run uses a new keep
    fraction, so no cache helps. Median of --runs.

    python benchmarks/bench_app.py [--workspace DIR] [--rows 1000000] [--runs 7] [--fresh-runs 5] [--out FILE]

The table goes to benchmarks/results/app.md (``--out``), headed by the command that made it.
"""

from __future__ import annotations

import argparse
import logging
import resource
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
from streamlit.dataframe_util import convert_anything_to_arrow_bytes

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _util import median_wall_cpu, publish, table  # noqa: E402

from densprune import db  # noqa: E402
from densprune.app import page_data, session, vega_charts  # noqa: E402
from densprune.app.session import VIEWS  # noqa: E402
from densprune.prune import plan_index, plans
from densprune.prune.selection import PlanIndex, PlanParams  # noqa: E402

PAGES = ["overview", "concepts", "complexity", "budget", "preview", "export"]


FRESH = """
from streamlit.testing.v1 import AppTest
at = AppTest.from_file({app!r}, default_timeout=120)
at.session_state["workspace"] = {ws!r}
at.run()
assert not at.exception, [e.value for e in at.exception]
assert at.title and at.title[0].value, "the Overview did not render"
"""


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def fresh_process_time(ws: Path, runs: int) -> tuple[float, float]:
    """Median wall and CPU seconds (user + system of the child) of `python -c` opening the app once on
    ``ws`` in a new interpreter, from this checkout (cwd = repository root, so its densprune is imported)."""
    code = FRESH.format(app=str(ROOT / "app.py"), ws=str(ws))
    wall, cpu = [], []
    for _ in range(runs):
        t, c = time.perf_counter(), _children_cpu()
        proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
        wall.append(time.perf_counter() - t)
        cpu.append(_children_cpu() - c)
        if proc.returncode != 0:
            raise RuntimeError(f"the fresh process failed:\n{proc.stderr[-2000:]}")
    return float(np.median(wall)), float(np.median(cpu))


def ms(wall_cpu: tuple[float, float], digits: int = 0) -> list[str]:
    return [f"{1000 * wall_cpu[0]:,.{digits}f}", f"{1000 * wall_cpu[1]:,.{digits}f}"]


def page_open_times(ws: Path, runs: int, fresh_runs: int) -> list[list[object]]:
    from streamlit.testing.v1 import AppTest

    def new_session() -> AppTest:
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
        at.session_state["workspace"] = str(ws)
        return at

    rows = [["fresh process: `python -c` start, imports, plan index (read from the workspace, or built when missing), "
             "Overview rendered, exit",
             *ms(fresh_process_time(ws, fresh_runs))]]
    new_session().run()  # warm this process: imports, plan index
    first: list[list[object]] = []
    for page in PAGES:
        wall: list[float] = []
        cpu: list[float] = []

        def open_page() -> None:
            at = new_session().run()  # the router: lands on Overview
            if page != "overview":
                at.switch_page(str(VIEWS / f"{page}.py"))
            t0, c0 = time.perf_counter(), time.process_time()
            at.run()
            wall.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
            assert not at.exception, [e.value for e in at.exception]

        for cached in (session.compute, session.plan_counts, session.budget_view, session.concept_kept_rows):
            cached.clear()  # the first open computes the current plan (the index stays built)
        median_wall_cpu(open_page, runs)  # times only at.run(), the page itself; the first run is a warm-up
        rows.append([f"open {page}", *ms((float(np.median(wall[1:])), float(np.median(cpu[1:]))))])
        first.append([f"first open {page} (plan caches cleared before it; one run)", *ms((wall[0], cpu[0]))])
    rows += first
    at = new_session().run()
    at.switch_page(str(VIEWS / "budget.py")).run()
    keeps = iter(range(5, 95, 3))

    def slider() -> None:
        at.slider(key="plan_keep_pct").set_value(next(keeps)).run()

    rows.append(["Budget page: move the keep slider (whole script rerun)", *ms(median_wall_cpu(slider, runs))])
    return rows


def budget_change(index: PlanIndex, concepts: pd.DataFrame, cats: page_data.CategoryCodes | None,
                  curve: pd.DataFrame, runs: int) -> tuple[float, float]:
    keeps = iter(np.linspace(0.05, 0.95, runs + 2))
    base = PlanParams(method="dbp", keep=0.3, temperature=0.1)

    def once() -> None:
        view = page_data.budget_view(index, replace(base, keep=float(next(keeps))), concepts, cats)
        specs = [vega_charts.kept_per_concept(view.per_concept, "dbp"), vega_charts.dedup_curve(curve, 0.05)]
        if view.coverage is not None:
            specs.append(vega_charts.coverage_bars(view.coverage))
        for spec in specs:  # what Streamlit sends: each table as Arrow
            for data in spec["datasets"].values():
                convert_anything_to_arrow_bytes(data)

    return median_wall_cpu(once, runs)


def synthetic(n: int, k: int = 500, d: int = 64, n_cats: int = 20, seed: int = 0):
    """A 1M-row index like a real workspace: skewed cluster sizes, 1% eval, dedup similarities."""
    rng = np.random.default_rng(seed)
    w = rng.lognormal(0.0, 1.0, size=k)
    clusters = rng.choice(k, size=n, p=w / w.sum()).astype(np.int64)
    pool = rng.random(n) > 0.01
    t, c = time.perf_counter(), time.process_time()
    index = PlanIndex.build(clusters, rng.beta(2.0, 5.0, size=n), rng.normal(size=(k, d)), pool,
                            np.clip(rng.normal(0.8, 0.1, size=n), -1, 1), None)
    build = (time.perf_counter() - t, time.process_time() - c)
    clusters_df = pd.DataFrame({"cluster": np.arange(k), "size": index.sizes,
                                "pool_size": np.bincount(clusters[pool], minlength=k),
                                "label": [f"concept {j}" for j in range(k)], "x": rng.normal(size=k),
                                "y": rng.normal(size=k)})
    concepts = page_data.concept_frame(clusters_df, index)
    codes = rng.integers(0, n_cats, size=n).astype(np.int32)
    cats = page_data.CategoryCodes(codes, tuple(f"category {i}" for i in range(n_cats)),
                                 np.bincount(codes[pool], minlength=n_cats).astype(np.int64))
    curve = pd.DataFrame({"eps": np.linspace(0, 0.3, 61), "kept_fraction": np.linspace(1, 0.3, 61)})
    return index, concepts, cats, curve, build


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workspace", type=Path, default=None, help="demo workspace (default: densprune's demo path)")
    p.add_argument("--rows", type=int, default=1_000_000, help="rows of the synthetic index (0: none)")
    p.add_argument("--runs", type=int, default=7)
    p.add_argument("--fresh-runs", type=int, default=5, help="fresh `python -c` processes to time (median)")
    p.add_argument("--skip-pages", action="store_true", help="only the budget-change timings")
    p.add_argument("--out", type=Path, default=None, help="also write the markdown here")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("streamlit").setLevel(logging.ERROR)

    from densprune.workspace import default_demo_workspace

    ws = (args.workspace or default_demo_workspace()).resolve()
    if not db.is_complete(ws):
        p.error(f"no workspace at {ws}: build it with `densprune demo --no-app --workspace {ws}`")
    meta = db.load_meta(ws)
    rows: list[list[object]] = []
    if not args.skip_pages:
        temp = None
        if plans.list_plans(ws).empty:  # the Preview and Export pages show more with a saved plan
            temp = "bench-app"
            plans.save_plan(ws, temp, plan_index.load_index(ws).compute(PlanParams(keep=0.3)), overwrite=True)
        try:
            rows += page_open_times(ws, args.runs, args.fresh_runs)
        finally:
            if temp:
                plans.delete_plan(ws, temp)

    index = plan_index.load_index(ws)
    concepts = page_data.concept_frame(db.load_clusters(ws), index)
    cats = page_data.category_codes(ws) if meta.get("has_categories") else None
    curve = db.query_df(ws, "SELECT eps, kept_fraction FROM dedup_curve ORDER BY eps")
    rows.append([f"budget change, {ws.name} ({meta['n_samples']:,} rows, K={meta['k']})",
                 *ms(budget_change(index, concepts, cats, curve, args.runs), 1)])

    if args.rows:
        index, concepts, cats, curve, build = synthetic(args.rows)
        rows.append([f"budget change, synthetic ({args.rows:,} rows, K=500, 20 categories)",
                     *ms(budget_change(index, concepts, cats, curve, args.runs), 1)])
        rows.append([f"(one-off) PlanIndex.build on the synthetic {args.rows:,} rows", *ms(build)])

    text = (f"App latency, median of {args.runs} runs (fresh process: of {args.fresh_runs}); CPU = this process's "
            "CPU time (the child's for the fresh process), what the work costs whatever else runs on the machine\n\n"
            + table(["what", "wall ms", "CPU ms"], rows))
    publish(text, args.out, "app.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
