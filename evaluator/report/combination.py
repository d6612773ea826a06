"""People and model together: the model's probabilities combined with the human answers through a confusion model.

Kerrigan, Smyth & Steyvers (NeurIPS 2021) and Steyvers et al. (PNAS 2022): treat each human answer as a noisy
vote whose reliability is a confusion matrix Theta[c, a] = P(a person answers a | true class c), and the
model's (temperature-calibrated) probabilities as the prior over the true class. For item i with model
probabilities m_i and human answers a_1..a_n,

    score_i(c) = log m_ic / T  +  sum_j log Theta[c, a_j]                         (model + all humans)
    score_ij(c) = log m_ic / T  +  log Theta[c, a_j]                              (model + one human, per answer)
    score_i(c) = sum_j log Theta[c, a_j]                                          (humans alone, confusion-model vote)

and the combination answers argmax_c score (a tie for the top counts as wrong, as in Table 2). Answers are
the model's classes plus ``idk`` and ``other`` (an answer outside the model's classes), so an idk vote counts
as the evidence it is. Theta is estimated with Dirichlet smoothing towards a pooled template,

    Theta[c, a] = (n_ca + lambda pi_a(c)) / (n_c + lambda)

(pi(c): the pooled shares of right, idk and other answers, the rest spread evenly over the other classes;
lambda = ``prior_strength`` answers), and T minimises the model's log loss; both on the *other* folds' items
only: items are split into ``folds`` folds within each class (seeded) and every item is scored by a rule
fitted without its own answers. Model probabilities of exactly 0 stay impossible (-inf), so a perfect
one-hot model stays perfect whatever the people answer.

Compared on the same items: humans alone (accuracy of one answer; Table 2's majority vote; the
confusion-model vote), the model alone (its answers), model + one human, model + all humans. Accuracies are
averaged as Table 2 (macro by default). CIs: the report's two-way bootstrap with the combined outcomes held
fixed (per answer: weight W_p V_i; per item: V_i u_i, as Table 2's majority votes); the paired differences are
taken within each resample. The fitting of Theta and T is not redone per resample, so the CIs leave out the
spread of the fitted rule itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .bootstrap import WeightSampler, _chunks, _row_nanmean, percentile_interval
from .crossed import CrossedSums
from .metrics import Encoded, _check_average, encode, human_conditions, item_table
from .probabilities import ModelProbabilities

COMBINATION_COLUMNS = ("condition", "model", "method", "versus", "estimate", "ci_low", "ci_high", "n_items",
                       "n_answers", "folds", "temperature", "model_input", "n_resamples", "resample")
METHODS = ("humans: accuracy", "humans: majority vote", "humans: confusion-model vote", "model alone",
           "model + one human", "model + all humans")
COMPARISONS = (("model + all humans", "model alone"), ("model + all humans", "humans: confusion-model vote"),
               ("model + all humans", "humans: majority vote"), ("model + one human", "model alone"),
               ("model + one human", "humans: accuracy"))
_T_RANGE = (0.02, 50.0)


def combination(trials, *, probabilities: ModelProbabilities | None = None, average: str = "macro", folds: int = 5,
                prior_strength: float = 10.0, n_resamples: int = 1000, seed: int | None = 0,
                level: float = 0.95) -> pd.DataFrame:
    """Accuracy (percent) of people and model combined, cross-validated over items, against either alone.

    Per condition and model row of that condition. The model's probability vectors come from
    ``probabilities``; without them, from its answer and ``p_response`` (the answer gets p_response, the other
    classes share the rest evenly; ``model_input`` says which). Rows: one per method (``versus`` empty) and
    one per paired difference (percentage points).
    """
    _check_average(average)
    if folds < 2:
        raise ValueError("the combination needs at least 2 folds")
    enc = trials if isinstance(trials, Encoded) else encode(trials)
    groups = enc.groups
    items = item_table(enc)
    rng = np.random.default_rng(seed)
    sampler = WeightSampler(enc)
    rows = []
    for condition, human in human_conditions(groups):
        for code in groups.index[(groups["subject_kind"] == "model") & (groups["condition"] == condition)]:
            vectors = _model_vectors(enc, int(code), probabilities)
            if vectors is None:
                continue
            fitted = _cross_validated(enc, items, human, int(code), vectors, folds=folds,
                                      prior_strength=prior_strength, rng=rng)
            if fitted is not None:
                rows += fitted.rows(sampler, rng, average=average, n_resamples=n_resamples, level=level)
    return pd.DataFrame(rows, columns=list(COMBINATION_COLUMNS))


def _model_vectors(enc: Encoded, code: int, probabilities: ModelProbabilities | None):
    """(item codes, items x classes matrix, class names, input label) for one model row, or None."""
    found = probabilities.for_group(code) if probabilities is not None else None
    if found is not None:
        return found[0], found[1], probabilities.classes, "probabilities"
    if "p_response" not in enc.trials.columns:
        return None
    mask = (enc.group == code) & enc.guess
    p = enc.trials["p_response"].to_numpy(dtype=float)[mask]
    ok = ~np.isnan(p)
    if not ok.any():
        return None
    classes = enc.responses
    item_codes, response, p = enc.item[mask][ok], enc.response[mask][ok], p[ok]
    # Only the answer's probability is known: the rest is spread evenly (never below the answer's share).
    rest = (1.0 - p) / max(len(classes) - 1, 1)
    matrix = np.repeat(rest[:, None], len(classes), axis=1)
    matrix[np.arange(len(p)), response] = np.maximum(p, rest)
    return item_codes, matrix / matrix.sum(axis=1, keepdims=True), classes, "answer + p_response"


@dataclass
class _Fitted:
    """Out-of-sample combined outcomes of one condition x model, ready for the bootstrap."""

    condition: str
    model: str
    humans: CrossedSums  # answer values right, with_one; item values mv_full, humans_vote, with_all
    model_sums: CrossedSums  # the model's answers on the same items
    n_answers: int
    folds: int
    temperature: float  # geometric mean over the folds
    model_input: str

    def rows(self, sampler: WeightSampler, rng, *, average, n_resamples, level) -> list:
        point = self._accuracies(np.ones((1, sampler.n_items)), None, average)
        draws = [self._accuracies(sampler.items(rng, b), sampler.participants(rng, b), average)
                 for b in _chunks(n_resamples, max(sampler.n_items, sampler.n_subjects, self.humans.width))]
        out = []
        common = [self.humans.n_items, self.n_answers, self.folds, self.temperature, self.model_input, n_resamples,
                  "two-way" if n_resamples else ""]

        def add(method, versus, estimate, values):
            low, high = percentile_interval(values * 100.0, level) if n_resamples else (np.nan, np.nan)
            out.append([self.condition, self.model, method, versus, float(estimate) * 100.0, low, high, *common])

        for method in METHODS:
            add(method, "", point[method][0], np.concatenate([d[method] for d in draws]) if draws else np.zeros(0))
        for method, versus in COMPARISONS:
            values = np.concatenate([d[method] - d[versus] for d in draws]) if draws else np.zeros(0)
            add(method, versus, point[method][0] - point[versus][0], values)
        return out

    def _accuracies(self, v, w, average) -> dict[str, np.ndarray]:
        h = self.humans.sums(v, w)
        m = self.model_sums.sums(v, None)

        def rate(num, den):
            with np.errstate(invalid="ignore", divide="ignore"):
                if average == "micro":
                    return num.sum(axis=1) / den.sum(axis=1)
                return _row_nanmean(np.where(den > 0, num / den, np.nan))

        return {
            "humans: accuracy": rate(h["right"], h["answered"]),
            "humans: majority vote": rate(h["mv_full"], h["items"]),
            "humans: confusion-model vote": rate(h["humans_vote"], h["items"]),
            "model alone": rate(m["right"], m["answered"]),
            "model + one human": rate(h["with_one"], h["answered"]),
            "model + all humans": rate(h["with_all"], h["items"]),
        }


def _cross_validated(enc: Encoded, items: pd.DataFrame, human_code: int, model_code: int, vectors, *, folds: int,
                     prior_strength: float, rng) -> _Fitted | None:
    item_codes, matrix, classes, model_input = vectors
    row_of = np.full(len(enc.items), -1)
    row_of[item_codes] = np.arange(len(item_codes))
    human = enc.group == human_code
    common = np.intersect1d(np.unique(enc.item[human]), item_codes)
    if len(common) < 2:
        return None
    answers = human & np.isin(enc.item, common)
    a_item, a_response = enc.item[answers], enc.response[answers]
    n_classes = len(classes)
    idk_col, other_col = n_classes, n_classes + 1
    names = enc.responses.to_numpy()[np.minimum(a_response, len(enc.responses) - 1)]
    category = np.where(a_response == enc.idk_code, idk_col, classes.get_indexer(names))
    category = np.where(category < 0, other_col, category)
    target = enc.item_class[common]  # a target's code in `classes` equals its code in enc.classes
    with np.errstate(divide="ignore"):
        log_m = np.log(matrix[row_of[common]])

    fold = _folds(target, min(folds, len(common)), rng)
    local = np.full(len(enc.items), -1)
    local[common] = np.arange(len(common))
    a_local = local[a_item]
    with_all = np.zeros(len(common), dtype=bool)
    humans_vote = np.zeros(len(common), dtype=bool)
    with_one = np.zeros(len(a_item), dtype=bool)
    temperatures = []
    for f in range(fold.max() + 1):
        test = fold == f
        if not test.any():
            continue
        train = ~test
        temperature = _temperature(log_m[train], target[train])
        temperatures.append(temperature)
        log_theta = np.log(_confusion(target[a_local][train[a_local]], category[train[a_local]], n_classes,
                                      prior_strength))
        scaled = log_m[test] / temperature
        # sum over an item's answers of log Theta[c, a]: one row per answer, added up per item.
        test_answers = test[a_local]
        votes = np.zeros((len(common), n_classes))
        np.add.at(votes, a_local[test_answers], log_theta[:, category[test_answers]].T)
        humans_vote[test] = _strict_argmax_is(votes[test], target[test])
        with_all[test] = _strict_argmax_is(scaled + votes[test], target[test])
        one = log_m[a_local[test_answers]] / temperature + log_theta[:, category[test_answers]].T
        with_one[test_answers] = _strict_argmax_is(one, target[a_local[test_answers]])

    part = items[(items["_group"] == human_code)].set_index("item")["mv_full"]
    mv_full = part.reindex(enc.items[common]).to_numpy(dtype=float)
    humans = CrossedSums(n_items=len(enc.items), item_codes=common, item_class=target, subject=enc.subject[answers],
                         item=a_item, answer_values={"right": enc.correct[answers], "with_one": with_one},
                         item_values={"mv_full": mv_full, "humans_vote": humans_vote, "with_all": with_all})
    model = (enc.group == model_code) & np.isin(enc.item, common)
    model_sums = CrossedSums(n_items=len(enc.items), item_codes=enc.item[model], item_class=enc.item_class[enc.item[model]],
                             subject=enc.subject[model], item=enc.item[model], answer_values={"right": enc.correct[model]})
    return _Fitted(condition=enc.groups.loc[human_code, "condition"], model=enc.groups.loc[model_code, "subject"],
                   humans=humans, model_sums=model_sums, n_answers=int(answers.sum()), folds=int(fold.max() + 1),
                   temperature=float(np.exp(np.mean(np.log(temperatures)))), model_input=model_input)


def _folds(target: np.ndarray, folds: int, rng) -> np.ndarray:
    """Fold per item: each class's items in a random order dealt round-robin, so every fold has every class."""
    out = np.empty(len(target), dtype=np.int64)
    offset = 0
    for cls in np.unique(target):
        members = np.flatnonzero(target == cls)
        out[rng.permutation(members)] = (offset + np.arange(len(members))) % folds
        offset += len(members)  # continue the deal, so that small classes do not all start in fold 0
    return out


def _confusion(target: np.ndarray, category: np.ndarray, n_classes: int, prior_strength: float) -> np.ndarray:
    """Theta[c, a] from training answers, smoothed towards the pooled template (see the module doc)."""
    n_categories = n_classes + 2
    counts = np.zeros((n_classes, n_categories))
    np.add.at(counts, (target, category), 1.0)
    n = len(target)
    right = (np.sum(category == target) + 1.0) / (n + 3.0)
    idk = (np.sum(category == n_classes) + 1.0) / (n + 3.0)
    other = (np.sum(category == n_classes + 1) + 1.0) / (n + 3.0)
    wrong = max(1.0 - right - idk - other, 1e-6) / max(n_classes - 1, 1)
    template = np.full((n_classes, n_categories), wrong)
    template[:, n_classes], template[:, n_classes + 1] = idk, other
    template[np.arange(n_classes), np.arange(n_classes)] = right
    template /= template.sum(axis=1, keepdims=True)
    return (counts + prior_strength * template) / (counts.sum(axis=1, keepdims=True) + prior_strength)


def _temperature(log_m: np.ndarray, target: np.ndarray) -> float:
    """T in [0.02, 50] minimising the mean log loss of softmax(log m / T) on the training items (golden section)."""
    rows = np.arange(len(target))

    def loss(log_t):
        z = log_m / math.exp(log_t)
        top = np.max(np.where(np.isfinite(z), z, -np.inf), axis=1, keepdims=True)
        with np.errstate(invalid="ignore", over="ignore"):
            lse = top[:, 0] + np.log(np.exp(z - top).sum(axis=1))
        value = float(np.mean(lse - z[rows, target]))
        return value if math.isfinite(value) else math.inf

    low, high = math.log(_T_RANGE[0]), math.log(_T_RANGE[1])
    if len(target) == 0 or not math.isfinite(loss(0.0)):
        return 1.0  # no items, or a true class the model rules out: temperature cannot help
    ratio = (math.sqrt(5) - 1) / 2
    a, b = high - ratio * (high - low), low + ratio * (high - low)
    fa, fb = loss(a), loss(b)
    for _ in range(40):
        if fa <= fb:
            high, b, fb = b, a, fa
            a = high - ratio * (high - low)
            fa = loss(a)
        else:
            low, a, fa = a, b, fb
            b = low + ratio * (high - low)
            fb = loss(b)
    return math.exp((low + high) / 2)


def _strict_argmax_is(scores: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Per row: is the target's score strictly above every other class's (a tie counts as wrong)?"""
    rows = np.arange(len(target))
    mine = scores[rows, target]
    others = scores.copy()
    others[rows, target] = -np.inf
    return np.isfinite(mine) & (mine > others.max(axis=1)) if scores.shape[1] > 1 else np.isfinite(mine)
