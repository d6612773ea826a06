"""Simulated human-vs-model studies whose population values are known: the harness for the report's statistics.

Not a test module (tests and benchmarks import it). A study is generated in two steps:

1. a *full* answer matrix: every simulated participant answers every item (the full-overlap design of
   model-vs-human), from an item-response model in which errors are driven by item difficulty;
2. the paper's *sparse* design drawn from it: each item keeps ``k`` answers from ``k`` different
   participants, spread so that every participant answers about ``n_items * k / n_participants`` items
   (what the app's item filling does).

Known values:

* :func:`full_overlap_consistency`: error consistency on the full matrix (mean over all pairs of
  Geirhos et al.'s kappa on all items), the value a sparse estimator must recover;
* :meth:`Population.truth`: the population values of the Table 2 metrics for ``k`` answers per item
  (macro average over the fixed classes; participants and items random), by numerical integration, for
  coverage checks of the bootstrap.

The response model, for participant p (ability theta_p ~ N(0, person_sd)) and item i of class c
(difficulty d_i = b_c + item_sd * z_i, z_i ~ N(0, 1); b_c fixed per population):
P(right) = sigmoid(base_logit + theta_p - d_i); a wrong answer is ``idk`` with probability ``idk_share``,
else the item's confuser class with probability ``confuser_share``, else one of the other C - 2 classes
uniformly. The model subject is right with probability sigmoid(model_logit - model_coupling * d_i) and
its wrong answers are the confuser (it never abstains).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd

IDK = "idk"
_GH_NODES = 48  # Gauss-Hermite nodes per dimension: the truths are exact to ~1e-9 for these smooth integrands


@dataclass(frozen=True)
class Population:
    """The generating model; classes (and their difficulties b_c) are fixed, people and items are drawn."""

    n_classes: int = 37
    base_logit: float = 1.2
    person_sd: float = 0.7
    item_sd: float = 1.6
    class_sd: float = 0.5
    idk_share: float = 0.35
    confuser_share: float = 0.7
    model_logit: float = 2.5
    model_coupling: float = 1.0
    class_seed: int = 12345

    @cached_property
    def class_difficulty(self) -> np.ndarray:
        return np.random.default_rng(self.class_seed).normal(0.0, self.class_sd, self.n_classes)

    @property
    def class_names(self) -> list[str]:
        return [f"class_{c:02d}" for c in range(self.n_classes)]

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
        nodes, weights = np.polynomial.hermite_e.hermegauss(_GH_NODES)
        weights = weights / weights.sum()
        return float(np.mean([weights @ _sigmoid(self.model_logit - self.model_coupling * (b + self.item_sd * nodes))
                              for b in self.class_difficulty]))

    def _p_right_given_item(self, d, nodes, weights):
        theta = self.person_sd * nodes
        return _sigmoid(self.base_logit + theta[None, :] - d[:, None]) @ weights

    def _wrong_probs(self, p1: float) -> tuple[float, float, float]:
        """(idk, confuser, each other class) probabilities of one answer, given P(right) = p1."""
        wrong = 1 - p1
        guess_wrong = wrong * (1 - self.idk_share)
        return (wrong * self.idk_share, guess_wrong * self.confuser_share,
                guess_wrong * (1 - self.confuser_share) / (self.n_classes - 2))


@dataclass
class SimulatedStudy:
    """One simulated study: the full answer matrix and the sparse k-per-item trial table drawn from it."""

    population: Population
    full: np.ndarray  # participants x items: response codes (class index; n_classes = idk)
    item_class: np.ndarray
    model: np.ndarray  # per item: the model's response code
    sparse_mask: np.ndarray  # participants x items: answered in the sparse design
    k: int
    condition: str = "zero-shot"
    model_name: str = "model"
    extra: dict = field(default_factory=dict)

    @property
    def idk_code(self) -> int:
        return self.population.n_classes

    def trials(self, *, sparse: bool = True, with_model: bool = True) -> pd.DataFrame:
        """The long trial table (the report's input) of the sparse design, or of the full matrix."""
        mask = self.sparse_mask if sparse else np.ones_like(self.sparse_mask)
        person, item = np.nonzero(mask)
        labels = np.array([*self.population.class_names, IDK], dtype=object)
        items = np.array([f"img_{i:05d}" for i in range(len(self.item_class))], dtype=object)
        frames = [pd.DataFrame({
            "subject": np.char.add("p", person.astype(str)).astype(object), "subject_kind": "human",
            "condition": self.condition, "item": items[item], "target": labels[self.item_class[item]],
            "response": labels[self.full[person, item]], "rt_ms": 1000.0,
        })]
        if with_model:
            frames.append(pd.DataFrame({
                "subject": self.model_name, "subject_kind": "model", "condition": self.condition, "item": items,
                "target": labels[self.item_class], "response": labels[self.model], "rt_ms": np.nan,
            }))
        return pd.concat(frames, ignore_index=True)


def simulate_study(population: Population = Population(), *, n_participants: int = 60, items_per_class: int = 10,
                   k: int = 5, seed: int = 0, condition: str = "zero-shot", model_name: str = "model") -> SimulatedStudy:
    """Draw people, items, the full answer matrix, the model's answers and the sparse k-per-item design."""
    if not 1 <= k <= n_participants:
        raise ValueError("k must be between 1 and the number of participants")
    rng = np.random.default_rng(seed)
    pop = population
    n_items = pop.n_classes * items_per_class
    item_class = np.repeat(np.arange(pop.n_classes), items_per_class)
    d = pop.class_difficulty[item_class] + pop.item_sd * rng.standard_normal(n_items)
    confuser = (item_class + rng.integers(1, pop.n_classes, n_items)) % pop.n_classes
    theta = pop.person_sd * rng.standard_normal(n_participants)

    p_right = _sigmoid(pop.base_logit + theta[:, None] - d[None, :])
    full = _answers(rng, p_right, item_class, confuser, pop)
    model_right = rng.random(n_items) < _sigmoid(pop.model_logit - pop.model_coupling * d)
    model = np.where(model_right, item_class, confuser)
    return SimulatedStudy(population=pop, full=full, item_class=item_class, model=model,
                          sparse_mask=_k_per_item(rng, n_participants, n_items, k), k=k, condition=condition,
                          model_name=model_name, extra={"difficulty": d, "ability": theta})


def _answers(rng, p_right, item_class, confuser, pop: Population) -> np.ndarray:
    shape = p_right.shape
    right = rng.random(shape) < p_right
    idk = rng.random(shape) < pop.idk_share
    to_confuser = rng.random(shape) < pop.confuser_share
    # Another class that is neither the target nor the confuser, uniformly.
    other = (item_class[None, :] + rng.integers(1, pop.n_classes - 1, shape)) % pop.n_classes
    other = np.where(other == confuser[None, :], (item_class[None, :] + pop.n_classes - 1) % pop.n_classes, other)
    wrong = np.where(idk, pop.n_classes, np.where(to_confuser, confuser[None, :], other))
    return np.where(right, item_class[None, :], wrong)


def _k_per_item(rng, n_participants: int, n_items: int, k: int) -> np.ndarray:
    """Each item gets k different participants, always among the least loaded (ties broken at random)."""
    mask = np.zeros((n_participants, n_items), dtype=bool)
    load = np.zeros(n_participants)
    for item in rng.permutation(n_items):
        chosen = np.lexsort((rng.random(n_participants), load))[:k]
        mask[chosen, item] = True
        load[chosen] += 1
    return mask


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
