"""Statistics beyond the paper's Table 2.

Bootstrap CIs, McNemar's exact test, Fleiss' kappa, error consistency, the "know what
they don't know" decomposition, response times and model calibration. All functions
take a trial table (or an :class:`~.metrics.Encoded` one) and return DataFrames.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .metrics import (
    GROUP_KEYS,
    METRICS,
    Encoded,
    _check_average,
    class_rates,
    encode,
    item_table,
    summarise,
)
from .trials import CONDITIONS, IDK, ReportInputError

RESAMPLE_UNITS = ("items", "participants")
CI_COLUMNS = (*GROUP_KEYS, "metric", "estimate", "ci_low", "ci_high", "n_resamples", "resample")
CONSISTENCY_COLUMNS = ("condition", "pair_kind", "error_consistency", "n_pairs")
_CHUNK_CELLS = 4_000_000  # resamples × units per vectorised block: bounds memory at ~32 MB per array


def _enc(trials) -> Encoded:
    return trials if isinstance(trials, Encoded) else encode(trials)


# --------------------------------------------------------------------------- bootstrap

def bootstrap_table2(trials, *, average: str = "macro", n_resamples: int = 1000, resample: str = "items",
                     seed: int | None = 0, level: float = 0.95) -> pd.DataFrame:
    """Percentile bootstrap CIs (percent) for every Table 2 cell, long format (one row per group × metric).

    ``resample="items"``: items are drawn with replacement *within each class* (each class
    keeps its number of items, so the macro mean stays defined). ``"participants"``:
    subjects are drawn with replacement within each group; a model group has one subject,
    so its interval collapses to the estimate. ``n_resamples=0`` gives NaN bounds.
    """
    _check_average(average)
    if resample not in RESAMPLE_UNITS:
        raise ReportInputError(f"unknown resample unit {resample!r} (use one of: {', '.join(RESAMPLE_UNITS)})")
    if n_resamples < 0:
        raise ReportInputError("the number of bootstrap resamples must be >= 0")
    enc = _enc(trials)
    items = item_table(enc)
    point = summarise(items, enc.groups, average=average)
    rng = np.random.default_rng(seed)
    tail = (1.0 - level) / 2.0 * 100.0
    rows = []
    for code, group in enc.groups.iterrows():
        if n_resamples == 0:
            draws = np.full((0, len(METRICS)), np.nan)
        elif resample == "items":
            draws = _item_draws(items[items["_group"] == code], rng, n_resamples, average)
        else:
            draws = _participant_draws(enc, code, rng, n_resamples, average)
        for k, metric in enumerate(METRICS):
            low, high = _percentiles(draws[:, k], tail)
            rows.append([*group[list(GROUP_KEYS)], metric, point.loc[code, metric] * 100.0, low * 100.0,
                         high * 100.0, n_resamples, resample])
    return pd.DataFrame(rows, columns=list(CI_COLUMNS))


def item_resample_stats(part: pd.DataFrame, index: np.ndarray, *, average: str) -> np.ndarray:
    """Table 2 fractions for resamples of one group's items.

    ``part`` is the group's item table sorted by class; ``index`` (resamples × items) holds
    row positions into it, where slot j always draws from the class of row j. Returns
    (resamples × 4) in METRICS order.
    """
    cls = part["_class"].to_numpy()
    starts = np.flatnonzero(np.r_[True, cls[1:] != cls[:-1]])
    sizes = np.diff(np.r_[starts, len(cls)]).astype(float)
    sums = [np.add.reduceat(part[col].to_numpy(dtype=float)[index], starts, axis=1)
            for col in ("n_answers", "n_correct", "n_guesses", "mv_full", "mv_guess")]
    n_items = np.broadcast_to(sizes, sums[0].shape)
    return _combine_classes(n_items, *sums, average=average)


def _item_draws(part: pd.DataFrame, rng: np.random.Generator, n_resamples: int, average: str) -> np.ndarray:
    part = part.sort_values("_class", kind="stable")
    cls = part["_class"].to_numpy()
    starts = np.flatnonzero(np.r_[True, cls[1:] != cls[:-1]])
    sizes = np.diff(np.r_[starts, len(cls)])
    slot_start = np.repeat(starts, sizes)
    slot_size = np.repeat(sizes, sizes)
    out = []
    for b in _chunks(n_resamples, len(cls)):
        # Stratified draw: slot j picks uniformly among the items of its own class.
        index = slot_start + (rng.random((b, len(cls))) * slot_size).astype(np.int64)
        out.append(item_resample_stats(part, index, average=average))
    return np.vstack(out)


def _participant_draws(enc: Encoded, code: int, rng: np.random.Generator, n_resamples: int,
                       average: str) -> np.ndarray:
    layout = ParticipantLayout(enc, code)
    n = len(layout.subjects)
    p = np.full(n, 1.0 / n)
    out = []
    for b in _chunks(n_resamples, layout.n_answers):
        out.append(layout.stats(rng.multinomial(n, p, size=b).astype(float), average=average))
    return np.vstack(out)


class ParticipantLayout:
    """One group's answers arranged so that Table 2 of a participant resample is a few array operations.

    ``stats(w)`` takes resample weights (resamples × subjects, in the order of ``subjects``:
    how often each subject was drawn) and returns (resamples × 4) fractions in METRICS order.
    """

    def __init__(self, enc: Encoded, code: int):
        mask = enc.group == code
        subject, subject_codes = pd.factorize(enc.subject[mask])
        self.subjects = enc.subjects.to_numpy()[subject_codes]
        self.n_answers = int(mask.sum())
        item_local, item_codes = pd.factorize(enc.item[mask])
        item_cls = enc.item_class[item_codes]
        # Local items sorted by class, so per-class sums are contiguous segments.
        item_order = np.argsort(item_cls, kind="stable")
        rank = np.empty_like(item_order)
        rank[item_order] = np.arange(len(item_order))
        item_local = rank[item_local]
        item_cls = item_cls[item_order]
        cls_local, _ = pd.factorize(item_cls)  # item_cls is sorted, so codes follow class order
        n_classes = int(cls_local.max()) + 1
        self.class_starts = np.flatnonzero(np.r_[True, cls_local[1:] != cls_local[:-1]])

        correct, guess, response = enc.correct[mask], enc.guess[mask], enc.response[mask]
        # Per subject × class sums: the accuracies need only these (W @ S).
        key = subject * n_classes + cls_local[item_local]
        size = len(self.subjects) * n_classes
        shape = (len(self.subjects), n_classes)
        self.s_n = np.bincount(key, minlength=size).reshape(shape).astype(float)
        self.s_c = np.bincount(key, weights=correct, minlength=size).reshape(shape)
        self.s_g = np.bincount(key, weights=guess, minlength=size).reshape(shape)
        target = item_cls
        n_codes = enc.idk_code + 1
        self.full = _VoteLayout(item_local, response, subject, target, len(item_cls), n_codes)
        self.guessed = _VoteLayout(item_local[guess], response[guess], subject[guess], target, len(item_cls),
                                   n_codes)

    def stats(self, w: np.ndarray, *, average: str) -> np.ndarray:
        present, mv_full = self.full.votes(w)
        _, mv_guess = self.guessed.votes(w)
        mv_guess &= present  # an item answered only with idk is still an item (and wrong)

        def per_class(x):
            return np.add.reduceat(x.astype(float), self.class_starts, axis=1)

        return _combine_classes(per_class(present), w @ self.s_n, w @ self.s_c, w @ self.s_g, per_class(mv_full),
                                per_class(mv_guess), average=average)


class _VoteLayout:
    """Answers sorted by (item, response) so that weighted vote counts are segment sums."""

    def __init__(self, item, response, subject, target, n_items, n_codes):
        key = item * n_codes + response
        order = np.argsort(key, kind="stable")
        self.subject = subject[order]
        key = key[order]
        self.pair_starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]]) if len(key) else np.zeros(0, int)
        pair_key = key[self.pair_starts]
        pair_item = pair_key // n_codes
        self.is_target = (pair_key % n_codes) == target[pair_item]
        self.item_starts = np.flatnonzero(np.r_[True, pair_item[1:] != pair_item[:-1]]) if len(pair_key) \
            else np.zeros(0, int)
        self.pair_seg = np.cumsum(np.r_[False, pair_item[1:] != pair_item[:-1]]) if len(pair_key) \
            else np.zeros(0, int)
        self.items_here = pair_item[self.item_starts]
        self.n_items = n_items

    def votes(self, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(item has any weight, unique top answer is the target) per resample × item."""
        present = np.zeros((w.shape[0], self.n_items), dtype=bool)
        correct = np.zeros_like(present)
        if len(self.pair_starts) == 0:
            return present, correct
        counts = np.add.reduceat(w[:, self.subject], self.pair_starts, axis=1)
        top = np.maximum.reduceat(counts, self.item_starts, axis=1)
        is_top = counts == top[:, self.pair_seg]
        n_top = np.add.reduceat(is_top.astype(np.int64), self.item_starts, axis=1)
        target_top = np.add.reduceat((is_top & self.is_target).astype(np.int64), self.item_starts, axis=1)
        present[:, self.items_here] = top > 0
        correct[:, self.items_here] = (top > 0) & (n_top == 1) & (target_top == 1)
        return present, correct


def _combine_classes(n_items, n_answers, n_correct, n_guesses, mv_full, mv_guess, *, average: str) -> np.ndarray:
    """(resamples × classes) sums → (resamples × 4) Table 2 fractions."""
    if average == "micro":
        n_items, n_answers, n_correct, n_guesses, mv_full, mv_guess = (
            x.sum(axis=1, keepdims=True) for x in (n_items, n_answers, n_correct, n_guesses, mv_full, mv_guess))
    with np.errstate(invalid="ignore", divide="ignore"):
        rates = class_rates(n_items, n_answers, n_correct, n_guesses, mv_full, mv_guess)
        # A class absent from a resample (participants mode) or without guesses is left out.
        return np.column_stack([_row_nanmean(r) for r in rates])


def _row_nanmean(x: np.ndarray) -> np.ndarray:
    ok = ~np.isnan(x)
    count = ok.sum(axis=1)
    total = np.where(ok, x, 0.0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _percentiles(values: np.ndarray, tail: float) -> tuple[float, float]:
    values = values[~np.isnan(values)]
    if len(values) == 0:
        return float("nan"), float("nan")
    low, high = np.percentile(values, [tail, 100.0 - tail])
    return float(low), float(high)


def _chunks(total: int, width: int):
    step = max(1, min(total, _CHUNK_CELLS // max(width, 1)))
    for start in range(0, total, step):
        yield min(step, total - start)


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
            m = answers.set_index("item")["mv_full"]
            common = humans.index.intersection(m.index)
            h, mm = humans.loc[common].to_numpy(), m.loc[common].to_numpy()
            b, c = int((h & ~mm).sum()), int((~h & mm).sum())
            rows.append([condition, model, len(common), int((h & mm).sum()), b, c, int((~h & ~mm).sum()),
                         mcnemar_exact(b, c)])
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


# --------------------------------------------------------------------------- error consistency

def error_consistency(correct_a, correct_b) -> float:
    """Geirhos et al. (2020) error consistency of two subjects' correctness on the same items.

    kappa = (c_obs - c_exp) / (1 - c_exp), c_exp = p1 p2 + (1 - p1)(1 - p2). NaN when
    undefined (no items, or c_exp = 1: both always right or both always wrong).
    """
    a = np.asarray(correct_a, dtype=bool)
    b = np.asarray(correct_b, dtype=bool)
    if len(a) == 0:
        return float("nan")
    return float(_kappa(float((a == b).mean()), float(a.mean()), float(b.mean())))


def _kappa(c_obs, p1, p2):
    c_obs, p1, p2 = (np.asarray(x, dtype=float) for x in (c_obs, p1, p2))
    c_exp = p1 * p2 + (1 - p1) * (1 - p2)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(1 - c_exp > 1e-12, (c_obs - c_exp) / (1 - c_exp), np.nan)


def consistency_table(trials) -> pd.DataFrame:
    """Mean error consistency per condition: all human pairs, and each human against each model.

    Pairs are scored on their common items (``idk`` = wrong); pairs with no common item or
    an undefined kappa are left out of the mean and of ``n_pairs``.
    """
    enc = _enc(trials)
    kinds = enc.groups["subject_kind"].to_numpy()[enc.group]
    conds = enc.groups["condition"].to_numpy()[enc.group]
    rows = []
    for condition in CONDITIONS:
        human = (kinds == "human") & (conds == condition)
        if not human.any():
            continue
        subj, _ = pd.factorize(enc.subject[human])
        answered, right = _dense(subj, enc.item[human], enc.correct[human], len(enc.items))
        n = answered @ answered.T
        cc = right @ right.T
        ca = right @ answered.T  # row subject right, column subject answered
        agree = n - ca - ca.T + 2 * cc
        upper = np.triu(np.ones_like(n, dtype=bool), k=1) & (n > 0)
        with np.errstate(invalid="ignore", divide="ignore"):
            k = _kappa(agree / n, ca / n, ca.T / n)[upper]
        k = k[~np.isnan(k)]
        rows.append([condition, "human-human", float(k.mean()) if len(k) else float("nan"), len(k)])
        model = (kinds == "model") & (conds == condition)
        for name in sorted(pd.unique(enc.subjects.to_numpy()[enc.subject[model]])):
            sel = model & (enc.subjects.to_numpy()[enc.subject] == name)
            m_answered, m_right = _dense(np.zeros(sel.sum(), dtype=np.int64), enc.item[sel], enc.correct[sel],
                                         len(enc.items))
            n_m = answered @ m_answered[0]
            cc_m = right @ m_right[0]
            h_right = right @ m_answered[0]
            m_r = answered @ m_right[0]
            with np.errstate(invalid="ignore", divide="ignore"):
                k = _kappa((n_m - h_right - m_r + 2 * cc_m) / n_m, h_right / n_m, m_r / n_m)[n_m > 0]
            k = k[~np.isnan(k)]
            rows.append([condition, f"human-model:{name}", float(k.mean()) if len(k) else float("nan"), len(k)])
    return pd.DataFrame(rows, columns=list(CONSISTENCY_COLUMNS))


def _dense(subject, item, correct, n_items):
    n_subjects = int(subject.max()) + 1 if len(subject) else 0
    answered = np.zeros((n_subjects, n_items))
    right = np.zeros((n_subjects, n_items))
    answered[subject, item] = 1.0
    right[subject, item] = correct
    return answered, right


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
    return keys.sort_values(order, kind="stable").drop(columns="_c").reset_index(drop=True)


__all__ = [
    "IDK",
    "bootstrap_table2",
    "calibration",
    "consistency_table",
    "error_consistency",
    "expected_calibration_error",
    "fleiss_kappa",
    "fleiss_table",
    "idk_gain",
    "ParticipantLayout",
    "item_resample_stats",
    "mcnemar_exact",
    "mcnemar_table",
    "reliability_bins",
    "response_times",
]
