"""One self-contained HTML page: header, Table 2 with CIs, definitions, then tables and figures.

plotly.js is embedded once, inline, in <head>; every figure div only calls it. No CDN, no
web fonts, no external requests. Every piece of text from the data or META goes through
html.escape.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Mapping

import pandas as pd
import plotly.io as pio
from plotly.offline import get_plotlyjs

from .figures import METRIC_LABELS
from .metrics import METRICS
from .sections import (
    consistency_section_table,
    differences_table_html,
    prompts_section,
    replication_section,
    structured_prompts,
)

DEFINITIONS = (
    ("Averaging",
     "Default: mean per-class accuracy (Parkhi et al. 2012; the paper's metric). Each metric is computed per "
     "class (the items' true class) and the classes are averaged with equal weight. With --average micro every "
     "metric is a plain mean over answers (accuracies) or items (majority votes)."),
    ("Accuracy",
     "Over all answers; an 'idk' (I don't know) answer counts as wrong. Per class: correct answers / answers "
     "to that class's items (answer-level mean within the class)."),
    ("Accuracy on guesses",
     "Over the answers other than 'idk'. Per class: correct / non-idk answers; a class with no guesses is left "
     "out of the mean over classes."),
    ("Majority vote, full dataset",
     "Per item, the unique most frequent answer among all its answers, 'idk' included. A tie for the top, or "
     "an 'idk' majority, counts as wrong. Per class: the share of its items whose vote is right."),
    ("Majority vote on guesses",
     "The same after dropping the 'idk' answers; an item with no guesses, or a tie, counts as wrong."),
    ("Models",
     "A model gives one answer per item, so its four values coincide unless it abstains ('idk'). Each model "
     "run is scored in the condition it is listed under."),
    ("Humans",
     "All human participants of a condition are pooled into one row. Simulated and attention-failed "
     "participants are excluded unless the report was asked to include them (see the header)."),
    ("95% CI",
     "Percentile bootstrap (2.5 and 97.5 % of the resampled values). Default (two-way): participants and items "
     "are both drawn with replacement (items within each class, so every class keeps its number of items); "
     "an answer weighs W_p·V_i (participant and item draw counts); a majority vote keeps each item's outcome "
     "and weighs it V_i times the mean W of its answerers. Model rows resample items. With --resample items, "
     "items only; with --resample participants, participants only, votes recomputed (a model row then has no "
     "spread)."),
    ("Paired differences",
     "Human minus each model of the same condition, and each row's gain from an earlier to a later condition, "
     "in percentage points; the CI is taken over the differences within each resample (the same draws for both "
     "rows)."),
    ("McNemar",
     "Human majority vote (full dataset) against each model in the same condition, on the items both have; "
     "exact two-sided binomial test on the discordant items (p = min(1, 2·P[X ≤ min(b, c)]), X ~ Bin(b + c, ½))."),
    ("Fleiss' kappa",
     "Agreement among humans per condition; the categories are the answers, 'idk' included. Generalised for "
     "unequal numbers of raters: per-item agreement P_i = Σ n_ij(n_ij−1) / (n_i(n_i−1)) over items with at "
     "least two answers, P̄ their unweighted mean, P_e = Σ p_j² with p_j the category shares; "
     "κ = (P̄ − P_e)/(1 − P_e). With equal raters this is Fleiss (1971)."),
    ("Error consistency",
     "Geirhos et al. (2020)'s κ = (c_obs − c_exp)/(1 − c_exp), c_exp = p_a·p_b + (1−p_a)(1−p_b), in a form that "
     "holds when people share few items: p = each subject's accuracy over all of their answers in the "
     "condition, c_obs over a pair's common items, and pairs weighted by their number of common items "
     "(EC = Σ n_ab·κ_ab / Σ n_ab). With everyone answering every item this is the plain mean of per-pair κ "
     "(model-vs-human's definition). human-human: all pairs of participants; human-model: each participant "
     "against that model; noise ceiling: each participant against the majority of the other answers to the "
     "same items (ties and an 'idk' majority count as wrong). Two conventions: 'idk' counted as an error, and "
     "'idk' answers dropped. CIs: two-way bootstrap of participants and items. Pairs with undefined κ "
     "(c_exp = 1) are left out."),
    ("Know what they don't know",
     "The zero-shot → one-shot gain in plain accuracy, split by the zero-shot 'idk' answers. Within-subject "
     "(someone answered an item in both): per participant-item pair, by that participant's own zero-shot idk. "
     "Otherwise per item, split by a majority (> ½) of idk answers and by any idk answer."),
    ("Calibration",
     "Expected calibration error over 15 equal-width bins of the model's probability of its answer "
     "(p_response): Σ_b (n_b / N)·|accuracy_b − mean confidence_b|. 'idk' answers are skipped."),
    ("Response times",
     "Median and interquartile range (linear-interpolated quartiles) of rt_ms; whiskers at the most extreme "
     "values within 1.5 IQR of the box."),
)

_CSS = """
:root { color-scheme: light; --ink: #1d2430; --muted: #5b6575; --line: #d9dee7; --accent: #2b5fab; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif;
       color: var(--ink); background: #f6f7f9; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 28px 64px; background: #fff; }
h1 { font-size: 1.7em; margin: 0.2em 0 0.4em; } h2 { font-size: 1.25em; margin: 1.8em 0 0.5em;
     border-bottom: 1px solid var(--line); padding-bottom: 4px; } h3 { font-size: 1.05em; margin: 1.3em 0 0.4em; }
dl.meta { display: grid; grid-template-columns: max-content 1fr; gap: 4px 18px; margin: 0; }
dl.meta dt { color: var(--muted); } dl.meta dd { margin: 0; }
.banner { background: #fff3cd; border: 1px solid #e0b84a; padding: 8px 12px; border-radius: 6px; margin: 12px 0; }
table { border-collapse: collapse; margin: 8px 0 4px; font-variant-numeric: tabular-nums; }
th, td { border-bottom: 1px solid var(--line); padding: 5px 12px; text-align: right; vertical-align: top; }
#table2 td { white-space: nowrap; }
dl.meta ul { margin: 0; padding-left: 1.2em; }
th { background: #eef1f6; font-weight: 600; } td.text, th.text { text-align: left; }
.ci { color: var(--muted); font-size: 0.88em; white-space: nowrap; }
.caption, .note { color: var(--muted); font-size: 0.92em; }
dl.defs dt { font-weight: 600; margin-top: 8px; } dl.defs dd { margin: 2px 0 0 0; }
.figure { margin: 12px 0 24px; overflow-x: auto; }
code { background: #eef1f6; padding: 1px 4px; border-radius: 3px; }
footer { margin-top: 40px; color: var(--muted); font-size: 0.88em; }
"""

_META_ORDER = (
    ("dataset", "Dataset"),
    ("models", "Model(s)"),
    ("model", "Model"),
    ("model_notes", "Model notes"),
    ("prompts", "Prompts"),
    ("templates", "Prompt templates"),
    ("few_shot_method", "Few-shot method"),
    ("exclusions", "Exclusions (study)"),
)


def esc(value) -> str:
    return html.escape(str(value), quote=True)


def render_html(*, meta: Mapping, counts: Mapping, options: Mapping, tables: Mapping[str, pd.DataFrame],
                figures: Mapping[str, object]) -> str:
    """The whole report page as a string (figures: name → plotly Figure, in display order)."""
    title = str(meta.get("title") or "Human vs CLIP study report")
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(title)}</title>", f"<style>{_CSS}</style>",
        # plotly.js once, inline: the page must open offline.
        f'<script type="text/javascript">{get_plotlyjs()}</script>',
        "</head><body><main>",
        f"<h1>{esc(title)}</h1>",
        _header(meta, counts, options),
        _table2_section(tables["table2"], tables.get("table2_ci"), options,
                        simulated=bool(counts.get("n_simulated_included", 0))),
        replication_section(tables.get("replication"), _reference_name(meta, options)),
        _definitions(),
    ]
    parts.append(_sections(tables, figures))
    parts.append(prompts_section(tables.get("prompts")))
    parts.append('<footer>Generated by <code>evaluator.report</code> — options: '
                 + esc(json.dumps(dict(options), sort_keys=True)) + "</footer>")
    parts.append("</main></body></html>")
    return "\n".join(parts)


def _reference_name(meta: Mapping, options: Mapping) -> str:
    if options.get("reference"):
        return str(options["reference"])
    return "CLIP paper, Table 2 (Radford et al. 2021; model row: CLIP ViT-L/14@336px)"


def _header(meta: Mapping, counts: Mapping, options: Mapping) -> str:
    rows = []
    shown = {"title"} | ({"prompts"} if structured_prompts(meta) else set())  # those get their own section
    for key, label in _META_ORDER:
        if key in meta and meta[key] not in (None, "", [], {}):
            rows.append((label, _describe(meta[key])))
            shown.add(key)
    for key, value in meta.items():
        if key not in shown and value not in (None, "", [], {}):
            rows.append((key.replace("_", " ").capitalize(), _describe(value)))
    rows.append(("Participants", esc(
        f"{counts['n_participants']} human participant(s), {counts['n_human_answers']} answers; "
        f"{counts['n_models']} model(s), {counts['n_model_answers']} answers")))
    rows.append(("Excluded by this report", esc(_exclusion_text(counts, options))))
    rows.append(("Averaging", esc("mean per-class accuracy (macro)" if options.get("average") == "macro"
                                  else "plain accuracy over answers / items (micro)")))
    body = "".join(f"<dt>{esc(label)}</dt><dd>{value}</dd>" for label, value in rows)
    banner = ""
    if counts.get("n_simulated_included", 0):
        banner = (f'<div class="banner"><strong>Includes simulated participants:</strong> '
                  f'{esc(counts["n_simulated_included"])} of the {esc(counts["n_participants"])} human '
                  "participants are simulated, not people. Human rows mix real and simulated answers.</div>")
    return f'<section id="header">{banner}<dl class="meta">{body}</dl></section>'


def _exclusion_text(counts: Mapping, options: Mapping) -> str:
    parts = []
    for key, flag, label in (("simulated_subjects", "include_simulated", "simulated"),
                             ("attention_failed_subjects", "include_attention_failed", "attention-failed")):
        n = counts.get(key, 0)
        state = "included" if options.get(flag) else "excluded"
        parts.append(f"{n} {label} subject(s) {state}")
    limits = [f"{text} {options[key]}" for key, text in (("max_blur_count", "window blurs >"),
                                                          ("max_hidden_ms", "ms hidden >"))
              if options.get(key) is not None]
    if limits:  # attention per trial: off by default, stated when on
        what = ("participants with any answer given with " if options.get("attention_unit") == "participant"
                else "answers given with ")
        dropped = f"{counts.get('inattentive_answers_excluded', 0)} answer(s)"
        if options.get("attention_unit") == "participant":
            dropped += f", {counts.get('inattentive_subjects_excluded', 0)} participant(s)"
        parts.append(f"{what}{' or '.join(limits)} excluded ({dropped})")
    return "; ".join(parts)


def _describe(value) -> str:
    if isinstance(value, Mapping):
        return "; ".join(f"{esc(k)}: {_describe(v)}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return "<ul>" + "".join(f"<li>{_describe(v)}</li>" for v in value) + "</ul>"
    return esc(value)


def _table2_section(table2: pd.DataFrame, ci: pd.DataFrame | None, options: Mapping, *, simulated: bool) -> str:
    keys = [k for k in ("subject_kind", "subject", "condition") if k in table2.columns]
    bounds = ci.set_index([*keys, "metric"]) if ci is not None and not ci.empty else None
    head = "".join(f'<th class="text">{esc(k.replace("_", " "))}</th>' for k in keys)
    head += "".join(f"<th>{esc(METRIC_LABELS[m])}</th>" for m in METRICS)
    body = []
    for _, row in table2.iterrows():
        cells = "".join(f'<td class="text">{esc(row[k])}</td>' for k in keys)
        for metric in METRICS:
            cell = _pct(row[metric])
            if bounds is not None:
                try:
                    low, high = bounds.loc[(*(row[k] for k in keys), metric), ["ci_low", "ci_high"]]
                except KeyError:
                    low = high = float("nan")
                if not (math.isnan(low) or math.isnan(high)):
                    cell += f' <span class="ci">[{_pct(low)}, {_pct(high)}]</span>'
            cells += f"<td>{cell}</td>"
        body.append(f"<tr>{cells}</tr>")
    n_boot = options.get("bootstrap", 0)
    caption = (f"Percent; 95% CI in brackets ({esc(n_boot)} bootstrap resamples of "
               f"{esc(options.get('resample', 'items'))})." if n_boot else "Percent; no bootstrap CIs were asked for.")
    if simulated:
        caption += " <strong>Human rows include simulated participants.</strong>"
    return (f'<section id="table2"><h2>Table 2</h2><table><thead><tr>{head}</tr></thead><tbody>'
            + "".join(body) + f'</tbody></table><p class="caption">{caption}</p></section>')


def _definitions() -> str:
    items = "".join(f"<dt>{esc(term)}</dt><dd>{esc(text)}</dd>" for term, text in DEFINITIONS)
    return f'<section id="definitions"><h2>Definitions</h2><dl class="defs">{items}</dl></section>'


_SECTIONS = (
    # (heading, table name or None, figure names or prefix, note)
    ("Table 2 as a chart", None, ("table2",), None),
    ("Per class: humans vs model (paper Fig. 16)", None, ("per_class",),
     "Classes ranked by the model's mean probability of the true class (its accuracy when no p_target)."),
    ("Error consistency", "consistency", ("consistency",),
     "κ per condition; 'noise-ceiling' sets each person against the majority of the other answers to the same "
     "items: a model as consistent with people as people are with their crowd would reach it."),
    ("Paired differences (percentage points)", "differences", (), None),
    ("McNemar: human majority vote vs model", "mcnemar", (), None),
    ("Agreement among humans (Fleiss' kappa)", "fleiss", (), None),
    ("Know what they don't know", "idk_gain", (), "Gains in percentage points of plain accuracy."),
    ("Response times", "response_times", ("response_times",), None),
    ("Model calibration", "calibration", ("calibration",), None),
    ("Confusion matrices", None, ("confusion_",), "Rows: true class; columns: answer; cells: % of the row."),
)


def _sections(tables: Mapping[str, pd.DataFrame], figures: Mapping[str, object]) -> str:
    out = []
    for heading, table_name, figure_names, note in _SECTIONS:
        chosen = [n for n in figures if any(n == f or (f.endswith("_") and n.startswith(f)) for f in figure_names)]
        table = tables.get(table_name) if table_name else None
        if not chosen and (table is None or table.empty):
            continue
        out.append(f"<section><h2>{esc(heading)}</h2>")
        if note:
            out.append(f'<p class="note">{esc(note)}</p>')
        if table is not None and not table.empty:
            out.append(_CUSTOM_TABLES.get(table_name, table_html)(table))
        elif table is not None:
            out.append('<p class="note">Not enough data.</p>')
        for name in chosen:
            div = pio.to_html(figures[name], full_html=False, include_plotlyjs=False,
                              config={"displaylogo": False, "responsive": True}, div_id=f"fig-{name}")
            out.append(f'<div class="figure">{div}</div>')
        out.append("</section>")
    return "\n".join(out)


_CUSTOM_TABLES = {"consistency": consistency_section_table, "differences": differences_table_html}


def table_html(table: pd.DataFrame) -> str:
    """A plain escaped HTML table; floats get 4 significant decimals, text is left-aligned."""
    head = "".join(f'<th class="{_align(table[c])}">{esc(c)}</th>' for c in table.columns)
    rows = []
    for values in table.itertuples(index=False):
        cells = "".join(f'<td class="{_align(table[c])}">{esc(_fmt(v))}</td>' for c, v in zip(table.columns, values,
                                                                                                strict=True))
        rows.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _align(series: pd.Series) -> str:
    return "" if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series) else "text"


def _fmt(value) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        return f"{value:.4g}" if abs(value) < 1e-3 and value != 0 else f"{value:.4f}".rstrip("0").rstrip(".")
    return str(value)


def _pct(value) -> str:
    value = float(value)
    return "–" if math.isnan(value) else f"{value:.1f}"
