"""Error consistency (Geirhos et al. 2020) that holds in the paper's sparse design, with CIs and a noise ceiling.

In the app each item gets k answers and each person answers ~20 of hundreds of items, so most pairs of
people share one to three items: a kappa computed on one or two items is noise (or undefined), and the
plain mean of pairwise kappas is pulled towards 0. The estimator here keeps Geirhos' kappa but takes each
person's expected agreement from *all* of their answers in the condition and weighs each pair by its
number of common items:

    p_a      = accuracy of a over all of a's answers in the condition
    c_ab     = p_a p_b + (1 - p_a)(1 - p_b)                       (expected agreement)
    kappa_ab = (o_ab / n_ab - c_ab) / (1 - c_ab)                  (o_ab: common items both right or both wrong)
    EC       = sum_ab n_ab kappa_ab / sum_ab n_ab = sum_ab (o_ab - n_ab c_ab) / (1 - c_ab)  /  sum_ab n_ab

over pairs with n_ab >= 1 common items and c_ab < 1. When everyone answers every item, n_ab and the
p's are the same for all pairs, so EC is exactly model-vs-human's mean of per-pair kappas. In a sparse
design o_ab / n_ab is an unbiased estimate of the pair's agreement on a random item and the p's come from
~20 answers instead of one or two, so EC recovers the full-overlap value (tests/simulated_studies.py).

``human-model:<m>``: the same with b = the model (p_m over all its answers in the condition), pairs are
(person, model). ``noise-ceiling``: the same with b = the majority of the *other* answers to each item
(unique top answer among them is the target; ties and an idk top count as wrong, as in Table 2), p_b = that
majority's accuracy over all (person, item) answers: how consistent a subject that answers like the crowd
is with each person, to compare with human-model.

Two conventions (``idk`` column): ``error`` (an idk answer is a wrong answer; the headline value) and
``dropped`` (idk answers are removed before anything is computed). CIs: percentile bootstrap, two-way
(participants and items drawn with replacement; a pair weighs W_a W_b V_i per common item, a person's
accuracy is recomputed with the item weights).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .bootstrap import WeightSampler, _chunks, percentile_interval
from .metrics import Encoded, encode
from .trials import CONDITIONS

CONSISTENCY_COLUMNS = ("condition", "pair_kind", "error_consistency", "n_pairs")
CONSISTENCY_EXTRA = ("idk", "ci_low", "ci_high", "n_resamples", "resample")
IDK_CONVENTIONS = ("error", "dropped")
CEILING = "noise-ceiling"
_MAX_PAIR_ITEMS = 3_000_000  # pair-item incidences above which human-human CIs resample participants only
_EPS = 1e-12


def error_consistency(correct_a, correct_b) -> float:
    """Geirhos et al. (2020) error consistency of two subjects' correctness on the same items.

    kappa = (c_obs - c_exp) / (1 - c_exp), c_exp = p1 p2 + (1 - p1)(1 - p2), p = accuracy on these
    items. NaN when undefined (no items, or c_exp = 1: both always right or both always wrong).
    """
    a = np.asarray(correct_a, dtype=bool)
    b = np.asarray(correct_b, dtype=bool)
    if len(a) == 0:
        return float("nan")
    p1, p2 = float(a.mean()), float(b.mean())
    c_exp = p1 * p2 + (1 - p1) * (1 - p2)
    return float("nan") if 1 - c_exp <= _EPS else float(((a == b).mean() - c_exp) / (1 - c_exp))


def consistency_table(trials, *, n_resamples: int = 0, seed: int | None = 0, level: float = 0.95) -> pd.DataFrame:
    """Error consistency per condition and ``idk`` convention: human-human, noise ceiling, human vs each model.

    Columns: ``condition, pair_kind, error_consistency, n_pairs, idk, ci_low, ci_high, n_resamples,
    resample``. ``n_pairs`` counts the pairs (persons for human-model and the ceiling) with a defined kappa.
    """
    enc = trials if isinstance(trials, Encoded) else encode(trials)
    kinds = enc.groups["subject_kind"].to_numpy()[enc.group]
    conds = enc.groups["condition"].to_numpy()[enc.group]
    rng = np.random.default_rng(seed)
    sampler = WeightSampler(enc)
    rows = []
    for condition in CONDITIONS:
        human = (kinds == "human") & (conds == condition)
        if not human.any():
            continue
        model_names = sorted(pd.unique(enc.subjects.to_numpy()[enc.subject[(kinds == "model") & (conds == condition)]]))
        for idk in IDK_CONVENTIONS:
            keep = human if idk == "error" else human & enc.guess
            if not keep.any():  # every answer was idk, and idk is dropped: no one to compare, no kappa
                kinds_here = ["human-human", CEILING, *(f"human-model:{name}" for name in model_names)]
                rows += [[condition, kind, np.nan, 0, idk, np.nan, np.nan, n_resamples, ""] for kind in kinds_here]
                continue
            data = _Condition(enc, keep, condition, kinds, conds, model_names, idk)
            estimators = data.estimators()
            draws = _draw(data, estimators, sampler, rng, n_resamples)
            for (kind, estimator), values in zip(estimators, draws, strict=True):
                value, n = estimator.point()
                low, high = percentile_interval(values, level) if n_resamples else (np.nan, np.nan)
                unit = estimator.unit if n_resamples else ""
                rows.append([condition, kind, value, n, idk, low, high, n_resamples, unit])
    return pd.DataFrame(rows, columns=[*CONSISTENCY_COLUMNS, *CONSISTENCY_EXTRA])


def _draw(data: _Condition, estimators, sampler: WeightSampler, rng, n_resamples: int) -> list[np.ndarray]:
    out = [[] for _ in estimators]
    width = max(len(data.enc.items), len(data.enc.subjects), *(e.width for _, e in estimators))
    for b in _chunks(n_resamples, width):
        v = sampler.items(rng, b)
        w = sampler.participants(rng, b)[:, data.subject_codes]
        for k, (_, estimator) in enumerate(estimators):
            out[k].append(estimator.resampled(w, v))
    return [np.concatenate(parts) if parts else np.zeros(0) for parts in out]


class _Condition:
    """The human answers of one condition under one idk convention, with per-person accuracy sums."""

    def __init__(self, enc: Encoded, keep: np.ndarray, condition: str, kinds, conds, model_names, idk: str):
        self.enc = enc
        self.subject_codes, person = np.unique(enc.subject[keep], return_inverse=True)
        order = np.argsort(person, kind="stable")
        self.person = person[order]
        self.item = enc.item[keep][order]
        self.right = enc.correct[keep][order].astype(float)
        self.response = enc.response[keep][order]
        self.person_starts = np.flatnonzero(np.r_[True, self.person[1:] != self.person[:-1]])
        self.n_persons = len(self.subject_codes)
        self.models = {}
        for name in model_names:
            code = enc.subjects.get_loc(name)
            sel = (kinds == "model") & (conds == condition) & (enc.subject == code)
            if idk == "dropped":
                sel &= enc.guess
            self.models[name] = (enc.item[sel], enc.correct[sel].astype(float))

    def accuracy(self, v: np.ndarray) -> np.ndarray:
        """resamples x persons: each person's accuracy over all their answers, answers weighted by V_item."""
        vi = v[:, self.item]
        with np.errstate(invalid="ignore", divide="ignore"):
            return (np.add.reduceat(vi * self.right, self.person_starts, axis=1)
                    / np.add.reduceat(vi, self.person_starts, axis=1))

    def estimators(self) -> list[tuple[str, object]]:
        found = [("human-human", _Pairs(self)), (CEILING, _Versus(self, *self._leave_one_out_majority()))]
        for name, (items, right) in self.models.items():
            lookup = np.full(len(self.enc.items), np.nan)
            lookup[items] = right
            outcome = lookup[self.item]
            found.append((f"human-model:{name}", _Versus(self, ~np.isnan(outcome), np.nan_to_num(outcome),
                                                         model=(items, right))))
        return found

    def _leave_one_out_majority(self) -> tuple[np.ndarray, np.ndarray]:
        """Per answer: does the item have other answers, and is their unique top answer the target?"""
        # Per item: the count of every response. The others' majority is right iff, with this answer taken out,
        # the target's count is strictly above every other response's count (a tie counts as wrong):
        #   target_without_me = target_votes - [my answer is the target]
        #   rival_without_me  = top_rival - 1 if my answer is the only top rival, else top_rival
        # where the rival responses are all but the target, top_rival their largest count (second_rival the next).
        n_codes = self.enc.idk_code + 1
        items, local = np.unique(self.item, return_inverse=True)
        counts = np.zeros((len(items), n_codes))
        np.add.at(counts, (local, self.response), 1)
        target = self.enc.item_class[items]
        rows = np.arange(len(items))
        target_votes = counts[rows, target]
        rival_votes = counts.copy()
        rival_votes[rows, target] = -1.0
        top_two = -np.sort(-rival_votes, axis=1)[:, :2]
        top_rival, second_rival = top_two[:, 0], top_two[:, 1]
        n_top_rivals = (rival_votes == top_rival[:, None]).sum(axis=1)
        mine_is_target = self.response == target[local]
        target_without_me = target_votes[local] - mine_is_target
        my_response_votes = counts[local, self.response]
        mine_is_only_top_rival = ~mine_is_target & (my_response_votes == top_rival[local]) & (n_top_rivals[local] == 1)
        rival_without_me = np.where(mine_is_only_top_rival, np.maximum(top_rival[local] - 1, second_rival[local]),
                                    top_rival[local])
        has_others = counts.sum(axis=1)[local] >= 2
        return has_others, (target_without_me > rival_without_me).astype(float)


@dataclass
class _Versus:
    """Each person against one other rater (a model, or the majority of the others) on the person's items.

    ``present`` / ``outcome`` are per human answer: does the rater have an answer there, is it right.
    The rater's accuracy: over the model's own answers (V-weighted), or over all present (person, item)
    answers of the majority rater (W_a V_i weighted).
    """

    data: _Condition
    present: np.ndarray
    outcome: np.ndarray
    model: tuple[np.ndarray, np.ndarray] | None = None
    unit: str = "two-way"

    @property
    def width(self) -> int:
        return len(self.data.item)

    def point(self) -> tuple[float, int]:
        ones_w = np.ones((1, self.data.n_persons))
        ones_v = np.ones((1, len(self.data.enc.items)))
        value, n = self._estimate(ones_w, ones_v)
        return float(value[0]), int(n[0])

    def resampled(self, w: np.ndarray, v: np.ndarray) -> np.ndarray:
        return self._estimate(w, v)[0]

    def _estimate(self, w, v):
        # Per person a (the module's formulas with b = this rater, items weighted V_i):
        #   n_a = sum_i V_i [rater answered i],  o_a = sum_i V_i [both right or both wrong on i],
        #   p_a = a's accuracy over all a's answers,  p_b = the rater's accuracy (see the class doc).
        d = self.data
        p_a = d.accuracy(v)
        item_weight = v[:, d.item] * self.present
        n_a = np.add.reduceat(item_weight, d.person_starts, axis=1)
        agree = np.add.reduceat(item_weight * (d.right == self.outcome), d.person_starts, axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            if self.model is not None:
                items, right = self.model
                p_b = ((v[:, items] * right).sum(axis=1) / v[:, items].sum(axis=1))[:, None]
            else:
                answer_weight = w[:, d.person] * item_weight  # W_a V_i per (person, item) answer
                p_b = ((answer_weight * self.outcome).sum(axis=1) / answer_weight.sum(axis=1))[:, None]
            return _pooled_kappa(agree, n_a, p_a, p_b, w)


@dataclass
class _Pairs:
    """All pairs of persons with common items (pair-item incidences, or matrices for dense designs)."""

    data: _Condition

    def __post_init__(self):
        d = self.data
        order = np.lexsort((d.person, d.item))
        item, person, right = d.item[order], d.person[order], d.right[order]
        starts = np.flatnonzero(np.r_[True, item[1:] != item[:-1]])
        sizes = np.diff(np.r_[starts, len(item)])
        self.n_incidences = int((sizes * (sizes - 1) // 2).sum())
        self.unit = "two-way"
        if self.n_incidences <= _MAX_PAIR_ITEMS:
            a, b, inc_item, agree = [], [], [], []
            for size in np.unique(sizes[sizes >= 2]):
                first = starts[sizes == size]
                i, j = np.triu_indices(size, k=1)
                rows_a, rows_b = first[:, None] + i[None, :], first[:, None] + j[None, :]
                a.append(person[rows_a].ravel())
                b.append(person[rows_b].ravel())
                inc_item.append(item[rows_a].ravel())
                agree.append((right[rows_a] == right[rows_b]).ravel())
            a, b = (np.concatenate(x) if x else np.zeros(0, int) for x in (a, b))
            inc_item = np.concatenate(inc_item) if inc_item else np.zeros(0, int)
            agree = np.concatenate(agree).astype(float) if agree else np.zeros(0)
            pair, pairs = pd.factorize(pd.Series(a * d.n_persons + b))
            order = np.argsort(pair, kind="stable")
            self.pair_starts = np.flatnonzero(np.r_[True, pair[order][1:] != pair[order][:-1]])  # unused without pairs
            self.inc_item, self.inc_agree = inc_item[order], agree[order]
            self.a, self.b = (np.asarray(pairs) // d.n_persons).astype(int), (np.asarray(pairs) % d.n_persons)
            self.dense = False
        else:
            # Dense designs (many answers per item): pair sums from matrices, once; CIs resample people only.
            shape = (d.n_persons, len(d.enc.items))
            answered, right_m = np.zeros(shape, np.float32), np.zeros(shape, np.float32)
            answered[d.person, d.item] = 1.0
            right_m[d.person, d.item] = d.right
            # For persons a, b over their common items: n_ab common items, both_right_ab, and
            # right_on_common_ab = items a got right among those b answered. Then
            #   both wrong = n_ab - right_on_common_ab - right_on_common_ba + both_right_ab   (inclusion-exclusion)
            #   o_ab = both right + both wrong = n_ab - right_on_common_ab - right_on_common_ba + 2 both_right_ab
            common = answered @ answered.T
            both_right = right_m @ right_m.T
            right_on_common = right_m @ answered.T
            agree_m = common - right_on_common - right_on_common.T + 2 * both_right
            self.a, self.b = np.nonzero(np.triu(common > 0, k=1))
            self.n_ab, self.agree_ab = common[self.a, self.b].astype(float), agree_m[self.a, self.b].astype(float)
            self.p = d.accuracy(np.ones((1, len(d.enc.items))))
            self.dense = True
            self.unit = "participants"

    @property
    def width(self) -> int:
        return len(self.a) if self.dense else max(self.n_incidences, len(self.data.item))

    def point(self) -> tuple[float, int]:
        value, n = self._estimate(np.ones((1, self.data.n_persons)), np.ones((1, len(self.data.enc.items))))
        return float(value[0]), int(n[0])

    def resampled(self, w: np.ndarray, v: np.ndarray) -> np.ndarray:
        return self._estimate(w, v)[0]

    def _estimate(self, w, v):
        if len(self.a) == 0:
            return np.full(len(w), np.nan), np.zeros(len(w), int)
        if self.dense:
            p = np.broadcast_to(self.p, (len(w), self.data.n_persons))
            n_ab = np.broadcast_to(self.n_ab, (len(w), len(self.a)))
            agree = np.broadcast_to(self.agree_ab, (len(w), len(self.a)))
        else:
            p = self.data.accuracy(v)
            vi = v[:, self.inc_item]
            n_ab = np.add.reduceat(vi, self.pair_starts, axis=1)
            agree = np.add.reduceat(vi * self.inc_agree, self.pair_starts, axis=1)
        return _pooled_kappa(agree, n_ab, p[:, self.a], p[:, self.b], w[:, self.a] * w[:, self.b])


def _pooled_kappa(agree, n, p_a, p_b, weight):
    """sum weight (agree - n c) / (1 - c)  /  sum weight n, over units with n > 0 and c < 1 (see module doc)."""
    c = p_a * p_b + (1 - p_a) * (1 - p_b)  # c_ab, the agreement expected from the two accuracies alone
    ok = (n > 0) & (1 - c > _EPS)
    with np.errstate(invalid="ignore", divide="ignore"):
        num = np.where(ok, weight * (agree - n * c) / np.where(ok, 1 - c, 1.0), 0.0).sum(axis=1)
        den = np.where(ok, weight * n, 0.0).sum(axis=1)
        value = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)
    return value, ok.sum(axis=1)
