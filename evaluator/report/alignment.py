"""Soft labels and difficulty alignment: how people's answers are spread over the classes, and whether the items
and classes that are hard for people are the ones the model is unsure of.

Soft labels (CIFAR-10H style, Peterson et al. 2019): per condition and item, the distribution of the human
answers. ``share`` is over all answers (idk included); ``soft_label`` is over the guesses (idk left out), the
distribution the model's probabilities are compared with.

Per human condition and model row (same condition, and the model's zero-shot row against every human
condition, as in the paper's Fig. 16), over the items with at least one human guess and a model vector:

    cross_entropy  = mean_i  - sum_c h_ic log m_ic                   (h_i: soft label, m_i: model probabilities)
    human_entropy  = mean_i  - sum_c h_ic log h_ic
    kl_divergence  = mean_i    sum_c h_ic log (h_ic / m_ic)  = cross_entropy - human_entropy

in nats; m_ic is floored at 1e-12 (a guess of a class the model rules out costs 27.6 nats instead of infinity).
With few answers per item h_i is noisy, so KL is positive even for a model that knows the people's true
distribution (about (classes answered - 1) / (2 x answers) nats): compare models and conditions, not KL with 0.

    spearman_items    = Spearman's rho over items of (human accuracy on the item, model's p of the true class)
    spearman_classes  = Spearman's rho over classes of (human per-class accuracy, model's mean p of the true class)

(the paper's Fig. 16 as a number; human accuracy counts idk as wrong; ties get mid-ranks). CIs: the report's
two-way bootstrap (participants and items drawn with replacement); each item keeps its values from the
original answers and weighs V_i u_i (its draw count times the mean W of its answerers, as Table 2's majority
votes do; a drawn-twice item counts twice, also in the ranks). The per-class rho resamples classes (the units
of that correlation), each with its values over all its items.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .bootstrap import WeightSampler, _chunks, percentile_interval
from .crossed import CrossedSums
from .metrics import Encoded, encode, human_conditions
from .probabilities import ModelProbabilities
from .trials import CONDITIONS, IDK

SOFT_LABEL_COLUMNS = ("condition", "item", "target", "answer", "count", "share", "soft_label")
ALIGNMENT_COLUMNS = ("condition", "model", "model_condition", "quantity", "estimate", "ci_low", "ci_high", "n_units",
                     "n_resamples", "resample")
ALIGNMENT_QUANTITIES = ("cross_entropy", "kl_divergence", "human_entropy", "spearman_items", "spearman_classes")
P_FLOOR = 1e-12


def soft_labels(trials) -> pd.DataFrame:
    """Per human condition, item and answer: count, share of all answers, share of the guesses (the soft label)."""
    enc = trials if isinstance(trials, Encoded) else encode(trials)
    is_human = (enc.groups["subject_kind"].to_numpy() == "human")[enc.group]
    n_codes = enc.idk_code + 1
    n_items = len(enc.items)
    key = (enc.group[is_human] * n_items + enc.item[is_human]) * n_codes + enc.response[is_human]
    keys, counts = np.unique(key, return_counts=True)
    cell = keys // n_codes
    response = keys % n_codes
    total = pd.Series(counts).groupby(cell).transform("sum").to_numpy()
    guesses = pd.Series(np.where(response == enc.idk_code, 0, counts)).groupby(cell).transform("sum").to_numpy()
    labels = np.append(enc.responses.to_numpy(dtype=object), IDK)
    item = cell % n_items
    out = pd.DataFrame({
        "condition": enc.groups["condition"].to_numpy()[cell // n_items],
        "item": enc.items.to_numpy()[item], "target": enc.classes.to_numpy()[enc.item_class[item]],
        "answer": labels[response], "count": counts, "share": counts / total,
    })
    with np.errstate(invalid="ignore", divide="ignore"):
        out["soft_label"] = np.where((response != enc.idk_code) & (guesses > 0), counts / guesses, np.nan)
    order = out["condition"].map(CONDITIONS.index)
    return out.assign(_c=order).sort_values(["_c", "item", "answer"], kind="stable").drop(columns="_c") \
        .reset_index(drop=True)[list(SOFT_LABEL_COLUMNS)]


def alignment(trials, *, probabilities: ModelProbabilities | None = None, n_resamples: int = 1000,
              seed: int | None = 0, level: float = 0.95) -> pd.DataFrame:
    """Cross-entropy, KL and human entropy (nats; need probability vectors) and Spearman's rho per item and per
    class (need p_target or vectors), per human condition and model row, with two-way bootstrap CIs."""
    enc = trials if isinstance(trials, Encoded) else encode(trials)
    groups = enc.groups
    rng = np.random.default_rng(seed)
    sampler = WeightSampler(enc)
    rows = []
    for condition, human in human_conditions(groups):
        models = [code for code, g in groups[groups["subject_kind"] == "model"].iterrows()
                  if g["condition"] in (condition, "zero-shot")]
        pairs = [p for p in (_ModelSide.of(enc, code, probabilities) for code in models) if p is not None]
        if not pairs:
            continue
        data = _HumanSide(enc, human, pairs)
        n_classes = len(enc.classes)
        point = data.estimates(np.ones((1, len(enc.items))), None, np.ones((1, n_classes)))
        draws = [data.estimates(sampler.items(rng, b), sampler.participants(rng, b),
                                rng.multinomial(n_classes, np.full(n_classes, 1 / n_classes), size=b).astype(float))
                 for b in _chunks(n_resamples, max(len(enc.items), len(enc.subjects), data.width))]
        for k, side in enumerate(pairs):
            for quantity in ALIGNMENT_QUANTITIES:
                if quantity not in point[k]:
                    continue  # no probability vectors: no cross-entropy, KL or entropy
                estimate, n_units = point[k][quantity]
                if n_units[0] == 0:
                    continue
                values = np.concatenate([d[k][quantity][0] for d in draws]) if draws else np.zeros(0)
                low, high = percentile_interval(values, level) if n_resamples else (np.nan, np.nan)
                unit = ("classes" if quantity == "spearman_classes" else "two-way") if n_resamples else ""
                rows.append([condition, side.subject, side.condition, quantity, float(estimate[0]), low, high,
                             int(n_units[0]), n_resamples, unit])
    return pd.DataFrame(rows, columns=list(ALIGNMENT_COLUMNS))


class _ModelSide:
    """One model row: per item its p of the true class and (when given) its probability vector."""

    def __init__(self, subject, condition, item_codes, p_target, matrix, classes):
        self.subject, self.condition = subject, condition
        self.item_codes, self.p_target, self.matrix, self.classes = item_codes, p_target, matrix, classes

    @classmethod
    def of(cls, enc: Encoded, code: int, probabilities: ModelProbabilities | None) -> _ModelSide | None:
        group = enc.groups.loc[code]
        vectors = probabilities.for_group(code) if probabilities is not None else None
        if vectors is not None:
            items, matrix = vectors
            return cls(group["subject"], group["condition"], items, matrix[np.arange(len(items)), enc.item_class[items]],
                       matrix, probabilities.classes)
        if "p_target" not in enc.trials.columns:
            return None
        mask = enc.group == code
        p = enc.trials["p_target"].to_numpy(dtype=float)[mask]
        ok = ~np.isnan(p)
        if not ok.any():
            return None
        return cls(group["subject"], group["condition"], enc.item[mask][ok], p[ok], None, None)


class _HumanSide:
    """The human answers of one condition: per item its soft label's entropy, accuracy and losses against each model."""

    def __init__(self, enc: Encoded, human_code: int, models: list[_ModelSide]):
        self.models = models
        mask = enc.group == human_code
        items = np.unique(enc.item[mask])
        item, response, guess = enc.item[mask], enc.response[mask], enc.guess[mask]
        losses = {}
        for k, side in enumerate(models):
            if side.matrix is None:
                continue
            lookup = np.full(len(enc.items), -1)
            lookup[side.item_codes] = np.arange(len(side.item_codes))
            row = lookup[item]
            names = enc.responses.to_numpy()[np.minimum(response, len(enc.responses) - 1)]
            column = side.classes.get_indexer(names)
            p = np.where((row >= 0) & (column >= 0) & guess, side.matrix[np.maximum(row, 0), np.maximum(column, 0)], 0.0)
            # -log m of the class a person answered: an item's cross-entropy is the mean of it over its guesses.
            losses[f"loss_{k}"] = np.where(guess, -np.log(np.maximum(p, P_FLOOR)), 0.0)
        self.sums = CrossedSums(n_items=len(enc.items), item_codes=items, item_class=enc.item_class[items],
                                subject=enc.subject[mask], item=item,
                                answer_values={"right": enc.correct[mask], "guess": guess, **losses})
        fixed = self.sums.person_sums(None)
        with np.errstate(invalid="ignore", divide="ignore"):
            self.accuracy = fixed["right"][0] / fixed["answered"][0]
            self.cross_entropy = {k: fixed[f"loss_{k}"][0] / fixed["guess"][0] for k in range(len(models))
                                  if f"loss_{k}" in fixed}
        self.right, self.answered = fixed["right"][0], fixed["answered"][0]
        self.entropy = self._entropy(enc, item[guess], response[guess])
        self.present, self.p_target = [], []
        for side in models:
            row_of = np.full(len(enc.items), -1)
            row_of[side.item_codes] = np.arange(len(side.item_codes))
            rows = row_of[self.sums.item_codes]
            self.present.append(rows >= 0)
            self.p_target.append(np.where(rows >= 0, side.p_target[np.maximum(rows, 0)], 0.0))
        self.width = self.sums.width

    def _entropy(self, enc: Encoded, item: np.ndarray, response: np.ndarray) -> np.ndarray:
        """Per item (row order): entropy of the soft label, -sum_c h_c log h_c (NaN without guesses)."""
        local = np.full(len(enc.items), -1)
        local[self.sums.item_codes] = np.arange(self.sums.n_items)
        pairs, counts = np.unique(local[item] * (enc.idk_code + 1) + response, return_counts=True)
        pair_item = pairs // (enc.idk_code + 1)
        total = np.bincount(pair_item, weights=counts, minlength=self.sums.n_items)
        share = counts / total[pair_item]
        out = np.bincount(pair_item, weights=-share * np.log(share), minlength=self.sums.n_items)
        return np.where(total > 0, out, np.nan)

    def estimates(self, v: np.ndarray, w: np.ndarray | None, class_weights: np.ndarray) -> list[dict]:
        """Per model: quantity -> (values per resample, units per resample).

        Item values (soft labels, their entropy and cross-entropy, accuracies) stay those of the original
        answers and each item weighs V_i u_i, u_i = the mean W of its answerers: as for Table 2's majority votes,
        recomputing them from answers drawn with replacement would change the statistic (a soft label of
        duplicated answers has less entropy; noisier item accuracies pull rho towards 0). The per-class rho
        resamples the classes themselves (``class_weights``: draw counts), each with its values on all its items:
        redrawing items inside a class would add noise to the class means and pull rho towards 0.
        """
        v_local = v[:, self.sums.item_codes]
        vu = v_local * self.sums.item_weights(w)
        out = []
        for k in range(len(self.models)):
            present, p_target = self.present[k], self.p_target[k]
            found = {}
            if k in self.cross_entropy:
                use = present & ~np.isnan(self.entropy)
                found["cross_entropy"] = _weighted_mean(self.cross_entropy[k], vu, use)
                found["human_entropy"] = _weighted_mean(self.entropy, vu, use)
                found["kl_divergence"] = _weighted_mean(self.cross_entropy[k] - self.entropy, vu, use)
            use = present & (self.answered > 0)
            weight = np.where(use, vu, 0.0)
            x = np.broadcast_to(np.where(use, self.accuracy, 0.0), weight.shape)
            found["spearman_items"] = (weighted_spearman(x, np.broadcast_to(p_target, weight.shape), weight),
                                       np.full(len(weight), int(use.sum())))
            ones = np.ones((1, self.sums.n_items))
            right_c = self.sums.per_class(np.where(use, self.right, 0.0), ones)[0]
            answered_c = self.sums.per_class(np.where(use, self.answered, 0.0), ones)[0]
            p_c = self.sums.per_class(p_target, use[None, :].astype(float))[0]
            n_c = self.sums.per_class(use.astype(float), ones)[0]
            with np.errstate(invalid="ignore", divide="ignore"):
                ok = (answered_c > 0) & (n_c > 0)
                weight_c = np.where(ok, class_weights[:, self.sums.class_codes], 0.0)
                found["spearman_classes"] = (
                    weighted_spearman(np.where(ok, right_c / answered_c, 0.0), np.where(ok, p_c / n_c, 0.0), weight_c),
                    np.full(len(weight_c), int(ok.sum())))
            out.append(found)
        return out


def _weighted_mean(values: np.ndarray, weights: np.ndarray, use: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per resample: sum_i weight_i x_i / sum_i weight_i over the items in ``use`` (and the number of such items)."""
    use = use & ~np.isnan(values)
    weight = np.where(use, weights, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        total = weight.sum(axis=1)
        mean = np.where(total > 0, (weight * np.where(use, values, 0.0)).sum(axis=1) / np.where(total > 0, total, 1),
                        np.nan)
    return mean, np.full(len(weight), int(use.sum()))


def weighted_spearman(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Row-wise Spearman's rho of (x, y) pairs each counted w times: the rho of the sample in which pair j appears
    w_j times (mid-ranks for ties; w = 0 leaves a pair out). NaN when a row has no spread."""
    x, y, w = np.atleast_2d(x), np.atleast_2d(y), np.atleast_2d(w).astype(float)
    x, y = np.broadcast_to(x, w.shape), np.broadcast_to(y, w.shape)
    return _weighted_pearson(_weighted_midranks(x, w), _weighted_midranks(y, w), w)


def _weighted_midranks(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    rows, n = x.shape
    if n == 0:
        return np.zeros_like(x, dtype=float)
    order = np.argsort(x, axis=1, kind="stable")
    xs = np.take_along_axis(x, order, axis=1)
    ws = np.take_along_axis(w, order, axis=1)
    new = np.ones(xs.shape, dtype=bool)
    new[:, 1:] = xs[:, 1:] != xs[:, :-1]
    group = np.cumsum(new.ravel()) - 1  # ties share a group; every row starts a new one
    group_weight = np.bincount(group, weights=ws.ravel())
    end = np.cumsum(ws, axis=1).ravel()[np.r_[new.ravel()[1:], True]]  # cumulative weight at each group's end
    # The copies of a tie group occupy ranks start+1 .. end: their mean is start + (weight + 1) / 2.
    mid = (end - group_weight) + (group_weight + 1.0) / 2.0
    ranks = np.empty_like(xs, dtype=float)
    np.put_along_axis(ranks, order, mid[group].reshape(rows, n), axis=1)
    return ranks


def _weighted_pearson(a: np.ndarray, b: np.ndarray, w: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        total = w.sum(axis=1, keepdims=True)
        ma = (w * a).sum(axis=1, keepdims=True) / total
        mb = (w * b).sum(axis=1, keepdims=True) / total
        cov = (w * (a - ma) * (b - mb)).sum(axis=1)
        var_a = (w * (a - ma) ** 2).sum(axis=1)
        var_b = (w * (b - mb) ** 2).sum(axis=1)
        return np.where((var_a > 1e-12 * total[:, 0] ** 3) & (var_b > 1e-12 * total[:, 0] ** 3),
                        cov / np.sqrt(var_a * var_b), np.nan)
