"""Train: train CLIP on saved plans with open_clip_train, watch the runs, compare what each plan buys."""

from __future__ import annotations

import streamlit as st

from densprune.app import page_data, session
from densprune.app import run_charts as runcharts
from densprune.train import launch, listing, records
from densprune.train.evaluation import eval_hygiene_warning
from densprune.train.presets import PRESETS, get_preset, open_clip_models
from densprune.train.schedule import RunSpec, fmt_seconds

ws, stamp = session.ws_args()
policy = session.policy()
NO_BAR = {"displayModeBar": False}
OTHER = "another open_clip model…"

st.title("Train")
st.caption("Train a CLIP model from scratch on each plan's kept images with open_clip's own trainer, then "
           "evaluate it on the held-out images: zero-shot classification into their categories and "
           "image↔caption retrieval. Runs train one after another in the background; this page only watches.")

hygiene = eval_hygiene_warning(session.meta(ws, stamp))
if hygiene:
    st.warning(hygiene[0].upper() + hygiene[1:] + ".", icon=":material/warning:")

saved = session.saved_plans_or_stop(ws, "No saved plans yet. Save a plan on the Budget page (for a comparison: the "
                                   "full pool at keep 100%, and DBP, SSP and random at the same budget); it then "
                                   "shows up here.")

# --------------------------------------------------------------------------------------------
# launch
# --------------------------------------------------------------------------------------------
st.subheader("New runs")
c1, c2 = st.columns([3, 2])
names = saved["name"].tolist()
chosen = c1.multiselect("Plans", names, default=names[: min(4, len(names))], key="train_plans",
                        help="One run per plan and seed. Compare plans at the same budget against the full pool.")
preset_choice = c2.selectbox("Preset", [*PRESETS, OTHER], key="train_preset",
                             format_func=lambda p: p if p == OTHER else f"{p}: {PRESETS[p].description}")
preset_name = preset_choice
if preset_choice == OTHER and policy.allow_custom_models:  # any name, local-dir: and hf-hub: included
    preset_name = c2.text_input("open_clip model name", key="train_model", placeholder="ViT-B-16").strip()
elif preset_choice == OTHER:
    preset_name = c2.selectbox("open_clip model", open_clip_models(), key="train_model_pick",
                               help="open_clip's registered models. Other names (local-dir:, hf-hub:) need the "
                                    "app started with --allow-custom-models, or the CLI: densprune train.")
try:
    preset = get_preset(preset_name) if preset_name else None
except ValueError as exc:
    preset = None
    c2.error(page_data.escape_markdown(str(exc)))

mode = st.radio("Compare the plans at", ["samples", "epochs"], horizontal=True, key="train_mode",
                format_func={"samples": "equal compute (same samples seen)",
                             "epochs": "equal epochs (a smaller plan costs less)"}.get,
                help="Equal compute: every run sees the same number of samples, so a 30% plan trains ~3.3× as "
                     "many epochs as the full pool (the paper's comparison). Equal epochs: every run makes the "
                     "same number of passes over its own plan; the smaller plan is cheaper.")
d = st.columns(4)
samples = epochs = None
if mode == "samples":
    samples = int(d[0].number_input("Samples seen", 1, 10**11, value=preset.samples_seen if preset else 30_000,
                                    step=1000, key=f"train_samples_{preset_name}",
                                    help="Rounded to whole epochs of each plan; each run records what it saw."))
else:
    epochs = int(d[0].number_input("Epochs", 1, 10_000, value=4, key="train_epochs"))
seed0 = int(d[1].number_input("First seed", 0, 2**31 - 1, value=0, key="train_seed"))
n_seeds = int(d[2].number_input("Seeds per plan", 1, 10, value=1, key="train_n_seeds",
                                help="Runs per plan with seeds first, first + 1, …: "
                                     "the spread tells noise from effect."))
device = d[3].selectbox("Device", ["auto", "cpu", "cuda"], key="train_device",
                        help="auto: CUDA when available, else CPU (fp32)")

with st.expander("Advanced"):
    a1, a2 = st.columns(2)
    batch = int(a1.number_input("Batch size (0 = the preset's)", 0, 1 << 20, value=0, key="train_batch",
                                help="Samples per step. A plan needs at least one full batch."))
    workers = int(a2.number_input("DataLoader workers (-1 = the preset's)", -1, 64, value=-1, key="train_workers"))

if preset and chosen:
    preview = records.preview_schedules(ws, chosen, preset_name, samples_seen=samples, epochs=epochs,
                                         batch_size=batch or None)
    st.dataframe(preview, hide_index=True, width="stretch",
                 column_config={"samples seen": st.column_config.NumberColumn(format="%d")})
    problems = preview[preview["problem"] != ""]
    n_runs = (len(chosen) - len(problems)) * n_seeds
    may_launch = policy.allows(ws)
    if not may_launch:
        st.error(session.outside_roots_message("Training from this app"))
    if st.button(f"Launch {n_runs} run{'s' * (n_runs != 1)}", type="primary", disabled=n_runs == 0 or not may_launch,
                 key="train_launch", icon=":material/play_arrow:") and may_launch:
        specs = [RunSpec(plan=p, preset=preset_name, samples_seen=samples, epochs=epochs, device=device, seed=s,
                         batch_size=batch or None, workers=None if workers < 0 else workers)
                 for s in range(seed0, seed0 + n_seeds) for p in chosen if p not in set(problems["plan"])]
        try:
            started = launch.launch_runs(ws, specs)
            st.success(f"Started {len(started)} run(s) in the background: {', '.join(started)}",
                       icon=":material/check:")
        except (ValueError, FileExistsError, OSError) as exc:
            st.error(f"Could not start the runs: {page_data.escape_markdown(str(exc))}")


# --------------------------------------------------------------------------------------------
# live runs (refreshed every 2 s while any run is queued or running)
# --------------------------------------------------------------------------------------------
def live() -> None:
    runs = listing.list_runs(ws)
    active = runs[runs.status.isin(runcharts.ACTIVE)]
    if active.empty:
        if st.session_state.pop("train_was_active", False):
            st.rerun()  # the last run finished: refresh the results below and stop polling
        return
    st.session_state["train_was_active"] = True
    st.subheader("Running")
    for row in active.sort_values("created_at").to_dict("records"):
        frac, text = runcharts.progress_line(row)
        a, b = st.columns([6, 1], vertical_alignment="bottom")
        a.progress(frac, text=f"**{page_data.escape_markdown(row['name'])}** · {page_data.escape_markdown(text)}")
        if b.button("Cancel", key=f"train_cancel_{row['name']}", icon=":material/stop:"):
            launch.cancel_run(ws, row["name"])
            st.toast(f"Cancelling {row['name']}…")
    curves = {n: listing.loss_curve(ws, n) for n in active["name"]}
    if any(curves.values()):
        st.plotly_chart(runcharts.loss_curves(curves), width="stretch", config=NO_BAR, key="train_live_loss")


any_active = listing.list_runs(ws)["status"].isin(runcharts.ACTIVE).any()
st.fragment(live, run_every=2.0 if any_active else None)()

# --------------------------------------------------------------------------------------------
# results
# --------------------------------------------------------------------------------------------
results = listing.results_table(ws)
if results.empty:
    st.caption("No runs yet.")
    st.stop()

st.subheader("Compare plans")
summary = runcharts.summary_by_plan(results)
if summary.empty:
    st.caption("No finished runs yet: results appear here when a run has trained and been evaluated.")
else:
    metric = st.selectbox("Metric", list(runcharts.METRICS), format_func=runcharts.METRICS.get, key="train_metric")
    left, right = st.columns(2)
    left.plotly_chart(runcharts.metric_bars(summary, metric), width="stretch", config=NO_BAR, key="train_bars")
    x = right.radio("Compute axis", ["samples_seen", "wall_s"], horizontal=True, key="train_compute_axis",
                    format_func={"samples_seen": "samples seen", "wall_s": "wall time"}.get)
    right.plotly_chart(runcharts.metric_vs_compute(results, metric, x), width="stretch", config=NO_BAR,
                       key="train_scatter")
    st.dataframe(runcharts.summary_view(summary), hide_index=True, width="stretch")
    st.caption("Mean ± sample standard deviation over seeds, in percent. Compare plans within one comparison "
               "(equal compute or equal epochs) and against the spread: a difference smaller than it is noise.")

st.subheader("All runs")
st.dataframe(runcharts.runs_view(results), hide_index=True, width="stretch",
             column_config={"samples seen": st.column_config.NumberColumn(format="%d")})
with st.expander("Loss curves and command lines"):
    pick = st.multiselect("Runs", results["name"].tolist(), default=results["name"].tolist()[:4],
                          key="train_curve_runs")
    if pick:
        st.plotly_chart(runcharts.loss_curves({n: listing.loss_curve(ws, n) for n in pick}), width="stretch",
                        config=NO_BAR, key="train_loss_all")
    one = st.selectbox("Command line of run", results["name"].tolist(), key="train_cmd_run")
    row = results.set_index("name").loc[one]
    st.code(records.run_command_line(ws, one), language="bash", wrap_lines=True)
    st.caption(f"Run folder `{row['run_dir']}` · status {row['status']} · wall {fmt_seconds(row['wall_s'])}")
    if row["status"] == "failed" and row["error"]:
        st.error(page_data.escape_markdown(str(row["error"])))
