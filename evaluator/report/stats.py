"""Statistics beyond the paper's Table 2.

McNemar's exact test, Fleiss' kappa, the "know what they don't know" decomposition, response
times and model calibration. All functions take a trial table (or an :class:`~.metrics.Encoded`
one) and return DataFrames. Bootstrap CIs live in :mod:`.bootstrap`, error consistency in
:mod:`.consistency`; both are re-exported here.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .bootstrap import (
    CI_COLUMNS,
    RESAMPLE_UNITS,
    ParticipantLayout,
    bootstrap,
    bootstrap_table2,
    differences_table,
)
from .consistency import CONSISTENCY_COLUMNS, consistency_table, error_consistency
from .metrics import Encoded, encode, item_table
from .trials import CONDITIONS, IDK, ReportInputError


def _enc(trials) -> Encoded:
    return trials if isinstance(trials, Encoded) else encode(trials)


# --------------------------------------------------------------------------- McNemar

def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p: binomial(b + c, 1/2) on the discordant counts, doubled, capped at 1."""
    n = int(b) + int(c)
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(b, c) + 1))
    return min(1.0, 2 * tail / 2**n)  # exact big-integer arithmetic, one rounding at the end


def mcnemar_table(trials) -> pd.DataFrame:
    """Human majority vote (full dataset) vs each model, per condition, on the items both have."""
    enc = _enc(trials)
    items = item_table(enc)
    columns = ["condition", "model", "n_items", "both_correct", "human_only_correct", "model_only_correct",
               "both_wrong", "p_value"]
    rows = []
    for condition in CONDITIONS:
        here = items[items["condition"] == condition]
        humans = here[here["subject_kind"] == "human"].set_index("item")["mv_full"]
        if humans.empty:
            continue
        models = here[here["subject_kind"] == "model"]
        for model, answers in models.groupby("subject", sort=True):
            model_votes = answers.set_index("item")["mv_full"]
            common = humans.index.intersection(model_votes.index)
            human_right, model_right = humans.loc[common].to_numpy(), model_votes.loc[common].to_numpy()
            # McNemar's discordant counts: b = human right and model wrong, c = model right and human wrong.
            b, c = int((human_right & ~model_right).sum()), int((~human_right & model_right).sum())
            rows.append([condition, model, len(common), int((human_right & model_right).sum()), b, c,
                         int((~human_right & ~model_right).sum()), mcnemar_exact(b, c)])
    return pd.DataFrame(rows, columns=columns)


# --------------------------------------------------------------------------- Fleiss' kappa

def fleiss_kappa(counts: np.ndarray) -> float:
    """Fleiss' kappa from an items × categories matrix of rating counts; raters per item may differ.

    Generalised form: P_i = sum_j n_ij (n_ij - 1) / (n_i (n_i - 1)) for items with n_i >= 2,
    P_bar = their unweighted mean, p_j = category shares over those items' ratings,
    P_e = sum_j p_j^2, kappa = (P_bar - P_e) / (1 - P_e). Equal n_i gives Fleiss (1971).
    """
    counts = np.asarray(counts, dtype=float)
    n_i = counts.sum(axis=1)
    counts = counts[n_i >= 2]
    n_i = n_i[n_i >= 2]
    if len(counts) == 0:
        return float("nan")
    p_i = (counts * (counts - 1)).sum(axis=1) / (n_i * (n_i - 1))
    p_j = counts.sum(axis=0) / n_i.sum()
    p_e = float((p_j**2).sum())
    if p_e >= 1.0:
        return float("nan")  # everyone gave the same single answer: agreement beyond chance is undefined
    return float((p_i.mean() - p_e) / (1.0 - p_e))


def fleiss_table(trials) -> pd.DataFrame:
    """Fleiss' kappa among humans per condition; answers (``idk`` included) are the categories."""
    enc = _enc(trials)
    is_human = (enc.groups["subject_kind"] == "human").to_numpy()
    rows = []
    n_codes = enc.idk_code + 1
    for code, group in enc.groups[is_human].iterrows():
        mask = enc.group == code
        item_local, _ = pd.factorize(enc.item[mask])
        counts = np.zeros((item_local.max() + 1, n_codes))
        np.add.at(counts, (item_local, enc.response[mask]), 1)
        raters = counts.sum(axis=1)
        rated = raters >= 2
        rows.append([group["condition"], int(rated.sum()), float(raters[rated].mean()) if rated.any() else 0.0,
                     bool(rated.any() and raters[rated].min() == raters[rated].max()), fleiss_kappa(counts)])
    return pd.DataFrame(rows, columns=["condition", "n_items", "mean_raters_per_item", "equal_raters", "kappa"])


# --------------------------------------------------------------------------- know what they don't know

IDK_GAIN_COLUMNS = ("design", "split", "unit", "n_units", "n_units_in_split", "gain_total", "gain_from_split",
                    "gain_from_rest", "share_from_split")


def idk_gain(trials, *, from_condition: str = "zero-shot", to_condition: str = "one-shot",
             design: str = "auto") -> pd.DataFrame:
    """Split the humans' accuracy gain between two conditions by the ``idk`` answers of the first.

    Gains are in percentage points of plain (micro) accuracy, so the parts add up to the total.
    ``within``: units are (participant, item) pairs answered in both conditions; the split is
    the participant's own ``idk`` in ``from_condition`` (there the gain is the new accuracy).
    ``between``: units are items answered in both; two splits: items where a majority
    (> 1/2) of the answers were ``idk``, and items with any ``idk``. ``auto`` picks
    ``within`` when some participant answered an item in both conditions.
    """
    if design not in ("auto", "within", "between"):
        raise ReportInputError(f"unknown design {design!r} (use auto, within or between)")
    enc = _enc(trials)
    t = pd.DataFrame({
        "subject": enc.subject, "item": enc.item, "correct": enc.correct.astype(float),
        "idk": ~enc.guess, "condition": enc.groups["condition"].to_numpy()[enc.group],
    })[enc.groups["subject_kind"].to_numpy()[enc.group] == "human"]
    before = t[t["condition"] == from_condition]
    after = t[t["condition"] == to_condition]
    paired = before.merge(after, on=["subject", "item"], suffixes=("_0", "_1"))
    if design == "auto":
        design = "within" if len(paired) else "between"
    rows = []
    if design == "within":
        delta = (paired["correct_1"] - paired["correct_0"]).to_numpy()
        rows.append(_gain_row("within", f"participant answered idk in {from_condition}", "participant-item",
                              delta, paired["idk_0"].to_numpy()))
    else:
        b = before.groupby("item").agg(acc=("correct", "mean"), idk_share=("idk", "mean"))
        a = after.groupby("item").agg(acc=("correct", "mean"))
        both = b.rename(columns={"acc": "acc_0"}).join(a.rename(columns={"acc": "acc_1"}), how="inner")
        delta = (both["acc_1"] - both["acc_0"]).to_numpy()
        share = both["idk_share"].to_numpy()
        rows.append(_gain_row("between", f"majority idk in {from_condition}", "item", delta, share > 0.5))
        rows.append(_gain_row("between", f"any idk in {from_condition}", "item", delta, share > 0))
    rows = [row for row in rows if row[3] > 0]  # no unit answered in both conditions: nothing to split
    return pd.DataFrame(rows, columns=list(IDK_GAIN_COLUMNS))


def _gain_row(design, split, unit, delta, in_split):
    # delta = each unit's accuracy change; over all n units the gain is sum(delta) / n, and because
    # sum(delta) = sum over the split + sum over the rest, gain_total = gain_from_split + gain_from_rest exactly.
    n = len(delta)
    if n == 0:
        return [design, split, unit, 0, 0, np.nan, np.nan, np.nan, np.nan]
    total = delta.sum() / n * 100.0
    part = delta[in_split].sum() / n * 100.0
    rest = delta[~in_split].sum() / n * 100.0
    share = part / total if total != 0 else np.nan
    return [design, split, unit, n, int(in_split.sum()), total, part, rest, share]


# --------------------------------------------------------------------------- response times

def response_times(trials) -> pd.DataFrame:
    """Response-time summary per subject kind and condition (ms): n, median, quartiles, IQR, box whiskers."""
    enc = _enc(trials)
    t = enc.trials
    rows = []
    for (kind, condition), part in t.groupby(["subject_kind", "condition"], sort=False):
        rt = part["rt_ms"].to_numpy(dtype=float)
        rt = rt[~np.isnan(rt)]
        if len(rt) == 0:
            continue
        q1, median, q3 = np.percentile(rt, [25, 50, 75])
        iqr = q3 - q1
        # Tukey whiskers: the most extreme values within 1.5 IQR of the box.
        low = rt[rt >= q1 - 1.5 * iqr].min()
        high = rt[rt <= q3 + 1.5 * iqr].max()
        rows.append([kind, condition, len(rt), median, q1, q3, iqr, low, high, rt.mean()])
    out = pd.DataFrame(rows, columns=["subject_kind", "condition", "n", "median_ms", "q1_ms", "q3_ms", "iqr_ms",
                                      "whisker_low_ms", "whisker_high_ms", "mean_ms"])
    return _sort_kind_condition(out)


# --------------------------------------------------------------------------- calibration

def expected_calibration_error(confidence, correct, *, n_bins: int = 15) -> float:
    """ECE: sum over equal-width confidence bins of (bin share) × |bin accuracy − bin mean confidence|."""
    table = reliability_bins(confidence, correct, n_bins=n_bins)
    if table["n"].sum() == 0:
        return float("nan")
    weights = table["n"] / table["n"].sum()
    return float((weights * (table["accuracy"] - table["mean_confidence"]).abs()).fillna(0).sum())


def reliability_bins(confidence, correct, *, n_bins: int = 15) -> pd.DataFrame:
    """Per bin [k/n, (k+1)/n) (last bin closed): n, mean confidence, accuracy."""
    conf = np.asarray(confidence, dtype=float)
    ok = np.asarray(correct, dtype=float)
    index = np.clip(np.floor(conf * n_bins).astype(np.int64), 0, n_bins - 1)
    n = np.bincount(index, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(index, weights=conf, minlength=n_bins) / n
        acc = np.bincount(index, weights=ok, minlength=n_bins) / n
    edges = np.arange(n_bins + 1) / n_bins
    return pd.DataFrame({"bin": np.arange(n_bins), "lower": edges[:-1], "upper": edges[1:], "n": n,
                         "mean_confidence": mean_conf, "accuracy": acc})


def calibration(trials, *, n_bins: int = 15) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per model and condition: (summary with ECE, reliability bins). Uses p_response; idk answers are skipped."""
    enc = _enc(trials)
    t = enc.trials
    summary_cols = ["subject", "condition", "n", "accuracy", "mean_confidence", "ece"]
    if "p_response" not in t.columns:
        return pd.DataFrame(columns=summary_cols), pd.DataFrame()
    usable = (t["subject_kind"] == "model") & t["p_response"].notna() & enc.guess
    data = t.loc[usable, ["subject", "condition", "p_response"]].assign(correct=enc.correct[usable.to_numpy()])
    summaries, bins = [], []
    for (subject, condition), part in data.groupby(["subject", "condition"], sort=True):
        conf, ok = part["p_response"].to_numpy(), part["correct"].to_numpy()
        summaries.append([subject, condition, len(part), ok.mean(), conf.mean(),
                          expected_calibration_error(conf, ok, n_bins=n_bins)])
        bins.append(reliability_bins(conf, ok, n_bins=n_bins).assign(subject=subject, condition=condition))
    summary = _sort_kind_condition(pd.DataFrame(summaries, columns=summary_cols), by_kind=False)
    return summary, (pd.concat(bins, ignore_index=True) if bins else pd.DataFrame())


def _sort_kind_condition(table: pd.DataFrame, *, by_kind: bool = True) -> pd.DataFrame:
    if table.empty:
        return table
    keys = table.assign(_c=table["condition"].map(CONDITIONS.index))
    order = (["subject_kind"] if by_kind else ["subject"]) + ["_c"]
    # Two keys: pandas sorts them with a lexsort, which is stable (a sort ``kind`` would be ignored).
    return keys.sort_values(order).drop(columns="_c").reset_index(drop=True)


__all__ = [
    "CI_COLUMNS",
    "CONSISTENCY_COLUMNS",
    "IDK",
    "RESAMPLE_UNITS",
    "bootstrap",
    "bootstrap_table2",
    "differences_table",
    "calibration",
    "consistency_table",
    "error_consistency",
    "expected_calibration_error",
    "fleiss_kappa",
    "fleiss_table",
    "idk_gain",
    "ParticipantLayout",
    "mcnemar_exact",
    "mcnemar_table",
    "reliability_bins",
    "response_times",
]
