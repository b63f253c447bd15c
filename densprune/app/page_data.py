"""The data behind the app's pages: workspace queries and per-plan aggregations (no Streamlit here).

Workspace-level reads go through :mod:`densprune.db` (``?`` parameters only). Everything a budget
slider drives is numpy on arrays of length K or one pass over an (N,) mask, so it stays well under a
second on a million rows (benchmarks/bench_app.py); the pages cache the workspace reads.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from densprune import db
from densprune.cluster.concepts import NEIGHBORS, nearest_concepts
from densprune.cluster.labels import ranked_labels, shorten, strip_rank
from densprune.prune.compare import compare_masks
from densprune.prune.decisions import Decisions
from densprune.prune.quotas import complexity_weights
from densprune.prune.selection import PlanIndex, PlanParams, PlanResult
from densprune.workspace import describe_concept_space

NO_CATEGORY = "(none)"
LABEL_SHOWN_CHARS = 60  # labels of older workspaces can be any length


def params_from_state(state: Mapping, meta: dict) -> PlanParams:
    """The plan that the app's knobs (``plan_*`` keys of ``state``) describe on a workspace with ``meta``;
    CLIP filters and the clip-score method only where the workspace has CLIP scores."""
    has_clip = bool(meta.get("has_clip_scores"))
    method = str(state.get("plan_method", "dbp"))
    if (method == "clip-score" and not has_clip) or (method == "negclip" and not meta.get("negclip")):
        method = "dbp"
    return PlanParams(
        method=method,
        keep=float(state.get("plan_keep_pct", 30)) / 100.0,
        temperature=float(state.get("plan_temperature", 0.1)),
        neighbors=int(meta.get("neighbors", NEIGHBORS)),
        balance=float(state.get("plan_balance", 0.0)),
        dedup_eps=round(float(state["plan_dedup_eps"]), 3) if state.get("plan_dedup_on") else None,  # summary levels
        clip_keep=float(state["plan_clip_keep_pct"]) / 100.0 if (has_clip and state.get("plan_clip_on")) else None,
        within=("hard" if method == "prototype" and state.get("plan_within") == "random"  # hard or easy only
                else str(state.get("plan_within", "hard"))),
        seed=int(state.get("plan_seed", 0)),
    )


def concept_name(cluster: int, label: str | None) -> str:
    """'#12 arrows, hole, simple' (just '#12' without a label); labels cut to LABEL_SHOWN_CHARS."""
    if not isinstance(label, str):
        label = ""
    base = strip_rank(label)
    label = shorten(base, LABEL_SHOWN_CHARS) + label[len(base):]  # the ' - 3 of 11' stays whole
    return f"#{int(cluster)} {label}" if label else f"#{int(cluster)}"


def zero_shot_name(label: str | None, similarity: float | None) -> str:
    """'tabby cat (0.27)': a zero-shot name with its similarity ('' without one)."""
    if not isinstance(label, str) or not label:
        return ""
    sim = f" ({similarity:.2f})" if similarity is not None and np.isfinite(similarity) else ""
    return f"{shorten(label, LABEL_SHOWN_CHARS)}{sim}"


def label_sources(meta: dict) -> str:
    """Where the concept names come from, in words (Markdown)."""
    text = ("**Names** are each concept's most distinctive caption words (class-based TF-IDF; dates, numbers, "
            "urls, file formats and words common to most concepts are ignored).")
    vocab = meta.get("zero_shot_vocabulary")
    if vocab:
        n = int(meta.get("zero_shot_vocabulary_size") or 0)
        text += (f" **Zero-shot names** are the entry of *{escape_markdown(vocab)}* ({n:,} entries) whose "
                 f"{escape_markdown(str(meta.get('model', 'CLIP')))} text embedding is nearest the concept's "
                 "centre, with their cosine similarity.")
    else:
        text += " No zero-shot names: the embedder has no text tower (build with `--embedder openclip`)."
    return text


def escape_markdown(text: str) -> str:
    """Backslash-escape Markdown/HTML specials so a caption or label shows as typed in st.markdown."""
    out = []
    for ch in str(text):
        out.append("\\" + ch if ch in "\\`*_{}[]()#+-.!|<>~$&:" else ch)
    return "".join(out)


# --------------------------------------------------------------------------------------------
# workspace
# --------------------------------------------------------------------------------------------

def pipeline_steps(workspace: str | os.PathLike, meta: dict, counts: dict) -> pd.DataFrame:
    """The precompute steps and what they left in the workspace: step, state, detail."""
    ws = Path(workspace)
    t = meta.get("timings_s") or {}

    def sec(key: str) -> str:
        return f" in {t[key]:.1f} s" if key in t else ""

    n, n_rej = (int(meta.get("n_samples", counts.get("samples", 0))),
                int(meta.get("n_rejects", counts.get("rejects", 0))))
    n_exports = len(list((ws / "exports").glob("*.manifest.json"))) if (ws / "exports").exists() else 0
    pretrained = f" / {meta['pretrained']}" if meta.get("pretrained") else ""
    emb = f"{meta.get('embedder')} ({meta.get('model')}{pretrained})"
    rows = [
        ("1. list the source", "done", f"{meta.get('source')} ({meta.get('source_kind')}): {n:,} samples, "
                                        f"{n_rej:,} rejected{sec('list')}"),
        ("2. embed images", "done", f"{emb}, {meta.get('image_dim')}-d vectors{sec('embed')}")
        if meta.get("embedder") != "released" else
        ("2. read released embeddings", "done", f"{meta.get('source_kind')} layout ({meta.get('model')}), "
                                                f"{meta.get('image_dim')}-d {meta.get('dtype')} vectors, "
                                                f"not re-embedded{sec('copy')}"),
        *([("2b. embed for concepts", "done", f"{describe_concept_space(meta)}{sec('embed_concepts')}: k-means, "
            "SemDeDup and the map use these; the CLIP score, search and zero-shot names use the embedder's")]
          if meta.get("concept_dim") else []),
        ("3. cluster into concepts", "done",
         f"spherical k-means, K={meta.get('k')}, seed {meta.get('seed')}{sec('cluster')}"),
        ("4. concept complexity", "done",
         f"d_intra, d_inter over the {meta.get('neighbors', NEIGHBORS)} nearest concepts{sec('concepts')}"),
        ("5. SemDeDup similarities", "done", f"nearest earlier member of every image{sec('dedup')}"),
        ("6. 2-D map", "done", f"UMAP of up to {counts.get('layout', n):,} images and the centroids{sec('layout')}"),
        ("thumbnails", "available" if meta.get("has_thumbnails", True) else "not available",
         "a small image of every sample" if meta.get("has_thumbnails", True)
         else "released embeddings carry no images: the app shows caption, size and URL instead"),
        ("CLIP scores", "available" if meta.get("has_clip_scores") else "not available",
         "image-caption similarity per sample" if meta.get("has_clip_scores")
         else ("the source has neither caption vectors nor a similarity column: CLIP-score filters are off"
               if meta.get("embedder") == "released"
               else "the offline embedder has no text tower: CLIP-score filters are off")),
        ("plans", f"{counts.get('plans', 0)} saved", "save one on the Budget page"),
        ("exports", f"{n_exports} written", "write one on the Export page"),
    ]
    return pd.DataFrame(rows, columns=["step", "state", "detail"])


@dataclass(frozen=True, slots=True)
class CategoryCodes:
    """Top-level category of every row as small integers, for bincounts under any keep mask."""

    codes: np.ndarray  # (N,) int32 in [0, C), row order; rows without a category get NO_CATEGORY's code
    names: tuple[str, ...]  # (C,)
    pool_counts: np.ndarray  # (C,) int64 pool rows per category


def category_codes(workspace: str | os.PathLike) -> CategoryCodes:
    """The top-level category of every row as codes (rows without one get NO_CATEGORY's code)."""
    codes, pool, names = db.category_code_rows(workspace, NO_CATEGORY)
    return CategoryCodes(codes, tuple(names), np.bincount(codes[pool], minlength=len(names)).astype(np.int64))


def coverage(cats: CategoryCodes, masks: dict[str, np.ndarray]) -> pd.DataFrame:
    """Kept share of each category's pool under each keep mask (N,) bool: category, pool, <name>, <name>_pct."""
    out = pd.DataFrame({"category": list(cats.names), "pool": cats.pool_counts})
    denom = np.maximum(cats.pool_counts, 1)
    for name, keep in masks.items():
        kept = np.bincount(cats.codes[keep], minlength=len(cats.names))
        out[name] = kept
        out[f"{name}_pct"] = 100.0 * kept / denom
    return out.sort_values("pool", ascending=False, kind="stable").reset_index(drop=True)


# --------------------------------------------------------------------------------------------
# concepts
# --------------------------------------------------------------------------------------------

def concept_frame(clusters: pd.DataFrame, index: PlanIndex, neighbors: int = NEIGHBORS) -> pd.DataFrame:
    """The clusters table with d_intra/d_inter/complexity as the plans use them, a display name and
    each concept's complexity percentile (0 = least complex)."""
    df = clusters.copy()
    df["label"] = ranked_labels(list(df["label"].fillna("")), df["size"].to_numpy())  # '... - 3 of 11' on clashes
    df["name"] = [concept_name(c, lab) for c, lab in zip(df["cluster"], df["label"])]
    zs_label = df["zs_label"] if "zs_label" in df else pd.Series([None] * len(df))
    zs_sim = df["zs_similarity"] if "zs_similarity" in df else pd.Series([np.nan] * len(df))
    df["zs_name"] = [zero_shot_name(lab, sim) for lab, sim in zip(zs_label, pd.to_numeric(zs_sim))]
    df["d_intra"] = index.d_intra
    df["d_inter"] = index.d_inter(neighbors)
    df["complexity"] = index.complexity(neighbors)
    df["complexity_pct"] = df["complexity"].rank(pct=True) * 100.0
    return df


def namesakes(concepts: pd.DataFrame, j: int) -> pd.DataFrame:
    """The concepts whose label, without its ' - i of n', is concept ``j``'s (largest first; ``attrs['label']``
    holds the shared label); just ``j`` itself when its label is its own or empty."""
    base = concepts["label"].fillna("").map(strip_rank)
    label = base[concepts["cluster"] == j].iloc[0]
    same = concepts[(base == label) & (label != "")] if label else concepts[concepts["cluster"] == j]
    out = same.sort_values(["size", "cluster"], ascending=[False, True]).reset_index(drop=True)
    out.attrs["label"] = label
    return out


def has_zero_shot(concepts: pd.DataFrame) -> bool:
    """Whether the concepts have zero-shot names (a workspace built with a CLIP text tower)."""
    return "zs_name" in concepts and bool((concepts["zs_name"].fillna("") != "").any())


def search_concepts(table: pd.DataFrame, caption_hits: pd.DataFrame, text: str) -> pd.DataFrame:
    """Rows of ``table`` (one per concept: cluster, name, zs_name, ...) whose name or zero-shot name
    contains ``text`` (case-insensitive), or whose captions do (``caption_hits``: cluster, matches).

    Adds ``matches`` (captions containing the text, 0 if none) and ``name_match``; name matches
    come first, then by matches.
    """
    needle = text.strip().casefold()
    out = table.merge(caption_hits[["cluster", "matches"]], on="cluster", how="left")
    out["matches"] = out["matches"].fillna(0).astype(np.int64)
    names = out["name"].fillna("").str.casefold()
    if "zs_name" in out:
        names = names + "\n" + out["zs_name"].fillna("").str.casefold()
    out["name_match"] = [needle in n for n in names] if needle else False
    out = out[out["name_match"] | (out["matches"] > 0)]
    return out.sort_values(["name_match", "matches", "cluster"], ascending=[False, False, True],
                           kind="stable").reset_index(drop=True)


def neighbour_concepts(index: PlanIndex, concepts: pd.DataFrame, j: int, n: int = 6) -> pd.DataFrame:
    """The ``n`` concepts whose centroids are nearest concept ``j``'s: name, distance, size, complexity."""
    near, dist = nearest_concepts(index.centroids, j, n)
    out = concepts.set_index("cluster").loc[near, ["name", "pool_size", "complexity"]].reset_index()
    out.insert(2, "distance", dist)
    return out


def concept_message(pool_size: int, eligible: int, kept: int, size: int, rule: str | None = None) -> str | None:
    """Why a concept shows no or all images under a plan, in words (None when nothing needs saying);
    ``rule``: the concept's rule in force under the plan ('drop', 'keep-whole', ...), if any."""
    if rule == "drop" and size:
        return ("Dropped by its rule: the plan keeps none of its images"
                + (f" except {kept:,} tagged always." if kept else ".") + " Its share went to the other concepts.")
    if rule == "keep-whole" and size:
        return f"Kept whole by its rule: all {eligible:,} of its eligible images are kept."
    if size == 0:
        return "This concept is empty: k-means left no image nearest its centroid, so there is nothing to keep."
    if pool_size == 0:
        return (f"All {size:,} images of this concept are held out for evaluation (eval split): "
                "they are never kept, so the plan cannot keep any.")
    if eligible == 0:
        return (f"None of its {pool_size:,} pool images is eligible under this plan: the deduplication "
                "or CLIP filter removed them all before the budget was shared out.")
    if kept == eligible:
        return f"The plan keeps every one of its {eligible:,} eligible images."
    if kept == 0:
        return "The plan keeps none of its images (a tiny budget spread over many concepts)."
    return None


def kept_and_dropped(index: PlanIndex, j: int, keep: np.ndarray | PlanResult,
                     n: int = 24, decisions: Decisions | None = None) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Concept ``j`` under a keep mask (N,) or a plan (read from concept ``j``'s rows alone:
    PlanIndex.concept_keep): up to ``n`` kept and ``n`` dropped pool rows, each spread evenly over the
    concept from its centre outwards, and the full kept and dropped counts."""
    members = index.members(j, int(index.sizes[j]))  # all of them, nearest the centre first
    rows, pool = index.concept_rows(j)
    if isinstance(keep, PlanResult):
        rows, kept_seg = index.concept_keep(j, keep, decisions)
    else:
        kept_seg = np.asarray(keep[rows], dtype=bool)
    by_row = np.argsort(rows)
    at = by_row[np.searchsorted(rows[by_row], members)]  # each member's place in the concept's rows
    members = members[pool[at]]
    k = kept_seg[at][pool[at]]
    kept, dropped = members[k], members[~k]

    def spread(a: np.ndarray) -> np.ndarray:
        if a.size <= n:
            return a
        return a[np.unique(np.linspace(0, a.size - 1, n).round().astype(np.int64))]

    return spread(kept), spread(dropped), int(kept.size), int(dropped.size)


def size_text(width: object, height: object) -> str:
    """'640×480', or 'size unknown' where the source did not record it."""
    try:
        w, h = int(width), int(height)
    except (TypeError, ValueError):
        return "size unknown"
    return f"{w}×{h}" if w > 0 and h > 0 else "size unknown"


def no_thumbnails_note(meta: dict) -> str:
    """What a grid says instead of thumbnails in a workspace built from released embeddings."""
    return (f"No thumbnails: this workspace was built from released embeddings ({meta.get('source_kind')}), "
            "which carry no images. Tiles show the caption, the original size and the URL; the app never "
            "fetches an image: click a URL to open it in your browser, where your network reaches it.")


def extremes(concepts: pd.DataFrame, n: int = 3, min_pool: int = 8) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The ``n`` least and ``n`` most complex concepts with at least ``min_pool`` pool images."""
    ok = concepts[(concepts["pool_size"] >= min_pool) & concepts["complexity"].notna()]
    if ok.empty:
        ok = concepts[concepts["complexity"].notna()]
    ranked = ok.sort_values("complexity", kind="stable")
    return ranked.head(n), ranked.tail(n).iloc[::-1]


# --------------------------------------------------------------------------------------------
# plans
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True, eq=False)
class BudgetView:
    """A plan next to random and SSP at the same budget, per concept and per category."""

    result: PlanResult
    random: PlanResult  # keep is None without categories (only its counts are shown)
    ssp: PlanResult  # the same
    per_concept: pd.DataFrame  # plan_table() columns + random, random_pct, ssp, ssp_pct
    coverage: pd.DataFrame | None  # see coverage(); None without categories
    keeps_everything: bool  # every eligible sample kept: nothing pruned beyond the filters


def plan_table(concepts: pd.DataFrame, result: PlanResult) -> pd.DataFrame:
    """Per concept: d_intra and complexity as the plan measured them (on what remains after its
    dedup and CLIP filter), eligible, quota and kept under ``result``, the kept share, and (for DBP)
    the softmax target P_j * budget before it is capped at the concept's size."""
    p = result.params
    cols = ["cluster", "name"] + (["zs_name"] if "zs_name" in concepts else [])
    df = concepts[cols + ["size", "pool_size", "d_intra", "d_inter", "complexity"]].copy()
    df["d_intra"] = result.d_intra
    df["complexity"] = result.complexity
    df["eligible"] = result.eligible
    df["quota"] = result.quota
    df["kept"] = result.kept
    with np.errstate(invalid="ignore", divide="ignore"):
        df["kept_pct"] = np.where(result.eligible > 0, 100.0 * result.kept / np.maximum(result.eligible, 1), np.nan)
    if p.method == "dbp":
        df["target"] = complexity_weights(result.complexity, p.temperature) * result.budget
    return df


@dataclass(frozen=True, slots=True)
class BudgetShares:
    """What a plan keeps, as shares of the remaining pool (what the budget counts) and of the raw pool."""

    kept: int
    remaining: int  # pool rows left after dedup and the CLIP filter
    pool: int  # the raw pool (held-out eval rows excluded)

    @property
    def of_remaining(self) -> float:
        return self.kept / self.remaining if self.remaining else float("nan")

    @property
    def of_pool(self) -> float:
        return self.kept / self.pool if self.pool else float("nan")

    def sentence(self) -> str:
        """'1,285 images: 30.0% of the 4,284 that remain after dedup and the CLIP filter, 16.3% of the
        raw pool of 7,861.'"""
        rem = f"{self.of_remaining:.1%}" if self.remaining else "–"
        pool = f"{self.of_pool:.1%}" if self.pool else "–"
        return (f"{self.kept:,} images: {rem} of the {self.remaining:,} that remain after dedup and the CLIP "
                f"filter, {pool} of the raw pool of {self.pool:,}.")


def budget_shares(result: PlanResult) -> BudgetShares:
    """The Budget page's two shares of one plan."""
    return BudgetShares(kept=int(result.n_kept), remaining=int(result.n_eligible), pool=int(result.pool_size))


def budget_view(index: PlanIndex, params: PlanParams, concepts: pd.DataFrame,
                cats: CategoryCodes | None = None, result: PlanResult | None = None,
                decisions: Decisions | None = None) -> BudgetView:
    """Everything the Budget page shows for ``params``: three plan computations (``result``, when given,
    is the plan of ``params`` already computed, with or without its mask) and K-sized tables. The
    category coverage (``cats``) needs the three keep masks: a pass over the rows each. The baselines
    obey the same ``decisions`` as the plan, so the comparison stays fair."""
    masks = cats is not None  # the keep masks only feed the category coverage
    if result is None or (masks and result.keep is None):
        result = index.compute(params, mask=masks, decisions=decisions)
    rnd = index.compute(replace(params, method="random"), mask=masks, decisions=decisions)
    ssp = index.compute(replace(params, method="ssp"), mask=masks, decisions=decisions)
    per = plan_table(concepts, result)
    elig = np.maximum(result.eligible, 1)
    for name, r in (("random", rnd), ("ssp", ssp)):
        per[name] = r.kept
        per[f"{name}_pct"] = np.where(result.eligible > 0, 100.0 * r.kept / elig, np.nan)
    cov = None
    if cats is not None:
        cov = coverage(cats, {"plan": result.keep, "random": rnd.keep, "ssp": ssp.keep})
    keeps_all = result.n_kept >= int(result.eligible.sum())
    return BudgetView(result, rnd, ssp, per, cov, keeps_all)


def rule_kinds(result: PlanResult) -> dict[int, str]:
    """Concept -> the kind of its rule under ``result`` (from the plan's effects; empty without decisions)."""
    return {e["concept"]: e["decision"].split(": ", 1)[1].split()[0] for e in result.effects if e["kind"] == "rule"}


def tag_notes(rows: list[int], decisions: Decisions | None) -> list[str]:
    """Per row, ' · never' or ' · always' when a plan's never / always tag holds it ('' otherwise)."""
    if decisions is None:
        return [""] * len(rows)
    r = np.asarray(rows, dtype=np.int64)
    never = np.isin(r, decisions.rows("never"))
    always = np.isin(r, decisions.rows("always"))
    return [" · never" if n else " · always" if a else "" for n, a in zip(never, always)]


def decision_table(result: PlanResult, concepts: pd.DataFrame) -> pd.DataFrame:
    """The decisions a plan applied, one row each: decision ('concept 12: drop', 'tag junk (never)'),
    target (the concept's name or the tag's name) and effect (a rule: its concept's kept count against the
    same plan without decisions; a tag: its rows). Empty for a plan without decisions."""
    names = dict(zip(concepts["cluster"].astype(int), concepts["name"]))
    out = []
    for e in result.effects:
        if e["kind"] == "rule":
            out.append({"decision": e["decision"], "target": names.get(e["concept"], ""),
                        "effect": f"keeps {e['kept']:,} (without decisions {e['kept_without']:,}, {e['moved']:+,})"})
        elif e["kind"] == "tag":
            out.append({"decision": e["decision"], "target": e["tag"], "effect": f"{e['rows']:,} images"})
    return pd.DataFrame(out, columns=["decision", "target", "effect"])


def rate_by_complexity(per_concept: pd.DataFrame, bins: int = 5) -> pd.DataFrame:
    """Kept share of the pool by complexity quantile: the one-line story of DBP (least -> most complex)."""
    df = per_concept[per_concept["eligible"] > 0].sort_values("complexity", kind="stable")
    if df.empty:
        return pd.DataFrame(columns=["group", "concepts", "eligible", "kept", "kept_pct"])
    bins = max(1, min(bins, len(df)))
    group = np.minimum((np.arange(len(df)) * bins) // len(df), bins - 1)
    agg = df.assign(group=group).groupby("group").agg(concepts=("cluster", "size"), eligible=("eligible", "sum"),
                                                      kept=("kept", "sum"), cmin=("complexity", "min"),
                                                      cmax=("complexity", "max")).reset_index()
    agg["kept_pct"] = 100.0 * agg["kept"] / np.maximum(agg["eligible"], 1)
    agg["group"] = [f"{c0:.3g}–{c1:.3g}" for c0, c1 in zip(agg["cmin"], agg["cmax"])]
    return agg.drop(columns=["cmin", "cmax"])


def compare_keeps(keep_a: np.ndarray, keep_b: np.ndarray, clusters: np.ndarray,
                  concepts: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, int]:
    """Two keep masks (N,) over one workspace: per-concept table (name, kept_a, kept_b, diff),
    rows only in a, rows only in b, and the count kept by both."""
    per, only_a, only_b, both = compare_masks(np.asarray(keep_a, bool), np.asarray(keep_b, bool),
                                              np.asarray(clusters), len(concepts))
    per.insert(1, "name", concepts["name"].to_numpy())
    return per, only_a, only_b, both


def spread_sample(rows: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Up to ``n`` of ``rows``, drawn reproducibly, sorted."""
    rows = np.asarray(rows)
    if rows.size <= n:
        return rows
    return np.sort(np.random.default_rng(seed).choice(rows, size=n, replace=False))


def format_count(n: int | float) -> str:
    """1234 -> '1,234'; 2_500_000 -> '2.5M'."""
    n = float(n)
    if not math.isfinite(n):
        return "–"
    if abs(n) >= 10_000_000:
        return f"{n / 1e6:.1f}M"
    return f"{int(round(n)):,}"


# --------------------------------------------------------------------------------------------
# the Find page
# --------------------------------------------------------------------------------------------

def region_of(selection: Mapping | None) -> dict | None:
    """The region of a plotly selection event (Streamlit's ``event.selection``, whose ``lasso`` and ``box``
    entries hold the drawn ``x`` and ``y`` lists): ``{"lasso": (xs, ys)}`` of the last lasso drawn,
    ``{"box": ((x0, x1), (y0, y1))}`` of the last box, or None when nothing usable was drawn."""
    if not selection:
        return None
    for kind in ("lasso", "box"):
        drawn = [d for d in (selection.get(kind) or []) if isinstance(d, Mapping) and d.get("x") and d.get("y")]
        if not drawn:
            continue
        xs, ys = [float(v) for v in drawn[-1]["x"]], [float(v) for v in drawn[-1]["y"]]
        if kind == "lasso":
            return {"lasso": (xs, ys)} if len(xs) >= 3 and len(xs) == len(ys) else None
        if len(xs) >= 2 and len(ys) >= 2:
            return {"box": ((min(xs), max(xs)), (min(ys), max(ys)))}
    return None


def found_table(hits: pd.DataFrame, concepts: pd.DataFrame, result: PlanResult) -> pd.DataFrame:
    """The concepts a search or region found (hits: cluster, hits, best, images[, centre_inside]) with their
    names and what the plan ``result`` keeps of each: + name, kept, kept_pct (of its eligible)."""
    df = hits.copy()
    cl = df["cluster"].to_numpy(dtype=np.int64)
    names = concepts.set_index("cluster")["name"]
    df.insert(1, "name", names.reindex(cl).fillna("").to_numpy())
    eligible = np.asarray(result.eligible)[cl]
    df["kept"] = np.asarray(result.kept)[cl]
    with np.errstate(invalid="ignore", divide="ignore"):
        df["kept_pct"] = np.where(eligible > 0, 100.0 * df["kept"] / np.maximum(eligible, 1), np.nan)
    return df


def found_notes(rows: np.ndarray, similarity: np.ndarray | None, clusters: np.ndarray, split: list[str],
                tagged: list[str]) -> list[str]:
    """The caption under each found tile: '3 · sim 0.812 · #12' (its number, similarity when the search
    has one, its concept), '· eval' for held-out rows, and its never / always tag."""
    out = []
    for i, (c, s, t) in enumerate(zip(clusters, split, tagged)):
        sim = f" · sim {float(similarity[i]):.3f}" if similarity is not None else ""
        out.append(f"{i + 1}{sim} · #{int(c)}" + (" · eval" if s != "pool" else "") + t)
    return out
