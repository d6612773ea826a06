"""Figures of the analyses beyond the paper: risk-coverage, difficulty alignment, people + model (tables in, figures out)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from .figures import _layout, _t

_MAX_CURVE_POINTS = 1500  # per curve in the page; risk_coverage_curve.csv keeps every threshold


def risk_coverage_figure(curve: pd.DataFrame, summary: pd.DataFrame) -> go.Figure:
    """The models' selective accuracy against coverage, the humans of each condition as points with 95% CIs."""
    fig = go.Figure()
    for (subject, condition), part in curve.groupby(["subject", "condition"], sort=False):
        step = max(1, int(np.ceil(len(part) / _MAX_CURVE_POINTS)))
        shown = pd.concat([part.iloc[::step], part.iloc[[-1]]]).drop_duplicates("n_kept")
        fig.add_trace(go.Scatter(x=shown["coverage"], y=shown["accuracy"], mode="lines", name=_t(f"{subject}, {condition}"),
                                 customdata=shown["threshold"],
                                 hovertemplate="coverage %{x:.1f}%<br>accuracy %{y:.1f}%<br>threshold %{customdata:.3f}"))
    table = summary.set_index(["condition", "subject", "quantity"]) if not summary.empty else None
    for condition in dict.fromkeys(summary["condition"]) if table is not None else ():
        x = table.loc[(condition, "humans", "human_coverage")]
        y = table.loc[(condition, "humans", "human_accuracy_on_guesses")]
        fig.add_trace(go.Scatter(
            x=[x["estimate"]], y=[y["estimate"]], mode="markers", marker=dict(size=12, symbol="diamond"),
            name=_t(f"humans, {condition}"),
            error_x=_bar(x), error_y=_bar(y),
            hovertemplate="humans: coverage %{x:.1f}%, accuracy on guesses %{y:.1f}%<extra></extra>"))
        models = summary[(summary["condition"] == condition) & (summary["quantity"] == "model_accuracy_at_human_coverage")]
        for row in models.itertuples():
            fig.add_trace(go.Scatter(
                x=[x["estimate"]], y=[row.estimate], mode="markers", marker=dict(size=10, symbol="circle-open"),
                name=_t(f"{row.subject} at the humans' coverage, {condition}"),
                error_y=_bar(pd.Series({"estimate": row.estimate, "ci_low": row.ci_low, "ci_high": row.ci_high})),
                hovertemplate="model at coverage %{x:.1f}%: accuracy %{y:.1f}%<extra></extra>"))
    return _layout(fig, "Risk-coverage: the model abstaining below a confidence threshold vs people answering idk",
                   xaxis=dict(title="coverage (% of items answered)", range=[0, 102]),
                   yaxis=dict(title="accuracy on the answered items (%)"), height=600,
                   legend=dict(orientation="h", y=-0.2))


def _bar(row: pd.Series) -> dict | None:
    if pd.isna(row["ci_low"]) or pd.isna(row["ci_high"]):
        return None
    return dict(type="data", symmetric=False, array=[row["ci_high"] - row["estimate"]],
                arrayminus=[row["estimate"] - row["ci_low"]], thickness=1.2)


def alignment_figure(per_class: pd.DataFrame, alignment: pd.DataFrame) -> go.Figure | None:
    """Per class: human accuracy against the model's mean probability of the true class, rho in the legend."""
    rho = alignment[alignment["quantity"] == "spearman_classes"] if not alignment.empty else alignment
    if rho.empty or "mean_p_target" not in per_class.columns:
        return None
    humans = per_class[per_class["subject_kind"] == "human"].set_index(["condition", "class"])["accuracy"]
    models = per_class[per_class["subject_kind"] == "model"].set_index(["subject", "condition", "class"])["mean_p_target"]
    models = models.sort_index()
    fig = go.Figure()
    for row in rho.itertuples():
        try:
            x = models.loc[(row.model, row.model_condition)] * 100.0
            y = humans.loc[row.condition].reindex(x.index)
        except KeyError:
            continue
        if x.notna().sum() == 0:
            continue
        label = f"humans {row.condition} vs {row.model} {row.model_condition}: rho {row.estimate:.2f}"
        fig.add_trace(go.Scatter(x=x, y=y, mode="markers", name=_t(label), text=[_t(c) for c in x.index],
                                 hovertemplate="%{text}<br>model p(true) %{x:.1f}%<br>human accuracy %{y:.1f}%"))
    if not fig.data:
        return None
    return _layout(fig, "Difficulty alignment per class: human accuracy vs the model's probability of the true class",
                   xaxis=dict(title="model: mean probability of the true class (%)", range=[-2, 102]),
                   yaxis=dict(title="human accuracy (%)", range=[-2, 102]), height=600, showlegend=True,
                   legend=dict(orientation="h", y=-0.2))


def combination_figure(combination: pd.DataFrame) -> go.Figure:
    """Accuracy of humans alone, the model alone and both combined, per condition and model, with 95% CIs."""
    fig = go.Figure()
    plain = combination[combination["versus"] == ""]
    for (condition, model), part in plain.groupby(["condition", "model"], sort=False):
        error = dict(type="data", symmetric=False, array=(part["ci_high"] - part["estimate"]).tolist(),
                     arrayminus=(part["estimate"] - part["ci_low"]).tolist(), thickness=1.2) \
            if part["ci_low"].notna().any() else None
        fig.add_trace(go.Bar(name=_t(f"{condition}, {model}"), x=[_t(m) for m in part["method"]], y=part["estimate"],
                             error_y=error, hovertemplate="%{x}: %{y:.1f}%"))
    return _layout(fig, "People and model together (cross-validated over items), accuracy with 95% CI",
                   barmode="group", yaxis=dict(title="accuracy (%)", range=[0, 105]), height=560, showlegend=True,
                   legend=dict(orientation="h", y=-0.35))
