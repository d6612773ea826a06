"""\"I don't know\" as abstention: the model's risk-coverage curve with the humans of each condition as points.

People abstain by answering idk; a model can abstain by declining the items on which its confidence (its top
probability, ``p_response``, or the maximum of its probability vector) is below a threshold. Per model row
(subject x condition), items are ranked by confidence; keeping the top ones gives, at each threshold t,

    coverage(t)  = share of the model's items it keeps (answers with confidence >= t)
    accuracy(t)  = accuracy on the kept items                         (the selective accuracy; risk = 1 - it)

Macro average (the report's default): per class c, coverage_c = kept_c / n_c and accuracy_c = right_c /
kept_c, then the mean over classes (classes with nothing kept are left out of the accuracy's mean), exactly
as Table 2 averages; micro: plain shares over items. The humans of a condition are one point: coverage =
share of non-idk answers, accuracy = accuracy on guesses (Table 2's value). The model's accuracy *at the
humans' coverage* interpolates linearly between the two thresholds around that coverage (a randomised
threshold). A model's own idk answers are never kept.

CIs: the two-way bootstrap of the report (:mod:`.bootstrap`): in each resample the humans' coverage and
accuracy are recomputed with participant and item weights, and the model's accuracy is read off its
resampled curve (item weights) at the resampled human coverage; the difference model - humans is taken
within each resample.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .bootstrap import WeightSampler, _chunks, _row_nanmean, percentile_interval
from .crossed import CrossedSums
from .metrics import Encoded, _check_average, encode, human_conditions
from .probabilities import ModelProbabilities

RISK_COVERAGE_COLUMNS = ("condition", "subject", "quantity", "estimate", "ci_low", "ci_high", "n_items",
                         "n_resamples", "resample")
CURVE_COLUMNS = ("subject", "condition", "n_kept", "coverage", "accuracy", "threshold")


def risk_coverage(trials, *, probabilities: ModelProbabilities | None = None, average: str = "macro",
                  n_resamples: int = 1000, seed: int | None = 0, level: float = 0.95) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(summary, curve): the humans' points and the models' accuracy at their coverage with CIs; the curves.

    Summary quantities (percent): ``human_coverage``, ``human_accuracy_on_guesses`` (subject ``humans``);
    per model ``model_accuracy_at_human_coverage``, ``model_minus_humans`` (percentage points) and
    ``model_threshold_at_human_coverage`` (a confidence, no CI). A model without a confidence for each of its
    answers has no curve.
    """
    _check_average(average)
    enc = trials if isinstance(trials, Encoded) else encode(trials)
    groups = enc.groups
    curves, models = [], {}
    for code, group in groups[groups["subject_kind"] == "model"].iterrows():
        ranked = ModelRanking.of(enc, code, probabilities)
        if ranked is None:
            continue
        models[code] = ranked
        curves.append(ranked.curve(average).assign(subject=group["subject"], condition=group["condition"]))
    curve = pd.concat(curves, ignore_index=True)[list(CURVE_COLUMNS)] if curves \
        else pd.DataFrame(columns=list(CURVE_COLUMNS))

    rng = np.random.default_rng(seed)
    sampler = WeightSampler(enc)
    rows = []
    for condition, human in human_conditions(groups):
        here = [(code, ranked) for code, ranked in models.items() if groups.loc[code, "condition"] == condition]
        rows += _condition_rows(enc, human, here, sampler, rng, average=average, n_resamples=n_resamples,
                                level=level)
    return pd.DataFrame(rows, columns=list(RISK_COVERAGE_COLUMNS)), curve


def _condition_rows(enc: Encoded, human_code: int, models, sampler, rng, *, average, n_resamples, level) -> list:
    condition = enc.groups.loc[human_code, "condition"]
    people = _human_sums(enc, human_code)
    point = _estimates(people, models, np.ones((1, len(enc.items))), None, average)
    draws = [_estimates(people, models, sampler.items(rng, b), sampler.participants(rng, b), average)
             for b in _chunks(n_resamples, max(len(enc.items), len(enc.subjects), people.width))]
    rows = []

    def add(subject, quantity, key, n_items, *, scale=100.0, ci=True):
        values = np.concatenate([d[key] for d in draws]) if draws else np.zeros(0)
        low, high = percentile_interval(values * scale, level) if (ci and n_resamples) else (np.nan, np.nan)
        rows.append([condition, subject, quantity, float(point[key][0]) * scale, low, high, n_items,
                     n_resamples if ci else 0, "two-way" if (ci and n_resamples) else ""])

    add("humans", "human_coverage", "coverage", people.n_items)
    add("humans", "human_accuracy_on_guesses", "accuracy", people.n_items)
    for code, ranked in models:
        name = enc.groups.loc[code, "subject"]
        add(name, "model_accuracy_at_human_coverage", ("model", code), ranked.n_items)
        add(name, "model_minus_humans", ("difference", code), ranked.n_items)
        add(name, "model_threshold_at_human_coverage", ("threshold", code), ranked.n_items, scale=1.0, ci=False)
    return rows


def _human_sums(enc: Encoded, code: int) -> CrossedSums:
    mask = enc.group == code
    items = np.unique(enc.item[mask])
    return CrossedSums(n_items=len(enc.items), item_codes=items, item_class=enc.item_class[items],
                       subject=enc.subject[mask], item=enc.item[mask],
                       answer_values={"right": enc.correct[mask], "guess": enc.guess[mask]})


def _estimates(people: CrossedSums, models, v, w, average) -> dict:
    """Per resample: the humans' coverage and accuracy on guesses, each model's accuracy at that coverage."""
    s = people.sums(v, w)
    with np.errstate(invalid="ignore", divide="ignore"):
        if average == "micro":
            coverage = s["guess"].sum(axis=1) / s["answered"].sum(axis=1)
            accuracy = s["right"].sum(axis=1) / s["guess"].sum(axis=1)
        else:
            coverage = _row_nanmean(s["guess"] / s["answered"])
            accuracy = _row_nanmean(np.where(s["guess"] > 0, s["right"] / s["guess"], np.nan))
    out = {"coverage": coverage, "accuracy": accuracy}
    for code, ranked in models:
        at, threshold = ranked.accuracy_at(coverage, v, average)
        out[("model", code)] = at
        out[("difference", code)] = at - accuracy
        out[("threshold", code)] = threshold
    return out


class ModelRanking:
    """One model row's items in class order, with each guess's rank by confidence and the ends of equal-confidence blocks."""

    def __init__(self, item_codes, item_class, right, confidence):
        order = np.lexsort((item_codes, item_class))
        self.item_codes = item_codes[order]
        cls = item_class[order]
        self.class_starts = np.flatnonzero(np.r_[True, cls[1:] != cls[:-1]])
        self.right = right[order].astype(float)
        conf = confidence[order]  # NaN: the model answered idk, never kept
        kept_order = np.argsort(-np.where(np.isnan(conf), -np.inf, conf), kind="stable")
        n_guesses = int((~np.isnan(conf)).sum())
        self._conf_order = kept_order
        self.rank = np.empty(len(conf), dtype=np.int64)
        self.rank[kept_order] = np.arange(len(conf))
        sorted_conf = conf[kept_order][:n_guesses]
        # A threshold cannot split equal confidences: curve points sit at the ends of equal-confidence blocks.
        self.block_ends = np.flatnonzero(np.r_[sorted_conf[1:] != sorted_conf[:-1], True]) + 1 if n_guesses \
            else np.zeros(0, dtype=np.int64)
        self.block_conf = sorted_conf[self.block_ends - 1] if n_guesses else np.zeros(0)

    @property
    def n_items(self) -> int:
        return len(self.item_codes)

    @classmethod
    def of(cls, enc: Encoded, code: int, probabilities: ModelProbabilities | None) -> ModelRanking | None:
        mask = enc.group == code
        confidence = np.full(int(mask.sum()), np.nan)
        if "p_response" in enc.trials.columns:
            confidence = enc.trials["p_response"].to_numpy(dtype=float)[mask].copy()
        vectors = probabilities.for_group(code) if probabilities is not None else None
        items = enc.item[mask]
        if vectors is not None:
            lookup = np.full(len(enc.items), np.nan)
            lookup[vectors[0]] = vectors[1].max(axis=1)
            top = lookup[items]
            confidence = np.where(np.isnan(top), confidence, top)
        guessed = enc.guess[mask]
        if not guessed.any() or np.isnan(confidence[guessed]).any():
            return None  # a guess without a confidence cannot be ranked
        confidence = np.where(guessed, confidence, np.nan)
        return cls(items, enc.item_class[items], enc.correct[mask], confidence)

    def curve(self, average: str) -> pd.DataFrame:
        """One point per threshold (the end of each equal-confidence block), percent."""
        ones = np.ones((1, self.n_items))
        coverage = self._coverage_at_blocks(ones, average)[0]
        cls = np.repeat(np.arange(len(self.class_starts)), np.diff(np.r_[self.class_starts, self.n_items]))
        order = self._conf_order[: self.block_ends[-1]] if len(self.block_ends) else np.zeros(0, dtype=np.int64)
        c, r = cls[order], self.right[order]
        step = np.arange(1, len(order) + 1)
        if average == "micro":
            accuracy = np.cumsum(r) / step
        else:
            # Mean over the classes kept so far of right_c / kept_c, updated one kept item at a time.
            kept_c = pd.Series(c).groupby(c).cumcount().to_numpy() + 1
            right_c = pd.Series(r).groupby(c).cumsum().to_numpy()
            previous = np.where(kept_c > 1, (right_c - r) / np.maximum(kept_c - 1, 1), 0.0)
            accuracy = np.cumsum(right_c / kept_c - previous) / np.cumsum(kept_c == 1)
        ends = self.block_ends - 1
        return pd.DataFrame({"n_kept": self.block_ends, "coverage": coverage * 100.0,
                             "accuracy": accuracy[ends] * 100.0, "threshold": self.block_conf})

    def accuracy_at(self, coverage: np.ndarray, v: np.ndarray, average: str) -> tuple[np.ndarray, np.ndarray]:
        """Per resample: the accuracy (and threshold) at ``coverage``, linear between the two nearest thresholds."""
        n = len(coverage)
        if len(self.block_ends) == 0:
            return np.full(n, np.nan), np.full(n, np.nan)
        v = np.broadcast_to(v[:, self.item_codes], (n, self.n_items))
        block_cov = self._coverage_at_blocks(v, average)
        j = (block_cov < coverage[:, None] - 1e-12).sum(axis=1)  # first block reaching the coverage
        reachable = (j < len(self.block_ends)) & ~np.isnan(coverage)
        j = np.minimum(j, len(self.block_ends) - 1)
        hi_cut = self.block_ends[j]
        lo_cut = np.where(j > 0, self.block_ends[np.maximum(j - 1, 0)], 0)
        cov_hi, acc_hi = self._at_cut(hi_cut, v, average)
        cov_lo, acc_lo = self._at_cut(lo_cut, v, average)
        with np.errstate(invalid="ignore", divide="ignore"):
            t = np.clip((coverage - cov_lo) / (cov_hi - cov_lo), 0.0, 1.0)
        # Below the first threshold the kept items are the top block's: its accuracy.
        acc_lo = np.where(lo_cut == 0, acc_hi, acc_lo)
        at = np.where(np.isnan(t), acc_hi, acc_lo + t * (acc_hi - acc_lo))
        return np.where(reachable, at, np.nan), np.where(reachable, self.block_conf[j], np.nan)

    def _class_totals(self, v: np.ndarray) -> np.ndarray:
        return np.add.reduceat(v, self.class_starts, axis=1)

    def _coverage_at_blocks(self, v: np.ndarray, average: str) -> np.ndarray:
        """resamples x blocks: coverage after each block, a cumulative sum of item shares in confidence order."""
        total = self._class_totals(v)
        with np.errstate(invalid="ignore", divide="ignore"):
            if average == "micro":
                share = v / total.sum(axis=1, keepdims=True)
            else:
                sizes = np.diff(np.r_[self.class_starts, self.n_items])
                per_item_total = np.repeat(total, sizes, axis=1)
                n_classes = (total > 0).sum(axis=1, keepdims=True)
                share = np.where(per_item_total > 0, v / (per_item_total * n_classes), 0.0)
        cumulative = np.cumsum(share[:, self._conf_order], axis=1)
        return cumulative[:, self.block_ends - 1]

    def _at_cut(self, cut: np.ndarray, v: np.ndarray, average: str) -> tuple[np.ndarray, np.ndarray]:
        """(coverage, accuracy) per resample, keeping that resample's ``cut`` most confident guesses."""
        total = self._class_totals(v)
        kept = v * (self.rank[None, :] < cut[:, None])
        k = np.add.reduceat(kept, self.class_starts, axis=1)
        r = np.add.reduceat(kept * self.right, self.class_starts, axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            if average == "micro":
                return k.sum(axis=1) / total.sum(axis=1), r.sum(axis=1) / k.sum(axis=1)
            return (_row_nanmean(np.where(total > 0, k / total, np.nan)),
                    _row_nanmean(np.where(k > 0, r / k, np.nan)))
