"""The replication view: a published Table 2 beside this study's, cell by cell; and the prompts table from META."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from .metrics import METRICS
from .trials import CONDITIONS, KINDS, ReportInputError

PAPER_TABLE2 = Path(__file__).parent / "data" / "clip_paper_table2.csv"
PAPER_BENCHMARKS = {"oxford-pets": PAPER_TABLE2}  # meta["benchmark"] -> the published table used by default
REPLICATION_COLUMNS = ("subject_kind", "condition", "reference_subject", "subject", "metric", "reference",
                       "ours", "ci_low", "ci_high", "difference", "reference_in_ci")
PROMPT_COLUMNS = ("model", "class", "prompt")


def read_reference(path: str | Path) -> pd.DataFrame:
    """A published table in the shape of ``table2.csv`` (percent; ``subject`` optional), checked."""
    path = Path(path)
    if not path.is_file():
        raise ReportInputError(f"reference table not found: {path}")
    try:
        table = pd.read_csv(path, dtype={"subject_kind": str, "subject": str, "condition": str},
                            keep_default_na=False, na_values={m: [""] for m in METRICS})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError, UnicodeDecodeError) as exc:
        raise ReportInputError(f"cannot read reference table {path}: {exc}") from exc
    missing = [c for c in ("subject_kind", "condition", *METRICS) if c not in table.columns]
    if missing:
        raise ReportInputError(f"reference table {path} lacks column(s) {', '.join(missing)} "
                               "(expected the shape of table2.csv)")
    if "subject" not in table.columns:
        table["subject"] = ""
    table["subject_kind"] = table["subject_kind"].str.strip().str.lower()
    table["condition"] = table["condition"].str.strip().str.lower()
    for col, allowed in (("subject_kind", KINDS), ("condition", CONDITIONS)):
        bad = sorted(set(table[col]) - set(allowed))
        if bad:
            raise ReportInputError(f"reference table {path}: unknown {col} {', '.join(map(repr, bad))}")
    for metric in METRICS:
        values = pd.to_numeric(table[metric], errors="coerce")
        if (values.isna() & table[metric].notna()).any() or ((values < 0) | (values > 100)).any():
            raise ReportInputError(f"reference table {path}: column {metric} must hold percentages in [0, 100]")
        table[metric] = values.astype(float)
    return table[["subject_kind", "subject", "condition", *METRICS]].reset_index(drop=True)


def reference_for(reference: str | Path | None, meta: Mapping) -> tuple[pd.DataFrame | None, str]:
    """The reference table and its name: the given file, else the paper's table for a known benchmark."""
    if reference:
        return read_reference(reference), str(reference)
    path = PAPER_BENCHMARKS.get(str(meta.get("benchmark", "")).lower())
    if path is None:
        return None, ""
    return read_reference(path), "CLIP paper, Table 2 (Radford et al. 2021)"


def replication_table(reference: pd.DataFrame, table2_ci: pd.DataFrame) -> pd.DataFrame:
    """Per reference cell: its value, ours with the 95% CI, ours minus it, and whether it lies in our CI.

    Human rows are matched by condition; a reference model row is set beside *each* of our models in that
    condition (``subject`` names ours, ``reference_subject`` the published one), or beside nothing.
    """
    ours = table2_ci.assign(subject=table2_ci["subject"].fillna(""))
    rows = []
    for _, ref in reference.iterrows():
        here = ours[(ours["subject_kind"] == ref["subject_kind"]) & (ours["condition"] == ref["condition"])]
        subjects = list(dict.fromkeys(here["subject"])) or [None]
        for subject in subjects:
            for metric in METRICS:
                paper = float(ref[metric])
                cell = here[(here["subject"] == subject) & (here["metric"] == metric)] if subject is not None \
                    else here.iloc[0:0]
                if cell.empty:
                    rows.append([ref["subject_kind"], ref["condition"], ref["subject"], "" if subject is None
                                 else subject, metric, paper, np.nan, np.nan, np.nan, np.nan, None])
                    continue
                value, low, high = (float(cell.iloc[0][c]) for c in ("estimate", "ci_low", "ci_high"))
                inside = None if np.isnan(paper) or np.isnan(low) or np.isnan(high) else bool(low <= paper <= high)
                rows.append([ref["subject_kind"], ref["condition"], ref["subject"], subject, metric, paper, value,
                             low, high, value - paper, inside])
    return pd.DataFrame(rows, columns=list(REPLICATION_COLUMNS))


def prompts_table(meta: Mapping) -> pd.DataFrame:
    """``meta["prompts"]`` as given by the study side (a list of {model, class, prompts}) in long form."""
    rows = []
    entries = meta.get("prompts")
    if isinstance(entries, list):
        for entry in entries:
            if isinstance(entry, Mapping):
                for prompt in entry.get("prompts") or []:
                    rows.append([str(entry.get("model", "")), str(entry.get("class", "")), str(prompt)])
    return pd.DataFrame(rows, columns=list(PROMPT_COLUMNS))
