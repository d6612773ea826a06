"""The long trial table: schema, validation, reading and participant exclusions.

One row is one answer of one subject (a human participant or a model) to one item
(image) in one condition. Everything downstream assumes a table that went through
:func:`validate_trials`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

IDK = "idk"
CONDITIONS = ("zero-shot", "one-shot", "two-shot")
KINDS = ("human", "model")
REQUIRED_COLUMNS = ("subject", "subject_kind", "condition", "item", "target", "response", "rt_ms")
FLAG_COLUMNS = ("simulated", "attention_failed")
PROBABILITY_COLUMNS = ("p_target", "p_response")
# Attention per trial (optional): window blurs and ms the page was hidden while the trial's clock ran.
ATTENTION_COLUMNS = ("blur_count", "hidden_ms")
ATTENTION_UNITS = ("trial", "participant")
PREPARED_ATTR = "evaluator.report.prepared"
TEXT_COLUMNS = ("subject", "subject_kind", "condition", "item", "target", "response")

_TRUE = {"true", "1", "yes", "y", "t"}
_FALSE = {"false", "0", "no", "n", "f", ""}


class ReportInputError(ValueError):
    """The trial table (or the report's inputs) cannot be reported on; the message says why."""


def read_trials_csv(path: str | Path) -> pd.DataFrame:
    """Read a trial CSV, keeping ids and class names as text (``007`` stays ``007``)."""
    path = Path(path)
    if not path.is_file():
        raise ReportInputError(f"trial file not found: {path}")
    try:
        header = pd.read_csv(path, nrows=0).columns
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise ReportInputError(f"cannot read {path} as CSV: {exc}") from exc
    dtypes = {col: str for col in (*TEXT_COLUMNS, *FLAG_COLUMNS) if col in header}
    try:
        # keep_default_na=False: a class or subject called "NA"/"None" must stay a name.
        # Numbers: only a blank cell is missing; text is checked (and reported) by validate_trials.
        blank = {col: [""] for col in ("rt_ms", *PROBABILITY_COLUMNS, *ATTENTION_COLUMNS) if col in header}
        return pd.read_csv(path, dtype=dtypes, keep_default_na=False, na_values=blank, low_memory=False)
    except (pd.errors.ParserError, ValueError, UnicodeDecodeError) as exc:
        raise ReportInputError(f"cannot read {path} as CSV: {exc}") from exc


def validate_trials(trials: pd.DataFrame) -> pd.DataFrame:
    """Check the schema and return a normalised copy (stripped text, lower-case kinds/conditions, bool flags).

    Raises :class:`ReportInputError` for: an empty table, missing columns, empty cells in
    the text columns, unknown ``subject_kind`` or ``condition``, a class named ``idk``,
    an item with two different targets, a subject answering an item twice in one
    condition, non-numeric, negative or infinite ``rt_ms``, probabilities outside [0, 1] or unreadable flags.
    """
    if not isinstance(trials, pd.DataFrame):
        raise ReportInputError(f"expected a pandas DataFrame of trials, got {type(trials).__name__}")
    missing = [col for col in REQUIRED_COLUMNS if col not in trials.columns]
    if missing:
        raise ReportInputError(
            f"trial table is missing required column(s): {', '.join(missing)} "
            f"(required: {', '.join(REQUIRED_COLUMNS)})"
        )
    if len(trials) == 0:
        raise ReportInputError("trial table is empty: there is nothing to report")

    out = pd.DataFrame(index=pd.RangeIndex(len(trials)))
    for col in TEXT_COLUMNS:
        values = trials[col].reset_index(drop=True)
        blank = values.isna()
        text = values.astype(str).str.strip()
        blank |= text == ""
        if blank.any():
            rows = _row_list(np.flatnonzero(blank.to_numpy()))
            raise ReportInputError(f"column '{col}' has empty values (data rows {rows})")
        out[col] = text

    out["subject_kind"] = out["subject_kind"].str.lower()
    out["condition"] = out["condition"].str.lower()
    # "IDK", "Idk" all mean the abstain button.
    out.loc[out["response"].str.lower() == IDK, "response"] = IDK
    _check_allowed(out, "subject_kind", KINDS)
    _check_allowed(out, "condition", CONDITIONS)

    idk_targets = out["target"].str.lower() == IDK
    if idk_targets.any():
        raise ReportInputError(
            f"the dataset has a class literally named '{IDK}' (data rows {_row_list(np.flatnonzero(idk_targets))}); "
            f"'{IDK}' is reserved for the \"I don't know\" answer — rename that class"
        )

    out["rt_ms"] = _numeric(trials["rt_ms"], "rt_ms")
    # "inf" and "-500" parse as numbers but are no response time: they skew or break the RT statistics.
    bad_rt = out["rt_ms"].notna() & (~np.isfinite(out["rt_ms"]) | (out["rt_ms"] < 0))
    if bad_rt.any():
        raise ReportInputError(f"column 'rt_ms' must be a finite number of milliseconds ≥ 0 (data rows {_rows(bad_rt)})")
    for col in PROBABILITY_COLUMNS:
        if col in trials.columns:
            values = _numeric(trials[col], col)
            bad = (values < 0) | (values > 1)
            if bad.any():
                raise ReportInputError(f"column '{col}' must be a probability in [0, 1] (data rows "
                                       f"{_row_list(np.flatnonzero(bad.to_numpy()))})")
            out[col] = values
    for col in FLAG_COLUMNS:
        out[col] = _flags(trials[col], col) if col in trials.columns else False
    for col in ATTENTION_COLUMNS:
        if col in trials.columns:
            values = _numeric(trials[col], col)
            bad = values.notna() & (~np.isfinite(values) | (values < 0))
            if bad.any():
                raise ReportInputError(f"column '{col}' must be a finite number ≥ 0 (data rows {_rows(bad)})")
            out[col] = values

    targets_per_item = out.groupby("item", sort=False)["target"].nunique()
    conflicting = targets_per_item[targets_per_item > 1]
    if len(conflicting):
        raise ReportInputError(
            f"item(s) with more than one target class: {', '.join(map(str, conflicting.index[:5]))}"
        )
    dup = out.duplicated(["subject", "condition", "item"])
    if dup.any():
        first = out.loc[dup.to_numpy()].iloc[0]
        raise ReportInputError(
            f"{int(dup.sum())} repeated answer(s): subject '{first['subject']}' answered item '{first['item']}' "
            f"more than once in condition '{first['condition']}' (one answer per subject, item and condition)"
        )
    kinds = out.groupby("subject", sort=False)["subject_kind"].nunique()
    if (kinds > 1).any():
        raise ReportInputError(f"subject(s) listed both as human and model: "
                               f"{', '.join(map(str, kinds[kinds > 1].index[:5]))}")
    return out


def exclude_participants(trials: pd.DataFrame, *, include_simulated: bool = False,
                         include_attention_failed: bool = False) -> pd.DataFrame:
    """Drop simulated and attention-failed subjects unless asked to keep them (validated table in)."""
    keep = np.ones(len(trials), dtype=bool)
    if not include_simulated:
        keep &= ~trials["simulated"].to_numpy(dtype=bool)
    if not include_attention_failed:
        keep &= ~trials["attention_failed"].to_numpy(dtype=bool)
    kept = trials.loc[keep].reset_index(drop=True)
    if kept.empty:
        raise ReportInputError("no trials left after excluding simulated / attention-failed participants "
                               "(see --include-simulated and --include-attention-failed)")
    return kept


def exclude_inattentive(trials: pd.DataFrame, *, max_blur_count: float | None = None,
                        max_hidden_ms: float | None = None, unit: str = "trial") -> tuple[pd.DataFrame, dict[str, int]]:
    """Drop human answers given while the participant looked elsewhere: more than `max_blur_count` window blurs,
    or the page hidden for more than `max_hidden_ms`, during the trial (None: no limit; both None: nothing
    happens). unit "trial" drops those answers; "participant" drops every answer of a participant with one
    such answer. Answers without measurements (models, older data) are kept. Returns the kept table and counts."""
    if unit not in ATTENTION_UNITS:
        raise ReportInputError(f"unknown attention unit {unit!r} (use one of: {', '.join(ATTENTION_UNITS)})")
    over = np.zeros(len(trials), dtype=bool)
    for col, limit in (("blur_count", max_blur_count), ("hidden_ms", max_hidden_ms)):
        if limit is not None and col in trials.columns:
            over |= (trials[col] > limit).fillna(False).to_numpy(dtype=bool)
    if unit == "participant":
        flagged = set(trials.loc[over, "subject"])
        drop = trials["subject"].isin(flagged).to_numpy()
    else:
        drop = over
    counts = {"inattentive_answers_excluded": int(drop.sum()),
              "inattentive_subjects_excluded": int(trials.loc[drop, "subject"].nunique()) if unit == "participant" else 0}
    kept = trials.loc[~drop].reset_index(drop=True)
    if kept.empty:
        raise ReportInputError("no trials left after excluding answers above the blur / hidden-time limits")
    return kept, counts


def prepare_trials(trials: pd.DataFrame, *, include_simulated: bool = False,
                   include_attention_failed: bool = False) -> pd.DataFrame:
    """Validate, then apply the exclusions: the table every metric expects.

    The result is marked (``attrs``) so that the metric functions do not validate it again.
    """
    kept = exclude_participants(validate_trials(trials), include_simulated=include_simulated,
                                include_attention_failed=include_attention_failed)
    kept.attrs[PREPARED_ATTR] = True
    return kept


def ensure_prepared(trials: pd.DataFrame) -> pd.DataFrame:
    """A prepared table as is; anything else validated with the default exclusions (no simulated/failed)."""
    if isinstance(trials, pd.DataFrame) and trials.attrs.get(PREPARED_ATTR):
        return trials
    return prepare_trials(trials)


def exclusion_counts(validated: pd.DataFrame) -> dict[str, int]:
    """Numbers of flagged subjects (validated, unfiltered table): what the header reports as exclusions."""
    per_subject = validated.groupby("subject", sort=False)[list(FLAG_COLUMNS)].any()
    return {
        "simulated_subjects": int(per_subject["simulated"].sum()),
        "attention_failed_subjects": int(per_subject["attention_failed"].sum()),
    }


def _check_allowed(table: pd.DataFrame, col: str, allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(table[col].unique()) - set(allowed))
    if unknown:
        raise ReportInputError(
            f"unknown {col} value(s): {', '.join(repr(u) for u in unknown[:5])} (allowed: {', '.join(allowed)})"
        )


def _numeric(values: pd.Series, col: str) -> pd.Series:
    values = values.reset_index(drop=True)
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        return values.astype(float)
    text = values.astype(str).str.strip()
    blank = values.isna() | (text == "")  # blank is allowed: a model has no response time
    numbers = pd.to_numeric(text.where(~blank), errors="coerce")
    bad = numbers.isna() & ~blank
    if bad.any():
        raise ReportInputError(f"column '{col}' must be numeric (data rows {_rows(bad)})")
    return numbers.astype(float)


def _flags(values: pd.Series, col: str) -> pd.Series:
    values = values.reset_index(drop=True)
    if pd.api.types.is_bool_dtype(values):
        return values.astype(bool)
    text = values.astype(str).str.strip().str.lower().where(values.notna(), "")
    bad = ~text.isin(_TRUE | _FALSE)
    if bad.any():
        raise ReportInputError(f"column '{col}' must be true/false (data rows {_rows(bad)})")
    return text.isin(_TRUE)


def _rows(mask: pd.Series) -> str:
    return _row_list(np.flatnonzero(mask.to_numpy()))


def _row_list(positions: np.ndarray, limit: int = 5) -> str:
    """1-based data row numbers, the first few: what a person looks for in a spreadsheet."""
    shown = ", ".join(str(int(p) + 1) for p in positions[:limit])
    return shown + (f", … {len(positions) - limit} more" if len(positions) > limit else "")
