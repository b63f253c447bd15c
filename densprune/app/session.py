"""Shared parts of the app's pages: the open workspace, cached reads, the current plan, thumbnail grids.

Session-state keys: ``workspace`` (the open workspace), ``plan_*`` (the current plan's knobs, shared
by the Budget, Complexity, Concepts and Preview pages and kept alive across pages by the router),
and ``<page>_*`` for each page's own widgets.
"""

from __future__ import annotations

import logging
import sys
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from densprune import db
from densprune.app import charts, page_data
from densprune.app.policy import AppPolicy, parse_app_args
from densprune.app.thumbgrid import Tile, grid_html, read_thumbs
from densprune.prune import plans
from densprune.prune.curation import StaleRules, load_decisions
from densprune.prune.decisions import Decisions, InfeasibleDecisions
from densprune.prune.plan_index import load_index
from densprune.prune.selection import PlanIndex, PlanParams, PlanResult
from densprune.workspace import build_stamp

WS_KEY = "workspace"
VIEWS = Path(__file__).resolve().parent / "views"
# view name -> (title, icon); the router shows them in SECTIONS
PAGES: dict[str, tuple[str, str]] = {
    "overview": ("Overview", ":material/home:"),
    "concepts": ("Concepts", ":material/bubble_chart:"),
    "find": ("Find", ":material/search:"),
    "complexity": ("Complexity", ":material/scatter_plot:"),
    "budget": ("Budget", ":material/tune:"),
    "preview": ("Preview", ":material/compare:"),
    "export": ("Export", ":material/download:"),
    "train": ("Train", ":material/model_training:"),
}
SECTIONS = {"Explore": ["overview", "concepts", "find", "complexity"], "Prune": ["budget", "preview", "export"],
            "Train": ["train"]}
# the current plan (widget keys); defaults follow the paper: DBP, tau 0.1, keep hard
PLAN_DEFAULTS: dict[str, object] = {
    "plan_keep_pct": 30,  # percent of the remaining pool (after dedup and the CLIP filter)
    "plan_method": "dbp",
    "plan_temperature": 0.1,
    "plan_dedup_on": False,
    "plan_dedup_eps": 0.05,
    "plan_clip_on": False,
    "plan_clip_keep_pct": 50,
    "plan_within": "hard",
    "plan_balance": 0.0,
    "plan_seed": 0,
    "plan_decisions_on": True,  # apply the workspace's tags and concept rules (Budget: "Apply decisions")
}
TEMPERATURES = [0.01, 0.02, 0.03, 0.05, 0.07, 0.1, 0.15, 0.2, 0.3, 0.5, 0.7, 1.0, 2.0, 5.0, 10.0]
METHOD_NAMES = {"dbp": "DBP (complexity quotas)", "ssp": "SSP (same rate per concept)",
                "balanced": "balanced (equal count per concept)",
                "hierarchical": "hierarchical balanced (equal shares down a k-means tree, Vo et al.)",
                "prototype": "prototype distance (one threshold, Sorscher et al.)", "random": "random",
                "clip-score": "CLIP score (top fraction)",
                "negclip": "negCLIPLoss (top fraction, Wang et al.)", "dedup": "dedup only (least duplicated first)"}
MAX_MAP_POINTS = 20_000
CONCEPT_TILES, CONCEPT_NEIGHBOURS, NEIGHBOUR_TILES = 24, 5, 8  # the Concepts page's grids (first view)


def keep_plan_state() -> None:
    """Called by the router on every run: a widget's state is dropped when its page is not shown, so
    the plan knobs are re-assigned to survive page switches."""
    for key, default in PLAN_DEFAULTS.items():
        st.session_state[key] = st.session_state.get(key, default)


def policy() -> AppPolicy:
    """The limits this server was started with (``densprune app DIR --allow-root ... --allow-custom-models``)."""
    from densprune.workspace import default_demo_workspace

    return parse_app_args(sys.argv[1:], default_demo_workspace())


def outside_roots_message(what: str) -> str:
    """The error shown for a workspace outside the allowed roots (the same whether it exists or not)."""
    roots = page_data.escape_markdown(policy().describe_roots() or "(none)")
    return (f"{what} is limited to workspaces under {roots}. "
            f"To allow more, start the app with `densprune app DIR --allow-root FOLDER`.")


def workspace() -> Path:
    """The open workspace (the router sets it before any page runs)."""
    return Path(st.session_state[WS_KEY])


def page(name: str) -> st.Page:
    """The st.Page of view ``name`` (a script in ``views/``), with its own URL path ``/name``."""
    title, icon = PAGES[name]
    return st.Page(VIEWS / f"{name}.py", title=title, icon=icon, url_path=name, default=name == "overview")


def ws_args() -> tuple[str, str]:
    """(workspace path, build stamp): the arguments of every cached read."""
    ws = workspace()
    return str(ws), build_stamp(ws)


# --------------------------------------------------------------------------------------------
# cached reads (keyed by the build stamp: a rebuilt workspace is read again)
# --------------------------------------------------------------------------------------------

@st.cache_resource(show_spinner="Indexing the workspace…", max_entries=4)
def plan_index(ws: str, stamp: str) -> PlanIndex:
    return load_index(ws)


@st.cache_data(show_spinner=False, max_entries=8)
def meta(ws: str, stamp: str) -> dict:
    return db.load_meta(ws)


@st.cache_data(show_spinner=False, max_entries=8)
def concepts(ws: str, stamp: str) -> pd.DataFrame:
    """The clusters table with names and the complexity the plans use."""
    m = meta(ws, stamp)
    return page_data.concept_frame(db.load_clusters(ws), plan_index(ws, stamp), int(m.get("neighbors", 20)))


@st.cache_resource(show_spinner=False, max_entries=4)
def category_codes(ws: str, stamp: str) -> page_data.CategoryCodes | None:
    return page_data.category_codes(ws) if meta(ws, stamp).get("has_categories") else None


@st.cache_resource(show_spinner=False, max_entries=4)
def row_arrays(ws: str, stamp: str) -> dict[str, np.ndarray]:
    """Per row (N,): ``cluster`` (int64) and ``pool`` (bool), read-only."""
    index = plan_index(ws, stamp)  # already in memory: no 10M-row read of the workspace
    out = {"cluster": index.rows_cluster(), "pool": index.rows_in_pool()}
    for a in out.values():
        a.setflags(write=False)
    return out


@st.cache_data(show_spinner=False, max_entries=8)
def top_categories(ws: str, stamp: str) -> pd.DataFrame:
    return db.top_categories(ws, page_data.NO_CATEGORY)


@st.cache_data(show_spinner=False, max_entries=8)
def reject_summary(ws: str, stamp: str) -> pd.DataFrame:
    """Rejects by stage and kind of reason: stage, kind, count, example."""
    from densprune.ingest.reject_kinds import summarise_rejects

    return summarise_rejects(db.reject_summary(ws))


@st.cache_data(show_spinner=False, max_entries=8)
def caption_flags(ws: str, stamp: str) -> pd.DataFrame:
    """Kept samples whose caption was repaired, by flag: flag, count (empty when none)."""
    return db.caption_flag_counts(ws)


@st.cache_data(show_spinner=False, max_entries=8)
def layout(ws: str, stamp: str) -> pd.DataFrame:
    return db.layout_sample(ws, MAX_MAP_POINTS)


@st.cache_data(show_spinner=False, max_entries=16)
def map_picture(ws: str, stamp: str, colour: str, params: PlanParams | None,
                dkey: tuple | None = None) -> tuple[str, tuple]:
    """The concept map's points as a PNG (charts.map_picture), coloured by "concept", "complexity",
    "kept" by the plan ``params`` with decisions ``dkey`` (None for the others), or "tag:NAME" (the rows
    of a tag at decisions version ``dkey``): drawn once per colouring and plan."""
    keep = compute(ws, stamp, params, dkey).keep if colour == "kept" and params is not None else None
    if colour.startswith("tag:"):
        keep, colour = tag_mask(ws, stamp, dkey, colour[4:]), "kept"
    return charts.map_picture(layout(ws, stamp), concepts(ws, stamp), colour, keep)


@st.cache_data(show_spinner=False, max_entries=8)
def dedup_curve(ws: str, stamp: str) -> pd.DataFrame:
    return db.dedup_curve(ws)


def saved_plans(ws: str) -> pd.DataFrame:
    """plans.list_plans, cached until a plan file is written or removed (and at most 10 s)."""
    d = Path(ws) / "plans"
    return _saved_plans(ws, d.stat().st_mtime_ns if d.exists() else 0)


@st.cache_data(show_spinner=False, max_entries=16, ttl=10)
def _saved_plans(ws: str, token: int) -> pd.DataFrame:
    return plans.list_plans(ws)


CURRENT_PLAN = "(current plan)"  # the plan the knobs describe, in every page's plan picker


def plan_keep(ws: str, stamp: str, name: str) -> np.ndarray:
    """The (N,) bool keep mask of ``name``: CURRENT_PLAN (the knobs' plan, computed and cached) or a
    saved plan (read-only, read from disk once per saved version: an overwrite is a new version)."""
    if name == CURRENT_PLAN:
        return compute(ws, stamp, current_params(), decisions_key(ws)).keep
    return saved_plan(ws, name)[1]


def saved_plan(ws: str, name: str) -> tuple[dict, np.ndarray]:
    """plans.load_plan, cached per version of the plan (its ``created_at``), the mask read-only."""
    saved = saved_plans(ws)
    version = saved.loc[saved["name"] == name, "created_at"]
    return _saved_plan(ws, name, str(version.iloc[0]) if len(version) else "")


@st.cache_resource(show_spinner=False, max_entries=8)
def _saved_plan(ws: str, name: str, version: str) -> tuple[dict, np.ndarray]:
    row, keep = plans.load_plan(ws, name)
    keep.setflags(write=False)
    return row, keep


@st.cache_data(show_spinner=False, max_entries=8)
def counts(ws: str, stamp: str) -> dict:
    """Rows per table (db.counts), once per workspace build."""
    return db.counts(ws)


@st.cache_data(show_spinner=False, max_entries=8)
def rejects(ws: str, stamp: str, limit: int) -> pd.DataFrame:
    """The first ``limit`` rejected inputs with their reasons."""
    return db.load_rejects(ws, limit=limit)


@st.cache_data(show_spinner=False, max_entries=64)
def caption_matches(ws: str, stamp: str, text: str) -> pd.DataFrame:
    return db.caption_matches(ws, text)


@st.cache_data(show_spinner="Searching…", max_entries=64)
def search(ws: str, stamp: str, kind: str, query: str | int, k: int = 100, exact: bool | None = None,
           every_word: bool = False):
    """One search of the Find page (densprune.search.queries), cached per workspace build: kind "text"
    (through the workspace's text tower: NoTextTower / WeightsUnavailable when it has none), "like" (the
    image at row ``query``) or "caption" (every caption containing ``query``, or each of its words)."""
    from densprune.search import queries

    index = plan_index(ws, stamp)  # already in memory: the search does not map it again
    if kind == "caption":
        return queries.caption_search(ws, str(query), index=index, every_word=every_word)
    if kind == "like":
        vec = queries.like_vector(ws, int(query))
        return queries.nearest(ws, vec, k, kind="like", label=f"more like row {int(query)}",
                               provenance={"row": int(query)}, exact=exact, index=index,
                               exclude=np.asarray([int(query)]))
    text = queries.check_query_text(str(query))
    vec = queries.text_vector(ws, text, meta(ws, stamp))
    return queries.nearest(ws, vec, k, kind="text", label=f"nearest the text {text!r}", provenance={"text": text},
                           exact=exact, index=index)


@st.cache_data(show_spinner=False, max_entries=256)
def members(ws: str, stamp: str, cluster: int, limit: int, nearest_first: bool = True) -> pd.DataFrame:
    """One concept's ``limit`` members nearest its centre first: their row numbers from the plan index in
    memory (no scan of the cluster column), then those rows."""
    return db.sample_rows(ws, plan_index(ws, stamp).members(cluster, limit, nearest_first))


@st.cache_data(show_spinner=False, max_entries=64)
def members_of(ws: str, stamp: str, clusters: tuple[int, ...], limit: int) -> dict[int, pd.DataFrame]:
    """:func:`members` of several concepts (nearest their centres first) read in one query: a page that
    shows a few concepts' images opens one connection, not one per concept."""
    index = plan_index(ws, stamp)
    picks = {c: index.members(c, limit) for c in clusters}
    df = db.sample_rows(ws, np.concatenate([np.empty(0, np.int64), *picks.values()]))
    by_row = df.set_index("row_idx", drop=False)
    return {c: by_row.loc[rows].reset_index(drop=True) if rows.size else df.iloc[:0] for c, rows in picks.items()}


@st.cache_data(show_spinner=False, max_entries=256)
def dup_pairs(ws: str, stamp: str, cluster: int, eps: float, limit: int = 12) -> tuple[pd.DataFrame, int]:
    """One concept's ``limit`` most similar SemDeDup pairs at ``eps`` (found in the plan index in memory,
    then fetched by row number) and the number of its duplicates."""
    rows, total = plan_index(ws, stamp).duplicates(cluster, eps, limit)
    return db.dup_pairs(ws, rows), total


@st.cache_data(show_spinner=False, max_entries=256)
def rows(ws: str, stamp: str, row_idx: tuple[int, ...]) -> pd.DataFrame:
    return db.sample_rows(ws, list(row_idx))


@st.cache_data(show_spinner=False, max_entries=1024)
def thumbs(ws: str, stamp: str, offsets: tuple[int, ...], sizes: tuple[int, ...],
           locs: tuple[str, ...] = ()) -> list[bytes]:
    """Thumbnails from thumbs.bin; rows without one (``--thumbnails sample|none``) from their source."""
    return read_thumbs(ws, offsets, sizes, locs or None)


@st.cache_resource(show_spinner=False, max_entries=16)
def compute(ws: str, stamp: str, params: PlanParams, dkey: tuple | None = None) -> PlanResult:
    """One plan on the workspace's index with its (N,) keep mask: for saving, the map's kept colouring
    and comparisons (results are read-only, so sharing them is safe). ``dkey``: the decisions applied
    (:func:`decisions_key`), None for the pure method."""
    return plan_index(ws, stamp).compute(params, decisions=decisions(ws, stamp, dkey))


@st.cache_resource(show_spinner=False, max_entries=64)
def plan_counts(ws: str, stamp: str, params: PlanParams, dkey: tuple | None = None) -> PlanResult:
    """One plan's numbers without its mask: from the per-concept summary (no pass over the rows)
    wherever it holds the plan's filters (PlanIndex.summary_level), else the full pass. The decisions
    (``dkey``) add work of the size of the tagged rows."""
    return plan_index(ws, stamp).compute(params, mask=False, decisions=decisions(ws, stamp, dkey))


@st.cache_resource(show_spinner=False, max_entries=64)
def concept_kept_rows(ws: str, stamp: str, params: PlanParams, cluster: int,
                      dkey: tuple | None = None) -> frozenset[int]:
    """The rows of one concept that the plan keeps, read from that concept's rows alone."""
    rows, kept = plan_index(ws, stamp).concept_keep(cluster, plan_counts(ws, stamp, params, dkey),
                                                    decisions(ws, stamp, dkey))
    return frozenset(int(r) for r in rows[kept])


# --------------------------------------------------------------------------------------------
# the curator's decisions (densprune.prune.curation)
# --------------------------------------------------------------------------------------------

def decisions_version(ws: str) -> tuple | None:
    """The version of the workspace's decisions (changes with every tag or rule written), None when it
    has none: one small query, so that a tag added by the CLI or another session shows at once."""
    v = db.decisions_version(ws)
    return None if not v[0] else tuple(str(x) for x in v)


def decisions_key(ws: str) -> tuple | None:
    """What the current plan applies: the decisions' version, or None (none, or switched off)."""
    if not st.session_state.get("plan_decisions_on", True):
        return None
    return decisions_version(ws)


@st.cache_resource(show_spinner=False, max_entries=8)
def decisions(ws: str, stamp: str, dkey: tuple | None) -> Decisions | None:
    """The workspace's decisions at version ``dkey`` (None: none)."""
    return None if dkey is None else load_decisions(ws)


def current_plan(ws: str, stamp: str, params: PlanParams) -> tuple[PlanResult, tuple | None]:
    """The current plan's numbers with the decisions in force, and their key. When the decisions cannot
    hold at this budget (or were made on another clustering) the page says why and shows the plan
    without them."""
    dkey = decisions_key(ws)
    try:
        return plan_counts(ws, stamp, params, dkey), dkey
    except (InfeasibleDecisions, StaleRules) as exc:
        st.error(f"The decisions in force cannot be applied: {page_data.escape_markdown(str(exc))}. Shown: the plan "
                 "without them (switch them off on the Budget page, or change them).", icon=":material/block:")
        return plan_counts(ws, stamp, params, None), None


@st.cache_data(show_spinner=False, max_entries=16)
def tags(ws: str, version: tuple | None) -> pd.DataFrame:
    """The workspace's tags (name, action, n_rows, ...) at decisions ``version``."""
    return db.list_tags(ws)


@st.cache_data(show_spinner=False, max_entries=16)
def rules(ws: str, version: tuple | None) -> pd.DataFrame:
    """The workspace's concept rules at decisions ``version``."""
    return db.load_rules(ws)


@st.cache_resource(show_spinner=False, max_entries=8)
def tag_mask(ws: str, stamp: str, version: tuple | None, name: str) -> np.ndarray:
    """(N,) bool: the rows of tag ``name`` (for colouring the map)."""
    _, by_tag = db.tag_rows(ws)
    out = np.zeros(plan_index(ws, stamp).n_rows, dtype=bool)
    out[by_tag.get(name, np.empty(0, np.int64))] = True
    out.setflags(write=False)
    return out


def who() -> str:
    """Who a decision made in the app is logged as: 'app' and this browser session's id."""
    try:
        from streamlit.runtime.scriptrunner import get_script_run_ctx

        ctx = get_script_run_ctx()
        return f"app session {ctx.session_id[:8]}" if ctx is not None else "app"
    except ImportError:
        return "app"


def warm_caches(ws: str | Path) -> list[str]:
    """Fill the caches that the first page of a session reads (whichever page it lands on) for workspace
    ``ws``, as that page's own calls would: the plan index mapped, the concepts and the map drawn, the
    default plan's numbers, the Budget page's view. Called by the server before any browser connects
    (densprune.app.main.warm_up), so the first page only draws. Returns what it filled."""
    ws = str(Path(ws))
    if not db.is_complete(ws):
        return []
    stamp = build_stamp(Path(ws))
    plan_index(ws, stamp)
    m = meta(ws, stamp)
    concepts(ws, stamp)
    counts(ws, stamp)
    layout(ws, stamp)
    # as the Concepts page calls it, argument for argument: the cache's key is the call's arguments
    map_picture(ws, stamp, "concept", None, None)
    params = page_data.params_from_state(PLAN_DEFAULTS, m)
    dkey = decisions_version(ws)
    tags(ws, dkey)
    rules(ws, dkey)
    try:
        plan_counts(ws, stamp, params, dkey)
    except (InfeasibleDecisions, StaleRules):  # the page will say why; warm the plan without them
        dkey = None
        plan_counts(ws, stamp, params, dkey)
    cdf = concepts(ws, stamp)
    pick = default_concept(cdf)  # the Concepts page's first concept: its images, its neighbours' images
    grids = [members(ws, stamp, pick, CONCEPT_TILES)]
    near = page_data.neighbour_concepts(plan_index(ws, stamp), cdf, pick, n=CONCEPT_NEIGHBOURS)
    grids += members_of(ws, stamp, tuple(int(c) for c in near["cluster"]), NEIGHBOUR_TILES).values()
    concept_kept_rows(ws, stamp, params, pick, dkey)
    if m.get("has_thumbnails", True):
        for df in grids:
            if len(df):
                tile_images(ws, stamp, df)
    budget_view(ws, stamp, params, bool(m.get("has_categories")) and plan_index(ws, stamp).n_rows <= COVERAGE_LIVE_ROWS,
                dkey)
    dedup_curve(ws, stamp)
    return ["plan index", "meta", "concepts", "counts", "map", "decisions", "default plan", "first concept's images",
            "budget view", "dedup curve"]


_SEARCH_WARMED: set[str] = set()
_SEARCH_WARM_LOCK = threading.Lock()


def warm_search_soon(ws: str) -> None:
    """Once per workspace and process, in a background thread: densprune.search.queries.warm_search (torch's
    first kernels, the vector file's pages mapped), so that the Find page's first search is as fast as its
    later ones. Started by the Find page when it opens, not by the server's warm-up: there it delayed the
    first paint of every other page (1.3 s at 10M rows)."""
    with _SEARCH_WARM_LOCK:
        if ws in _SEARCH_WARMED:
            return
        _SEARCH_WARMED.add(ws)

    def run() -> None:
        from densprune.search import queries

        try:
            queries.warm_search(ws)
        except Exception:  # the first search then pays for it; nothing is lost
            logging.getLogger(__name__).warning("search warm-up failed", exc_info=True)

    threading.Thread(target=run, name="densprune-search-warm-up", daemon=True).start()


def slow_note(ws: str, stamp: str, params: PlanParams) -> str | None:
    """A caption for a plan that needs a full pass over the rows (None when the summary answers it)."""
    index = plan_index(ws, stamp)
    slow = index.slow_knobs(params)
    if not slow:
        return None
    return (f":material/hourglass: Computed by a full pass over the {index.n_rows:,} rows, because of "
            f"{'; '.join(slow)}. Every other setting is answered from the per-concept summary, whatever the "
            "workspace's size.")


COVERAGE_LIVE_ROWS = 2_000_000  # above this, category coverage (three masks per move) waits for a toggle


@st.cache_resource(show_spinner=False, max_entries=16)
def budget_view(ws: str, stamp: str, params: PlanParams, with_coverage: bool,
                dkey: tuple | None = None) -> page_data.BudgetView:
    return page_data.budget_view(plan_index(ws, stamp), params, concepts(ws, stamp),
                                 category_codes(ws, stamp) if with_coverage else None,
                                 result=plan_counts(ws, stamp, params, dkey), decisions=decisions(ws, stamp, dkey))


# --------------------------------------------------------------------------------------------
# the current plan
# --------------------------------------------------------------------------------------------

def current_params(m: dict | None = None) -> PlanParams:
    """The plan the knobs of this session describe (see page_data.params_from_state)."""
    return page_data.params_from_state(st.session_state, m if m is not None else meta(*ws_args()))


def describe_params(p: PlanParams) -> str:
    """'DBP · keep 30% · τ = 0.1 · hardest first · dedup ε = 0.05'."""
    keep = f"keep {p.keep:.0%}" if isinstance(p.keep, float) else f"keep {p.keep:,}"
    parts = [p.method.upper() if p.method in ("dbp", "ssp") else p.method, keep]
    if p.method == "dbp":
        parts.append(f"τ = {p.temperature:g}")
        if p.balance:
            parts.append(f"balance {p.balance:g}")
    if p.method in ("dbp", "ssp", "balanced", "hierarchical", "prototype"):
        parts.append({"hard": "hardest first", "easy": "easiest first", "random": "random within"}[p.within])
    if p.dedup_eps is not None:
        parts.append(f"dedup ε = {p.dedup_eps:g}")
    if p.clip_keep is not None:
        parts.append(f"CLIP top {p.clip_keep:.0%}")
    return " · ".join(parts)


def describe_saved(params_json: str | dict) -> str:
    """describe_params of a saved plan's params (the raw JSON, escaped, when it does not parse)."""
    try:
        return describe_params(plans.params_from_json(params_json))
    except (TypeError, ValueError):
        return page_data.escape_markdown(str(params_json))


def plan_banner(p: PlanParams) -> None:
    """A one-line reminder of the current plan with a link to change it."""
    c1, c2 = st.columns([4, 1], vertical_alignment="center")
    c1.caption(f"Current plan: **{describe_params(p)}**")
    c2.page_link(page("budget"), label="Change the plan", icon=":material/tune:")


# --------------------------------------------------------------------------------------------
# thumbnails
# --------------------------------------------------------------------------------------------

def thumb_grid(df: pd.DataFrame, notes: list[str] | None = None, tones: list[str] | None = None,
               tile_px: int = 104, caption_lines: int = 2, empty: str = "No images.",
               explain_missing: bool = True) -> None:
    """A grid of the thumbnails of ``df`` (rows with thumb_offset, thumb_size, caption and, for rows without a
    thumbnail in thumbs.bin, image_loc), escaped captions. In a workspace without thumbnails the tiles
    show caption, size and URL, under a note saying why (``explain_missing=False``: a page showing
    several grids says it once)."""
    if df is None or len(df) == 0:
        st.caption(empty)
        return
    ws, stamp = ws_args()
    n = len(df)
    notes = notes or [""] * n
    tones = tones or [""] * n
    caps = df["caption"].fillna("").astype(str).tolist()
    m = meta(ws, stamp)
    if m.get("has_thumbnails", True):
        data = tile_images(ws, stamp, df)
        tiles = [Tile(b, c, nt, tn) for b, c, nt, tn in zip(data, caps, notes, tones)]
    else:
        if explain_missing:
            st.caption(page_data.no_thumbnails_note(m))
        tiles = [Tile(b"", c, nt, tn, url=u if isinstance(u, str) else "", size=page_data.size_text(w, h))
                 for c, nt, tn, u, w, h in zip(caps, notes, tones, df["image_ref"], df["width"], df["height"])]
    st.html(grid_html(tiles, tile_px=tile_px, caption_lines=caption_lines))


def tile_images(ws: str, stamp: str, df: pd.DataFrame) -> list[bytes]:
    """The thumbnail bytes of the rows of ``df`` (cached per set of rows), as a grid shows them."""
    return thumbs(ws, stamp, tuple(int(x) for x in df["thumb_offset"]), tuple(int(x) for x in df["thumb_size"]),
                  tuple(df["image_loc"]) if "image_loc" in df else ())


def default_concept(cdf: pd.DataFrame) -> int:
    """The concept the Concepts page opens on: the one with the most pool images."""
    return int(cdf.sort_values("pool_size", ascending=False)["cluster"].iloc[0])


def saved_plans_or_stop(ws: str, message: str) -> pd.DataFrame:
    """The saved plans; with none, ``message`` and a link to the Budget page, and the page stops there."""
    saved = saved_plans(ws)
    if saved.empty:
        st.info(message, icon=":material/info:")
        st.page_link(page("budget"), label="Go to the Budget page", icon=":material/tune:")
        st.stop()
    return saved


def concept_options(cdf: pd.DataFrame) -> tuple[list[int], dict[int, str]]:
    names = dict(zip(cdf["cluster"].astype(int), cdf["name"]))
    return list(names), names


def open_workspace_form(key: str = "overview") -> None:
    """A path box that switches the app to another workspace."""
    with st.form(f"{key}_open_ws", border=False):
        c1, c2 = st.columns([5, 1], vertical_alignment="bottom")
        path = c1.text_input("Workspace folder", placeholder="/path/to/workspace",
                             help="A folder built with `densprune precompute SOURCE --workspace DIR`; "
                                  "from a shell: `densprune app DIR`.")
        go = c2.form_submit_button("Open", width="stretch")
    if go and path.strip():
        if "\x00" in path:  # no file system takes it (Path.resolve would raise)
            st.error("Not a valid path: it contains a NUL character.")
            return
        p = Path(path.strip()).expanduser()
        if not policy().allows(p):  # checked first: a path outside is not even probed
            st.error(outside_roots_message("Opening a workspace from this app"))
            return
        if not db.is_complete(p):
            st.error(f"No complete workspace at `{page_data.escape_markdown(str(p))}` (it has no "
                     f"{db.DB_NAME}). Build one with `densprune precompute SOURCE --workspace DIR`.")
            return
        st.session_state[WS_KEY] = str(p.resolve())
        pages = ("concepts_", "find_", "preview_", "budget_", "export_")
        for k in [k for k in st.session_state if k.startswith(pages)]:
            del st.session_state[k]
        st.rerun()


# --------------------------------------------------------------------------------------------
# acting on what a page shows: tag picked tiles, give a concept a rule
# --------------------------------------------------------------------------------------------

TAG_ACTION_HELP = {"never": "never: not eligible for any plan", "always": "always: kept by every plan (counts toward "
                   "the budget)", "label": "label: a named set to browse and colour the map by; plans ignore it"}


def tag_picker(rows: list[int], key: str, where: str, more: dict[str, tuple[np.ndarray, str, str]] | None = None
               ) -> None:
    """Under a grid of ``rows`` (numbered 1..n on the tiles): pick tiles and tag them, or tag a bigger set
    from ``more`` (a button label -> (its rows, source kind, source text), e.g. the whole concept or a
    caption search). ``where`` says which grid, for the decision log."""
    from densprune.prune.curation import add_tag

    ws = str(workspace())
    round_ = st.session_state.get(f"{key}_round", 0)  # a new round after each tagging: the picks start empty
    picked = st.pills("Pick tiles", [i + 1 for i in range(len(rows))], selection_mode="multi",
                      key=f"{key}_picked_{round_}", help="Pick tiles by the number on them, then tag them below.") or []
    existing = tags(ws, decisions_version(ws))
    with st.form(f"{key}_tag_form", border=True):
        c1, c2 = st.columns([3, 2])
        name = c1.text_input("Tag name", key=f"{key}_tag_name", placeholder="e.g. watermarks",
                             help="Adds to a tag of that name when it exists (same action). Existing: "
                                  + (", ".join(f"{n} ({a})" for n, a in zip(existing["name"], existing["action"]))
                                     or "none yet"))
        action = c2.radio("Action", list(TAG_ACTION_HELP), key=f"{key}_tag_action", horizontal=True,
                          help=" · ".join(TAG_ACTION_HELP.values()))
        buttons = [f"Tag the {len(picked)} picked"] + list(more or {})
        cols = st.columns(len(buttons))
        pressed = [col.form_submit_button(b, width="stretch", disabled=i == 0 and not picked)
                   for i, (col, b) in enumerate(zip(cols, buttons))]
    if not any(pressed):
        return
    i = pressed.index(True)
    if i == 0:
        chosen = np.asarray([rows[p - 1] for p in picked], dtype=np.int64)
        kind, source = "rows", f"{where}: tiles {', '.join(map(str, picked))}"
    else:
        chosen, kind, source = more[buttons[i]]
    try:
        added = add_tag(ws, name.strip(), action, chosen, source_kind=kind, source=source, who=who())
    except (ValueError, db.WorkspaceBusy) as exc:
        st.error(page_data.escape_markdown(str(exc)))
        return
    st.session_state[f"{key}_round"] = round_ + 1
    st.toast(f"Tagged {len(chosen):,} images “{name.strip()}” ({action}), {added:,} new.", icon=":material/sell:")
    st.rerun()


RULE_NAMES = {"auto": "auto (the method decides)", "keep-whole": "keep whole", "drop": "drop",
              "floor": "floor (at least)", "cap": "cap (at most)", "weight": "weight (× its share)"}


def rule_editor(concept: int, cdf: pd.DataFrame, key: str = "concepts_rule") -> None:
    """The rule of one concept (auto / keep whole / drop / floor / cap / weight), editable; with a label
    that several concepts share, the rule can go to all of them at once."""
    from densprune.prune.curation import clustering_id, set_rule

    ws = str(workspace())
    version = decisions_version(ws)
    have = rules(ws, version)
    current = have[(have["concept"] == concept) & (have["clustering"] == clustering_id(ws, meta(*ws_args())))]
    now = "auto"
    if len(current):
        from densprune.prune.curation import rule_from_row

        r = next(current.itertuples())
        now = rule_from_row(r).describe()
        st.caption(f"Rule in force: **{now}** · by {page_data.escape_markdown(str(r.created_by))} · "
                   f"{r.created_at:%Y-%m-%d %H:%M} UTC")
    same = page_data.namesakes(cdf, concept)
    label = same.attrs["label"]
    with st.form(f"{key}_{concept}", border=True):
        c1, c2 = st.columns([3, 2])
        kind = c1.selectbox("Rule for this concept", list(RULE_NAMES), format_func=RULE_NAMES.get,
                            index=list(RULE_NAMES).index(now.split()[0]) if now.split()[0] in RULE_NAMES else 0,
                            key=f"{key}_kind_{concept}",
                            help="keep whole: every eligible image; drop: none; floor / cap: at least / at most "
                                 "N images or P% of its eligible; weight: its share of the method's target × W. "
                                 "The budget stays the total kept: the other concepts give or take the difference.")
        amount = c2.text_input("Amount", key=f"{key}_amount_{concept}", placeholder="200, 10% or 2",
                               help="floor / cap: a count (200) or a percentage (10%); weight: a number > 0")
        all_of = False
        if len(same) > 1:
            all_of = st.checkbox(f"All {len(same)} concepts labelled “{page_data.escape_markdown(label)}”",
                                 key=f"{key}_all_{concept}",
                                 help="Their caption words are the same; size, complexity and images differ.")
        go = st.form_submit_button("Apply the rule", type="primary")
    if go:
        targets = [int(c) for c in same["cluster"]] if all_of else [concept]
        try:
            set_rule(ws, targets, kind, amount.strip() or None, who=who(),
                     source=f"Concepts page{' (label ' + label + ')' if all_of else ''}")
        except (ValueError, db.WorkspaceBusy) as exc:
            st.error(page_data.escape_markdown(str(exc)))
            return
        st.toast(f"Rule {kind} on {len(targets)} concept(s).", icon=":material/rule:")
        st.rerun()
