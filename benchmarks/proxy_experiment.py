"""The fast proxy of issue 24: a linear two-tower contrastive learner on frozen features, trained on each
plan's subset of a decontaminated workspace, many seeds, paired bootstrap intervals.

What it is: image features (the workspace's pixel block of the offline embedder's vectors, PCA of pixel
statistics) and caption features (TF-IDF of the captions, SVD, fitted on the pool) are frozen; two
linear maps into a 64-d space are trained with the symmetric InfoNCE loss of CLIP (fixed temperature)
for the same number of steps and batch size on every subset (equal compute). Eval on the held-out eval
split (decontaminated: no pool image within the workspace's stated cosine of an eval image, no shared
caption): image -> caption retrieval among the eval captions and zero-shot over the top-level categories
with the prompt "clip art of {category}.", per eval image, so intervals can resample images.

Per seed s: k-means on the deduplicated pool with seed s (what ``densprune recluster --seed s`` computes,
in memory, the workspace untouched), a plan index on those concepts, every arm's subset from it (random
and within=random arms seeded by s), and the learner's initialisation and batches seeded by s.

Arms at keep 30% of what SemDeDup eps 0.05 leaves: random, DBP tau 0.1, DBP with tau set so exp(H(P))
is about K/2, balanced (hardest members), balanced (random members), hierarchical balanced (random
members, Vo et al.), Sorscher prototype (hardest); and for the budget sweep prototype hard / easy and
DBP hard / easy at keep 10, 30, 50, 70%.

The primary metric and contrasts are fixed in this file (PRIMARY, CONTRASTS) before the run; intervals
are percentile intervals of a two-way bootstrap (seeds and eval images resampled together, paired: every
arm sees the same resample), p-values from the same bootstrap, Holm-corrected over CONTRASTS.

    python benchmarks/proxy_experiment.py --workspace workspaces/demo-clean --seeds 30

A proxy: linear maps on fixed features are not CLIP training; the README says what it can and cannot show.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent.parent), str(Path(__file__).resolve().parent)]  # this checkout
import numpy as np  # noqa: E402
from _util import command_line, machine, save_result, table  # noqa: E402

from densprune import db  # noqa: E402
from densprune.cluster.kmeans import assign, train_spherical_kmeans  # noqa: E402
from densprune.prune.diagnostics import plan_diagnostics  # noqa: E402
from densprune.prune.selection import PlanIndex, PlanParams  # noqa: E402
from densprune.prune.semdedup import is_duplicate  # noqa: E402
from densprune.vectors import cosine_distance, l2_normalize  # noqa: E402
from densprune.workspace import image_vectors  # noqa: E402

log = logging.getLogger("proxy_experiment")

DEDUP_EPS = 0.05
KEEP = 0.3
PRIMARY = "i2t_r5"  # declared before the run: image -> caption recall@5 among the eval captions
METRICS = ("i2t_r1", "i2t_r5", "zeroshot_top1")
ARMS = ("random", "dbp", "dbp-halfK", "balanced-hard", "balanced-random", "hierarchical-random", "prototype-hard")
# the contrasts the intervals are Holm-corrected over (a - b)
CONTRASTS = (("dbp", "random"), ("dbp", "balanced-hard"), ("dbp-halfK", "balanced-hard"),
             ("balanced-hard", "balanced-random"), ("balanced-random", "random"),
             ("hierarchical-random", "balanced-random"), ("prototype-hard", "random"))
SWEEP = (0.1, 0.3, 0.5, 0.7)
SWEEP_ARMS = ("prototype-hard", "prototype-easy", "dbp", "dbp-easy")


def features(ws: Path) -> dict:
    """Frozen features: image pixel block (N, 64), caption TF-IDF SVD (N, 64), prompts (C, 64)."""
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer

    meta = db.load_meta(ws)
    if meta.get("embedder") != "offline":
        raise SystemExit(f"{ws}: the proxy reads the offline embedder's pixel block; this workspace used "
                         f"{meta.get('embedder')!r}")
    arr = db.load_sample_arrays(ws, ("split", "dup_max_sim", "caption", "top_category"))
    vec = np.load(image_vectors(ws))
    image = l2_normalize(vec[:, :64], dtype=np.float64)  # OfflineConfig.image_dims: the pixel PCA block
    captions = [str(c) if c is not None else "" for c in arr["caption"]]
    pool = arr["split"] == "pool"
    ev = arr["split"] == "eval"
    tf = TfidfVectorizer(sublinear_tf=True, min_df=2, stop_words="english").fit([captions[i] for i in
                                                                                 np.flatnonzero(pool)])
    svd = TruncatedSVD(n_components=64, random_state=0).fit(tf.transform([captions[i] for i in np.flatnonzero(pool)]))
    text = l2_normalize(svd.transform(tf.transform(captions)), dtype=np.float64)
    cats = sorted({str(c) for c in arr["top_category"][ev]})
    prompts = l2_normalize(svd.transform(tf.transform([f"clip art of {c.replace('_', ' ')}." for c in cats])),
                           dtype=np.float64)
    labels = np.array([cats.index(str(c)) for c in arr["top_category"][ev]])
    return {"vectors": vec, "image": image, "text": text, "prompts": prompts, "labels": labels, "pool": pool,
            "eval": ev, "dup": arr["dup_max_sim"], "k": int(meta["k"]), "meta": meta, "classes": cats}


def index_for_seed(f: dict, seed: int) -> PlanIndex:
    """k-means with ``seed`` on the pool rows that survive SemDeDup at DEDUP_EPS (recluster's computation)."""
    train = f["pool"] & ~is_duplicate(f["dup"], DEDUP_EPS)
    cen = train_spherical_kmeans(f["vectors"], f["k"], seed=seed, train_rows=np.flatnonzero(train))
    labels, sims = assign(f["vectors"], cen)
    return PlanIndex.build(labels, cosine_distance(sims), cen, f["pool"], f["dup"], None)


def half_k_temperature(index: PlanIndex, keep: float) -> float:
    """The tau whose softmax shares are worth about half the concepts (exp(H(P)) = K/2, by bisection on log tau)."""
    lo, hi = np.log(1e-4), np.log(10.0)
    for _ in range(40):
        mid = (lo + hi) / 2
        r = index.compute(PlanParams(keep=keep, temperature=float(np.exp(mid)), dedup_eps=DEDUP_EPS), mask=False)
        d = plan_diagnostics(r)
        if d.effective_concepts < d.concepts / 2:
            lo = mid
        else:
            hi = mid
    return float(np.exp((lo + hi) / 2))


def arm_params(arm: str, keep: float, seed: int, tau_half: float) -> PlanParams:
    base = dict(keep=keep, dedup_eps=DEDUP_EPS, seed=seed)
    return {"random": PlanParams(method="random", **base),
            "dbp": PlanParams(method="dbp", temperature=0.1, **base),
            "dbp-easy": PlanParams(method="dbp", temperature=0.1, within="easy", **base),
            "dbp-halfK": PlanParams(method="dbp", temperature=tau_half, **base),
            "balanced-hard": PlanParams(method="balanced", **base),
            "balanced-random": PlanParams(method="balanced", within="random", **base),
            "hierarchical-random": PlanParams(method="hierarchical", within="random", **base),
            "prototype-hard": PlanParams(method="prototype", **base),
            "prototype-easy": PlanParams(method="prototype", within="easy", **base)}[arm]


def train_and_eval(f: dict, rows: np.ndarray, seed: int, steps: int, batch: int) -> dict[str, np.ndarray]:
    """Train the two linear towers on ``rows`` (M,) and return per-eval-image outcomes (E,) bool per metric."""
    import torch

    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    xi = torch.as_tensor(f["image"][rows], dtype=torch.float32)
    xt = torch.as_tensor(f["text"][rows], dtype=torch.float32)
    a = torch.nn.Linear(xi.shape[1], 64, bias=False)
    b = torch.nn.Linear(xt.shape[1], 64, bias=False)
    opt = torch.optim.Adam(list(a.parameters()) + list(b.parameters()), lr=5e-3)
    target = torch.arange(batch)
    for _ in range(steps):
        i = torch.randint(len(rows), (batch,), generator=g)
        zi = torch.nn.functional.normalize(a(xi[i]), dim=1)
        zt = torch.nn.functional.normalize(b(xt[i]), dim=1)
        logits = zi @ zt.T / 0.07
        # duplicates in a batch drawn with replacement are rare at these sizes; they count as negatives
        loss = (torch.nn.functional.cross_entropy(logits, target) + torch.nn.functional.cross_entropy(logits.T, target))
        opt.zero_grad()
        (loss / 2).backward()
        opt.step()
    with torch.no_grad():
        ev = np.flatnonzero(f["eval"])
        zi = torch.nn.functional.normalize(a(torch.as_tensor(f["image"][ev], dtype=torch.float32)), dim=1)
        zt = torch.nn.functional.normalize(b(torch.as_tensor(f["text"][ev], dtype=torch.float32)), dim=1)
        zp = torch.nn.functional.normalize(b(torch.as_tensor(f["prompts"], dtype=torch.float32)), dim=1)
        sim = (zi @ zt.T).numpy()
        own = np.diag(sim)
        rank = (sim > own[:, None]).sum(axis=1)  # captions scored above the image's own
        zs = (zi @ zp.T).numpy().argmax(axis=1)
    return {"i2t_r1": rank < 1, "i2t_r5": rank < 5, "zeroshot_top1": zs == f["labels"]}


def bootstrap(diff: np.ndarray, n_boot: int, rng: np.random.Generator) -> tuple[float, float, float, float]:
    """diff (S, E): per seed and eval image, the paired outcome difference. Mean, 95% percentile interval
    and two-sided p of a two-way bootstrap (seeds and images resampled)."""
    s, e = diff.shape
    means = np.empty(n_boot)
    for i in range(n_boot):
        si = rng.integers(0, s, size=s)
        ei = rng.integers(0, e, size=e)
        means[i] = diff[np.ix_(si, ei)].mean()
    p = min(1.0, 2 * min((means <= 0).mean(), (means >= 0).mean()))
    return float(diff.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5)), float(p)


def holm(ps: list[float]) -> list[float]:
    """Holm-adjusted p-values (step-down, monotone)."""
    order = np.argsort(ps)
    adj = np.empty(len(ps))
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(ps) - rank) * ps[i]))
        adj[i] = running
    return adj.tolist()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workspace", type=Path, required=True)
    ap.add_argument("--seeds", type=int, default=30)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--boot", type=int, default=2000)
    ap.add_argument("--no-sweep", action="store_true", help="only the arms at keep 30%")
    ap.add_argument("--out", type=Path, default=None, help="default benchmarks/results/proxy_experiment.md (+ .json)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    import torch

    torch.set_num_threads(2)
    f = features(args.workspace)
    n_eval = int(f["eval"].sum())
    outcomes: dict[tuple[str, float], list[dict[str, np.ndarray]]] = {}
    info: dict[str, list] = {"tau_half": [], "full_pool": []}
    t0 = time.time()
    for seed in range(args.seeds):
        index = index_for_seed(f, seed)
        tau = half_k_temperature(index, KEEP)
        info["tau_half"].append(tau)
        runs = [(arm, KEEP) for arm in ARMS]
        if not args.no_sweep:
            runs += [(arm, keep) for keep in SWEEP for arm in SWEEP_ARMS if (arm, keep) not in runs]
        for arm, keep in runs:
            keep_mask = index.compute(arm_params(arm, keep, seed, tau)).keep
            outcomes.setdefault((arm, keep), []).append(
                train_and_eval(f, np.flatnonzero(keep_mask), seed, args.steps, args.batch))
        full = train_and_eval(f, np.flatnonzero(f["pool"]), seed, args.steps, args.batch)
        info["full_pool"].append({m: float(v.mean()) for m, v in full.items()})
        log.info("seed %d done (tau for exp(H) = K/2: %.4f), %.0f s", seed, tau, time.time() - t0)
    rng = np.random.default_rng(0)
    stack = {key: {m: np.stack([o[m] for o in runs]).astype(np.float64) for m in METRICS}
             for key, runs in outcomes.items()}
    arm_rows = [[arm, *[f"{100 * stack[(arm, KEEP)][m].mean():.1f}" for m in METRICS]] for arm in ARMS]
    full_row = ["full pool (no pruning)", *[f"{100 * np.mean([r[m] for r in info['full_pool']]):.1f}"
                                            for m in METRICS]]
    results = []
    for a, b in CONTRASTS:
        for m in METRICS:
            mean, lo, hi, p = bootstrap(stack[(a, KEEP)][m] - stack[(b, KEEP)][m], args.boot, rng)
            results.append({"a": a, "b": b, "metric": m, "mean": mean, "lo": lo, "hi": hi, "p": p})
    primary = [r for r in results if r["metric"] == PRIMARY]
    for r, adj in zip(primary, holm([r["p"] for r in primary])):
        r["p_holm"] = adj
    sweep = []
    if not args.no_sweep:
        for keep in SWEEP:
            for a, b in (("prototype-hard", "prototype-easy"), ("dbp", "dbp-easy")):
                mean, lo, hi, p = bootstrap(stack[(a, keep)][PRIMARY] - stack[(b, keep)][PRIMARY], args.boot, rng)
                sweep.append({"keep": keep, "a": a, "b": b, "mean": mean, "lo": lo, "hi": hi, "p": p})

    def pts(r: dict) -> str:
        return f"{100 * r['mean']:+.1f} [{100 * r['lo']:+.1f}, {100 * r['hi']:+.1f}]"

    text = "\n\n".join([
        f"Proxy: linear two-tower InfoNCE on frozen features, {args.seeds} seeds (k-means seed = learner seed = plan "
        f"seed), {args.steps} steps x batch {args.batch} for every arm (equal compute); keep {KEEP:.0%} of what "
        f"SemDeDup eps {DEDUP_EPS} leaves; workspace {args.workspace} ({f['meta'].get('decontaminate')!r} "
        f"decontamination cosine, {int(f['pool'].sum()):,} pool images, K = {f['k']}); {n_eval} eval images, "
        f"{len(f['classes'])} categories (zero-shot chance {100 / len(f['classes']):.1f}%). Primary metric, declared "
        f"before the run: {PRIMARY}. DBP tau for exp(H(P)) = K/2: median {np.median(info['tau_half']):.4f} "
        f"(range {min(info['tau_half']):.4f}-{max(info['tau_half']):.4f}).",
        "Mean over seeds and eval images, %:\n\n" + table(["arm", *METRICS], arm_rows + [full_row]),
        f"Paired differences (a - b), points, 95% two-way bootstrap interval ({args.boot} resamples of seeds and eval "
        "images); p two-sided from the bootstrap; Holm over the primary metric's contrasts:\n\n" + table(
            ["a - b", *METRICS, f"p ({PRIMARY})", "p Holm"],
            [[f"{a} - {b}", *[pts(next(r for r in results if (r['a'], r['b'], r['metric']) == (a, b, m)))
                              for m in METRICS],
              f"{next(r for r in primary if (r['a'], r['b']) == (a, b))['p']:.3f}",
              f"{next(r for r in primary if (r['a'], r['b']) == (a, b))['p_holm']:.3f}"] for a, b in CONTRASTS]),
    ] + ([f"Budget sweep, {PRIMARY}, hard - easy members (Sorscher et al. predict easy ahead at small budgets, hard "
          "at large):\n\n" + table(["keep", "prototype hard - easy", "p", "DBP hard - easy", "p"],
                                   [[f"{k:.0%}", *sum(([pts(r), f"{r['p']:.3f}"] for r in sweep if r['keep'] == k),
                                                      [])] for k in SWEEP])] if sweep else []))
    path = save_result(text, args.out, "proxy_experiment.md")
    print(text)
    path.with_suffix(".json").write_text(json.dumps({"command": command_line(), "machine": machine(),
                                                     "contrasts": results, "sweep": sweep, "info": info,
                                                     "arms": {f"{a}@{k}": {m: float(v[m].mean()) for m in METRICS}
                                                              for (a, k), v in stack.items()}}, indent=1))
    log.info("wrote %s", path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
