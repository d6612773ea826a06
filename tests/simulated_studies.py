"""Simulated human-vs-model studies whose population values are known: the test side of the simulator.

Not a test module (tests and benchmarks import it). The generative core (:class:`Population`'s parameters,
:func:`simulate_study`, the designs) lives in ``evaluator/report/simulate.py``, which the study planner uses
too; this module adds what only the tests need, the known values:

* :func:`full_overlap_consistency`: error consistency on the full matrix (mean over all pairs of
  Geirhos et al.'s kappa on all items), the value a sparse estimator must recover;
* :meth:`Population.truth`: the population values of the Table 2 metrics for ``k`` answers per item
  (macro average over the fixed classes; participants and items random), by numerical integration, for
  coverage checks of the bootstrap;
* :func:`human_answer_distribution`: each item's population distribution of human guesses (the soft label a
  study with infinitely many answers per item would measure);
* :func:`model_cross_entropy_truth`: the population cross-entropy of the simulated model's probabilities
  against the people's soft labels;
* :func:`model_selective_accuracy_truth`: the model's population accuracy on its most confident items.

The response model is described in ``evaluator/report/simulate.py``.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from evaluator.report import simulate as _core
from evaluator.report.simulate import IDK, SimulatedStudy, simulate_study

__all__ = ["IDK", "Population", "SimulatedStudy", "full_overlap_consistency", "human_answer_distribution",
           "model_cross_entropy_truth", "model_selective_accuracy_truth", "model_vs_human_kappa", "simulate_study"]

_GH_NODES = 48  # Gauss-Hermite nodes per dimension: the truths are exact to ~1e-9 for these smooth integrands


class Population(_core.Population):
    """The simulator's population with its known Table 2 values (a frozen dataclass, like its base)."""

    # ----------------------------------------------------------------- population values
    def truth(self, k: int) -> dict[str, float]:
        """Population values (fractions) of the four Table 2 metrics for humans, ``k`` answers per item.

        Macro average over the classes. Accuracy per class: E[P(right)] over people and items; accuracy
        on guesses: E[P(right)] / E[P(not idk)] (the per-class ratio the report computes); majority votes:
        E over items of P(the target is the unique top answer among k answers of k random people).
        """
        nodes, weights = np.polynomial.hermite_e.hermegauss(_GH_NODES)
        weights = weights / weights.sum()  # expectation under N(0, 1)
        per_class = {m: [] for m in ("accuracy", "majority_vote_full", "accuracy_on_guesses",
                                     "majority_vote_on_guesses")}
        for b in self.class_difficulty:
            d = b + self.item_sd * nodes  # item difficulties (outer integral)
            p1 = self._p_right_given_item(d, nodes, weights)  # right, averaged over people
            p_idk = (1 - p1) * self.idk_share
            per_class["accuracy"].append(float(weights @ p1))
            per_class["accuracy_on_guesses"].append(float(weights @ p1) / float(weights @ (1 - p_idk)))
            m = self.n_classes - 2
            mv_full = np.array([_p_unique_top(k, p, self._wrong_probs(p), m, with_idk=True) for p in p1])
            mv_guess = np.array([_p_unique_top(k, p, self._wrong_probs(p), m, with_idk=False) for p in p1])
            per_class["majority_vote_full"].append(float(weights @ mv_full))
            per_class["majority_vote_on_guesses"].append(float(weights @ mv_guess))
        return {m: float(np.mean(v)) for m, v in per_class.items()}

    def model_truth(self) -> float:
        """The model's population (macro) accuracy over items of the fixed classes."""
        return self.expected_model_accuracy()

    def _p_right_given_item(self, d, nodes, weights):
        theta = self.person_sd * nodes
        return _sigmoid(self.base_logit + theta[None, :] - d[:, None]) @ weights

    def _wrong_probs(self, p1: float) -> tuple[float, float, float]:
        """(idk, confuser, each other class) probabilities of one answer, given P(right) = p1."""
        wrong = 1 - p1
        guess_wrong = wrong * (1 - self.idk_share)
        return (wrong * self.idk_share, guess_wrong * self.confuser_share,
                guess_wrong * (1 - self.confuser_share) / (self.n_classes - 2))


def human_answer_distribution(study: SimulatedStudy) -> tuple[np.ndarray, np.ndarray]:
    """(items x classes soft labels, per-item idk probability): the population distribution of one human answer.

    Given item i (difficulty d_i, confuser c_i) and a random person: P(right) = p1_i = E_theta sigmoid(base +
    theta - d_i); a wrong answer is idk with probability idk_share, else the confuser (confuser_share) or one of
    the C - 2 other classes. The soft label is the distribution of the guesses, P(class | not idk).
    """
    pop = study.population
    nodes, weights = np.polynomial.hermite_e.hermegauss(_GH_NODES)
    weights = weights / weights.sum()
    d = study.extra["difficulty"]
    p1 = _sigmoid(pop.base_logit + pop.person_sd * nodes[None, :] - d[:, None]) @ weights
    wrong_guess = (1 - p1) * (1 - pop.idk_share)
    n_items = len(d)
    dist = np.repeat((wrong_guess * (1 - pop.confuser_share) / (pop.n_classes - 2))[:, None], pop.n_classes, axis=1)
    rows = np.arange(n_items)
    dist[rows, study.extra["confuser"]] = wrong_guess * pop.confuser_share
    dist[rows, study.item_class] = p1
    guess = p1 + wrong_guess
    return dist / guess[:, None], (1 - p1) * pop.idk_share


def model_cross_entropy_truth(population: Population) -> float:
    """Population value (nats) of the mean over items of -sum_c h_ic log m_ic, h_i the soft label of the guesses.

    E[h_ic] = pi_ic (the guess distribution of one answer; given n >= 1 guesses, n_c / n has mean pi_c), so the
    expected cross-entropy of item i is sum_c pi_ic (-log m_ic). Given the item's difficulty d, the model is
    right with probability s(d) and puts c(d) = 1/C + (1 - 1/C) s(d) on its answer (the target, or the item's
    confuser when wrong, the same confuser people pick) and (1 - c) / (C - 1) on each other class.
    """
    pop = population
    nodes, weights = np.polynomial.hermite_e.hermegauss(_GH_NODES)
    weights = weights / weights.sum()
    per_class = []
    for b in pop.class_difficulty:
        d = b + pop.item_sd * nodes
        p1 = _sigmoid(pop.base_logit + pop.person_sd * nodes[None, :] - d[:, None]) @ weights
        guess = p1 + (1 - p1) * (1 - pop.idk_share)
        pi_target = p1 / guess
        pi_confuser = (1 - p1) * (1 - pop.idk_share) * pop.confuser_share / guess
        s = _sigmoid(pop.model_logit - pop.model_coupling * d)
        c = 1 / pop.n_classes + (1 - 1 / pop.n_classes) * s
        rest = (1 - c) / (pop.n_classes - 1)
        right = -(pi_target * np.log(c) + (1 - pi_target) * np.log(rest))
        wrong = -(pi_confuser * np.log(c) + (1 - pi_confuser) * np.log(rest))
        per_class.append(float(weights @ (s * right + (1 - s) * wrong)))
    return float(np.mean(per_class))


def model_selective_accuracy_truth(population: Population, coverage: float) -> float:
    """The simulated model's population accuracy on the share ``coverage`` of items it is most confident of.

    Its confidence rises with s = P(right | item) = sigmoid(model_logit - model_coupling d), so keeping the top
    ``coverage`` of items keeps those with s above its (1 - coverage) quantile: E[s | kept], by quadrature over
    each class's item difficulties (classes weighted equally, as the simulator draws them).
    """
    nodes, weights = np.polynomial.hermite_e.hermegauss(200)
    weights = weights / weights.sum() / population.n_classes
    d = (population.class_difficulty[:, None] + population.item_sd * nodes[None, :]).ravel()
    s = _sigmoid(population.model_logit - population.model_coupling * d)
    w = np.tile(weights, population.n_classes)
    order = np.argsort(-s)
    s, w = s[order], w[order]
    cumulative = np.cumsum(w)
    j = int(np.searchsorted(cumulative, coverage))
    kept = np.r_[w[:j], coverage - (cumulative[j - 1] if j else 0.0)]
    return float((s[: j + 1] * kept).sum() / coverage)


# --------------------------------------------------------------------------- known consistency values

def full_overlap_consistency(study: SimulatedStudy, *, idk: str = "error") -> dict[str, float]:
    """Error consistency on the full matrix, the way model-vs-human computes it: a plain loop over pairs.

    ``human-human``: the mean over all pairs of participants of kappa on the items both answered (all of
    them; with ``idk="dropped"``, the items both guessed on), with each person's accuracy over all their
    answers (guesses) as p. ``human-model``: the mean over participants of kappa against the model.
    Pairs with an undefined kappa are left out.
    """
    full = study.full
    right = full == study.item_class[None, :]
    guessed = full != study.idk_code if idk == "dropped" else np.ones_like(right)
    p = np.array([right[a][guessed[a]].mean() for a in range(len(full))])
    pairs = []
    for a in range(len(full)):
        for b in range(a + 1, len(full)):
            common = guessed[a] & guessed[b]
            pairs.append(_kappa_loop(right[a][common], right[b][common], p[a], p[b]))
    model_right = study.model == study.item_class
    p_model = model_right.mean()
    versus_model = [_kappa_loop(right[a][guessed[a]], model_right[guessed[a]], p[a], p_model)
                    for a in range(len(full))]
    return {"human-human": _nanmean(pairs), "human-model": _nanmean(versus_model)}


def _kappa_loop(a, b, p_a, p_b) -> float:
    if len(a) == 0:
        return math.nan
    observed = float(np.mean(a == b))
    expected = p_a * p_b + (1 - p_a) * (1 - p_b)
    return math.nan if expected >= 1 else (observed - expected) / (1 - expected)


def _nanmean(values) -> float:
    values = [v for v in values if not math.isnan(v)]
    return sum(values) / len(values) if values else math.nan


# --------------------------------------------------------------------------- helpers

def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=float)))


def _p_unique_top(k: int, p_target: float, wrong: tuple[float, float, float], m_other: int, *,
                  with_idk: bool) -> float:
    """P(the target is the unique most frequent of k iid answers); ``with_idk=False`` ignores idk answers.

    Categories: target, idk, confuser and m = C - 2 other classes of equal probability. Exact sum over the
    counts of target, idk and confuser; the other classes' largest count comes from the generating
    function of m equal bins (P[all m bins < t | r answers] = r! / m^r [x^r] (sum_{j<t} x^j / j!)^m).
    """
    p_idk, p_conf, p_other = wrong
    total = 0.0
    for t in range(1, k + 1):
        for i in range(0, k - t + 1):
            for c in range(0, k - t - i + 1):
                r = k - t - i - c
                if c >= t or (with_idk and i >= t):
                    continue
                prob = (math.factorial(k) / (math.factorial(t) * math.factorial(i) * math.factorial(c)
                                              * math.factorial(r))
                        * p_target**t * p_idk**i * p_conf**c * (p_other * m_other) ** r)
                if prob == 0.0:
                    continue
                total += prob * _p_bins_below(r, m_other, t)
    return total


def _p_bins_below(r: int, m: int, t: int) -> float:
    """P(every one of m equally likely bins gets fewer than t of r balls)."""
    if r == 0:
        return 1.0
    if m == 0:
        return 0.0
    poly = np.array([1.0 / math.factorial(j) for j in range(min(t, r + 1))])
    power = np.array([1.0])
    for _ in range(m):
        power = np.convolve(power, poly)[: r + 1]
    coeff = power[r] if len(power) > r else 0.0
    return float(coeff * math.factorial(r) / m**r)


def model_vs_human_kappa(df_a: pd.DataFrame, df_b: pd.DataFrame) -> float:
    """modelvshuman.plotting.analyses.ErrorConsistency, rewritten with plain loops (accuracies over all trials)."""
    a = dict(zip(df_a["item"], df_a["response"] == df_a["target"], strict=True))
    b = dict(zip(df_b["item"], df_b["response"] == df_b["target"], strict=True))
    p1, p2 = sum(a.values()) / len(a), sum(b.values()) / len(b)
    expected = p1 * p2 + (1 - p1) * (1 - p2)
    observed = sum(a[i] == b[i] for i in a) / len(a)
    return 1.0 if observed == 1.0 else (observed - expected) / (1 - expected)
