"""Benchmark: plan time with a curator's decisions (concept rules + row tags) against the same plans without.

The goal (issue "Curation that feeds the plan"): with 1,000 concept rules and 1M tagged rows every plan
method stays under 1 s on 10M rows. For each method the same PlanParams are computed with and without
the decisions, as the app does on a slider move (counts only: ``mask=False``) and as a save does (with
the keep mask), median of ``--repeat`` runs after a warm-up, wall and CPU ms, and the ratio. The
decisions: ``--rules`` concept rules (a mix of weight, floor, cap, drop and keep-whole on random
concepts; at most one per concept, so a workspace of K concepts takes at most K) and ``--tagged`` rows
(90% tagged never, 10% always). Every plan with decisions is checked to obey them (never rows dropped,
always rows kept, dropped concepts keep only their always rows, the total is the budget).

    python benchmarks/bench_decisions.py --workspace workspaces/ws-10m --rules 500 --tagged 1000000
    python benchmarks/bench_decisions.py --size 10000000 --clusters 1000 --rules 1000 --tagged 1000000
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

sys.path[:0] = [str(Path(__file__).resolve().parent.parent), str(Path(__file__).resolve().parent)]  # this checkout
from _util import command_line, machine, publish  # noqa: E402
from bench_plan import median_ms, synthetic  # noqa: E402

from densprune.prune import plan_index  # noqa: E402
from densprune.prune.decisions import ConceptRule, Decisions, TagSet  # noqa: E402
from densprune.prune.selection import PlanIndex, PlanParams  # noqa: E402

logger = logging.getLogger("bench_decisions")

CASES = [
    ("dbp keep=0.3", PlanParams(keep=0.3)),
    ("dbp keep=0.3 eps=0.07", PlanParams(keep=0.3, dedup_eps=0.07)),
    ("dbp keep=0.3 eps=0.07 clip_keep=0.5", PlanParams(keep=0.3, dedup_eps=0.07, clip_keep=0.5)),
    ("dbp keep=0.3 within=random", PlanParams(keep=0.3, within="random")),
    ("ssp keep=0.3", PlanParams(method="ssp", keep=0.3)),
    ("random keep=0.3", PlanParams(method="random", keep=0.3)),
    ("clip-score keep=0.3", PlanParams(method="clip-score", keep=0.3)),
    ("dedup keep=0.3", PlanParams(method="dedup", keep=0.3)),
]


def make_decisions(index: PlanIndex, n_rules: int, n_tagged: int, seed: int = 0) -> Decisions:
    """``n_rules`` rules on distinct random concepts and ``n_tagged`` random rows (90% never, 10% always)."""
    rng = np.random.default_rng(seed)
    k = index.n_clusters
    if n_rules > k:
        raise ValueError(f"{n_rules} rules need at least as many concepts; this index has {k}")
    rules = []
    for i, j in enumerate(rng.choice(k, size=n_rules, replace=False)):
        kind = ("weight", "floor", "cap", "weight", "cap", "drop", "keep-whole")[i % 7]
        if kind == "weight":
            rules.append(ConceptRule(int(j), kind, float(rng.uniform(0.5, 3.0))))
        elif kind == "floor":
            rules.append(ConceptRule(int(j), kind, 0.2, True))
        elif kind == "cap":
            rules.append(ConceptRule(int(j), kind, 0.4, True))
        elif kind == "keep-whole" and index.sizes[j] > np.median(index.sizes):
            rules.append(ConceptRule(int(j), "weight", 2.0))  # keep small concepts whole, not big ones
        else:
            rules.append(ConceptRule(int(j), kind))
    tagged = rng.choice(index.n_rows, size=n_tagged, replace=False)
    cut = int(0.9 * n_tagged)
    return Decisions(rules=tuple(rules), tags=(TagSet("bench-never", "never", tagged[:cut]),
                                               TagSet("bench-always", "always", tagged[cut:])))


def write_decisions(ws: Path, dec: Decisions) -> None:
    """Store ``dec`` in workspace ``ws`` (tags and rules, as `densprune tag` / `rule` would), for the browser
    benchmark; :func:`remove_decisions` takes them out again."""
    from densprune.prune.curation import add_tag, set_rule

    for t in dec.tags:
        add_tag(ws, t.name, t.action, t.rows, source_kind="rows", source="benchmark", who="benchmark")
    for r in dec.rules:
        amount = None if r.value is None else (f"{r.value * 100:g}%" if r.fraction else f"{r.value:g}")
        set_rule(ws, [r.concept], r.kind, amount, who="benchmark", source="benchmark")


def remove_decisions(ws: Path, dec: Decisions) -> None:
    from densprune.prune.curation import remove_tag, set_rule

    for t in dec.tags:
        remove_tag(ws, t.name, who="benchmark")
    if dec.rules:
        set_rule(ws, [r.concept for r in dec.rules], "auto", who="benchmark", source="benchmark")


def check(index: PlanIndex, result, dec: Decisions) -> None:
    keep = result.keep
    assert int(keep.sum()) == result.budget
    assert not keep[dec.rows("never")].any()
    always = dec.rows("always")
    assert keep[always[index.rows_in_pool()[always]]].all()
    kept = np.bincount(index.rows_cluster()[keep], minlength=index.n_clusters)
    assert np.array_equal(kept, result.kept)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workspace", type=Path, default=None, help="an existing workspace (else synthetic rows)")
    ap.add_argument("--size", type=int, default=10_000_000, help="synthetic N")
    ap.add_argument("--clusters", type=int, default=1000, help="synthetic K")
    ap.add_argument("--rules", type=int, default=1000)
    ap.add_argument("--tagged", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.workspace is not None:
        index = plan_index.load_index(args.workspace)
        what = f"workspace {args.workspace} (N={index.n_rows:,}, K={index.n_clusters})"
    else:
        data = synthetic(args.size, args.clusters, 32)
        index = PlanIndex.build(data["clusters"], data["dist"], data["centroids"], data["in_pool"], data["dup"],
                                data["clip"])
        what = f"synthetic N={index.n_rows:,}, K={index.n_clusters} (lognormal sizes)"
    dec = make_decisions(index, args.rules, args.tagged)
    rows = []
    for label, p in CASES:
        if (p.method == "clip-score" or p.clip_keep is not None) and not index.has_clip_scores:
            continue
        check(index, index.compute(p, decisions=dec), dec)
        t = {"counts": median_ms(lambda: index.compute(p, mask=False), args.repeat),
             "counts+dec": median_ms(lambda: index.compute(p, mask=False, decisions=dec), args.repeat),
             "mask": median_ms(lambda: index.compute(p), args.repeat),
             "mask+dec": median_ms(lambda: index.compute(p, decisions=dec), args.repeat)}
        rows.append((label, t))
        logger.info("%s: %s", label, {k: f"{v[0]:.1f} ms" for k, v in t.items()})
    lines = [f"{what}; decisions: {len(dec.rules)} concept rules, {dec.rows('never').size:,} rows tagged never, "
             f"{dec.rows('always').size:,} always. Median of {args.repeat} runs after a warm-up; wall ms (CPU ms).", "",
             "| plan | counts (slider) | counts + decisions | ratio | with mask (save) | mask + decisions | ratio |",
             "|---|---|---|---|---|---|---|"]
    for label, t in rows:
        c, cd, m, md = (t[k] for k in ("counts", "counts+dec", "mask", "mask+dec"))
        lines.append(f"| {label} | {c[0]:.1f} ({c[1]:.1f}) | {cd[0]:.1f} ({cd[1]:.1f}) "
                     f"| {cd[1] / max(c[1], 1e-3):.1f}x | {m[0]:.0f} ({m[1]:.0f}) | {md[0]:.0f} ({md[1]:.0f}) "
                     f"| {md[1] / max(m[1], 1e-3):.1f}x |")
    worst = max(max(t["counts+dec"][0], t["mask+dec"][0]) for _, t in rows)
    lines += ["", f"Slowest plan with decisions: {worst:,.0f} ms (goal: under 1,000 ms)."]
    path = publish("\n".join(lines), args.out, "decisions.md")
    path.with_suffix(".json").write_text(json.dumps({"command": command_line(), "machine": machine(), "what": what,
                                                    "rules": len(dec.rules), "tagged": args.tagged,
                                                    "results": {label: t for label, t in rows}}, indent=2))


if __name__ == "__main__":
    main()
