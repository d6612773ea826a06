"""HTML pieces of the report that need more than a plain table: replication view, consistency, prompts."""

from __future__ import annotations

import html
import math
from collections.abc import Mapping

import pandas as pd

from .figures import METRIC_LABELS


def esc(value) -> str:
    return html.escape(str(value), quote=True)


def pct(value) -> str:
    value = float(value)
    return "–" if math.isnan(value) else f"{value:.1f}"


def _ci(low, high, fmt) -> str:
    if low is None or high is None or math.isnan(float(low)) or math.isnan(float(high)):
        return ""
    return f' <span class="ci">[{fmt(low)}, {fmt(high)}]</span>'


def replication_section(table: pd.DataFrame, reference_name: str) -> str:
    """The published Table 2 beside ours: per cell the paper's value, ours [95% CI], the difference, inside?"""
    if table is None or table.empty:
        return ""
    head = ("<tr><th class='text'>row</th><th class='text'>ours</th><th class='text'>metric</th><th>published</th>"
            "<th>ours [95% CI]</th><th>ours − published</th><th class='text'>published value in our CI?</th></tr>")
    body = []
    for row in table.itertuples(index=False):
        label = "humans" if row.subject_kind == "human" else f"model: {row.reference_subject or '?'}"
        ours = "humans" if row.subject_kind == "human" else (row.subject or "no model of ours in this condition")
        inside = {True: "yes", False: "<strong>no</strong>"}.get(row.reference_in_ci, "–")
        body.append(f"<tr><td class='text'>{esc(label)}, {esc(row.condition)}</td><td class='text'>{esc(ours)}</td>"
                    f"<td class='text'>{esc(METRIC_LABELS.get(row.metric, row.metric))}</td><td>{pct(row.reference)}</td>"
                    f"<td>{pct(row.ours)}{_ci(row.ci_low, row.ci_high, pct)}</td><td>{pct(row.difference)}</td>"
                    f"<td class='text'>{inside}</td></tr>")
    return (f'<section id="replication"><h2>Replication: the published Table 2 beside this study</h2>'
            f'<p class="note">Reference: {esc(reference_name)}. Percent; our 95% CI from the same bootstrap as '
            "Table 2. A published model row is set beside each of our models in that condition (named in "
            "<em>ours</em>).</p>"
            f"<table><thead>{head}</thead><tbody>{''.join(body)}</tbody></table></section>")


def consistency_section_table(table: pd.DataFrame) -> str:
    """Error consistency per condition and kind, both idk conventions side by side, with CIs."""
    if table is None or table.empty:
        return ""

    def fmt(v):
        return "–" if math.isnan(float(v)) else f"{float(v):.3f}"

    head = ("<tr><th class='text'>condition</th><th class='text'>pair kind</th>"
            "<th>κ, idk = error [95% CI]</th><th>pairs</th><th>κ, idk dropped [95% CI]</th><th>pairs</th></tr>")
    body = []
    for (condition, kind), part in table.groupby(["condition", "pair_kind"], sort=False):
        cells = ""
        for idk in ("error", "dropped"):
            row = part[part["idk"] == idk]
            if row.empty:
                cells += "<td>–</td><td>–</td>"
                continue
            r = row.iloc[0]
            cells += f"<td>{fmt(r['error_consistency'])}{_ci(r['ci_low'], r['ci_high'], fmt)}</td><td>{int(r['n_pairs'])}</td>"
        body.append(f"<tr><td class='text'>{esc(condition)}</td><td class='text'>{esc(kind)}</td>{cells}</tr>")
    return f"<table><thead>{head}</thead><tbody>{''.join(body)}</tbody></table>"


def differences_table_html(table: pd.DataFrame) -> str:
    """Paired differences in percentage points with their CIs, one row per comparison, metrics as columns."""
    if table is None or table.empty:
        return ""
    metrics = list(dict.fromkeys(table["metric"]))
    head = "<tr><th class='text'>difference</th>" + "".join(
        f"<th>{esc(METRIC_LABELS.get(m, m))}</th>" for m in metrics) + "</tr>"
    body = []
    keys = ["comparison", "subject", "condition", "versus_subject", "versus_condition"]
    for key, part in table.groupby(keys, sort=False):
        comparison, subject, condition, versus, versus_condition = key
        label = (f"{subject} − {versus}, {condition}" if comparison == "human - model"
                 else f"{subject}: {condition} − {versus_condition}")
        cells = ""
        for m in metrics:
            r = part[part["metric"] == m].iloc[0]
            cells += f"<td>{pct(r['estimate'])}{_ci(r['ci_low'], r['ci_high'], pct)}</td>"
        body.append(f"<tr><td class='text'>{esc(label)}</td>{cells}</tr>")
    return f"<table><thead>{head}</thead><tbody>{''.join(body)}</tbody></table>"


def prompts_section(table: pd.DataFrame | None) -> str:
    """The exact prompt strings each model run used, per class, folded away by default."""
    if table is None or table.empty:
        return ""
    body = []
    for (model, cls), part in table.groupby(["model", "class"], sort=False):
        prompts = "<br>".join(esc(p) for p in part["prompt"])
        body.append(f"<tr><td class='text'>{esc(model)}</td><td class='text'>{esc(cls)}</td>"
                    f"<td class='text'>{prompts}</td></tr>")
    n_models = table["model"].nunique()
    return (f'<section id="prompts"><h2>Prompts</h2><details><summary>{len(table)} prompt string(s) of '
            f"{n_models} model run(s), per class (prompts.csv)</summary><table><thead><tr><th class='text'>model</th>"
            "<th class='text'>class</th><th class='text'>prompts</th></tr></thead><tbody>"
            + "".join(body) + "</tbody></table></details></section>")


def structured_prompts(meta: Mapping) -> bool:
    """meta["prompts"] in the study side's form (a list of {model, class, prompts}) rather than plain text."""
    value = meta.get("prompts")
    return isinstance(value, list) and any(isinstance(v, Mapping) for v in value)


def risk_coverage_table_html(table: pd.DataFrame) -> str:
    """Per condition: the humans' point with CIs and, per model, its accuracy at that coverage and the difference."""
    if table is None or table.empty:
        return ""
    cells = table.set_index(["condition", "subject", "quantity"])

    def cell(condition, subject, quantity, fmt=pct):
        try:
            r = cells.loc[(condition, subject, quantity)]
        except KeyError:
            return "–"
        return f"{fmt(r['estimate'])}{_ci(r['ci_low'], r['ci_high'], fmt)}"

    head = ("<tr><th class='text'>condition</th><th>humans: coverage [95% CI]</th>"
            "<th>humans: accuracy on guesses</th><th class='text'>model</th><th>model accuracy at the humans' coverage</th>"
            "<th>model − humans (pp)</th><th>model's confidence threshold there</th></tr>")
    body = []
    for condition in dict.fromkeys(table["condition"]):
        human = (f"<td class='text'>{esc(condition)}</td><td>{cell(condition, 'humans', 'human_coverage')}</td>"
                 f"<td>{cell(condition, 'humans', 'human_accuracy_on_guesses')}</td>")
        models = [s for s in dict.fromkeys(table.loc[table["condition"] == condition, "subject"]) if s != "humans"]
        if not models:
            body.append(f"<tr>{human}<td class='text'>–</td><td>–</td><td>–</td><td>–</td></tr>")
        for model in models:
            body.append(f"<tr>{human}<td class='text'>{esc(model)}</td>"
                        f"<td>{cell(condition, model, 'model_accuracy_at_human_coverage')}</td>"
                        f"<td>{cell(condition, model, 'model_minus_humans')}</td>"
                        f"<td>{cell(condition, model, 'model_threshold_at_human_coverage', _three)}</td></tr>")
    return f"<table><thead>{head}</thead><tbody>{''.join(body)}</tbody></table>"


def alignment_table_html(table: pd.DataFrame) -> str:
    """Per human condition and model row: cross-entropy, KL, human entropy (nats) and both Spearman's rho, with CIs."""
    if table is None or table.empty:
        return ""
    quantities = [("cross_entropy", "cross-entropy H(h, m)"), ("kl_divergence", "KL(h‖m)"),
                  ("human_entropy", "human entropy H(h)"), ("spearman_items", "ρ over items"),
                  ("spearman_classes", "ρ over classes")]
    head = ("<tr><th class='text'>humans</th><th class='text'>model</th>"
            + "".join(f"<th>{esc(label)} [95% CI]</th>" for _, label in quantities) + "</tr>")
    body = []
    for (condition, model, model_condition), part in table.groupby(["condition", "model", "model_condition"],
                                                                   sort=False):
        found = part.set_index("quantity")
        cells = ""
        for quantity, _ in quantities:
            if quantity not in found.index:
                cells += "<td>–</td>"
                continue
            r = found.loc[quantity]
            cells += f"<td>{_three(r['estimate'])}{_ci(r['ci_low'], r['ci_high'], _three)}</td>"
        body.append(f"<tr><td class='text'>{esc(condition)}</td><td class='text'>{esc(model)}, {esc(model_condition)}</td>"
                    f"{cells}</tr>")
    return f"<table><thead>{head}</thead><tbody>{''.join(body)}</tbody></table>"


def combination_table_html(table: pd.DataFrame) -> str:
    """Per condition and model: each method's accuracy and the paired differences, with CIs."""
    if table is None or table.empty:
        return ""
    head = ("<tr><th class='text'>condition</th><th class='text'>model</th><th class='text'>accuracy of</th>"
            "<th>percent [95% CI]</th></tr>")
    body = []
    for row in table.itertuples(index=False):
        what = row.method if not row.versus else f"{row.method} − {row.versus} (pp)"
        body.append(f"<tr><td class='text'>{esc(row.condition)}</td><td class='text'>{esc(row.model)}</td>"
                    f"<td class='text'>{esc(what)}</td><td>{pct(row.estimate)}{_ci(row.ci_low, row.ci_high, pct)}</td></tr>")
    first = table.iloc[0]
    note = (f"<p class='note'>{int(first['folds'])} folds over items; model input: {esc(first['model_input'])}; "
            f"{int(first['n_items'])} items, {int(first['n_answers'])} human answers (first row).</p>")
    return f"{note}<table><thead>{head}</thead><tbody>{''.join(body)}</tbody></table>"


def _three(value) -> str:
    value = float(value)
    return "–" if math.isnan(value) else f"{value:.3f}"
