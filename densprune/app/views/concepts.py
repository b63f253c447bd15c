"""Concepts: the cluster table, the 2-D map, and one concept's images and neighbours."""

from __future__ import annotations

import numpy as np
import streamlit as st

from densprune.app import page_data, session, vega_charts

ws, stamp = session.ws_args()
meta = session.meta(ws, stamp)
cdf = session.concepts(ws, stamp)
params = session.current_params(meta)
result, dkey = session.current_plan(ws, stamp, params)  # the numbers; the mask only for the map's kept colouring
table = page_data.plan_table(cdf, result)
options, names = session.concept_options(cdf)

has_zs = page_data.has_zero_shot(cdf)

st.title("Concepts")
st.caption("Every image belongs to the concept (k-means cluster) whose centre is nearest to it. "
           "Pick a concept in the table or the list below to see its images.")
st.caption(page_data.label_sources(meta))
session.plan_banner(params)

# --- search and the table -------------------------------------------------------------------
query = st.text_input("Search concepts", key="concepts_search",
                      placeholder="a name or a caption word: flower, arrow, flag",
                      help="Shows the concepts whose name" + (" or zero-shot name" if has_zs else "")
                           + " contains this text, then those with captions that contain it (case-insensitive).")
shown = table
if query.strip():
    shown = page_data.search_concepts(table, session.caption_matches(ws, stamp, query.strip()), query)
    if shown.empty:
        st.info(f"No concept name or caption contains “{page_data.escape_markdown(query.strip())}”. "
                "Try a shorter or different word.", icon=":material/search_off:")
    elif st.session_state.get("concepts_last_search") != query:
        st.session_state["concepts_pick"] = int(shown["cluster"].iloc[0])
st.session_state["concepts_last_search"] = query

cols = (["name"] + (["zs_name"] if has_zs else []) + (["matches"] if "matches" in shown else [])
        + ["pool_size", "complexity", "d_intra", "d_inter", "kept", "kept_pct"])
event = st.dataframe(
    shown[cols], hide_index=True, width="stretch", height=min(360, 35 * (len(shown) + 1) + 3), key="concepts_table",
    on_select="rerun", selection_mode="single-row",
    column_config={
        "name": st.column_config.TextColumn("concept", width="large",
                                            help="#id and its most distinctive caption words"),
        "zs_name": st.column_config.TextColumn("zero-shot name", width="medium",
                                               help="vocabulary entry nearest the concept's centre "
                                                    "(cosine similarity)"),
        "pool_size": st.column_config.NumberColumn("images", help="pool images (held-out eval images excluded)"),
        "complexity": st.column_config.NumberColumn("complexity", format="%.3f",
                                                    help="d_intra × d_inter, as the current plan measures it"),
        "d_intra": st.column_config.NumberColumn("d_intra", format="%.2f",
                                                 help="spread: mean distance to its centre of the images that remain "
                                                      "after the plan's dedup and CLIP filter"),
        "d_inter": st.column_config.NumberColumn("d_inter", format="%.2f",
                                                 help="isolation: mean distance of its centre to the nearest concepts"),
        "kept": st.column_config.NumberColumn("kept", help="images kept by the current plan"),
        "kept_pct": st.column_config.ProgressColumn("kept %", format="%.0f%%", min_value=0, max_value=100),
        "matches": st.column_config.NumberColumn("matches", help="captions containing the search text"),
    })
sel = list(event.selection.rows) if event is not None else []
if sel and sel[0] < len(shown) and st.session_state.get("concepts_last_sel") != sel:
    st.session_state["concepts_pick"] = int(shown["cluster"].iloc[sel[0]])
st.session_state["concepts_last_sel"] = sel


if st.session_state.get("concepts_pick") not in names:
    st.session_state["concepts_pick"] = session.default_concept(cdf)
pick = int(st.session_state["concepts_pick"])

left, right = st.columns([6, 5], gap="large")

# --- the map --------------------------------------------------------------------------------
with left:
    version = session.decisions_version(ws)  # one read of the decisions' version per run of this page
    all_tags = session.tags(ws, version)
    colours = ["concept", "complexity", "kept by the plan"] + (["a tag"] if len(all_tags) else [])
    colour = st.segmented_control("Colour the map by", colours, key="concepts_colour", default="concept")
    pts = session.layout(ws, stamp)
    mode = "kept" if colour == "kept by the plan" else (colour or "concept")  # None: the button unselected
    if mode == "a tag":
        label_first = all_tags.sort_values("action", key=lambda a: a != "label", kind="stable")["name"].tolist()
        tag = st.selectbox("Tag", label_first, key="concepts_colour_tag")
        mode = f"tag:{tag}"
    picture = session.map_picture(ws, stamp, mode, params if mode == "kept" else None,
                                  dkey if mode == "kept" else
                                  version if mode.startswith("tag:") else None)
    st.vega_lite_chart(spec=vega_charts.concept_map(
        pts, cdf, "kept" if mode.startswith("tag:") else mode, picture, pick,
        legend=("not tagged", f"tagged {mode[4:]}") if mode.startswith("tag:") else None), width="stretch",
        key=f"concepts_map_{mode}")  # one element per colouring: their layers differ (vega_charts.concept_map)
    st.caption(f"UMAP map of {len(pts):,} images: nearby points look alike to the embedder. "
               "Diamonds are concept centres; the picked concept is outlined.")

# --- one concept ----------------------------------------------------------------------------
with right:
    st.selectbox("Concept", options, key="concepts_pick", format_func=lambda c: names[c])
    row = table.set_index("cluster").loc[pick]
    crow = cdf.set_index("cluster").loc[pick]
    st.subheader(page_data.escape_markdown(names[pick]))
    if has_zs and crow["zs_name"]:
        st.markdown(f"Zero-shot name: **{page_data.escape_markdown(crow['zs_label'])}** · similarity "
                    f"{crow['zs_similarity']:.2f}")
    m = st.columns(2)
    m[0].metric("Images in the pool", f"{int(row['pool_size']):,}",
                help=f"{int(row['size']):,} including held-out eval")
    pct = crow["complexity_pct"]
    m[1].metric("Complexity", f"{row['complexity']:.3f}" if np.isfinite(row["complexity"]) else "–",
                help="d_intra × d_inter",
                delta=f"above {pct:.0f}% of concepts" if np.isfinite(pct) else None,
                delta_color="off", delta_arrow="off")
    m = st.columns(2)
    m[0].metric("Kept by the plan", f"{int(row['kept']):,}",
                delta=(f"{row['kept_pct']:.0f}% of {int(row['eligible']):,}" if np.isfinite(row["kept_pct"])
                       else f"of {int(row['eligible']):,}"),
                delta_color="off", delta_arrow="off")
    m[1].metric("Spread · isolation",
                f"{row['d_intra']:.3f} · {row['d_inter']:.3f}" if np.isfinite(row["d_intra"]) else "–",
                help="d_intra (mean distance of its images to its centre) · "
                     "d_inter (mean distance to the nearest concepts)")
    msg = page_data.concept_message(int(row["pool_size"]), int(row["eligible"]), int(row["kept"]), int(row["size"]),
                                    page_data.rule_kinds(result).get(pick))
    if msg:
        st.info(msg, icon=":material/info:")
    if dkey is not None and result.decisions is not None:
        without = session.plan_counts(ws, stamp, params, None)
        if int(without.kept[pick]) != int(row["kept"]):
            st.caption(f"Without the decisions in force it would keep {int(without.kept[pick]):,}.")
    session.rule_editor(pick, cdf)
    n_show = st.select_slider("Images to show", [session.CONCEPT_TILES, 48, 96], key="concepts_n",
                              value=session.CONCEPT_TILES)
    st.caption("Below: its images nearest the centre first (the most typical), numbered. Green frame: kept by "
               "the current plan; faded red: dropped. d = distance to the centre; never / always: tagged so.")

near = page_data.neighbour_concepts(session.plan_index(ws, stamp), cdf, pick, n=session.CONCEPT_NEIGHBOURS)
shown = session.members_of(ws, stamp, tuple(int(c) for c in near["cluster"]),  # one read for the neighbours
                           session.NEIGHBOUR_TILES)
mem = session.members(ws, stamp, pick, n_show)
kept_rows = session.concept_kept_rows(ws, stamp, params, pick, dkey)  # from this concept's rows alone
tones = ["kept" if r in kept_rows else ("" if s != "pool" else "dropped") for r, s in zip(mem["row_idx"], mem["split"])]
tagged = page_data.tag_notes(mem["row_idx"].tolist(), session.decisions(ws, stamp, dkey))
notes = [f"{i + 1} · d={d:.2f}" + (" · eval" if s != "pool" else "") + t
         for i, (d, s, t) in enumerate(zip(mem["dist_to_centroid"], mem["split"], tagged))]
st.markdown(f"**Images of {page_data.escape_markdown(names[pick])}**")
session.thumb_grid(mem, notes, tones, empty="This concept has no images.")
more = {f"Tag all {int(row['size']):,} of this concept": (session.plan_index(ws, stamp).concept_rows(pick)[0],
                                                          "concept", str(pick))}
if query.strip():
    from densprune import db

    hits = db.caption_rows(ws, query.strip())
    if hits.size:
        more[f"Tag the {hits.size:,} captions with “{query.strip()[:20]}”"] = (hits, "caption", query.strip())
session.tag_picker([int(r) for r in mem["row_idx"]], f"concepts_{pick}", f"Concepts page, concept {pick}", more)

def _open(c: int) -> None:
    st.session_state["concepts_pick"] = c


namesakes = page_data.namesakes(cdf, pick)
if len(namesakes) > 1:  # caption words cannot tell these apart: show what does differ
    st.subheader(f"The {len(namesakes)} concepts labelled “{page_data.escape_markdown(namesakes.attrs['label'])}”")
    st.caption("Their captions share the same most distinctive words; they differ in size, complexity and images. "
               "A rule on one of them can go to all of them at once (the rule box above).")
    strips = session.members_of(ws, stamp, tuple(int(c) for c in namesakes["cluster"]), session.NEIGHBOUR_TILES)
    by_id = table.set_index("cluster")
    for _, nb in namesakes.iterrows():
        c = int(nb["cluster"])
        a, b = st.columns([1, 4], vertical_alignment="center")
        with a:
            here = " (this one)" if c == pick else ""
            st.markdown(f"**{page_data.escape_markdown(nb['name'])}**{here}  \n"
                        f"{int(nb['pool_size']):,} images · complexity {nb['complexity']:.3f} · kept "
                        f"{int(by_id.loc[c, 'kept']):,}")
            if c != pick:
                st.button("Open", key=f"concepts_same_{c}", on_click=_open, args=(c,))
        with b:
            session.thumb_grid(strips[c], tile_px=64, caption_lines=1, explain_missing=False)

st.subheader("Neighbouring concepts")


for _, nb in near.iterrows():
    a, b = st.columns([1, 4], vertical_alignment="center")
    with a:
        st.markdown(f"**{page_data.escape_markdown(nb['name'])}**  \n"
                    f"distance {nb['distance']:.3f} · {int(nb['pool_size']):,} images · "
                    f"complexity {nb['complexity']:.3f}")
        st.button("Open", key=f"concepts_open_{int(nb['cluster'])}", on_click=_open, args=(int(nb["cluster"]),))
    with b:
        session.thumb_grid(shown[int(nb["cluster"])], tile_px=64, caption_lines=1, explain_missing=False)
