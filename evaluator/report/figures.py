"""Plotly figures built from the report's tables (tables in, figures out; no computation of metrics here)."""

from __future__ import annotations

import html
import re

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from .metrics import METRICS
from .trials import CONDITIONS, IDK

METRIC_LABELS = {
    "accuracy": "Accuracy",
    "majority_vote_full": "Majority vote, full dataset",
    "accuracy_on_guesses": "Accuracy on guesses",
    "majority_vote_on_guesses": "Majority vote on guesses",
}
# Two-line ticks, so that the labels never run into the legend.
_TICKS = {
    "accuracy": "Accuracy",
    "majority_vote_full": "Majority vote,<br>full dataset",
    "accuracy_on_guesses": "Accuracy on<br>guesses",
    "majority_vote_on_guesses": "Majority vote<br>on guesses",
}
_TEMPLATE = "plotly_white"
_FONT = dict(family="system-ui, -apple-system, Segoe UI, Roboto, Helvetica, Arial, sans-serif", size=13)


def _t(text) -> str:
    """Plotly renders labels as a small HTML subset: escape user-supplied names (classes, models)."""
    return html.escape(str(text), quote=False)


def row_label(row) -> str:
    """Human-readable name of a Table 2 row: 'human zero-shot' or 'clip (model) one-shot'."""
    subject = row.get("subject", "")
    who = f"{subject} (model)" if row["subject_kind"] == "model" and subject else row["subject_kind"]
    return f"{who} {row['condition']}"


def _layout(fig: go.Figure, title: str, **kwargs) -> go.Figure:
    fig.update_layout(title=dict(text=_t(title)), template=_TEMPLATE, font=_FONT,
                      margin=dict(l=70, r=30, t=70, b=70), **kwargs)
    return fig


def table2_figure(table2: pd.DataFrame, ci: pd.DataFrame | None = None) -> go.Figure:
    """Grouped bars: the four Table 2 metrics per row, with bootstrap CI whiskers when given."""
    fig = go.Figure()
    # Without a subject column there is at most one model, so kind + condition name the row.
    keys = [k for k in ("subject_kind", "subject", "condition") if k in table2.columns]
    bounds = ci.set_index([*keys, "metric"]) if ci is not None and not ci.empty else None
    for _, row in table2.iterrows():
        y = np.array([row[m] for m in METRICS], dtype=float)
        error = None
        if bounds is not None:
            index = [(*(row[k] for k in keys), m) for m in METRICS]
            found = bounds.reindex(index)
            if found["ci_low"].notna().any():
                error = dict(type="data", symmetric=False, array=(found["ci_high"].to_numpy() - y).tolist(),
                             arrayminus=(y - found["ci_low"].to_numpy()).tolist(), thickness=1.2)
        if "subject" not in row and row["subject_kind"] == "model" and bounds is not None:
            row = row.copy()  # the single model's name is in the CI table
            row["subject"] = bounds.loc[(row["subject_kind"], row["condition"], METRICS[0]), "subject"]
        label = _t(row_label(row))
        fig.add_trace(go.Bar(name=label, x=[_TICKS[m] for m in METRICS], y=y, error_y=error,
                             hovertemplate="%{y:.1f}%<extra>" + label + "</extra>"))
    return _layout(fig, "Table 2: accuracy (%) with 95% bootstrap CI", barmode="group", height=560,
                   yaxis=dict(title="percent", range=[0, 105]), xaxis=dict(tickangle=0),
                   legend=dict(orientation="h", y=-0.18))


def ranking_model(per_class: pd.DataFrame) -> tuple[str, str] | None:
    """(model subject, condition) whose per-class p_target ranks the classes (zero-shot preferred)."""
    models = per_class[per_class["subject_kind"] == "model"]
    if models.empty:
        return None
    with_p = models[models["mean_p_target"].notna()]
    pool = with_p if not with_p.empty else models
    pool = pool.assign(_c=pool["condition"].map(CONDITIONS.index)).sort_values(["_c", "subject"])
    first = pool.iloc[0]
    return first["subject"], first["condition"]


def per_class_ranking(per_class: pd.DataFrame) -> pd.DataFrame:
    """Classes ranked easiest-first for the model (Fig. 16), humans' per-condition accuracy beside it.

    Rank key: the ranking model's mean p_target; without p_target its accuracy; without any
    model, the humans' accuracy in their first condition.
    """
    chosen = ranking_model(per_class)
    humans = per_class[per_class["subject_kind"] == "human"]
    wide = humans.pivot_table(index="class", columns="condition", values="accuracy", aggfunc="first")
    wide = wide[[c for c in CONDITIONS if c in wide.columns]].add_prefix("human_")
    if chosen is not None:
        model = per_class[(per_class["subject"] == chosen[0]) & (per_class["condition"] == chosen[1])]
        model = model.set_index("class")
        use_p = model["mean_p_target"].notna().any()
        key = model["mean_p_target"] * 100.0 if use_p else model["accuracy"]
        ranked = pd.DataFrame({"model": chosen[0], "model_condition": chosen[1],
                               "rank_by": "mean p_target (%)" if use_p else "model accuracy (%)",
                               "rank_value": key, "model_accuracy": model["accuracy"]})
        ranked = ranked.join(wide, how="outer")
    else:
        ranked = wide.copy()
        first = wide.columns[0] if len(wide.columns) else None
        ranked["rank_by"] = f"{first} accuracy (%)" if first else ""
        ranked["rank_value"] = wide[first] if first else np.nan
    ranked.index.name = "class"
    return ranked.sort_values("rank_value", ascending=False, kind="stable", na_position="last").reset_index()


def per_class_figure(ranking: pd.DataFrame) -> go.Figure:
    """Fig. 16 analogue: classes ranked by the model's probability of the correct class."""
    fig = go.Figure()
    x = [_t(c) for c in ranking["class"]]
    if "model" in ranking.columns and ranking["model"].notna().any():
        model = ranking["model"].dropna().iloc[0]
        fig.add_trace(go.Scatter(x=x, y=ranking["rank_value"], mode="lines+markers",
                                 name=_t(f"{model}: {ranking['rank_by'].iloc[0]}"), line=dict(width=3)))
    for col in [c for c in ranking.columns if c.startswith("human_")]:
        fig.add_trace(go.Scatter(x=x, y=ranking[col], mode="markers", marker=dict(size=9),
                                 name=_t(f"human accuracy, {col.removeprefix('human_')}")))
    return _layout(fig, "Per-class accuracy: classes ranked by model confidence in the true class",
                   yaxis=dict(title="percent", range=[-5, 105]), xaxis=dict(tickangle=-45, dtick=1),
                   legend=dict(orientation="h", y=-0.35), height=600, width=max(900, 28 * len(x) + 200))


def confusion_figures(confusion: pd.DataFrame) -> dict[str, go.Figure]:
    """One row-normalised heatmap (percent of the true class's answers) per group."""
    figures = {}
    for (kind, subject, condition), part in confusion.groupby(["subject_kind", "subject", "condition"], sort=False):
        matrix = part.pivot_table(index="target", columns="response", values="count", aggfunc="sum", fill_value=0)
        columns = [c for c in matrix.columns if c != IDK] + ([IDK] if IDK in matrix.columns else [])
        rows = sorted(matrix.index)
        ordered = [c for c in rows if c in columns] + [c for c in columns if c not in rows]
        matrix = matrix.reindex(index=rows, columns=ordered, fill_value=0)
        percent = matrix.div(matrix.sum(axis=1), axis=0) * 100.0
        who = f"{subject} (model)" if kind == "model" else "humans"
        fig = go.Figure(go.Heatmap(
            z=percent.to_numpy(), x=[_t(c) for c in percent.columns], y=[_t(r) for r in percent.index],
            colorscale="Blues", zmin=0, zmax=100, colorbar=dict(title="% of row"),
            customdata=matrix.to_numpy(),
            hovertemplate="true %{y}<br>answer %{x}<br>%{z:.1f}% (%{customdata} answers)<extra></extra>"))
        side = max(420, 18 * len(rows) + 200)
        ticks = dict(dtick=1, tickfont=dict(size=10))  # every class named, not every other one
        _layout(fig, f"Confusion matrix: {who}, {condition}", height=side, width=side + 120,
                xaxis=dict(title="answer", tickangle=-45, **ticks),
                yaxis=dict(title="true class", autorange="reversed", **ticks))
        figures[safe_name(f"confusion_{kind}_{subject}_{condition}" if kind == "model"
                          else f"confusion_human_{condition}")] = fig
    return figures


def rt_figure(rt: pd.DataFrame) -> go.Figure:
    """Box plot of response times from precomputed quartiles (no raw points: the HTML stays small)."""
    fig = go.Figure()
    for kind, part in rt.groupby("subject_kind", sort=False):
        fig.add_trace(go.Box(
            name=_t(kind), x=list(part["condition"]), q1=part["q1_ms"], median=part["median_ms"], q3=part["q3_ms"],
            lowerfence=part["whisker_low_ms"], upperfence=part["whisker_high_ms"], mean=part["mean_ms"],
            boxpoints=False))
    return _layout(fig, "Response times by condition (median, IQR, 1.5 IQR whiskers)", boxmode="group",
                   yaxis=dict(title="ms"))


def calibration_figure(bins: pd.DataFrame, summary: pd.DataFrame) -> go.Figure:
    """Reliability curves (accuracy vs mean confidence per bin) with the diagonal of perfect calibration."""
    fig = go.Figure(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="perfect calibration",
                               line=dict(dash="dash", color="#888")))
    for (subject, condition), part in bins.groupby(["subject", "condition"], sort=False):
        part = part[part["n"] > 0]
        ece = summary.loc[(summary["subject"] == subject) & (summary["condition"] == condition), "ece"]
        label = f"{subject}, {condition} (ECE {ece.iloc[0]:.3f})" if len(ece) else f"{subject}, {condition}"
        fig.add_trace(go.Scatter(x=part["mean_confidence"], y=part["accuracy"], mode="lines+markers",
                                 name=_t(label), customdata=part["n"],
                                 hovertemplate="confidence %{x:.2f}<br>accuracy %{y:.2f}<br>n=%{customdata}"))
    return _layout(fig, "Model calibration (15 equal-width bins of p_response)",
                   xaxis=dict(title="mean confidence", range=[0, 1]), yaxis=dict(title="accuracy", range=[0, 1.02]))


def consistency_figure(consistency: pd.DataFrame) -> go.Figure:
    """Error consistency (idk counted as an error) per condition, one bar per pair kind, with 95% CIs."""
    fig = go.Figure()
    shown = consistency[consistency["idk"] == "error"] if "idk" in consistency.columns else consistency
    for kind, part in shown.groupby("pair_kind", sort=False):
        error = None
        if "ci_low" in part.columns and part["ci_low"].notna().any():
            error = dict(type="data", symmetric=False, array=(part["ci_high"] - part["error_consistency"]).tolist(),
                         arrayminus=(part["error_consistency"] - part["ci_low"]).tolist(), thickness=1.2)
        fig.add_trace(go.Bar(name=_t(kind), x=list(part["condition"]), y=part["error_consistency"], error_y=error,
                             customdata=part["n_pairs"], hovertemplate="kappa %{y:.3f} (%{customdata} pairs)"))
    return _layout(fig, "Error consistency (Geirhos et al. 2020; idk = error), 95% CI", barmode="group",
                   yaxis=dict(title="kappa", range=[-1, 1]))


def safe_name(name: str) -> str:
    """A file-name-safe figure name (letters, digits, '.', '_', '-')."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "figure"
