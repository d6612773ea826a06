"""Table 2 and per-class metrics: accuracy, accuracy on guesses and the two majority votes.

Trials are aggregated once to integer codes and then to one row per (group, item) — the
"item table" — so that every metric, and the bootstrap in :mod:`.stats`, works on small
count arrays instead of the answer rows. A *group* is one row of Table 2: all humans of a
condition pooled, or one model subject in a condition.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .trials import CONDITIONS, IDK, KINDS, ReportInputError, ensure_prepared

GROUP_KEYS = ("subject_kind", "subject", "condition")
METRICS = ("accuracy", "majority_vote_full", "accuracy_on_guesses", "majority_vote_on_guesses")
TABLE2_COLUMNS = ("subject_kind", "condition", *METRICS)
AVERAGES = ("macro", "micro")


@dataclass(frozen=True)
class Encoded:
    """A prepared trial table as integer codes (one entry per answer unless noted)."""

    trials: pd.DataFrame
    groups: pd.DataFrame  # one row per group: subject_kind, subject ("" for pooled humans), condition
    group: np.ndarray
    items: pd.Index
    item: np.ndarray
    item_class: np.ndarray  # per item: code into `classes`
    classes: pd.Index  # target classes, sorted
    responses: pd.Index  # classes, then answers that are no target class; code len(responses) is idk
    response: np.ndarray
    subjects: pd.Index
    subject: np.ndarray
    correct: np.ndarray
    guess: np.ndarray

    @property
    def idk_code(self) -> int:
        return len(self.responses)


def encode(trials: pd.DataFrame) -> Encoded:
    """Integer-code a trial table (validated and filtered if it was not already)."""
    trials = ensure_prepared(trials)
    kind = trials["subject_kind"].to_numpy(dtype=object)
    # Humans are pooled per condition; each model subject is its own group.
    group_subject = np.where(kind == "model", trials["subject"].to_numpy(dtype=object), "")
    group_frame = pd.DataFrame({"subject_kind": kind, "subject": group_subject,
                                "condition": trials["condition"].to_numpy(dtype=object)})
    group, groups = _factorize_rows(group_frame, GROUP_KEYS)
    order = groups.assign(
        _k=groups["subject_kind"].map(KINDS.index), _c=groups["condition"].map(CONDITIONS.index)
    ).sort_values(["_k", "subject", "_c"]).index.to_numpy()
    remap = np.empty(len(order), dtype=np.int64)
    remap[order] = np.arange(len(order))
    groups = groups.iloc[order].reset_index(drop=True)

    item, items = pd.factorize(trials["item"])
    target = trials["target"].to_numpy(dtype=object)
    classes = pd.Index(np.sort(pd.unique(target)).astype(object))
    target_code = classes.get_indexer(target)
    item_class = np.empty(len(items), dtype=np.int64)
    item_class[item] = target_code

    answer = trials["response"].to_numpy(dtype=object)
    guess = answer != IDK
    extra = np.setdiff1d(pd.unique(answer[guess]).astype(object), classes.to_numpy(), assume_unique=True)
    responses = classes.append(pd.Index(np.sort(extra).astype(object)))
    response = np.full(len(answer), len(responses), dtype=np.int64)
    response[guess] = responses.get_indexer(answer[guess])

    subject, subjects = pd.factorize(trials["subject"])
    return Encoded(
        trials=trials, groups=groups, group=remap[group], items=pd.Index(items), item=item.astype(np.int64),
        item_class=item_class, classes=classes, responses=responses, response=response,
        subjects=pd.Index(subjects), subject=subject.astype(np.int64),
        correct=response == target_code, guess=guess,
    )


def item_table(trials: pd.DataFrame | Encoded) -> pd.DataFrame:
    """One row per (group, item): answer counts and both majority-vote outcomes.

    Columns: subject_kind, subject, condition, item, target, n_answers, n_correct,
    n_guesses, mv_full, mv_guess (booleans: the item's unique top answer is the target,
    with / without the ``idk`` answers).
    """
    enc = trials if isinstance(trials, Encoded) else encode(trials)
    n_items = len(enc.items)
    cell = enc.group * n_items + enc.item
    cells, inverse = np.unique(cell, return_inverse=True)
    n = np.bincount(inverse)
    correct = np.bincount(inverse, weights=enc.correct, minlength=len(cells)).astype(np.int64)
    guesses = np.bincount(inverse, weights=enc.guess, minlength=len(cells)).astype(np.int64)
    item_codes = cells % n_items
    target = enc.item_class[item_codes]
    mv_full = majority_correct(inverse, enc.response, target, n_cells=len(cells), n_codes=enc.idk_code + 1)
    keep = enc.guess
    mv_guess = majority_correct(inverse[keep], enc.response[keep], target, n_cells=len(cells),
                                n_codes=enc.idk_code + 1)
    table = enc.groups.iloc[cells // n_items].reset_index(drop=True)
    table["item"] = enc.items.to_numpy()[item_codes]
    table["target"] = enc.classes.to_numpy()[target]
    table["n_answers"] = n
    table["n_correct"] = correct
    table["n_guesses"] = guesses
    table["mv_full"] = mv_full
    table["mv_guess"] = mv_guess
    table["_group"] = cells // n_items
    table["_class"] = target
    return table


def majority_correct(cell: np.ndarray, response: np.ndarray, target: np.ndarray, *, n_cells: int,
                     n_codes: int) -> np.ndarray:
    """Per cell: is the target the *unique* most frequent response? Cells without answers are False.

    ``cell`` and ``response`` are per answer; ``target`` is per cell. Ties for the top and
    an ``idk`` top (idk is never a target) both come out False, as the definitions ask.
    """
    result = np.zeros(n_cells, dtype=bool)
    if len(cell) == 0:
        return result
    pairs, counts = np.unique(cell * n_codes + response, return_counts=True)
    pair_cell = pairs // n_codes
    pair_response = pairs % n_codes
    starts = np.flatnonzero(np.r_[True, pair_cell[1:] != pair_cell[:-1]])
    top = np.maximum.reduceat(counts, starts)
    seg = np.cumsum(np.r_[False, pair_cell[1:] != pair_cell[:-1]])  # segment index per pair
    is_top = counts == top[seg]
    n_top = np.add.reduceat(is_top.astype(np.int64), starts)
    target_top = np.add.reduceat((is_top & (pair_response == target[pair_cell])).astype(np.int64), starts)
    result[pair_cell[starts]] = (n_top == 1) & (target_top == 1)
    return result


def class_table(items: pd.DataFrame) -> pd.DataFrame:
    """Per (group, class) sums from the item table: the unit of the macro average."""
    sums = items.groupby(["_group", "_class"], sort=True).agg(
        n_items=("item", "size"), n_answers=("n_answers", "sum"), n_correct=("n_correct", "sum"),
        n_guesses=("n_guesses", "sum"), mv_full=("mv_full", "sum"), mv_guess=("mv_guess", "sum"),
    )
    return sums.reset_index()


def class_rates(n_items, n_answers, n_correct, n_guesses, mv_full, mv_guess):
    """Per-class fractions for the four metrics (works on arrays of any shape).

    A class without guesses gives NaN for accuracy on guesses, so that nan-means leave it out.
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        return (
            n_correct / n_answers,
            mv_full / n_items,
            np.where(n_guesses > 0, n_correct / np.where(n_guesses > 0, n_guesses, 1), np.nan),
            mv_guess / n_items,
        )


def summarise(items: pd.DataFrame, groups: pd.DataFrame, *, average: str = "macro") -> pd.DataFrame:
    """Table 2 values (fractions) per group from the item table."""
    _check_average(average)
    per_class = class_table(items)
    rows = []
    for code, part in per_class.groupby("_group", sort=True):
        cols = [part[c].to_numpy(dtype=float) for c in
                ("n_items", "n_answers", "n_correct", "n_guesses", "mv_full", "mv_guess")]
        if average == "micro":
            cols = [c.sum(keepdims=True) for c in cols]
        rates = class_rates(*cols)
        rows.append([code, *(_nanmean(r) for r in rates)])
    values = pd.DataFrame(rows, columns=["_group", *METRICS]).set_index("_group")
    return groups.join(values, how="inner")


def table2(trials: pd.DataFrame | Encoded, *, average: str = "macro") -> pd.DataFrame:
    """The paper's Table 2, in percent, one row per subject kind and condition.

    Humans are pooled per condition. With more than one model subject a ``subject`` column
    (empty for humans) names the model of each row.
    """
    enc = trials if isinstance(trials, Encoded) else encode(trials)
    summary = summarise(item_table(enc), enc.groups, average=average)
    return format_table2(summary, several_models=has_several_models(enc))


def format_table2(summary: pd.DataFrame, *, several_models: bool) -> pd.DataFrame:
    out = summary.copy()
    for metric in METRICS:
        out[metric] = out[metric] * 100.0
    columns = list(TABLE2_COLUMNS)
    if several_models:
        columns.insert(1, "subject")
    return out[columns].reset_index(drop=True)


def human_conditions(groups: pd.DataFrame):
    """(condition, the humans' group code) for each condition with human answers, in the paper's order."""
    for condition in CONDITIONS:
        human = groups.index[(groups["subject_kind"] == "human") & (groups["condition"] == condition)]
        if len(human):
            yield condition, int(human[0])


def has_several_models(enc: Encoded) -> bool:
    return enc.groups.loc[enc.groups["subject_kind"] == "model", "subject"].nunique() > 1


def per_class(trials: pd.DataFrame | Encoded) -> pd.DataFrame:
    """Per group and class: counts, the four metrics (percent) and, for models, the mean p_target."""
    enc = trials if isinstance(trials, Encoded) else encode(trials)
    sums = class_table(item_table(enc))
    rates = class_rates(*(sums[c].to_numpy(dtype=float) for c in
                          ("n_items", "n_answers", "n_correct", "n_guesses", "mv_full", "mv_guess")))
    out = enc.groups.iloc[sums["_group"].to_numpy()].reset_index(drop=True)
    out["class"] = enc.classes.to_numpy()[sums["_class"].to_numpy()]
    for col in ("n_items", "n_answers", "n_guesses"):
        out[col] = sums[col].to_numpy()
    for metric, rate in zip(METRICS, rates, strict=True):
        out[metric] = rate * 100.0
    out["mean_p_target"] = _mean_p_target(enc, sums)
    return out


def confusion(trials: pd.DataFrame | Encoded) -> pd.DataFrame:
    """Long confusion counts per group: subject_kind, subject, condition, target, response, count."""
    enc = trials if isinstance(trials, Encoded) else encode(trials)
    n_codes = enc.idk_code + 1
    n_classes = len(enc.classes)
    key = (enc.group * n_classes + enc.item_class[enc.item]) * n_codes + enc.response
    keys, counts = np.unique(key, return_counts=True)
    out = enc.groups.iloc[keys // (n_classes * n_codes)].reset_index(drop=True)
    out["target"] = enc.classes.to_numpy()[(keys // n_codes) % n_classes]
    labels = np.append(enc.responses.to_numpy(dtype=object), IDK)
    out["response"] = labels[keys % n_codes]
    out["count"] = counts
    return out


def _mean_p_target(enc: Encoded, sums: pd.DataFrame) -> np.ndarray:
    """Mean model probability of the true class per (group, class); NaN for humans or without p_target."""
    result = np.full(len(sums), np.nan)
    if "p_target" not in enc.trials.columns:
        return result
    p = enc.trials["p_target"].to_numpy(dtype=float)
    is_model = (enc.groups["subject_kind"].to_numpy() == "model")[enc.group]
    ok = is_model & ~np.isnan(p)
    n_classes = len(enc.classes)
    key = enc.group[ok] * n_classes + enc.item_class[enc.item[ok]]
    total = pd.Series(p[ok]).groupby(key).mean()
    wanted = sums["_group"].to_numpy() * n_classes + sums["_class"].to_numpy()
    return total.reindex(wanted).to_numpy(dtype=float)


def _factorize_rows(frame: pd.DataFrame, cols) -> tuple[np.ndarray, pd.DataFrame]:
    """Codes for distinct rows of ``frame[cols]`` and those rows (first-seen order)."""
    code = np.zeros(len(frame), dtype=np.int64)
    for col in cols:
        c, uniques = pd.factorize(frame[col])
        code = code * len(uniques) + c
    _, first, inverse = np.unique(code, return_index=True, return_inverse=True)
    rows = frame.iloc[first][list(cols)].reset_index(drop=True)
    return inverse.astype(np.int64), rows


def _nanmean(values: np.ndarray) -> float:
    values = np.asarray(values, dtype=float)
    ok = ~np.isnan(values)
    return float(values[ok].mean()) if ok.any() else float("nan")


def _check_average(average: str) -> None:
    if average not in AVERAGES:
        raise ReportInputError(f"unknown average {average!r} (use one of: {', '.join(AVERAGES)})")
