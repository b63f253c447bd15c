"""Overview: what the workspace holds, how far the pipeline got, how to open another workspace."""

from __future__ import annotations

import streamlit as st

from densprune.app import page_data, session, vega_charts
from densprune.workspace import describe_concept_space

ws, stamp = session.ws_args()
meta = session.meta(ws, stamp)
counts = session.counts(ws, stamp)
cdf = session.concepts(ws, stamp)

st.title("Overview")
st.caption(f"Workspace {page_data.escape_markdown(ws)}")

c = st.columns(5)
c[0].metric("Samples", page_data.format_count(meta["n_samples"]),
            help="Images that decoded and were embedded (one row each).")
c[1].metric("Pool", page_data.format_count(meta["n_pool"]), help="Samples a plan may keep.")
c[2].metric("Held-out eval", page_data.format_count(meta["n_eval"]),
            help="Balanced per category, never kept by any plan: for evaluating training runs.")
c[3].metric("Concepts (K)", f"{meta['k']:,}", help="k-means clusters of the image embeddings.")
c[4].metric("Rejected", page_data.format_count(meta["n_rejects"]),
            help="Inputs that could not be used, with the reason.")

left, right = st.columns([3, 2], gap="large")
with left:
    st.subheader("Source and embedder")
    emb = f"{meta['embedder']} · {meta['model']}" + (f" · {meta['pretrained']}" if meta.get("pretrained") else "")
    st.markdown(f"- **Source:** {page_data.escape_markdown(str(meta['source']))} ({meta['source_kind']})\n"
                f"- **Embedder:** {page_data.escape_markdown(emb)}, {meta['image_dim']}-d\n"
                f"- **Concepts built on:** {page_data.escape_markdown(describe_concept_space(meta))}\n"
                f"- **Built:** {meta['created']} with densprune {meta['densprune_version']}")
    if not meta.get("has_clip_scores"):
        st.info("**No CLIP scores.** This workspace was embedded with the offline embedder (image pixels and "
                "caption words, no neural network), so there is no image–caption similarity: the CLIP-score "
                "filter and the CLIP-score method are switched off. Rebuild with `--embedder openclip` to get them.",
                icon=":material/info:")
    st.subheader("Pipeline")
    steps = page_data.pipeline_steps(ws, meta, counts)
    icon = {"done": ":green[:material/check_circle:]", "not available": ":gray[:material/block:]"}
    st.markdown("\n".join(
        f"- {icon.get(r.state, ':blue[:material/info:]')} **{page_data.escape_markdown(r.step)}** "
        f"({page_data.escape_markdown(r.state)}): {page_data.escape_markdown(r.detail)}" for r in steps.itertuples()))
with right:
    st.subheader("How the app works")
    st.markdown(
        "1. **Concepts**: images are grouped into K concepts by their embeddings.\n"
        "2. **Complexity**: a concept whose images are spread out (*d_intra*) and far from other concepts "
        "(*d_inter*) is complex; a tight clump of look-alikes is simple and redundant.\n"
        "3. **Budget**: DBP shares the kept images out by complexity: simple concepts are cut hard, "
        "complex ones keep most of their images.\n"
        "4. **Preview** what is kept and dropped, then **Export** the plan for training.")
    if meta.get("has_categories"):
        cats = session.top_categories(ws, stamp)
        st.vega_lite_chart(spec=vega_charts.category_bars(cats), width="stretch")

if meta["n_rejects"]:
    st.subheader("Rejected inputs")
    st.dataframe(session.reject_summary(ws, stamp), hide_index=True, width="stretch", key="overview_reject_kinds",
                 column_config={"count": st.column_config.NumberColumn(format="%d"),
                                "example": st.column_config.TextColumn(width="large")})
    with st.expander(f"Every rejected input ({meta['n_rejects']:,}, first 1,000 shown)"):
        st.dataframe(session.rejects(ws, stamp, 1000), hide_index=True, width="stretch")

flags = session.caption_flags(ws, stamp)
if not flags.empty:
    st.subheader("Flagged captions")
    st.caption("These samples are kept; their captions were not valid text as read and were decoded with "
               "U+FFFD replacement characters (samples.caption_flag).")
    st.dataframe(flags, hide_index=True, width="content", key="overview_caption_flags",
                 column_config={"count": st.column_config.NumberColumn(format="%d")})

st.subheader("Open another workspace")
session.open_workspace_form("overview")
