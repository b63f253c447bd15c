"""Find: images by a text (the workspace's own CLIP text tower), caption words, an image ("more like
this") or a region drawn on the map; what the current plan keeps of them; saved as a tag that plans obey."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import streamlit as st

from densprune.app import charts, page_data, session
from densprune.embed.models import WeightsUnavailable
from densprune.prune.curation import tag_sources
from densprune.search import queries

ws, stamp = session.ws_args()
meta = session.meta(ws, stamp)
cdf = session.concepts(ws, stamp)
index = session.plan_index(ws, stamp)
session.warm_search_soon(ws)  # the first search as fast as the later ones
params = session.current_params(meta)
result, dkey = session.current_plan(ws, stamp, params)
esc = page_data.escape_markdown

MODES = {"text": "A text", "caption": "Caption words", "like": "More like an image", "map": "Draw on the map",
         "saved": "A saved selection"}
try:
    queries.text_tower_settings(meta)
    no_tower = None
except queries.NoTextTower as exc:
    no_tower = str(exc).split(". Use caption search")[0]

# a link may carry the query: /find?like=ROW, /find?text=..., /find?caption=...
for kind in ("like", "text", "caption"):
    value = st.query_params.get(kind)
    if value and st.session_state.get("find_from_link") != (kind, value):
        st.session_state["find_from_link"] = (kind, value)
        st.session_state["find_mode"] = kind
        if kind == "like":
            st.session_state["find_like_row"] = int(value) if value.isdigit() else 0
            st.session_state["find_asked_like"] = st.session_state["find_like_row"]
        else:
            st.session_state[f"find_{kind}_text"] = value
            st.session_state[f"find_asked_{kind}"] = value
if st.session_state.get("find_mode") not in MODES:
    st.session_state["find_mode"] = "caption" if no_tower else "text"

st.title("Find")
st.caption("Find images by what they show (a text, through the CLIP text tower that embedded them), by caption "
           "words, by an image (more like this one) or by drawing a lasso on the map. See what the current plan "
           "keeps of them, and save them as a tag: never (no plan keeps them), always (every plan does) or label.")
session.plan_banner(params)

mode = st.segmented_control("Find by", list(MODES), format_func=MODES.get, key="find_mode") or "text"
approx = index.n_rows >= queries.APPROX_FROM_ROWS


def _more_like(shown: list[int]) -> None:
    """The "Find more like it" button: the tile picked (read when pressed) becomes the image query."""
    picked = str(st.session_state.get("find_like_tile") or "1")  # "3 (row 1234)"
    row = int(shown[int(picked.split()[0]) - 1])
    st.session_state["find_mode"] = "like"
    st.session_state["find_like_row"] = row
    st.session_state["find_asked_like"] = row


def _ask() -> tuple[str, str | int, int, bool | None] | None:
    """The query form of the text, caption and image modes: (kind, query, k, exact) once asked, else None."""
    with st.form(f"find_form_{mode}", border=False):
        cols = st.columns([6, 1.4, 1.2] if mode != "caption" else [8, 1.2], vertical_alignment="bottom")
        if mode == "like":
            cols[0].number_input("Row of the image", min_value=0, max_value=index.n_rows - 1, step=1,
                                 key="find_like_row", help="The row_idx of an image (under every tile of this page, "
                                                           "or from `densprune search --caption`).")
        else:
            cols[0].text_input("Text" if mode == "text" else "Caption words", key=f"find_{mode}_text",
                               max_chars=queries.MAX_QUERY_CHARS,
                               placeholder="a dog on a beach" if mode == "text" else "a word or phrase: sunset",
                               help="Placed among the images by the text tower of the model that embedded them; "
                                    "the nearest images by cosine similarity." if mode == "text" else
                                    "Every image whose caption contains these words (case-insensitive, literal).")
        if mode != "caption":
            cols[1].number_input("Results", min_value=1, max_value=queries.MAX_K, value=100, step=50, key="find_k",
                                 help=f"How many nearest images (1 to {queries.MAX_K:,}).")
        go_ = cols[-1].form_submit_button("Search", type="primary", width="stretch")
        if mode == "caption":
            st.checkbox("Each word, in any order", key="find_every_word",
                        help="Off: the captions containing the words as typed (a phrase, or part of a word: "
                             "“cat” also finds “application”). On: those containing each word somewhere.")
        exact = None
        if approx and mode != "caption":
            exact = st.checkbox("Exact (reads every vector: seconds at this size)", key="find_exact",
                                help=f"From {queries.APPROX_FROM_ROWS:,} rows on, a search reads the images of the "
                                     "concepts nearest the query (about 1.5% of the rows); exact compares them all.")
    if go_:
        st.session_state[f"find_asked_{mode}"] = (st.session_state["find_like_row"] if mode == "like"
                                                  else st.session_state.get(f"find_{mode}_text", ""))
    asked = st.session_state.get(f"find_asked_{mode}")
    if asked is None or (isinstance(asked, str) and not asked.strip()):
        return None
    return mode, asked, int(st.session_state.get("find_k", 100)), (True if exact else None)


def _run(kind: str, query, k: int, exact: bool | None) -> queries.Selection | None:
    """The search, or the page says why it cannot be answered (a text without a text tower falls back to the
    captions)."""
    fallback = "Shown instead: the captions that contain each of its words."
    if kind == "text" and no_tower:
        st.info(f"No text search here: {esc(no_tower)}. {fallback}", icon=":material/info:")
        kind = "words"
    try:
        if kind in ("caption", "words"):
            every = kind == "words" or bool(st.session_state.get("find_every_word"))
            return session.search(ws, stamp, "caption", query, every_word=every)
        return session.search(ws, stamp, kind, query, k, exact)
    except WeightsUnavailable as exc:
        st.warning(f"{esc(str(exc))}\n\n{fallback}", icon=":material/cloud_off:")
        return session.search(ws, stamp, "caption", query, every_word=True)
    except ValueError as exc:
        st.error(esc(str(exc)), icon=":material/error:")
        return None


def _region(pts) -> queries.Selection | None:
    """The map to draw on (lasso or box) and the selection of what was drawn."""
    picture = session.map_picture(ws, stamp, "concept", None)
    fig = charts.concept_map(pts, cdf, "concept", picture=picture, dragmode="lasso", height=520)
    fig.update_layout(newselection_line=dict(color="black", width=2))
    event = st.plotly_chart(fig, width="stretch", key="find_map", on_select="rerun", selection_mode=("lasso", "box"),
                            config={"displayModeBar": True, "scrollZoom": True, "displaylogo": False,
                                    "modeBarButtonsToRemove": ["toImage", "autoScale2d"]})
    st.caption(f"Draw a lasso around a part of the map (or pick the box tool above it). The map shows {len(pts):,} "
               "sampled images: a region selects the drawn images inside it, or every image of the concepts whose "
               "centres (diamonds) are inside. A new lasso drawn outside the old one replaces it; a double click "
               "clears it.")
    region = page_data.region_of(event.selection if event is not None else None)
    if region is None:
        return None
    try:
        return queries.map_region(pts, cdf[["cluster", "x", "y"]], index.sizes, **region)
    except ValueError as exc:
        st.error(esc(str(exc)), icon=":material/error:")
        return None


def _saved() -> None:
    """A tag's provenance and images."""
    version = session.decisions_version(ws)
    all_tags = session.tags(ws, version)
    if all_tags.empty:
        st.info("No tags yet: find images and save them as a tag below the results.", icon=":material/info:")
        return
    name = st.selectbox("Tag", all_tags["name"].tolist(), key="find_saved_tag",
                        format_func=lambda n: f"{n} ({all_tags.set_index('name').loc[n, 'action']}, "
                                              f"{int(all_tags.set_index('name').loc[n, 'n_rows']):,} images)")
    entries = tag_sources(ws, name)
    st.markdown("**Where its images came from**")
    for e in entries:
        src = e["source"]
        what = json.dumps(src) if isinstance(src, dict) else str(src or "")
        st.markdown(f"- {e['logged_at']:%Y-%m-%d %H:%M} · {esc(str(e['who']))} · **{esc(e['source_kind'])}** "
                    f"`{esc(what[:300])}` · {int(e['n_rows']):,} new images")
        if isinstance(src, dict) and e["source_kind"] in ("text", "caption", "like"):
            again = src.get("text", src.get("caption", src.get("row")))
            st.button(f"Search again: {e['source_kind']} {str(again)[:40]}", key=f"find_again_{e['logged_at']}",
                      on_click=_search_again, args=(e["source_kind"], again))
    rows = np.flatnonzero(session.tag_mask(ws, stamp, version, name))
    _grid(rows, None, f"Images of tag {name}", saveable=False)


def _search_again(kind: str, query) -> None:
    st.session_state["find_mode"] = kind
    key = "find_like_row" if kind == "like" else f"find_{kind}_text"
    st.session_state[key] = int(query) if kind == "like" else str(query)
    st.session_state[f"find_asked_{kind}"] = st.session_state[key]


def _grid(rows: np.ndarray, similarity: np.ndarray | None, title: str, saveable: bool = True) -> list[int]:
    """The first images of ``rows`` with kept / dropped by the current plan; returns the rows shown."""
    n_show = st.select_slider("Images to show", [24, 48, 96, 192], value=48, key="find_n")
    shown = rows[:n_show]
    df = session.rows(ws, stamp, tuple(int(r) for r in shown))
    keep = session.compute(ws, stamp, params, dkey).keep
    tones = ["kept" if keep[r] else ("" if s != "pool" else "dropped") for r, s in zip(shown, df["split"])]
    notes = page_data.found_notes(shown, similarity, index.clusters_of(shown), df["split"].tolist(),
                                  page_data.tag_notes(shown.tolist(), session.decisions(ws, stamp, dkey)))
    more = f" · the first {shown.size:,} of {rows.size:,}" if rows.size > shown.size else ""
    st.markdown(f"**{esc(title)}**{more}")
    st.caption("Green frame: kept by the current plan; faded red: dropped; no frame: held-out eval. "
               "Under each: its number, similarity to the query, concept; never / always when a tag says so.")
    session.thumb_grid(df, notes, tones, empty="Nothing found.")
    return [int(r) for r in shown]


if mode == "saved":
    _saved()
    st.stop()

pts = session.layout(ws, stamp)
if mode == "map":
    sel = _region(pts)
else:
    asked = _ask()
    if mode == "text" and no_tower and not asked:
        st.caption(f":material/info: {esc(no_tower)}: a text is answered with the captions that contain its words.")
    sel = _run(*asked) if asked else None

if sel is None:
    if mode != "map":
        st.caption("Ask above: the results show here with what the current plan keeps of them.")
    st.stop()

if sel.rows.size == 0 and not (mode == "map" and len(sel.concepts)):
    st.info(f"Nothing found: {esc(sel.label)} ({esc(sel.method)}). " + (
        ("Try fewer or shorter words." if sel.provenance.get("every_word") else
         "Try fewer or shorter words, or “Each word, in any order”.") if sel.kind == "caption" else
        "Lower the similarity threshold." if sel.similarity is not None else
        "Draw around the coloured points."), icon=":material/search_off:")
    st.stop()

keep = session.compute(ws, stamp, params, dkey).keep
n_kept = int(keep[sel.rows].sum()) if sel.rows.size else 0
m = st.columns(4)
m[0].metric("Found", f"{sel.rows.size:,}", help=sel.label)
m[1].metric("Kept by the plan", f"{n_kept:,}", delta_color="off", delta_arrow="off",
            delta=f"{n_kept / sel.rows.size:.0%} of found" if sel.rows.size else None)
m[2].metric("Concepts", f"{len(sel.concepts):,}", help="concepts holding the found images"
            + (" or with their centre inside the region" if mode == "map" else ""))
m[3].metric("Searched", f"{sel.searched:,}", help="images compared (a search), captions read, or map points drawn")
st.caption(f"{esc(sel.label)} · {esc(sel.method)}")

if mode != "map":
    on_map = pts[pts["row_idx"].isin(sel.rows)]
    fig = charts.concept_map(pts, cdf, "concept", picture=session.map_picture(ws, stamp, "concept", None),
                             found=on_map, found_concepts=sel.concepts["cluster"].to_numpy()[:50])
    st.plotly_chart(fig, width="stretch", config={"displayModeBar": False, "scrollZoom": True})
    st.caption(f"Gold rings: the {len(on_map):,} found images among the map's {len(pts):,} sampled points; gold "
               f"diamonds: the concepts that hold them (the first 50).")

table = page_data.found_table(sel.concepts, cdf, result)
cols = ["name", "hits", "images", "kept", "kept_pct"] + (["centre_inside"] if "centre_inside" in table else []) \
    + (["best"] if sel.similarity is not None else [])
st.markdown("**The concepts they fall in**")
pick = st.dataframe(table[cols], hide_index=True, width="stretch", height=min(300, 35 * (len(table) + 1) + 3),
                    key="find_concepts", on_select="rerun", selection_mode="single-row", column_config={
                        "name": st.column_config.TextColumn("concept", width="large"),
                        "hits": st.column_config.NumberColumn("found", help="found images in this concept"),
                        "images": st.column_config.NumberColumn("images", help="all its images"),
                        "kept": st.column_config.NumberColumn("kept", help="kept by the current plan"),
                        "kept_pct": st.column_config.ProgressColumn("kept %", format="%.0f%%", min_value=0,
                                                                    max_value=100),
                        "centre_inside": st.column_config.CheckboxColumn("centre inside"),
                        "best": st.column_config.NumberColumn("best sim", format="%.3f")})
picked = list(pick.selection.rows) if pick is not None else []
if picked and picked[0] < len(table):
    c = int(table["cluster"].iloc[picked[0]])
    if st.button(f"Open {table['name'].iloc[picked[0]]} on the Concepts page", key="find_open_concept"):
        st.session_state["concepts_pick"] = c
        st.switch_page(session.page("concepts"))

shown = _grid(sel.rows, sel.similarity, "The drawn images inside" if mode == "map" else "The images found")
if shown:
    c1, c2 = st.columns([3, 2], vertical_alignment="bottom")
    c1.selectbox("More like tile", [f"{i + 1} (row {r})" for i, r in enumerate(shown)], key="find_like_tile")
    c2.button("Find more like it", key="find_like_go", on_click=_more_like, args=(shown,),
              icon=":material/image_search:")

st.subheader("Save as a tag")
digest = hashlib.sha1(sel.source().encode()).hexdigest()[:10]
if mode == "map":
    centred = sel.concepts.loc[sel.concepts["centre_inside"], "cluster"].to_numpy()
    whole = queries.centre_rows(index, centred)
    prov = dict(sel.provenance)
    more = {f"Tag the {sel.rows.size:,} drawn points": (sel.rows, sel.kind, json.dumps({**prov, "scope": "points"},
                                                                                      sort_keys=True))}
    if whole.size:
        more[f"Tag the {whole.size:,} images of {centred.size:,} centred concepts"] = (
            whole, sel.kind, json.dumps({**prov, "scope": "concepts"}, sort_keys=True))
else:
    more = {f"Tag all {sel.rows.size:,} found": (sel.rows, sel.kind, sel.source())}
session.tag_picker(shown, f"find_{digest}", f"Find page, {sel.label}", more)
