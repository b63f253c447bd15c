"""The experiment of issue 5: what a 30% plan buys when a CLIP model is trained on it.

On the demo with the ``cpu-tiny`` preset: the full pool, and DBP / random / SSP at keep 30%, each
at equal samples seen (equal compute) and at equal epochs, for several seeds; zero-shot accuracy
on the held-out eval split's 13 top-level categories, image<->text recall@1/5 on its captions, and
wall time. The full pool at equal epochs is the same run as at equal compute (same schedule), so
the grid is 1 + 3 x 2 = 7 runs per seed.

    nohup python benchmarks/run_experiment.py --seeds 0 1 2 > benchmarks/results/experiment.log 2>&1 &

Runs go seed by seed (all 7 configurations of seed 0 first), each in the foreground of this script
through densprune.train; results are rewritten after every run to benchmarks/results/
experiment.json and experiment.md, so a partial grid is reported as far as it got. Finished runs
are skipped on a rerun (resume). ``random`` uses a different random subset per seed (plan seed =
training seed); DBP and SSP keep the hardest members and are the same subset for every seed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent.parent), str(Path(__file__).resolve().parent)]  # this checkout
from _util import command_line, table

from densprune import db
from densprune.cli.main import REPO_ROOT
from densprune.cli.main import main as cli_main
from densprune.prune.plan_index import load_index
from densprune.prune.plans import list_plans, save_plan
from densprune.prune.selection import PlanParams
from densprune.train import listing, records, supervisor
from densprune.train.presets import get_preset
from densprune.train.schedule import RunSpec, make_schedule

log = logging.getLogger("run_experiment")
METRICS = ("zeroshot_top1", "i2t_r1", "i2t_r5", "t2i_r1", "t2i_r5")
LABELS = {"full": "full pool", "dbp": "DBP", "random": "random", "ssp": "SSP",
          "dbp-rand": "DBP quotas, random members"}


def _suffix(dedup_eps: float | None) -> str:
    return "" if dedup_eps is None else f"-d{round(dedup_eps * 100):02d}"


def ensure_plans(ws: Path, keep: float, temperature: float, seeds: list[int], dedup_eps: float | None = None,
                 dbp_rand: bool = False) -> dict[str, str]:
    """Save the experiment's plans (once); returns {plan name: method label}.

    With ``dedup_eps`` every subset is drawn as in the paper: SemDeDup at that eps first, then ``keep`` of
    what remains (plan names get ``-dEE``); the full pool stays the whole pool. ``dbp_rand`` adds DBP's
    quotas filled with random members (one subset per seed, like ``random``)."""
    k, d = round(keep * 100), _suffix(dedup_eps)
    wanted = {"full": PlanParams(method="random", keep=1.0),
              f"dbp{k}{d}": PlanParams(method="dbp", keep=keep, temperature=temperature, dedup_eps=dedup_eps),
              f"ssp{k}{d}": PlanParams(method="ssp", keep=keep, dedup_eps=dedup_eps)}
    wanted.update({f"random{k}{d}-s{s}": PlanParams(method="random", keep=keep, seed=s, dedup_eps=dedup_eps)
                   for s in seeds})
    if dbp_rand:
        wanted.update({f"dbprand{k}{d}-s{s}": PlanParams(method="dbp", keep=keep, temperature=temperature,
                                                           within="random", seed=s, dedup_eps=dedup_eps)
                       for s in seeds})
    have = set(list_plans(ws)["name"])
    index = load_index(ws)
    for name, params in wanted.items():
        if name not in have:
            save_plan(ws, name, index.compute(params))
    return {name: ("full" if name == "full" else "dbp-rand" if name.startswith("dbprand") else p.method)
            for name, p in wanted.items()}


ABLATIONS = {  # DBP variants at the same budget (equal compute): which part of DBP costs on this data?
    "dbp{k}-easy": {"within": "easy"},  # DBP quotas, but keep the members nearest the centroid
    "dbp{k}-rand": {"within": "random"},  # DBP quotas, random members
    "dbp{k}-tau1": {"temperature": 1.0},  # flatter quotas (tau 1.0), hardest members
    "ssp{k}-easy": {"method": "ssp", "within": "easy"},  # uniform rate per concept, easiest members
}


def ensure_ablation_plans(ws: Path, keep: float, temperature: float) -> dict[str, str]:
    k = round(keep * 100)
    have = set(list_plans(ws)["name"])
    index = load_index(ws)
    out = {}
    for pattern, change in ABLATIONS.items():
        name = pattern.format(k=k)
        params = PlanParams(**{"method": "dbp", "keep": keep, "temperature": temperature, **change})
        if name not in have:
            save_plan(ws, name, index.compute(params))
        out[name] = name  # each variant is its own "method" in the tables
    return out


def grid(keep: float, seeds: list[int], dedup_eps: float | None = None, dbp_rand: bool = False,
         full: bool = True) -> list[tuple[int, str, str]]:
    """(seed, plan, mode) in the order they run: seed by seed, so a partial grid stays balanced."""
    k, d = round(keep * 100), _suffix(dedup_eps)
    out = []
    for s in seeds:
        if full:
            out.append((s, "full", "samples"))
        for mode in ("samples", "epochs"):
            plans = [f"dbp{k}{d}", f"random{k}{d}-s{s}", f"ssp{k}{d}"] + ([f"dbprand{k}{d}-s{s}"] if dbp_rand else [])
            for plan in plans:
                out.append((s, plan, mode))
    return out


def run_one(ws: Path, seed: int, plan: str, mode: str, samples_seen: int, epochs: int, preset: str) -> dict:
    base = plan[: plan.rindex("-s")] if plan.startswith(("random", "dbprand")) else plan  # random30-s1 -> random30
    name = f"{base}-{'eqcompute' if mode == 'samples' else 'eqepochs'}-s{seed}"
    runs = db.load_runs(ws)
    prev = runs[runs.name == name]
    if not prev.empty and prev.status.iloc[0] == "done":
        log.info("run %s: done before, skipped", name)
        return {"name": name, "skipped": True}
    if not prev.empty or records.run_dir(ws, name).exists():  # an unfinished earlier attempt: start over
        db.delete_run(ws, name)
        shutil.rmtree(records.run_dir(ws, name), ignore_errors=True)
    spec = RunSpec(plan=plan, preset=preset, seed=seed, name=name, device="cpu",
                   samples_seen=samples_seen if mode == "samples" else None,
                   epochs=epochs if mode == "epochs" else None)
    records.create_run(ws, spec)
    t0 = time.monotonic()
    row = supervisor.execute_run(ws, name)
    log.info("run %s: %s in %.0f s (%s samples)%s", name, row["status"], time.monotonic() - t0,
             row.get("samples_seen"), f" error: {row['error']}" if row.get("error") else "")
    return {"name": name, "skipped": False}


def collect(ws: Path, methods: dict[str, str]) -> list[dict]:
    """One record per finished experiment run of the plans in ``methods`` (run names ``PLAN-eqcompute-sSEED``
    / ``-eqepochs-``)."""
    df = listing.results_table(ws)
    out = []
    for r in df.to_dict("records"):
        if (r["status"] != "done" or r["plan"] not in methods
                or ("-eqcompute-s" not in r["name"] and "-eqepochs-s" not in r["name"])):
            continue
        out.append({"run": r["name"], "plan": r["plan"], "method": methods[r["plan"]],
                    "mode": r["mode"], "seed": int(r["seed"]), "n_train": int(r["n_train"]), "epochs": int(r["epochs"]),
                    "samples_seen": int(r["samples_seen"]), "wall_s": float(r["wall_s"]),
                    **{m: float(r[m]) for m in METRICS}})
    return sorted(out, key=lambda x: (x["seed"], x["mode"], x["plan"]))


def _ms(values: list[float], pct: bool = True) -> str:
    f = 100.0 if pct else 1.0
    if not values:
        return "-"
    if len(values) == 1:
        return f"{f * values[0]:.1f}"
    return f"{f * statistics.mean(values):.1f} ± {f * statistics.stdev(values):.1f}"


def summarize(records: list[dict]) -> tuple[list[dict], list[dict]]:
    """Per (method, mode): mean and sample std over seeds; and DBP minus random paired by seed."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in records:
        modes = ("samples", "epochs") if r["method"] == "full" else (r["mode"],)
        for mode in modes:  # the full pool is both the equal-compute and the equal-epochs reference
            groups.setdefault((r["method"], mode), []).append(r)
    rows = []
    order = ["full", "dbp", "random", "ssp"] + sorted({m for m, _ in groups} - {"full", "dbp", "random", "ssp"})
    for mode in ("samples", "epochs"):
        for method in order:
            g = groups.get((method, mode), [])
            if not g:
                continue
            rows.append({"method": method, "mode": mode, "seeds": sorted(r["seed"] for r in g),
                         "n_train": g[0]["n_train"], "epochs": g[0]["epochs"],
                         "samples_seen": statistics.mean(r["samples_seen"] for r in g),
                         "wall_s": [r["wall_s"] for r in g], **{m: [r[m] for r in g] for m in METRICS}})
    diffs = []
    for mode in ("samples", "epochs"):
        by = {(r["method"], r["seed"]): r for r in records if r["mode"] == mode}
        variants = sorted({m for m, _ in by} - {"dbp", "full", "random", "ssp"})  # dbp-rand, ablations
        pairs = [("dbp", "random"), ("dbp", "ssp"), ("ssp", "random")] + [(v, "random") for v in variants]
        for a, b in pairs:
            seeds = sorted(s for (m, s) in by if m == a and (b, s) in by)
            if seeds:
                diffs.append({"mode": mode, "a": a, "b": b, "seeds": seeds,
                              **{m: [by[(a, s)][m] - by[(b, s)][m] for s in seeds] for m in METRICS}})
    return rows, diffs


def markdown(rows: list[dict], diffs: list[dict], meta: dict) -> str:
    mode_name = {"samples": "equal compute", "epochs": "equal epochs"}
    body = table(
        ["subset", "comparison", "images", "epochs", "samples seen", "wall (s)", "zero-shot top-1 %",
         "I→T R@1 %", "I→T R@5 %", "T→I R@1 %", "T→I R@5 %", "seeds"],
        [[LABELS.get(r["method"], r["method"]), mode_name[r["mode"]], f"{r['n_train']:,}", r["epochs"],
          f"{r['samples_seen']:,.0f}", _ms(r["wall_s"], pct=False), *[_ms(r[m]) for m in METRICS],
          len(r["seeds"])] for r in rows])
    dtab = table(["comparison", "difference", "zero-shot top-1 (pts)", "I→T R@1", "I→T R@5", "T→I R@1", "T→I R@5",
                  "seeds (paired)"],
                 [[mode_name[d["mode"]], f"{LABELS.get(d['a'], d['a'])} − {LABELS.get(d['b'], d['b'])}",
                   *[_ms(d[m]) for m in METRICS], len(d["seeds"])] for d in diffs])
    head = f"Command: `{meta['command']}`\n\n" if meta.get("command") else ""
    return (f"{head}### DBP on the demo, `{meta['preset']}` from scratch (mean ± sample std over seeds)\n\n{body}\n\n"
            f"Paired by seed (same training seed), in percentage points:\n\n{dtab}\n\n"
            f"Eval: {meta['n_eval']} held-out images (20 per top-level category with >= 100 images, never in the "
            f"pool); zero-shot over {meta['n_classes']} categories (chance {100 / meta['n_classes']:.1f}%), "
            f"prompts like \"clip art of {{category}}.\"; retrieval among the {meta['n_eval']} eval captions. "
            f"{_budget_text(meta)}, DBP tau {meta['temperature']}, K = {meta['k']} ({_embedder_text(meta)}). "
            f"Wall time on {meta['machine']}, shared with other work: timings are noisy. "
            f"Generated {meta['finished']} by benchmarks/run_experiment.py.\n")


def _budget_text(meta: dict) -> str:
    if meta.get("dedup_eps") is None:
        return f"Keep {meta['keep']:.0%} of the pool"
    return (f"SemDeDup eps {meta['dedup_eps']:g} first, then keep {meta['keep']:.0%} of what remains (the paper's "
            f"budget): {meta.get('n_subset', 0):,} images = "
            f"{meta.get('n_subset', 0) / max(meta.get('n_pool', 1), 1):.1%}"
            f" of the {meta.get('n_pool', 0):,}-image pool")


def _embedder_text(meta: dict) -> str:
    if meta.get("embedder") == "offline":
        return "offline embedder: pixel features + caption TF-IDF"
    return f"{meta.get('embedder')} embedder, model {meta.get('model')}, weights {meta.get('weights')}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workspace", type=Path, default=REPO_ROOT / "workspaces" / "experiment",
                    help="demo workspace for the experiment, built when missing (default: %(default)s)")
    ap.add_argument("--preset", default="cpu-tiny")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--keep", type=float, default=0.3)
    ap.add_argument("--temperature", type=float, default=0.1)
    ap.add_argument("--full-epochs", type=int, default=4,
                    help="epochs of the full pool; sets the equal-compute budget and the equal epochs (default: 4)")
    ap.add_argument("--ablation", action="store_true",
                    help="also train the DBP variants of ABLATIONS (equal compute) for the given seeds")
    ap.add_argument("--dedup-eps", type=float, default=None,
                    help="draw every subset as in the paper: SemDeDup at this eps first, then --keep of what remains")
    ap.add_argument("--dbp-rand", action="store_true",
                    help="also train DBP's quotas filled with random members (both comparisons, one subset per seed)")
    ap.add_argument("--full-from", type=Path, default=None, metavar="WS",
                    help="take the full-pool runs (the reference) from this experiment workspace instead of training "
                         "them here: the full pool is the same images whatever the embedder")
    ap.add_argument("--full-only", action="store_true",
                    help="train only the full-pool reference runs of the given seeds "
                         "(for another workspace's --full-from)")
    ap.add_argument("--embedder", choices=("offline", "openclip"), default="offline",
                    help="embedder that builds a missing workspace (default: offline, as `densprune demo`)")
    ap.add_argument("--model", default=None,
                    help="open_clip model of --embedder openclip "
                         "(a densprune run's model: local-dir:WS/runs/RUN/model)")
    ap.add_argument("--weights", default=None,
                    help="checkpoint for --embedder openclip, e.g. a full-pool run's checkpoints/epoch_4.pt")
    ap.add_argument("--report-only", action="store_true", help="train nothing: rewrite the results from the runs")
    ap.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "results" / "experiment.json")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ws = args.workspace
    if not db.is_complete(ws):
        log.info("building the demo workspace in %s", ws)
        if args.embedder == "offline":
            assert cli_main(["demo", "--no-app", "--workspace", str(ws)]) == 0
        else:  # a learned embedder: the demo's images and captions through a CLIP checkpoint
            if not (args.weights and args.model):
                ap.error("--embedder openclip needs --model and --weights CHECKPOINT (no model hub here)")
            assert cli_main(["precompute", "demo", "--workspace", str(ws), "--embedder", "openclip",
                             "--model", args.model, "--weights", str(args.weights), "--device", "cpu"]) == 0
    methods = ensure_plans(ws, args.keep, args.temperature, args.seeds, args.dedup_eps, args.dbp_rand)
    preset = get_preset(args.preset)
    n_full = int(list_plans(ws).set_index("name").loc["full", "n_kept"])
    full = make_schedule(n_full, preset.batch_size, epochs=args.full_epochs)
    samples_seen, epochs = full.samples_seen, args.full_epochs
    wsmeta = db.load_meta(ws)
    dbp_plan = f"dbp{round(args.keep * 100)}{_suffix(args.dedup_eps)}"
    n_classes = int(db.query_df(ws, "SELECT count(DISTINCT top_category) FROM samples WHERE split = 'eval'").iloc[0, 0])
    meta = {"preset": args.preset, "keep": args.keep, "temperature": args.temperature, "seeds": args.seeds,
            "samples_seen_target": samples_seen, "equal_epochs": epochs, "k": wsmeta.get("k"),
            "embedder": wsmeta.get("embedder"), "model": wsmeta.get("model"), "weights": args.weights,
            "dedup_eps": args.dedup_eps, "n_pool": int(wsmeta.get("n_pool", 0)),
            "n_subset": int(list_plans(ws).set_index("name").loc[dbp_plan, "n_kept"]),
            "full_from": str(args.full_from) if args.full_from else None, "n_eval": int(wsmeta.get("n_eval", 0)),
            "n_classes": n_classes,
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, CPU only",
            "workspace": str(ws), "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": command_line()}
    log.info("equal compute: %d samples seen (%d epochs of the full pool); equal epochs: %d", samples_seen,
             args.full_epochs, epochs)
    jobs = grid(args.keep, args.seeds, args.dedup_eps, args.dbp_rand, full=args.full_from is None)
    if args.full_only:
        jobs = [(s, "full", "samples") for s in args.seeds]
    if args.ablation:
        extra = ensure_ablation_plans(ws, args.keep, args.temperature)
        methods.update(extra)
        jobs = [(s, plan, "samples") for s in args.seeds for plan in extra]
        meta["ablation"] = {name.format(k=round(args.keep * 100)): change for name, change in ABLATIONS.items()}
    if args.report_only:  # keep when the runs were made
        old = json.loads(args.out.read_text())["meta"] if args.out.exists() else {}
        write_results(ws, methods, {**meta, **{k: old[k] for k in ("started", "finished") if k in old}}, args.out,
                      old.get("elapsed_s", 0.0), keep_finished="finished" in old)
        return 0
    t0 = time.monotonic()
    for seed, plan, mode in jobs:
        run_one(ws, seed, plan, mode, samples_seen, epochs, args.preset)
        write_results(ws, methods, meta, args.out, time.monotonic() - t0)
    write_results(ws, methods, meta, args.out, time.monotonic() - t0)
    log.info("done in %.0f s: %s", time.monotonic() - t0, args.out)
    return 0


def write_results(ws: Path, methods: dict[str, str], meta: dict, out: Path, elapsed: float,
                  keep_finished: bool = False) -> None:
    records = collect(ws, methods)
    if meta.get("full_from"):  # the reference runs live in another workspace (same images, same seeds)
        records = [r for r in records if r["method"] != "full"] + collect(Path(meta["full_from"]), {"full": "full"})
    rows, diffs = summarize(records)
    finished = meta["finished"] if keep_finished else datetime.now(timezone.utc).isoformat(timespec="seconds")
    meta = {**meta, "finished": finished, "elapsed_s": round(elapsed, 1), "n_runs_done": len(records)}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "runs": records, "summary": rows, "dbp_minus": diffs}, indent=2))
    out.with_suffix(".md").write_text(markdown(rows, diffs, meta))


if __name__ == "__main__":
    sys.exit(main())
