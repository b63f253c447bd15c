"""CLI commands for plans and exports: ``plan``, ``plans``, ``compare``, ``export``."""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

log = logging.getLogger("densprune")


BUDGET_HELP = """\
The budget, as in the paper: the pipeline is pool -> SemDeDup (--dedup-eps) -> CLIP filter
(--clip-keep / --clip-threshold) -> the method, and --keep 0.3 keeps 30% of what REMAINS after
dedup and the CLIP filter (the paper deduplicates LAION-CAT-440M to 277M and keeps 60/40/30% of
that). --clip-keep is a fraction of what dedup left. An absolute count (--keep 250000) stays a
count; one larger than what remains is an error that says how much remains. Held-out eval rows
are never in the pool. DBP measures each concept (d_intra) on what remains."""


def parse_keep(text: str) -> float | int:
    """'0.3' or '30%' -> fraction 0.3 of the remaining pool; a plain integer '250000' -> an absolute count."""
    t = text.strip()
    try:
        if t.endswith("%"):
            return float(t[:-1]) / 100.0
        if any(ch in t for ch in ".eE"):
            return float(t)
        return int(t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--keep {text!r}: give a fraction (0.3, 30%) or a count (250000)") from None


def add_plan_flags(p: argparse.ArgumentParser) -> None:
    """The knobs of a plan (shared by ``plan`` and ``train``)."""
    import dataclasses

    from densprune.prune.selection import METHODS, WITHIN, PlanParams

    D = {f.name: f.default for f in dataclasses.fields(PlanParams)}  # the one home of the plan defaults
    p.add_argument("--keep", type=parse_keep, required=True,
                   help="budget: a fraction of what remains after dedup and the CLIP filter (0.3 or 30%%), "
                        "or an absolute count (250000)")
    p.add_argument("--method", choices=METHODS, default=D["method"],
                   help="dbp (complexity quotas), ssp (same rate per cluster), balanced (the same count per "
                        "cluster, water-filled), prototype (one threshold on the distance to the centroid over "
                        "the whole pool, Sorscher et al. 2022: --within hard keeps the farthest, easy the nearest), "
                        "hierarchical (equal shares down a k-means tree of the concepts, Vo et al. 2024), random, "
                        "clip-score, negclip (top negCLIPLoss, Wang et al. 2024: `densprune negclip` first), dedup "
                        "(default: %(default)s)")
    p.add_argument("--temperature", "--tau", type=float, default=D["temperature"],
                   help="DBP softmax temperature (paper: 0.1) (default: %(default)s)")
    p.add_argument("--neighbors", type=int, default=D["neighbors"],
                   help="l nearest centroids for d_inter (default: %(default)s)")
    p.add_argument("--balance", type=float, default=D["balance"],
                   help="cluster balancing ratio; 0 = at least 1 per cluster (default: %(default)s)")
    p.add_argument("--dedup-eps", type=float, default=None,
                   help="SemDeDup eps in [0, 1]: drop members with max similarity > 1 - eps (0: exact copies only)")
    p.add_argument("--clip-keep", type=float, default=None,
                   help="keep only the top fraction, by CLIP score, of what dedup left")
    p.add_argument("--clip-threshold", type=float, default=None, help="keep only samples with CLIP score >= this")
    p.add_argument("--within", choices=WITHIN, default=D["within"],
                   help="which members fill a cluster's quota: hard = farthest from the centroid (default)")
    p.add_argument("--seed", type=int, default=D["seed"], help="seed for random selection (default: %(default)s)")


def params_from_args(args: argparse.Namespace):
    from densprune.prune.selection import PlanParams

    return PlanParams(method=args.method, keep=args.keep, temperature=args.temperature, neighbors=args.neighbors,
                      balance=args.balance, dedup_eps=args.dedup_eps, clip_keep=args.clip_keep,
                      clip_threshold=args.clip_threshold, within=args.within, seed=args.seed)


def add_commands(sub: argparse._SubParsersAction) -> None:
    from densprune.export.writers import FORMATS

    p = sub.add_parser("plan", help="compute a pruning plan and store it in the workspace", description=BUDGET_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("workspace", type=Path)
    p.add_argument("--name", required=True, help="plan name (letters, digits, _ . -)")
    add_plan_flags(p)
    p.add_argument("--overwrite", action="store_true", help="replace an existing plan of that name")
    p.add_argument("--tau-spreads", type=float, default=None, metavar="R",
                   help="DBP: the temperature as R x the spread (standard deviation) of the concepts' complexity, "
                        "so that the same R is as sharp on any embedder (replaces --temperature)")
    d = p.add_mutually_exclusive_group()
    d.add_argument("--ignore-decisions", action="store_true",
                   help="the pure method: leave the workspace's tags and concept rules out (they apply by default)")
    d.add_argument("--decisions-from", metavar="PLAN", default=None,
                   help="apply the decisions saved plan PLAN recorded (its snapshot), not today's: the same mask "
                        "whatever was tagged since")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("plans", help="list the plans of a workspace")
    p.add_argument("workspace", type=Path)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_plans)

    p = sub.add_parser("compare", help="compare two plans: kept per cluster and samples that flip")
    p.add_argument("workspace", type=Path)
    p.add_argument("plan_a")
    p.add_argument("plan_b")
    p.add_argument("--top", type=int, default=10, help="clusters with the largest difference to show")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("export", help="export a plan's keep set")
    p.add_argument("workspace", type=Path)
    p.add_argument("--plan", required=True)
    p.add_argument("--format", choices=FORMATS, required=True,
                   help="parquet | csv (open_clip_train) | datacomp (uid subset .npy) | mask | keys | webdataset")
    p.add_argument("--out", type=Path, default=None, help="output path (default: DIR/exports/PLAN.<ext>)")
    p.set_defaults(func=cmd_export)


def plan_decisions(workspace: Path, ignore: bool = False, from_plan: str | None = None):
    """The decisions a plan applies: none (``ignore``), a saved plan's snapshot, or the workspace's."""
    from densprune.prune.curation import decisions_from_snapshot, load_decisions
    from densprune.prune.plans import load_plan_row

    if ignore:
        return None
    if from_plan is not None:
        digest = load_plan_row(workspace, from_plan).get("decisions")
        if not digest:
            raise ValueError(f"plan {from_plan!r} was computed without decisions; drop --decisions-from, or use "
                             "--ignore-decisions for the same")
        return decisions_from_snapshot(workspace, digest)
    return load_decisions(workspace)


def cmd_plan(args: argparse.Namespace) -> int:
    from densprune.prune.plan_index import load_index
    from densprune.prune.plans import save_plan, validate_plan_name

    validate_plan_name(args.name)
    params = params_from_args(args)
    decisions = plan_decisions(args.workspace, args.ignore_decisions, args.decisions_from)
    index = load_index(args.workspace)
    if args.tau_spreads is not None:
        from dataclasses import replace

        from densprune.prune.diagnostics import relative_temperature

        first = index.compute(params, mask=False, decisions=decisions)  # C does not depend on tau
        params = replace(params, temperature=relative_temperature(first.complexity, first.eligible, args.tau_spreads))
        print(f"temperature: {args.tau_spreads:g} spreads of the complexity = {params.temperature:.4g}")
    t = time.perf_counter()
    result = index.compute(params, decisions=decisions)
    ms = (time.perf_counter() - t) * 1000
    save_plan(args.workspace, args.name, result, overwrite=args.overwrite, decisions=decisions)
    print(f"plan {args.name}: {params.method}, kept {result.n_kept:,} = {share(result.n_kept, result.n_eligible)} of "
          f"the {result.n_eligible:,} remaining after dedup and the CLIP filter, "
          f"{share(result.n_kept, result.pool_size)} "
          f"of the {result.pool_size:,} in the pool; computed in {ms:.1f} ms")
    from densprune.prune.diagnostics import plan_diagnostics

    diag = plan_diagnostics(result).sentence()
    if diag:
        print(f"weights: {diag}")
    print(decisions_line(result, args.ignore_decisions))
    for e in result.effects:
        if e["kind"] == "rule":
            print(f"  {e['decision']}: kept {e['kept']:,} (without decisions {e['kept_without']:,}, {e['moved']:+,})")
        elif e["kind"] == "tag":
            print(f"  {e['decision']}: {e['rows']:,} rows")
    for note in result.notes:
        print(f"note: {note}")
    return 0


def decisions_line(result, ignored: bool = False) -> str:
    """One line saying which decisions a plan applied."""
    if result.decisions is None:
        return ("decisions: ignored (--ignore-decisions): the pure method" if ignored
                else "decisions: none in force (tag rows with `densprune tag`, give concepts rules with "
                     "`densprune rule`)")
    total = next(e for e in result.effects if e["kind"] == "total")
    return (f"decisions {result.decisions} applied (--ignore-decisions for the pure method): "
            f"{result.forced:,} images kept by force, {total['never_eligible']:,} taken out by never tags, "
            f"{total['moved']:,} images moved between concepts")


def share(part: int, whole: int) -> str:
    """'30.0%' (of a whole of 0: '-')."""
    return f"{part / whole:.1%}" if whole else "-"


def cmd_plans(args: argparse.Namespace) -> int:
    import pandas as pd

    from densprune.prune.plans import list_plans

    df = list_plans(args.workspace)
    if args.json:
        from densprune import db
        from densprune.prune.diagnostics import saved_plan_diagnostics

        out = json.loads(df.to_json(orient="records", date_format="iso"))
        for rec in out:
            d = saved_plan_diagnostics(rec["method"], json.loads(rec["params"]) if isinstance(rec["params"], str)
                                       else rec["params"] or {}, rec.get("decisions"),
                                       db.load_plan_clusters(args.workspace, rec["name"]))
            rec["diagnostics"] = d.as_dict() if d is not None else None
        print(json.dumps(out))
    elif df.empty:
        print("no plans yet: create one with `densprune plan DIR --name NAME --keep 0.3`")
    else:
        for r in df.itertuples():
            remaining = int(r.eligible) if pd.notna(r.eligible) else r.pool_size  # NULL: no per-cluster rows
            dec = f"decisions {r.decisions}" if isinstance(r.decisions, str) and r.decisions else "no decisions"
            print(f"{r.name:<24} {r.method:<10} kept {r.n_kept:>10,} of {remaining:,} remaining "
                  f"({share(r.n_kept, remaining)}; {share(r.n_kept, r.pool_size)} of the pool of {r.pool_size:,})  "
                  f"{dec}  {r.created_at:%Y-%m-%d %H:%M}  {r.params}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from densprune.prune.compare import compare_saved_plans

    cmp = compare_saved_plans(args.workspace, args.plan_a, args.plan_b)
    print(json.dumps(cmp.summary(top=args.top), indent=2, default=str))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from densprune.export.writers import export_plan

    out = export_plan(args.workspace, args.plan, args.format, args.out)
    print(f"wrote {out} (manifest: {out.name}.manifest.json)")
    return 0
