"""Tables and Plotly figures of the Train page, built from :func:`densprune.train.listing.results_table`
and the runs' progress events (no Streamlit)."""

from __future__ import annotations

import html

import pandas as pd
import plotly.graph_objects as go

from densprune.train.schedule import fmt_seconds

METRICS = {"zeroshot_top1": "zero-shot top-1", "i2t_r1": "image→text R@1", "i2t_r5": "image→text R@5",
           "t2i_r1": "text→image R@1", "t2i_r5": "text→image R@5"}
MODE_NAMES = {"samples": "equal compute", "epochs": "equal epochs"}
METHOD_COLOURS = {"dbp": "#4c78a8", "random": "#888", "ssp": "#f58518", "balanced": "#e45756",
                  "hierarchical": "#9d755d", "prototype": "#72b7b2", "clip-score": "#54a24b", "negclip": "#eeca3b",
                  "dedup": "#b279a2"}
ACTIVE = ("queued", "running")


def _layout(fig: go.Figure, title: str, height: int, **kw) -> go.Figure:
    fig.update_layout(height=height, margin=dict(l=0, r=0, t=30 if title else 8, b=0),
                      title=dict(text=title, font_size=14) if title else None, **kw)
    return fig


def runs_view(results: pd.DataFrame) -> pd.DataFrame:
    """The runs table as shown: one row per run, metrics in percent, seconds as numbers."""
    cols = {"name": "run", "plan": "plan", "method": "method", "mode": "comparison", "seed": "seed",
            "status": "status", "n_train": "images", "epochs": "epochs", "samples_seen": "samples seen",
            "wall_s": "wall (s)", **{m: f"{label} %" for m, label in METRICS.items()}, "error": "error"}
    df = results.reindex(columns=list(cols)).rename(columns=cols)
    df["comparison"] = df["comparison"].map(MODE_NAMES).fillna(df["comparison"])
    for label in METRICS.values():
        df[f"{label} %"] = (100 * pd.to_numeric(df[f"{label} %"], errors="coerce")).round(1)
    return df


def summary_by_plan(results: pd.DataFrame) -> pd.DataFrame:
    """Finished runs grouped by (plan, preset, comparison, epochs), i.e. runs that differ only in their
    seed: runs, samples seen, wall time, and each metric's mean and sample std over seeds, in percent."""
    done = results[results.status == "done"].copy()
    if done.empty:
        return pd.DataFrame()
    for m in METRICS:
        if m not in done:
            done[m] = float("nan")
    g = done.groupby(["plan", "preset", "mode", "epochs"], dropna=False)
    out = g.agg(method=("method", "first"), images=("n_train", "first"), seeds=("seed", "count"),
                samples_seen=("samples_seen", "mean"), wall_s=("wall_s", "mean"),
                **{f"{m}_mean": (m, "mean") for m in METRICS}, **{f"{m}_std": (m, "std") for m in METRICS})
    out = out.reset_index()
    for m in METRICS:
        out[f"{m}_mean"] = 100 * out[f"{m}_mean"]
        out[f"{m}_std"] = 100 * out[f"{m}_std"].fillna(0.0)
    out["comparison"] = out["mode"].map(MODE_NAMES).fillna(out["mode"])
    out["label"] = [f"{p} · {e} ep" for p, e in zip(out["plan"], out["epochs"])]
    return out.sort_values(["mode", "images", "plan"], ascending=[False, False, True]).reset_index(drop=True)


def summary_view(summary: pd.DataFrame) -> pd.DataFrame:
    """summary_by_plan as shown: 'mean ± std' strings per metric."""
    if summary.empty:
        return summary
    df = summary[["plan", "method", "preset", "comparison", "images", "epochs", "seeds", "samples_seen",
                  "wall_s"]].copy()
    df["samples_seen"] = df["samples_seen"].round().astype("int64")
    df["wall_s"] = df["wall_s"].round(1)
    for m, label in METRICS.items():
        df[f"{label} %"] = [f"{a:.1f} ± {b:.1f}" if n > 1 else f"{a:.1f}"
                            for a, b, n in zip(summary[f"{m}_mean"], summary[f"{m}_std"], summary["seeds"])]
    return df.rename(columns={"samples_seen": "samples seen", "wall_s": "wall (s)", "seeds": "runs"})


def metric_bars(summary: pd.DataFrame, metric: str, height: int = 360) -> go.Figure:
    """One bar per plan (mean over seeds, error bar = std), side by side per comparison."""
    fig = go.Figure()
    for mode, part in summary.groupby("mode", sort=False):
        fig.add_trace(go.Bar(
            x=[html.escape(str(p)) for p in part["label"]], y=part[f"{metric}_mean"], name=MODE_NAMES.get(mode, mode),
            error_y=dict(type="data", array=part[f"{metric}_std"], visible=True),
            customdata=part[["seeds", "samples_seen", "wall_s"]].to_numpy(),
            hovertemplate="%{x}: %{y:.1f}% (%{customdata[0]} seeds)<br>%{customdata[1]:,.0f} samples seen, "
                          "%{customdata[2]:.0f} s<extra>%{fullData.name}</extra>"))
    return _layout(fig, f"{METRICS[metric]} (%)", height, barmode="group", legend=dict(orientation="h", y=-0.15))


def metric_vs_compute(results: pd.DataFrame, metric: str, x: str = "samples_seen", height: int = 360) -> go.Figure:
    """Every finished run: the metric against its training compute (samples seen or wall time)."""
    done = results[(results.status == "done") & results.get(metric, pd.Series(dtype=float)).notna()]
    fig = go.Figure()
    for method, part in done.groupby("method", dropna=False):
        fig.add_trace(go.Scatter(
            x=part[x], y=100 * part[metric], mode="markers", name=html.escape(str(method)),
            marker=dict(size=10, color=METHOD_COLOURS.get(str(method)),
                        symbol=["circle" if m == "samples" else "diamond" for m in part["mode"]]),
            text=[html.escape(f"{r} ({MODE_NAMES.get(m, m)})") for r, m in zip(part["name"], part["mode"])],
            hovertemplate="%{text}<br>%{x:,.0f}: %{y:.1f}%<extra></extra>"))
    xtitle = "samples seen" if x == "samples_seen" else "wall time (s)"
    return _layout(fig, f"{METRICS[metric]} against training compute (● equal compute, ◆ equal epochs)", height,
                   xaxis_title=xtitle, yaxis_title="%", legend=dict(orientation="h", y=-0.2))


def loss_curves(curves: dict[str, list[dict]], height: int = 340) -> go.Figure:
    """Training loss against samples seen, one line per run (curves: run -> progress events)."""
    fig = go.Figure()
    for name, events in curves.items():
        ev = [e for e in events if "loss" in e]
        fig.add_trace(go.Scatter(x=[e["samples_seen"] for e in ev], y=[e["loss"] for e in ev], mode="lines",
                                 name=html.escape(name),
                                 hovertemplate="%{x:,} samples: loss %{y:.3f}<extra>%{fullData.name}</extra>"))
    return _layout(fig, "Training loss", height, xaxis_title="samples seen", yaxis_title="contrastive loss",
                   legend=dict(orientation="h", y=-0.25))


def progress_line(row: dict) -> tuple[float, str]:
    """(fraction done, one-line status) of an active run's row."""
    target = int(row.get("target_samples") or 0)
    seen = int(row.get("samples_seen") or 0)
    frac = min(1.0, seen / target) if target else 0.0
    if row.get("status") == "queued":
        return 0.0, "queued: waits for the runs before it"
    phase = row.get("phase") or "train"
    if phase == "export":
        return 0.0, "exporting the plan"
    if phase == "eval":
        return 1.0, "evaluating the checkpoint"
    loss = row.get("loss")
    loss_txt = f"loss {loss:.3f}" if loss is not None and loss == loss else "starting the trainer"
    return frac, (f"step {int(row.get('step') or 0):,}/{int(row.get('total_steps') or 0):,} · {seen:,}/{target:,} "
                  f"samples · {loss_txt} · elapsed {fmt_seconds(row.get('elapsed_s'))} · "
                  f"ETA {fmt_seconds(row.get('eta_s'))}")
