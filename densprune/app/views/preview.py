"""Preview: for one concept and one plan, the kept and the dropped images side by side; near-duplicates."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from densprune.app import page_data, session
from densprune.app.thumbgrid import Tile, pairs_html

ws, stamp = session.ws_args()
meta = session.meta(ws, stamp)
cdf = session.concepts(ws, stamp)
index = session.plan_index(ws, stamp)
options, names = session.concept_options(cdf)
CURRENT = session.CURRENT_PLAN

st.title("Preview")
st.caption("What a plan keeps and drops inside one concept, and which images count as near-duplicates.")

if st.session_state.get("preview_concept") not in names:  # start on the concept picked on the Concepts page
    st.session_state["preview_concept"] = st.session_state.get("concepts_pick", options[0])
    if st.session_state["preview_concept"] not in names:
        st.session_state["preview_concept"] = options[0]
saved = session.saved_plans(ws)
c1, c2 = st.columns([3, 2])
concept = c1.selectbox("Concept", options, key="preview_concept", format_func=lambda c: names[c])
plan = c2.selectbox("Plan", [CURRENT] + saved["name"].tolist(), key="preview_plan")

dec = None
if plan == CURRENT:  # the current plan is read from this concept's rows alone, its mask never built
    keep, dkey = session.current_plan(ws, stamp, session.current_params(meta))
    dec = session.decisions(ws, stamp, dkey)
else:
    keep = session.plan_keep(ws, stamp, plan)
if plan == CURRENT:
    st.caption(f"Current plan: **{session.describe_params(session.current_params(meta))}** "
               "(change it on the Budget page)")
else:
    row = session.saved_plan(ws, plan)[0]
    st.caption(f"Saved plan **{page_data.escape_markdown(plan)}**: {session.describe_saved(row['params'])}, keeps "
               f"{int(row['n_kept']):,} of {int(row['pool_size']):,}")

kept, dropped, n_kept, n_dropped = page_data.kept_and_dropped(index, int(concept), keep, n=24, decisions=dec)
crow = cdf.set_index("cluster").loc[int(concept)]
msg = page_data.concept_message(int(crow["pool_size"]), int(n_kept + n_dropped), n_kept, int(crow["size"]))
if msg:
    st.info(msg, icon=":material/info:")

left, right = st.columns(2, gap="large")
for col, title, rows_, n, tone in ((left, "Kept", kept, n_kept, "kept"),
                                   (right, "Dropped", dropped, n_dropped, "dropped")):
    with col:
        total = n_kept + n_dropped
        share = f" ({100 * n / total:.0f}%)" if total else ""
        sampled = " · a sample from the centre outwards" if n > len(rows_) else ""
        st.markdown(f"**{title}: {n:,} images{share}**{sampled}")
        df = session.rows(ws, stamp, tuple(int(r) for r in rows_))
        session.thumb_grid(df, [f"{i + 1} · d={d:.2f}" for i, d in enumerate(df["dist_to_centroid"])],
                           [tone] * len(df), tile_px=92,
                           empty="None: the plan " + ("keeps none of this concept." if tone == "kept"
                                                      else "keeps all of it."))
        if len(df):
            session.tag_picker([int(r) for r in df["row_idx"]], f"preview_{tone}_{int(concept)}",
                               f"Preview page, {tone} of concept {int(concept)}")
st.caption("d = distance to the concept's centre. With “farthest from centre”, DBP keeps the unusual images "
           "and drops the most typical (and most redundant) ones.")

# --- near-duplicates ------------------------------------------------------------------------
st.subheader("Near-duplicates in this concept")
if "preview_eps" not in st.session_state:
    st.session_state["preview_eps"] = float(st.session_state.get("plan_dedup_eps", 0.05))
eps = st.slider("Dedup ε", 0.0, 0.3, step=0.005, key="preview_eps", format="%.3f",
                help="SemDeDup calls an image a duplicate when an earlier image of its concept is more similar "
                     "than 1 − ε (cosine similarity of the embeddings).")
pairs, n_pairs = session.dup_pairs(ws, stamp, int(concept), float(eps), 12)
if n_pairs == 0:
    st.info(f"No near-duplicates at ε = {eps:.3f}: no image of this concept is more similar than "
            f"{1 - eps:.3f} to an earlier one. Raise ε to loosen the threshold.", icon=":material/info:")
else:
    st.markdown(f"**{n_pairs:,}** images of this concept are near-duplicates at ε = {eps:.3f} "
                f"(similarity above {1 - eps:.3f}); the most similar pairs first:")
    k = len(pairs)
    if meta.get("has_thumbnails", True):  # rows without a thumbnail in thumbs.bin are read from their source
        offsets = pd.concat([pairs["thumb_offset"], pairs["dup_thumb_offset"]])
        sizes = pd.concat([pairs["thumb_size"], pairs["dup_thumb_size"]])
        locs = pd.concat([pairs["image_loc"], pairs["dup_image_loc"]])
        data = session.thumbs(ws, stamp, tuple(int(x) for x in offsets), tuple(int(x) for x in sizes), tuple(locs))
    else:
        st.caption(page_data.no_thumbnails_note(meta))
        data = [b""] * (2 * k)

    def tile(i: int, pre: str, image: bytes) -> Tile:
        p = pairs.iloc[i]
        url = p[f"{pre}image_ref"]
        return Tile(image, str(p[f"{pre}caption"] or ""), url=url if isinstance(url, str) else "",
                    size=page_data.size_text(p[f"{pre}width"], p[f"{pre}height"]))

    st.html(pairs_html([(tile(i, "", data[i]), tile(i, "dup_", data[k + i]), f"similarity {pairs['sim'].iloc[i]:.3f}")
                        for i in range(k)]))
    st.caption("Left: the duplicate that SemDeDup drops; right: the earlier image it resembles, which stays.")
