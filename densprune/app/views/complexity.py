"""Complexity: why DBP keeps most of one concept and little of another."""

from __future__ import annotations

from dataclasses import replace

import pandas as pd
import streamlit as st

from densprune.app import page_data, session, vega_charts
from densprune.prune.diagnostics import plan_diagnostics

ws, stamp = session.ws_args()
meta = session.meta(ws, stamp)
cdf = session.concepts(ws, stamp)

st.title("Complexity")
st.markdown(
    "DBP scores every concept by **complexity = d_intra × d_inter**. *d_intra* (spread) is how far its images "
    "lie from the concept's centre on average: small when they are near copies of each other. *d_inter* "
    "(isolation) is how far the centre lies from the nearest other concepts: small when other concepts cover "
    "the same ground. Simple concepts are redundant, so DBP keeps few of their images; complex ones keep many.")

left, right = st.columns([3, 2], gap="medium")
left.vega_lite_chart(spec=vega_charts.spread_isolation(cdf), width="stretch")
left.caption("Bottom left: tight, crowded concepts (simple). Top right: varied, isolated concepts (complex). "
             "Dotted lines join points of equal complexity.")
right.vega_lite_chart(spec=vega_charts.complexity_histogram(cdf), width="stretch")

# --- quotas at the current temperature ------------------------------------------------------
st.subheader("What each concept keeps")
c1, c2 = st.columns(2)
c1.select_slider("Temperature τ", session.TEMPERATURES, key="plan_temperature",
                 help="DBP shares the budget by softmax(complexity / τ). Small τ: the budget goes to the most "
                      "complex concepts. Large τ: every concept gets the same number of images.")
c2.slider("Keep (% of the remaining pool)", 1, 100, key="plan_keep_pct", format="%d%%",
          help="A share of what remains after deduplication and the CLIP filter, as in the paper.")
params = session.current_params(meta)
if params.method != "dbp":
    st.info(f"The current plan uses **{params.method}**, not DBP; the charts below show DBP at the same budget.")
    params = replace(params, method="dbp")
result, _ = session.current_plan(ws, stamp, params)  # the plan alone, without its mask: no baselines here
per_concept = page_data.plan_table(cdf, result)
per = per_concept[per_concept["eligible"] > 0]

groups = page_data.rate_by_complexity(per_concept, bins=5)
if result.n_kept >= int(result.eligible.sum()):
    st.info("This budget keeps every eligible image, so every concept keeps 100%: lower the budget to see "
            "complexity at work.", icon=":material/info:")
elif not groups.empty:
    lo, hi = groups["kept_pct"].iloc[0], groups["kept_pct"].iloc[-1]
    st.markdown(f"At τ = {params.temperature:g} and a budget of {result.budget:,} images "
                f"({params.keep:.0%} of the remaining pool), the **least complex fifth** of the concepts keeps "
                f"**{lo:.0f}%** of its images and the **most complex fifth** keeps **{hi:.0f}%**.")

diag = plan_diagnostics(result)
if diag.effective_concepts is not None:
    st.caption(f":material/balance: {diag.sentence()}. The spread of C sets how sharp τ = {params.temperature:g} is "
               f"(`densprune plan --tau-spreads R` gives τ as R standard deviations of C).")

a, b = st.columns(2, gap="medium")
uniform = 100.0 * result.n_kept / max(int(result.eligible.sum()), 1)
a.vega_lite_chart(spec=vega_charts.kept_vs_complexity(per, uniform), width="stretch")
b.vega_lite_chart(spec=vega_charts.quota_vs_size(per, params.temperature), width="stretch")
st.caption("Left: each dot is a concept; complex concepts keep a larger share. Right: a concept's quota can never "
           "exceed its size (dashed line); where its softmax share was larger (grey cross), what the small complex "
           "concept cannot use is shared among the others.")

# --- least vs most complex, side by side ----------------------------------------------------
st.subheader("Least and most complex concepts")
least, most = page_data.extremes(cdf, n=3)
kept_by = per.set_index("cluster")
shown = session.members_of(ws, stamp, tuple(int(c) for c in pd.concat([least, most])["cluster"]), 12)
if not meta.get("has_thumbnails", True):
    st.caption(page_data.no_thumbnails_note(meta))
cols = st.columns(2, gap="large")
for col, title, group in ((cols[0], "Least complex: near copies, cut hard", least),
                          (cols[1], "Most complex: varied, kept", most)):
    with col:
        st.markdown(f"**{title}**")
        for _, r in group.iterrows():
            c = int(r["cluster"])
            k = kept_by.loc[c] if c in kept_by.index else None
            share = (f"keeps {int(k['kept']):,} of {int(k['eligible']):,} ({k['kept_pct']:.0f}%)" if k is not None
                     else "nothing eligible")
            st.markdown(f"{page_data.escape_markdown(r['name'])} · complexity {r['complexity']:.3f} · "
                        f"d_intra {r['d_intra']:.2f} · d_inter {r['d_inter']:.2f} · **{share}**")
            session.thumb_grid(shown[c], tile_px=64, caption_lines=1, explain_missing=False)
