"""The data behind the app's pages: workspace queries and per-plan aggregations (no Streamlit here).

Workspace-level reads go through :mod:`densprune.store` (``?`` parameters only). Everything a budget
slider drives is numpy on arrays of length K or one pass over an (N,) mask, so it stays well under a
second on a million rows (benchmarks/bench_app.py); the pages cache the workspace reads.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from densprune import db
from densprune.cluster.concepts import nearest_concepts
from densprune.prune.compare import compare_masks
from densprune.prune.quotas import complexity_weights
from densprune.prune.selection import PlanIndex, PlanParams, PlanResult

SAMPLE_COLUMNS = ("row_idx, caption, split, cluster, dist_to_centroid, rank_in_cluster, dup_max_sim, dup_of, "
                  "thumb_offset, thumb_size, image_ref, width, height")
NO_CATEGORY = "(none)"


def build_stamp(workspace: str | os.PathLike) -> str:
    """Identity of one build of a workspace (path and centroid file time): a cache key that changes on
    rebuild but not when a plan is saved."""
    ws = Path(workspace).resolve()
    cent = ws / "centroids.npy"
    return f"{ws}|{cent.stat().st_mtime_ns if cent.exists() else 0}"


def concept_name(cluster: int, label: str | None) -> str:
    """'#12 arrows, hole, simple' (just '#12' without a label)."""
    return f"#{int(cluster)} {label}" if label else f"#{int(cluster)}"


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

    n, n_rej = int(meta.get("n_samples", counts.get("samples", 0))), int(meta.get("n_rejects", counts.get("rejects", 0)))
    n_exports = len(list((ws / "exports").glob("*.manifest.json"))) if (ws / "exports").exists() else 0
    pretrained = f" / {meta['pretrained']}" if meta.get("pretrained") else ""
    emb = f"{meta.get('embedder')} ({meta.get('model')}{pretrained})"
    rows = [
        ("1. list the source", "done", f"{meta.get('source')} ({meta.get('source_kind')}): {n:,} samples, "
                                        f"{n_rej:,} rejected{sec('list')}"),
        ("2. embed images", "done", f"{emb}, {meta.get('image_dim')}-d vectors{sec('embed')}")
        if meta.get("embedder") != "released" else
        ("2. read released embeddings", "done", f"{meta.get('source_kind')} layout ({meta.get('model')}), "
                                                f"{meta.get('image_dim')}-d {meta.get('dtype')} vectors, not re-embedded"
                                                f"{sec('copy')}"),
        ("3. cluster into concepts", "done",
         f"spherical k-means, K={meta.get('k')}, seed {meta.get('seed')}{sec('cluster')}"),
        ("4. concept complexity", "done", f"d_intra, d_inter over the {meta.get('neighbors', 20)} nearest concepts"
                                          f"{sec('concepts')}"),
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


def top_categories(workspace: str | os.PathLike) -> pd.DataFrame:
    """Pool and eval samples per top-level category (empty without categories)."""
    return db.query_df(workspace, (
        f"SELECT coalesce(top_category, '{NO_CATEGORY}') AS category, "
        "count(*) FILTER (WHERE split = 'pool') AS pool, count(*) FILTER (WHERE split = 'eval') AS eval "
        "FROM samples GROUP BY 1 ORDER BY pool DESC, category"))


@dataclass(frozen=True, slots=True)
class CategoryCodes:
    """Top-level category of every row as small integers, for bincounts under any keep mask."""

    codes: np.ndarray  # (N,) int32 in [0, C), row order; rows without a category get NO_CATEGORY's code
    names: tuple[str, ...]  # (C,)
    pool_counts: np.ndarray  # (C,) int64 pool rows per category


def category_codes(workspace: str | os.PathLike) -> CategoryCodes:
    with db.connect(workspace) as con:
        rows = con.execute(
            f"WITH cats AS (SELECT DISTINCT coalesce(top_category, '{NO_CATEGORY}') AS name FROM samples), "
            "codes AS (SELECT name, (row_number() OVER (ORDER BY name) - 1)::INTEGER AS code FROM cats) "
            f"SELECT c.code, s.split = 'pool' AS pool FROM samples s "
            f"JOIN codes c ON coalesce(s.top_category, '{NO_CATEGORY}') = c.name ORDER BY s.row_idx").fetchnumpy()
        names = [r[0] for r in con.execute(
            f"SELECT DISTINCT coalesce(top_category, '{NO_CATEGORY}') AS name FROM samples ORDER BY name").fetchall()]
    codes = np.asarray(rows["code"], dtype=np.int32)
    pool = np.asarray(rows["pool"], dtype=bool)
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

def concept_frame(clusters: pd.DataFrame, index: PlanIndex, neighbors: int = 20) -> pd.DataFrame:
    """The clusters table with d_intra/d_inter/complexity as the plans use them, a display name and
    each concept's complexity percentile (0 = least complex)."""
    df = clusters.copy()
    df["name"] = [concept_name(c, lab) for c, lab in zip(df["cluster"], df["label"].fillna(""))]
    df["d_intra"] = index.d_intra
    df["d_inter"] = index.d_inter(neighbors)
    df["complexity"] = index.complexity(neighbors)
    df["complexity_pct"] = df["complexity"].rank(pct=True) * 100.0
    return df


def caption_matches(workspace: str | os.PathLike, text: str) -> pd.DataFrame:
    """Concepts with captions containing ``text`` (case-insensitive, literal): cluster, matches."""
    pattern = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    return db.query_df(workspace, "SELECT cluster, count(*) AS matches FROM samples WHERE caption ILIKE ? "
                                     "ESCAPE '\\' GROUP BY cluster ORDER BY matches DESC", [pattern])


def layout_sample(workspace: str | os.PathLike, max_points: int = 20_000) -> pd.DataFrame:
    """At most ``max_points`` rows of the 2-D map (a fixed hash sample): row_idx, cluster, x, y."""
    return db.query_df(workspace, "SELECT row_idx, cluster, x, y FROM layout ORDER BY hash(row_idx) LIMIT ?",
                          [int(max_points)])


def concept_members(workspace: str | os.PathLike, cluster: int, limit: int = 48,
                    nearest_first: bool = True) -> pd.DataFrame:
    """Members of one concept, nearest its centroid first (or farthest first)."""
    order = "ASC" if nearest_first else "DESC"
    return db.query_df(workspace, f"SELECT {SAMPLE_COLUMNS} FROM samples WHERE cluster = ? "
                                     f"ORDER BY rank_in_cluster {order} LIMIT ?", [int(cluster), int(limit)])


def sample_rows(workspace: str | os.PathLike, rows: np.ndarray | list[int]) -> pd.DataFrame:
    """The samples at ``rows`` (row_idx), in the given order."""
    rows = [int(r) for r in rows]
    if not rows:
        return pd.DataFrame(columns=[c.strip() for c in SAMPLE_COLUMNS.split(",")])
    df = db.query_df(workspace, f"SELECT {SAMPLE_COLUMNS} FROM samples WHERE row_idx IN "
                                   "(SELECT UNNEST(?::BIGINT[]))", [rows])
    return df.set_index("row_idx", drop=False).loc[rows].reset_index(drop=True)


def neighbour_concepts(index: PlanIndex, concepts: pd.DataFrame, j: int, n: int = 6) -> pd.DataFrame:
    """The ``n`` concepts whose centroids are nearest concept ``j``'s: name, distance, size, complexity."""
    near, dist = nearest_concepts(index.centroids, j, n)
    out = concepts.set_index("cluster").loc[near, ["name", "pool_size", "complexity"]].reset_index()
    out.insert(2, "distance", dist)
    return out


def concept_message(pool_size: int, eligible: int, kept: int, size: int) -> str | None:
    """Why a concept shows no or all images under a plan, in words (None when nothing needs saying)."""
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


def kept_and_dropped(index: PlanIndex, j: int, keep: np.ndarray, pool: np.ndarray,
                     n: int = 24) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Concept ``j`` under a keep mask (N,): up to ``n`` kept and ``n`` dropped pool rows, each spread
    evenly over the concept from its centre outwards, and the full kept and dropped counts."""
    members = index.order[index.offsets[j]:index.offsets[j + 1]][::-1]  # nearest the centre first
    members = members[pool[members]]
    k = keep[members]
    kept, dropped = members[k], members[~k]

    def spread(a: np.ndarray) -> np.ndarray:
        if a.size <= n:
            return a
        return a[np.unique(np.linspace(0, a.size - 1, n).round().astype(np.int64))]

    return spread(kept), spread(dropped), int(kept.size), int(dropped.size)


def dup_pairs(workspace: str | os.PathLike, cluster: int, eps: float, limit: int = 12) -> tuple[pd.DataFrame, int]:
    """Near-duplicate pairs of one concept at SemDeDup ``eps`` (max similarity > 1 - eps), most similar
    first: (row_idx, dup_of, sim, caption, dup_caption, thumbs of both), and the total count."""
    thr = 1.0 - float(eps)
    total = db.query_df(workspace, "SELECT count(*) AS n FROM samples WHERE cluster = ? AND dup_of >= 0 "
                                      "AND dup_max_sim > ?", [int(cluster), thr])["n"].iloc[0]
    df = db.query_df(workspace, (
        "SELECT s.row_idx, s.dup_of, s.dup_max_sim AS sim, s.caption, s.thumb_offset, s.thumb_size, "
        "s.image_ref, s.width, s.height, d.caption AS dup_caption, d.thumb_offset AS dup_thumb_offset, "
        "d.thumb_size AS dup_thumb_size, d.image_ref AS dup_image_ref, d.width AS dup_width, d.height AS dup_height "
        "FROM samples s JOIN samples d ON d.row_idx = s.dup_of "
        "WHERE s.cluster = ? AND s.dup_of >= 0 AND s.dup_max_sim > ? ORDER BY s.dup_max_sim DESC, s.row_idx LIMIT ?"),
        [int(cluster), thr, int(limit)])
    return df, int(total)


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
    random: PlanResult
    ssp: PlanResult
    per_concept: pd.DataFrame  # plan_table() columns + random, random_pct, ssp, ssp_pct
    coverage: pd.DataFrame | None  # see coverage(); None without categories
    keeps_everything: bool  # every eligible sample kept: nothing pruned beyond the filters


def plan_table(concepts: pd.DataFrame, result: PlanResult, index: PlanIndex | None = None) -> pd.DataFrame:
    """Per concept: eligible, quota and kept under ``result``, the kept share, and (for DBP with an
    index) the softmax target P_j * budget before it is capped at the concept's size."""
    p = result.params
    df = concepts[["cluster", "name", "size", "pool_size", "d_intra", "d_inter", "complexity"]].copy()
    df["eligible"] = result.eligible
    df["quota"] = result.quota
    df["kept"] = result.kept
    with np.errstate(invalid="ignore", divide="ignore"):
        df["kept_pct"] = np.where(result.eligible > 0, 100.0 * result.kept / np.maximum(result.eligible, 1), np.nan)
    if index is not None and p.method == "dbp":
        df["target"] = complexity_weights(index.complexity(p.neighbors), p.temperature) * result.budget
    return df


def budget_view(index: PlanIndex, params: PlanParams, concepts: pd.DataFrame,
                cats: CategoryCodes | None = None) -> BudgetView:
    """Everything the Budget page shows for ``params``: three plan computations and K-sized tables."""
    result = index.compute(params)
    rnd = index.compute(replace(params, method="random"))
    ssp = index.compute(replace(params, method="ssp"))
    per = plan_table(concepts, result, index)
    elig = np.maximum(result.eligible, 1)
    for name, r in (("random", rnd), ("ssp", ssp)):
        per[name] = r.kept
        per[f"{name}_pct"] = np.where(result.eligible > 0, 100.0 * r.kept / elig, np.nan)
    cov = None
    if cats is not None:
        cov = coverage(cats, {"plan": result.keep, "random": rnd.keep, "ssp": ssp.keep})
    keeps_all = result.n_kept >= int(result.eligible.sum())
    return BudgetView(result, rnd, ssp, per, cov, keeps_all)


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
