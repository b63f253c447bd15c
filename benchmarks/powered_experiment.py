"""Issue 24's experiment: CLIP models trained from scratch on each plan's subset of the decontaminated demo,
with the clustering seed varied per seed, and paired bootstrap intervals over seeds and eval images.

Per seed s: a copy of the workspace reclustered with ``densprune recluster --seed s`` on the pool that
SemDeDup eps 0.05 leaves (the library call, recluster.recluster); the six arms' plans on it, keep 30% of
what dedup leaves; a ``cpu-tiny`` CLIP model trained on each with training seed s for the same samples
seen (equal compute); the held-out eval split scored per image (the run's ``eval_per_image.npz``).

Arms: random; DBP tau 0.1; DBP with tau set so exp(H(P)) is about K/2; balanced with the hardest
members; balanced with random members; Sorscher's prototype (hardest). Primary metric and contrasts are
declared in this file before the run (PRIMARY, CONTRASTS); intervals are percentile intervals of a
two-way bootstrap (seeds and eval images resampled together, every arm on the same resample), p from
the same bootstrap, Holm over the primary metric's contrasts.

    nohup python benchmarks/powered_experiment.py --workspace workspaces/demo-clean --seeds 0 1 2 3 \\
        > benchmarks/results/powered_experiment.log 2>&1 &

Resumable: finished runs are skipped; the results (benchmarks/results/powered_experiment.md + .json) are
rewritten after every run, so a partial grid is reported as far as it got, with its seeds counted.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent.parent), str(Path(__file__).resolve().parent)]  # this checkout
import numpy as np  # noqa: E402
from _util import command_line, machine, save_result, table  # noqa: E402
from proxy_experiment import arm_params, bootstrap, half_k_temperature, holm  # noqa: E402

from densprune import db  # noqa: E402
from densprune.pipeline.recluster import recluster  # noqa: E402
from densprune.prune.plan_index import load_index  # noqa: E402
from densprune.prune.plans import list_plans, save_plan  # noqa: E402
from densprune.train import records, supervisor  # noqa: E402
from densprune.train.schedule import RunSpec  # noqa: E402

log = logging.getLogger("powered_experiment")

DEDUP_EPS = 0.05
KEEP = 0.3
PRIMARY = "i2t_r5"  # declared before the run: image -> caption recall@5 among the eval captions
METRICS = ("i2t_r5", "i2t_r1", "t2i_r5", "zeroshot_top1")
ARMS = ("random", "dbp", "dbp-halfK", "balanced-hard", "balanced-random", "prototype-hard")
CONTRASTS = (("dbp", "random"), ("dbp", "balanced-hard"), ("dbp-halfK", "balanced-hard"),
             ("balanced-hard", "balanced-random"), ("balanced-random", "random"), ("prototype-hard", "random"))


def seed_workspace(src: Path, root: Path, seed: int) -> Path:
    """A copy of ``src`` reclustered with ``seed`` (made once)."""
    ws = root / f"s{seed}"
    if (ws / "recluster.done").exists():
        return ws
    shutil.rmtree(ws, ignore_errors=True)
    shutil.copytree(src, ws, ignore=shutil.ignore_patterns("plans", "exports", "index", ".work", "runs", ".densprune*"))
    recluster(ws, DEDUP_EPS, seed=seed, drop_plans=True)
    (ws / "recluster.done").write_text(str(seed))
    return ws


def ensure_plans(ws: Path, seed: int) -> dict:
    index = load_index(ws)
    tau = half_k_temperature(index, KEEP)
    have = set(list_plans(ws)["name"])
    for arm in ARMS:
        if arm not in have:
            save_plan(ws, arm, index.compute(arm_params(arm, KEEP, seed, tau)))
    return {"tau_half": tau, "k": index.n_clusters}


def run_arm(ws: Path, arm: str, seed: int, preset: str, samples_seen: int) -> Path:
    name = f"{arm}-s{seed}"
    rdir = records.run_dir(ws, name)
    if (rdir / records.PER_IMAGE).exists():
        return rdir
    runs = db.load_runs(ws)
    if not runs[runs.name == name].empty or rdir.exists():  # an unfinished attempt: start over
        db.delete_run(ws, name)
        shutil.rmtree(rdir, ignore_errors=True)
    records.create_run(ws, RunSpec(plan=arm, preset=preset, seed=seed, name=name, device="cpu",
                                   samples_seen=samples_seen))
    t0 = time.monotonic()
    row = supervisor.execute_run(ws, name)
    log.info("run %s/%s: %s in %.0f s%s", ws.name, name, row["status"], time.monotonic() - t0,
             f" ({row['error']})" if row.get("error") else "")
    return rdir


def report(root: Path, seeds: list[int], info: dict, args: argparse.Namespace, n_boot: int) -> None:
    done = [s for s in seeds if all((records.run_dir(root / f"s{s}", f"{a}-s{s}") / records.PER_IMAGE).exists()
                                    for a in ARMS)]
    if not done:
        return
    out = {a: {m: np.stack([np.load(records.run_dir(root / f"s{s}", f"{a}-s{s}") / records.PER_IMAGE)[m]
                            for s in done]).astype(np.float64) for m in METRICS} for a in ARMS}
    rng = np.random.default_rng(0)
    rows = [[a, *[f"{100 * out[a][m].mean():.1f}" for m in METRICS]] for a in ARMS]
    res = []
    for a, b in CONTRASTS:
        for m in METRICS:
            mean, lo, hi, p = bootstrap(out[a][m] - out[b][m], n_boot, rng)
            res.append({"a": a, "b": b, "metric": m, "mean": mean, "lo": lo, "hi": hi, "p": p})
    prim = [r for r in res if r["metric"] == PRIMARY]
    for r, adj in zip(prim, holm([r["p"] for r in prim])):
        r["p_holm"] = adj

    def cell(a: str, b: str, m: str) -> str:
        r = next(r for r in res if (r["a"], r["b"], r["metric"]) == (a, b, m))
        return f"{100 * r['mean']:+.1f} [{100 * r['lo']:+.1f}, {100 * r['hi']:+.1f}]"

    n_eval = out[ARMS[0]][METRICS[0]].shape[1]
    taus = [info[s]["tau_half"] for s in done if s in info]
    text = "\n\n".join([
        f"{len(done)} seeds done ({done}) of {seeds}; `{args.preset}` from scratch, {args.samples_seen:,} samples seen "
        f"per run (equal compute); keep {KEEP:.0%} of what SemDeDup eps {DEDUP_EPS} leaves; every seed reclusters "
        f"(k-means seed = plan seed = training seed); {n_eval} eval images of {args.workspace} (decontaminated). "
        f"Primary metric, declared before the run: {PRIMARY}. DBP tau for exp(H(P)) = K/2: "
        + (f"{min(taus):.4f}-{max(taus):.4f}." if taus else "-"),
        "Mean over seeds and eval images, %:\n\n" + table(["arm", *METRICS], rows),
        f"Paired differences (a - b), points, 95% two-way bootstrap interval ({n_boot} resamples of seeds and eval "
        f"images); p two-sided; Holm over the {len(CONTRASTS)} primary contrasts:\n\n" + table(
            ["a - b", *METRICS, f"p ({PRIMARY})", "p Holm"],
            [[f"{a} - {b}", *[cell(a, b, m) for m in METRICS],
              f"{next(r for r in prim if (r['a'], r['b']) == (a, b))['p']:.3f}",
              f"{next(r for r in prim if (r['a'], r['b']) == (a, b))['p_holm']:.3f}"] for a, b in CONTRASTS]),
    ])
    path = save_result(text, args.out, "powered_experiment.md")
    path.with_suffix(".json").write_text(json.dumps({"command": command_line(), "machine": machine(), "seeds": done,
                                                     "contrasts": res, "info": {str(k): v for k, v in info.items()},
                                                     "means": {a: {m: float(out[a][m].mean()) for m in METRICS}
                                                               for a in ARMS}}, indent=1))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workspace", type=Path, required=True, help="a decontaminated workspace (precompute "
                                                                  "--decontaminate)")
    ap.add_argument("--root", type=Path, default=Path("workspaces/powered"), help="where the per-seed copies go")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    ap.add_argument("--preset", default="cpu-tiny")
    ap.add_argument("--samples-seen", type=int, default=30_000)
    ap.add_argument("--boot", type=int, default=2000)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if db.load_meta(args.workspace).get("decontaminate") is None:
        raise SystemExit(f"{args.workspace} is not decontaminated: build it with `precompute --decontaminate SIM`")
    args.root.mkdir(parents=True, exist_ok=True)
    info: dict = {}
    for seed in args.seeds:
        ws = seed_workspace(args.workspace, args.root, seed)
        info[seed] = ensure_plans(ws, seed)
        for arm in ARMS:
            run_arm(ws, arm, seed, args.preset, args.samples_seen)
            report(args.root, args.seeds, info, args, args.boot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
