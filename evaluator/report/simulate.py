"""Simulated human-vs-model studies: the generative core shared by the study planner and the tests.

A study is drawn from an item-response model in which errors are driven by item difficulty. For participant p
(ability theta_p ~ N(0, person_sd)) and item i of class c (difficulty d_i = b_c + item_sd * z_i, z_i ~ N(0, 1);
b_c fixed per population):

    P(right) = sigmoid(base_logit + theta_p - d_i)

a wrong answer is ``idk`` with probability ``idk_share``, else the item's confuser class with probability
``confuser_share``, else one of the other C - 2 classes uniformly. The model subject is right with probability
s_i = sigmoid(model_logit - model_coupling * d_i); its wrong answer is the confuser (it never abstains). Its
probability vector gives its answer c_i = 1/C + (1 - 1/C) s_i (so the answer is always its top class and its
confidence rises with s_i) and spreads 1 - c_i evenly over the other classes.

Two designs: ``k`` answers per item from ``k`` different participants (every participant answering about
``n_items * k / n_participants`` items), or the app's allocation (``per_person``): participants arrive one after
the other and each takes ``per_person`` of the least-filled items, at most ``k`` answers per item.

The population values of the Table 2 metrics (used to check the bootstrap) are computed on the test side
(``tests/simulated_studies.py``); here are only the expected accuracies the planner needs to set a population
from a researcher's guesses (:meth:`Population.matching`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd

IDK = "idk"
_GH_NODES = 48  # Gauss-Hermite nodes per dimension: expectations exact to ~1e-9 for these smooth integrands


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

    def expected_accuracy(self) -> float:
        """Humans' population accuracy (idk = wrong), mean over classes: E over items and people of P(right)."""
        nodes, weights = _gauss_hermite()
        d = self.class_difficulty[:, None] + self.item_sd * nodes[None, :]  # classes x item nodes
        p = _sigmoid(self.base_logit + self.person_sd * nodes[None, None, :] - d[:, :, None]) @ weights
        return float((p @ weights).mean())

    def expected_idk_rate(self) -> float:
        """Share of human answers that are idk: (1 - accuracy) * idk_share."""
        return (1.0 - self.expected_accuracy()) * self.idk_share

    def expected_model_accuracy(self) -> float:
        """The model's population accuracy, mean over classes."""
        nodes, weights = _gauss_hermite()
        d = self.class_difficulty[:, None] + self.item_sd * nodes[None, :]
        return float((_sigmoid(self.model_logit - self.model_coupling * d) @ weights).mean())

    def matching(self, *, accuracy: float, idk_rate: float = 0.0, model_accuracy: float | None = None) -> Population:
        """This population with base_logit, idk_share (and model_logit) set to give the expected values (fractions)."""
        if not 0.0 < accuracy < 1.0:
            raise ValueError(f"expected accuracy must be a fraction in (0, 1), got {accuracy!r}")
        if not 0.0 <= idk_rate < 1.0 - accuracy + 1e-12:
            raise ValueError(f"the idk rate ({idk_rate:.3f}) must be below the error rate 1 - accuracy "
                             f"({1 - accuracy:.3f}): an idk answer is a wrong answer")
        out = dataclasses.replace(self, base_logit=_solve(lambda x: dataclasses.replace(
            self, base_logit=x).expected_accuracy(), accuracy))
        out = dataclasses.replace(out, idk_share=min(1.0, idk_rate / (1.0 - accuracy)))
        if model_accuracy is not None:
            if not 0.0 < model_accuracy < 1.0:
                raise ValueError(f"expected model accuracy must be a fraction in (0, 1), got {model_accuracy!r}")
            out = dataclasses.replace(out, model_logit=_solve(lambda x: dataclasses.replace(
                out, model_logit=x).expected_model_accuracy(), model_accuracy))
        return out


@dataclass
class SimulatedStudy:
    """One simulated study: the answer matrix, the design's mask and the model's answers and probabilities."""

    population: Population
    full: np.ndarray  # participants x items: response codes (class index; n_classes = idk; -1 = never drawn)
    item_class: np.ndarray
    model: np.ndarray  # per item: the model's response code
    sparse_mask: np.ndarray  # participants x items: answered in the design
    k: int
    condition: str = "zero-shot"
    model_name: str = "model"
    extra: dict = field(default_factory=dict)
    model_confidence: np.ndarray | None = None  # per item: the model's probability of its answer

    @property
    def idk_code(self) -> int:
        return self.population.n_classes

    @property
    def item_names(self) -> np.ndarray:
        return np.array([f"img_{i:05d}" for i in range(len(self.item_class))], dtype=object)

    def trials(self, *, sparse: bool = True, with_model: bool = True) -> pd.DataFrame:
        """The long trial table (the report's input) of the design, or of the full matrix."""
        mask = self.sparse_mask if sparse else np.ones_like(self.sparse_mask)
        person, item = np.nonzero(mask)
        labels = np.array([*self.population.class_names, IDK], dtype=object)
        items = self.item_names
        frames = [pd.DataFrame({
            "subject": np.char.add("p", person.astype(str)).astype(object), "subject_kind": "human",
            "condition": self.condition, "item": items[item], "target": labels[self.item_class[item]],
            "response": labels[self.full[person, item]], "rt_ms": 1000.0,
        })]
        if with_model:
            model = pd.DataFrame({
                "subject": self.model_name, "subject_kind": "model", "condition": self.condition, "item": items,
                "target": labels[self.item_class], "response": labels[self.model], "rt_ms": np.nan,
            })
            if self.model_confidence is not None:
                probs = self.model_probabilities()
                model["p_target"] = probs[np.arange(len(items)), self.item_class]
                model["p_response"] = probs[np.arange(len(items)), self.model]
            frames.append(model)
        return pd.concat(frames, ignore_index=True)

    def model_probabilities(self) -> np.ndarray:
        """items x classes: the model's answer gets its confidence, the other classes share the rest evenly."""
        n_items, n_classes = len(self.item_class), self.population.n_classes
        rest = (1.0 - self.model_confidence) / (n_classes - 1)
        probs = np.repeat(rest[:, None], n_classes, axis=1)
        probs[np.arange(n_items), self.model] = self.model_confidence
        return probs

    def probabilities(self, probs: np.ndarray | None = None) -> pd.DataFrame:
        """The report's long probabilities table (subject, condition, item, class, p) of the model (or of ``probs``)."""
        probs = self.model_probabilities() if probs is None else probs
        n_items, n_classes = probs.shape
        return pd.DataFrame({
            "subject": self.model_name, "condition": self.condition,
            "item": np.repeat(self.item_names, n_classes),
            "class": np.tile(np.array(self.population.class_names, dtype=object), n_items),
            "p": probs.ravel(),
        })


def simulate_study(population: Population = Population(), *, n_participants: int = 60, items_per_class: int = 10,
                   k: int = 5, seed: int = 0, condition: str = "zero-shot", model_name: str = "model",
                   per_person: int | None = None) -> SimulatedStudy:
    """Draw people, items, answers, the model's answers and the design.

    ``per_person=None``: every item gets exactly ``k`` answers from ``k`` different participants.
    ``per_person=n``: the app's allocation (each participant takes the ``n`` least-filled items, at most ``k``
    answers per item); only the answers of the design are drawn (``full`` is -1 elsewhere).
    """
    if per_person is None and not 1 <= k <= n_participants:
        raise ValueError("k must be between 1 and the number of participants")
    if per_person is not None and (per_person < 1 or k < 1):
        raise ValueError("per_person and k must be at least 1")
    rng = np.random.default_rng(seed)
    pop = population
    n_items = pop.n_classes * items_per_class
    item_class = np.repeat(np.arange(pop.n_classes), items_per_class)
    d = pop.class_difficulty[item_class] + pop.item_sd * rng.standard_normal(n_items)
    confuser = (item_class + rng.integers(1, pop.n_classes, n_items)) % pop.n_classes
    theta = pop.person_sd * rng.standard_normal(n_participants)

    if per_person is None:
        p_right = _sigmoid(pop.base_logit + theta[:, None] - d[None, :])
        full = _answers(rng, p_right, item_class[None, :], confuser[None, :], pop)
        model_p = _sigmoid(pop.model_logit - pop.model_coupling * d)
        model_right = rng.random(n_items) < model_p
        mask = _k_per_item(rng, n_participants, n_items, k)
    else:
        model_p = _sigmoid(pop.model_logit - pop.model_coupling * d)
        model_right = rng.random(n_items) < model_p
        mask = _least_filled(rng, n_participants, n_items, per_person, k)
        person, item = np.nonzero(mask)
        full = np.full((n_participants, n_items), -1, dtype=np.int64)
        full[person, item] = _answers(rng, _sigmoid(pop.base_logit + theta[person] - d[item]), item_class[item],
                                      confuser[item], pop)
    model = np.where(model_right, item_class, confuser)
    confidence = 1.0 / pop.n_classes + (1.0 - 1.0 / pop.n_classes) * model_p
    return SimulatedStudy(population=pop, full=full, item_class=item_class, model=model, sparse_mask=mask, k=k,
                          condition=condition, model_name=model_name,
                          extra={"difficulty": d, "ability": theta, "confuser": confuser, "model_p_right": model_p},
                          model_confidence=confidence)


def _answers(rng, p_right, target, confuser, pop: Population) -> np.ndarray:
    """Response codes for cells with P(right) ``p_right``; ``target`` and ``confuser`` broadcast to its shape."""
    shape = p_right.shape
    right = rng.random(shape) < p_right
    idk = rng.random(shape) < pop.idk_share
    to_confuser = rng.random(shape) < pop.confuser_share
    # Another class that is neither the target nor the confuser, uniformly.
    other = (target + rng.integers(1, pop.n_classes - 1, shape)) % pop.n_classes
    other = np.where(other == confuser, (target + pop.n_classes - 1) % pop.n_classes, other)
    wrong = np.where(idk, pop.n_classes, np.where(to_confuser, confuser, other))
    return np.where(right, target, wrong)


def _k_per_item(rng, n_participants: int, n_items: int, k: int) -> np.ndarray:
    """Each item gets k different participants, always among the least loaded (ties broken at random)."""
    mask = np.zeros((n_participants, n_items), dtype=bool)
    load = np.zeros(n_participants)
    for item in rng.permutation(n_items):
        chosen = np.lexsort((rng.random(n_participants), load))[:k]
        mask[chosen, item] = True
        load[chosen] += 1
    return mask


def _least_filled(rng, n_participants: int, n_items: int, per_person: int, k: int) -> np.ndarray:
    """The app's allocation: participants in turn take the per_person least-filled open items (ties at random)."""
    mask = np.zeros((n_participants, n_items), dtype=bool)
    load = np.zeros(n_items)
    for person in range(n_participants):
        open_items = load < k
        n = min(per_person, int(open_items.sum()))
        if n == 0:
            break  # the design is full: later participants get no trials
        key = np.where(open_items, load + 0.5 * rng.random(n_items), np.inf)
        chosen = np.argpartition(key, n - 1)[:n]
        mask[person, chosen] = True
        load[chosen] += 1
    return mask


def _gauss_hermite() -> tuple[np.ndarray, np.ndarray]:
    nodes, weights = np.polynomial.hermite_e.hermegauss(_GH_NODES)
    return nodes, weights / weights.sum()  # expectation under N(0, 1)


def _solve(f, target: float, low: float = -12.0, high: float = 12.0) -> float:
    """x with f(x) = target for an increasing f, by bisection."""
    for _ in range(60):
        mid = (low + high) / 2
        if f(mid) < target:
            low = mid
        else:
            high = mid
    return (low + high) / 2


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=float)))
