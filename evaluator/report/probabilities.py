"""The optional second input: each model's full probability vector per item, as a long table.

One row per model subject x condition x item x class: ``subject, condition, item, class, p``. The trial table
carries only ``p_target`` and ``p_response``; the soft-label comparison (cross-entropy, KL) and the
people-and-model combination need the whole vector. Checked against the trial table: every vector belongs to
a model answer of the (kept) trials, holds every class once, sums to 1, contains the item's target, agrees
with the row's ``p_target`` and has the model's answer as its most probable class (a class-order mix-up on
the exporting side fails loudly instead of producing plausible nonsense).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .metrics import Encoded
from .trials import CONDITIONS, IDK, ReportInputError, _row_list

PROBABILITY_TABLE_COLUMNS = ("subject", "condition", "item", "class", "p")
_SUM_TOLERANCE = 1e-3  # float32 softmax outputs stored as text sum to 1 within ~1e-6; rounding to 4 places stays within this
_MATCH_TOLERANCE = 1e-3


@dataclass(frozen=True)
class ModelProbabilities:
    """Validated probability vectors: per model group (a Table 2 row's code), item codes and an items x classes matrix."""

    classes: pd.Index  # the columns of every matrix: the trial table's classes first, then any other class
    vectors: dict[int, tuple[np.ndarray, np.ndarray]]  # group code -> (item codes, rows summing to 1)

    def for_group(self, code: int) -> tuple[np.ndarray, np.ndarray] | None:
        return self.vectors.get(code)

    def __bool__(self) -> bool:
        return bool(self.vectors)


def read_probabilities_csv(path: str | Path) -> pd.DataFrame:
    """Read a probabilities CSV, keeping ids and class names as text."""
    path = Path(path)
    if not path.is_file():
        raise ReportInputError(f"probabilities file not found: {path}")
    text = {col: str for col in PROBABILITY_TABLE_COLUMNS if col != "p"}
    try:
        return pd.read_csv(path, dtype=text, keep_default_na=False, na_values={"p": [""]}, low_memory=False)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, ValueError, UnicodeDecodeError) as exc:
        raise ReportInputError(f"cannot read probabilities {path} as CSV: {exc}") from exc


def validate_probabilities(probabilities: pd.DataFrame | None, enc: Encoded) -> ModelProbabilities:
    """Check the long table against the encoded trials and return one matrix per model row of Table 2.

    ``None`` or an empty table (with its columns) gives an empty :class:`ModelProbabilities`.
    """
    empty = ModelProbabilities(classes=pd.Index(enc.classes), vectors={})
    if probabilities is None:
        return empty
    if not isinstance(probabilities, pd.DataFrame):
        raise ReportInputError(f"expected a pandas DataFrame of probabilities, got {type(probabilities).__name__}")
    missing = [col for col in PROBABILITY_TABLE_COLUMNS if col not in probabilities.columns]
    if missing:
        raise ReportInputError(f"probabilities table is missing column(s): {', '.join(missing)} "
                               f"(required: {', '.join(PROBABILITY_TABLE_COLUMNS)})")
    if len(probabilities) == 0:
        return empty
    table = _normalised(probabilities)

    groups = enc.groups
    model_groups = {(row.subject, row.condition): code for code, row in groups.iterrows()
                    if row.subject_kind == "model"}
    humans = set(enc.subjects.to_numpy()[np.unique(enc.subject[(groups["subject_kind"].to_numpy() == "human")[enc.group]])])
    keys = pd.MultiIndex.from_frame(table[["subject", "condition"]])
    for subject, condition in keys.unique():
        if (subject, condition) not in model_groups:
            why = "a human participant" if subject in humans else "no model answers in that condition of the trial table"
            raise ReportInputError(f"probabilities given for subject '{subject}' in {condition}, which is {why}")

    classes = _class_index(enc, table["class"])
    answers = _model_answers(enc)
    vectors = {}
    for (subject, condition), part in table.groupby(["subject", "condition"], sort=False):
        code = model_groups[(subject, condition)]
        vectors[code] = _group_matrix(part, code, subject, condition, classes, enc, answers)
    return ModelProbabilities(classes=classes, vectors=vectors)


def _normalised(probabilities: pd.DataFrame) -> pd.DataFrame:
    out = pd.DataFrame(index=pd.RangeIndex(len(probabilities)))
    for col in ("subject", "condition", "item", "class"):
        values = probabilities[col].reset_index(drop=True)
        text = values.astype(str).str.strip()
        blank = values.isna() | (text == "")
        if blank.any():
            raise ReportInputError(f"probabilities column '{col}' has empty values (data rows "
                                   f"{_row_list(np.flatnonzero(blank.to_numpy()))})")
        out[col] = text
    out["condition"] = out["condition"].str.lower()
    unknown = sorted(set(out["condition"]) - set(CONDITIONS))
    if unknown:
        raise ReportInputError(f"probabilities: unknown condition(s) {', '.join(map(repr, unknown[:5]))} "
                               f"(allowed: {', '.join(CONDITIONS)})")
    idk = out["class"].str.lower() == IDK
    if idk.any():
        raise ReportInputError(f"probabilities: a class literally named '{IDK}' (data rows "
                               f"{_row_list(np.flatnonzero(idk.to_numpy()))}); '{IDK}' is reserved for \"I don't know\"")
    raw = probabilities["p"].reset_index(drop=True)
    p = pd.to_numeric(raw, errors="coerce").astype(float)
    bad = p.isna() | ~np.isfinite(p) | (p < 0) | (p > 1)
    if bad.any():
        raise ReportInputError(f"probabilities column 'p' must be a number in [0, 1] (data rows "
                               f"{_row_list(np.flatnonzero(bad.to_numpy()))})")
    out["p"] = p
    dup = out.duplicated(["subject", "condition", "item", "class"])
    if dup.any():
        first = out.loc[dup.to_numpy()].iloc[0]
        raise ReportInputError(f"probabilities: {int(dup.sum())} repeated row(s), e.g. subject '{first['subject']}', "
                               f"{first['condition']}, item '{first['item']}', class '{first['class']}'")
    return out


def _class_index(enc: Encoded, names: pd.Series) -> pd.Index:
    extra = np.setdiff1d(pd.unique(names).astype(object), enc.classes.to_numpy(), assume_unique=True)
    return pd.Index(enc.classes).append(pd.Index(np.sort(extra).astype(object)))


def _model_answers(enc: Encoded) -> pd.DataFrame:
    """The model answers of the trials, indexed by (group code, item code)."""
    is_model = (enc.groups["subject_kind"].to_numpy() == "model")[enc.group]
    frame = pd.DataFrame({"group": enc.group[is_model], "item": enc.item[is_model],
                          "response": enc.response[is_model]})
    if "p_target" in enc.trials.columns:
        frame["p_target"] = enc.trials["p_target"].to_numpy(dtype=float)[is_model]
    return frame.set_index(["group", "item"])


def _group_matrix(part, code, subject, condition, classes, enc, answers) -> tuple[np.ndarray, np.ndarray]:
    where = f"model '{subject}', {condition}"
    item_codes = enc.items.get_indexer(part["item"].to_numpy())
    if (item_codes < 0).any():
        raise ReportInputError(f"probabilities of {where}: item '{part['item'].to_numpy()[item_codes < 0][0]}' "
                               "is not in the trial table")
    local, items = pd.factorize(item_codes)
    class_codes = classes.get_indexer(part["class"].to_numpy())
    per_item = np.bincount(local, minlength=len(items))
    group_classes = np.unique(class_codes)
    if (per_item != len(group_classes)).any():
        short = items[np.flatnonzero(per_item != len(group_classes))[0]]
        have = set(class_codes[items[local] == short])
        lacking = [classes[c] for c in group_classes if c not in have]
        raise ReportInputError(f"probabilities of {where}: item '{enc.items[short]}' lacks class(es) "
                               f"{', '.join(map(repr, lacking[:5]))}: every vector must hold every class once")
    matrix = np.zeros((len(items), len(classes)))
    matrix[local, class_codes] = part["p"].to_numpy()
    sums = matrix.sum(axis=1)
    off = np.abs(sums - 1.0) > _SUM_TOLERANCE
    if off.any():
        raise ReportInputError(f"probabilities of {where}: item '{enc.items[items[np.flatnonzero(off)[0]]]}' sums to "
                               f"{sums[off][0]:.6f}, not 1")
    matrix /= sums[:, None]
    item_codes = np.asarray(items, dtype=np.int64)
    target = enc.item_class[item_codes]  # a target's code in `classes` equals its code in enc.classes
    if not np.isin(target, group_classes).all():
        missing = enc.classes[target[~np.isin(target, group_classes)][0]]
        raise ReportInputError(f"probabilities of {where}: the vectors lack the target class '{missing}'")
    found = answers.reindex(pd.MultiIndex.from_arrays([np.full(len(item_codes), code), item_codes]))
    no_answer = found["response"].isna().to_numpy()
    if no_answer.any():
        raise ReportInputError(f"probabilities of {where}: item '{enc.items[item_codes[no_answer][0]]}' has no "
                               "answer of this model in the trial table")
    rows = np.arange(len(item_codes))
    if "p_target" in found.columns:
        p_target = found["p_target"].to_numpy(dtype=float)
        bad = ~np.isnan(p_target) & (np.abs(matrix[rows, target] - p_target) > _MATCH_TOLERANCE)
        if bad.any():
            i = np.flatnonzero(bad)[0]
            raise ReportInputError(f"probabilities of {where}: item '{enc.items[item_codes[i]]}' gives its target "
                                   f"{matrix[i, target[i]]:.4f} but the trial table's p_target is {p_target[i]:.4f} "
                                   "(are the classes in the right order?)")
    response = found["response"].to_numpy(dtype=np.int64)
    guessed = response != enc.idk_code
    answer_col = np.full(len(response), -1)
    answer_col[guessed] = classes.get_indexer(enc.responses.to_numpy()[response[guessed]])
    not_top = guessed & ((answer_col < 0) | (matrix[rows, np.maximum(answer_col, 0)] < matrix.max(axis=1) - 1e-6))
    if not_top.any():
        i = np.flatnonzero(not_top)[0]
        raise ReportInputError(f"probabilities of {where}: on item '{enc.items[item_codes[i]]}' the model answered "
                               f"'{enc.responses[response[i]]}', which is not its most probable class")
    return item_codes, matrix
