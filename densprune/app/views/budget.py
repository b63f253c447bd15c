"""Budget: the knobs of a plan with live results, saving plans, and comparing two plans."""

from __future__ import annotations

import streamlit as st

from densprune import db
from densprune.app import page_data, session, vega_charts
from densprune.prune import plans
from densprune.prune.diagnostics import plan_diagnostics

ws, stamp = session.ws_args()
meta = session.meta(ws, stamp)
has_clip = bool(meta.get("has_clip_scores"))
CURRENT = session.CURRENT_PLAN

st.title("Budget")
st.caption("Set how many images to keep and how to choose them. Every change recomputes the plan for the "
           "whole pool from per-concept counts stored with the workspace, so it answers at once at any size; "
           "nothing is written until you save it.")


def knobs() -> None:
    methods = [m for m in session.METHOD_NAMES
               if (m != "clip-score" or has_clip) and (m != "negclip" or meta.get("negclip"))]
    if st.session_state.get("plan_method") not in methods:
        st.session_state["plan_method"] = "dbp"
    st.slider("Keep (% of the remaining pool)", 1, 100, key="plan_keep_pct", format="%d%%",
              help="The budget, as in the paper: a share of what remains after deduplication and the CLIP "
                   "filter (the paper deduplicated LAION to 277M and kept 30-60% of that).")
    method = st.selectbox("Method", methods, key="plan_method", format_func=session.METHOD_NAMES.get,
                          help="DBP gives complex concepts more of the budget; SSP keeps the same share of "
                               "every concept; balanced the same number from every concept; hierarchical balanced the "
                               "same share for every branch of a k-means tree of the concepts, level by level (Vo "
                               "et al. 2024; the seed below seeds the tree); prototype keeps the "
                               "images farthest from (or nearest) their concept's centre over the whole pool, one "
                               "threshold for all (Sorscher et al. 2022); random ignores concepts.")
    st.select_slider("Temperature τ", session.TEMPERATURES, key="plan_temperature", disabled=method != "dbp",
                     help="DBP only. Small τ puts the budget on the most complex concepts; large τ gives every "
                          "concept the same number of images. The paper uses 0.1.")
    st.radio("Inside a concept keep", ["hard", "easy", "random"], key="plan_within", horizontal=True,
             disabled=method not in ("dbp", "ssp", "balanced", "hierarchical", "prototype"),
             format_func={"hard": "farthest from centre", "easy": "nearest centre", "random": "random"}.get,
             help="Which images fill a concept's quota (prototype: which end of the pool-wide order; random "
                  "is read as farthest). The paper keeps the hardest (farthest from the centre).")
    st.slider("Balance", 0.0, 1.0, step=0.05, key="plan_balance", disabled=method != "dbp",
              help="DBP only: every concept keeps at least balance × budget / K images (0 = at least one).")
    st.toggle("Deduplicate first (SemDeDup)", key="plan_dedup_on",
              help="Drop an image when an earlier image of its concept is more similar than 1 − ε.")
    st.slider("Dedup ε", 0.0, 0.3, step=0.005, key="plan_dedup_eps", format="%.3f",
              disabled=not st.session_state["plan_dedup_on"])
    curve = session.dedup_curve(ws, stamp)
    if len(curve):
        st.vega_lite_chart(spec=vega_charts.dedup_curve(curve, float(st.session_state["plan_dedup_eps"])),
                           width="stretch", key="budget_dedup_curve")
    st.toggle("CLIP-score filter", key="plan_clip_on", disabled=not has_clip,
              help="Keep only the images whose caption matches them best (top share by CLIP score) before "
                   "the budget is shared out." if has_clip else
              "Unavailable: this workspace has no CLIP scores (offline embedder).")
    st.slider("CLIP: keep top (% of what dedup left)", 5, 100, step=5, key="plan_clip_keep_pct", format="%d%%",
              disabled=not (has_clip and st.session_state["plan_clip_on"]))
    if not has_clip:
        st.caption(":material/info: No CLIP scores in this workspace: it was embedded offline (no text "
                   "tower), so image–caption similarity is unknown. Rebuild with `--embedder openclip` to use it.")
    with st.expander("Advanced"):
        st.number_input("Seed (random choices)", 0, 2**31 - 1, key="plan_seed", step=1)
    st.toggle("Apply the decisions", key="plan_decisions_on",
              help="The workspace's row tags and concept rules (made on the Concepts page or with `densprune tag` / "
                   "`densprune rule`). Off: the pure method, for comparison.")


def results() -> None:
    params = session.current_params(meta)
    n_rows = session.plan_index(ws, stamp).n_rows
    has_cats = bool(meta.get("has_categories"))
    with_coverage = has_cats and (n_rows <= session.COVERAGE_LIVE_ROWS or st.session_state.get("budget_coverage_on"))
    r, dkey = session.current_plan(ws, stamp, params)
    view = session.budget_view(ws, stamp, params, bool(with_coverage), dkey)
    r = view.result
    slow = session.slow_note(ws, stamp, params)
    if slow:
        st.caption(slow)
    shares = page_data.budget_shares(r)
    st.caption(f"Plan: **{session.describe_params(params)}** · keeps {page_data.escape_markdown(shares.sentence())}")
    m = st.columns(4)
    m[0].metric("Kept", f"{r.n_kept:,}", delta=f"{shares.of_remaining:.1%} of remaining",
                delta_color="off", delta_arrow="off", help=shares.sentence())
    m[1].metric("Kept of the raw pool", f"{shares.of_pool:.1%}", delta=f"{r.pool_size - r.n_kept:,} pruned",
                delta_color="off", delta_arrow="off", help=f"The raw pool: {r.pool_size:,} images (held-out eval "
                                                         "images excluded), before dedup and the CLIP filter.")
    m[2].metric("Eligible", f"{r.n_eligible:,}", help="The remaining pool: pool images left after the dedup and "
                                                      "CLIP filters. The budget is a share of it.")
    full = int(((r.kept == r.eligible) & (r.eligible > 0)).sum())
    m[3].metric("Concepts kept whole", f"{full:,} of {int((r.eligible > 0).sum()):,}")
    d = plan_diagnostics(r)
    if d.sentence():
        flat = (d.jaccard_balanced or 0) >= 0.9 or (d.effective_concepts or 0) >= 0.95 * max(d.concepts, 1)
        st.caption(f":material/balance: {d.sentence()}." + (
            " At this τ the plan is close to equal shares per concept (balancing), not complexity weighting: a "
            "smaller τ sharpens it." if flat and params.method == "dbp" else ""),
                   help="exp(H(P)) of DBP's softmax shares P = softmax(C/τ), the max/min share, and the Jaccard "
                        "overlap of the kept set with equal quotas per concept taking the same members.")
    if view.keeps_everything:
        st.info("This plan keeps every eligible image: nothing is pruned beyond the filters. Lower the budget "
                "to let the method choose.", icon=":material/info:")
    for note in r.notes:
        st.caption(f":material/info: {note}")

    st.vega_lite_chart(spec=vega_charts.kept_per_concept(view.per_concept, params.method), width="stretch",
                       key="budget_per_concept")
    if has_cats and n_rows > session.COVERAGE_LIVE_ROWS:
        st.toggle("Category coverage", key="budget_coverage_on",
                  help=f"Kept share of every category under the plan, random and SSP: three keep masks, a pass over "
                       f"the {n_rows:,} rows each, on every change of the knobs. Off, every number above comes "
                       "from the per-concept summary.")
    if view.coverage is not None:
        st.vega_lite_chart(spec=vega_charts.coverage_bars(view.coverage), width="stretch", key="budget_coverage")
    decisions_section(r, dkey)


def decisions_section(r, dkey) -> None:
    """The decisions in force: what each moves, and a way to remove them."""
    from densprune.prune.curation import remove_tag, set_rule

    st.subheader("Decisions")
    version = session.decisions_version(ws)
    if version is None:
        st.caption("No decisions yet. Give a concept a rule (keep whole, drop, floor, cap, weight) or tag images "
                   "(never, always, label) on the Concepts and Preview pages, or with `densprune tag` / `densprune "
                   "rule`; every plan then obeys them.")
        return
    if not st.session_state.get("plan_decisions_on", True):
        st.caption(":material/toggle_off: Switched off: the numbers above are the pure method. Switch “Apply the "
                   "decisions” on to see the plan with them.")
        return
    if r.decisions is None:
        st.caption("The workspace's tags are all labels (or its rules all auto): nothing changes the plan.")
        return
    total = next(e for e in r.effects if e["kind"] == "total")
    st.markdown(f"Decisions **{r.decisions}** in force: **{r.forced:,}** images kept by force, "
                f"**{total['never_eligible']:,}** taken out by never tags, **{total['moved']:,}** images moved "
                "between concepts (against the same plan without them).")
    table = page_data.decision_table(r, session.concepts(ws, stamp))
    st.dataframe(table, hide_index=True, width="stretch", key="budget_decisions",
                 column_config={"effect": st.column_config.TextColumn(
                     "effect", help="a rule: what its concept keeps, against the same plan without decisions; "
                                    "a tag: its images")})
    with st.form("budget_remove_decisions", border=False):
        c1, c2 = st.columns([4, 1], vertical_alignment="bottom")
        gone = c1.multiselect("Remove decisions", table["decision"].tolist(), key="budget_remove_pick")
        go = c2.form_submit_button("Remove", width="stretch")
    if go and gone:
        try:
            for d in gone:
                row = table.set_index("decision").loc[d]
                if d.startswith("tag "):
                    remove_tag(ws, row["target"], who=session.who())
                else:
                    set_rule(ws, [int(d.split(":")[0].split()[1])], "auto", who=session.who(), source="Budget page")
        except (ValueError, db.WorkspaceBusy) as exc:
            st.error(page_data.escape_markdown(str(exc)))
            return
        st.rerun()


def save_section() -> None:
    st.divider()
    st.subheader("Save the plan")
    with st.form("budget_save", border=False):
        c1, c2, c3 = st.columns([3, 1.2, 1], vertical_alignment="bottom")
        name = c1.text_input("Plan name", key="budget_save_name", placeholder="e.g. dbp-30",
                             help="Letters, digits, '_', '.', '-'; up to 64 characters.")
        overwrite = c2.checkbox("Overwrite", key="budget_overwrite")
        submitted = c3.form_submit_button("Save plan", type="primary", width="stretch")
    if submitted:
        params = session.current_params(meta)
        try:
            plans.validate_plan_name(name.strip())
            dkey = session.decisions_key(ws)
            with st.spinner("Saving…"):
                plans.save_plan(ws, name.strip(), session.compute(ws, stamp, params, dkey), overwrite=overwrite,
                                decisions=session.decisions(ws, stamp, dkey))
            st.success(f"Saved plan “{name.strip()}”: {session.describe_params(params)}.", icon=":material/check:")
        except (ValueError, FileExistsError) as exc:  # InfeasibleDecisions and StaleRules are ValueErrors
            st.error(page_data.escape_markdown(str(exc)))
        except db.WorkspaceBusy as exc:  # another process held the workspace past the lock timeout
            st.warning(f"Not saved: {page_data.escape_markdown(str(exc))}. Nothing was written; press Save again.",
                       icon=":material/hourglass:")

    saved = session.saved_plans(ws)
    if saved.empty:
        st.caption("No saved plans yet.")
    else:
        st.dataframe(saved[["name", "method", "n_kept", "budget", "pool_size", "decisions", "created_at"]]
                     .fillna({"decisions": "none"}), hide_index=True,
                     width="stretch", column_config={"n_kept": st.column_config.NumberColumn("kept"),
                                                     "pool_size": st.column_config.NumberColumn("pool"),
                                                     "created_at": st.column_config.DatetimeColumn("saved (UTC)")})


def compare_section() -> None:
    st.divider()
    st.subheader("Compare two plans")
    if not st.toggle("Show the comparison", key="budget_cmp_on",
                     help="Two plans side by side, with the images that flip between them. It follows every "
                          "change of the knobs above; off, the knobs answer faster."):
        return
    choices = [CURRENT] + session.saved_plans(ws)["name"].tolist()
    if len(choices) < 2:
        st.caption("Save a plan to compare it with the current one.")
        return
    c1, c2 = st.columns(2)
    a = c1.selectbox("Plan A", choices, key="budget_cmp_a", index=0)
    b = c2.selectbox("Plan B", choices, key="budget_cmp_b", index=1)
    if CURRENT in (a, b):
        st.caption(f"{CURRENT}: {session.describe_params(session.current_params(meta))}")
    if a == b:
        st.info("Pick two different plans.")
        return
    try:
        per, only_a, only_b, both = page_data.compare_keeps(
            session.plan_keep(ws, stamp, a), session.plan_keep(ws, stamp, b),
            session.row_arrays(ws, stamp)["cluster"], session.concepts(ws, stamp))
    except ValueError as exc:
        st.error(page_data.escape_markdown(str(exc)))
        return
    m = st.columns(3)
    m[0].metric("Kept by both", f"{both:,}")
    m[1].metric("Only A", f"{only_a.size:,}")
    m[2].metric("Only B", f"{only_b.size:,}")
    diff = per.assign(absdiff=per["diff"].abs()).query("absdiff > 0").nlargest(15, "absdiff")
    if diff.empty:
        st.info("Both plans keep exactly the same images.")
        return
    st.vega_lite_chart(spec=vega_charts.compare_diff(diff), width="stretch")
    for col, label, rows_ in zip(st.columns(2, gap="large"), ("A", "B"), (only_a, only_b)):
        with col:
            st.markdown(f"**Kept only by {label}** ({rows_.size:,}; a sample)")
            session.thumb_grid(session.rows(ws, stamp, tuple(int(i) for i in page_data.spread_sample(rows_, 16))),
                          tile_px=80, empty="None.")


@st.fragment
def page() -> None:
    """Everything below the title reruns alone when a knob moves (the router and sidebar do not)."""
    left, right = st.columns([1, 2.3], gap="large")
    with left:
        with st.container(border=True):
            knobs()
    with right:
        results()
    save_section()
    compare_section()


page()
