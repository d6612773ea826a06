"""Planning a study before it opens. Pure functions: no Django.

Before (:func:`plan_study`): the study's own design (classes, items, k answers per item and condition, trials
per person and condition, conditions with expected accuracies and idk rates) is simulated
(:mod:`.simulate`, the app's least-filled-first allocation) for a grid of participant numbers N, and each
simulated study goes through the report's two-way bootstrap. The mean 95% half-width of every Table 2 cell
(and of the human - model accuracy difference) over the simulated studies is interpolated between the two
grid points around the target (beyond the grid: extrapolated from the last two) as

    halfwidth(N)^2 = a / N + b                       (a: participants' share of the variance, b: the items')

and solved for the N that reaches the target half-width: N = a / (target^2 - b), unreachable when
target^2 <= b (more items are needed, not more people). Power: with the report's interval, a human - model
difference d is detected (its 95% CI excludes 0) with probability about Phi(|d| / se - z_0.975), se =
halfwidth / z_0.975, so 80% power needs halfwidth <= z_0.975 |d| / (z_0.975 + z_0.80) = 0.70 |d|.

While running: :func:`.live.live_precision`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from statistics import NormalDist

import numpy as np
import pandas as pd

from .bootstrap import bootstrap, bootstrap_table2, differences_table
from .metrics import METRICS, _check_average
from .replication import PAPER_TABLE2, read_reference
from .simulate import Population, simulate_study
from .trials import CONDITIONS, ReportInputError

DESIGNS = ("within", "between")
CURVE_COLUMNS = ("condition", "n_participants", "answers_per_item", "within_design", "subject_kind", "metric",
                 "halfwidth", "halfwidth_sd", "estimate_mean", "estimate_sd", "n_studies")
PLAN_COLUMNS = ("condition", "subject_kind", "metric", "target_halfwidth", "participants_per_condition",
                "participants_total", "answers_per_item", "within_design", "halfwidth_at_capacity", "capacity", "note")


@dataclass(frozen=True)
class ConditionPlan:
    """Expected values of one condition, in percent as in Table 2 (idk rate: share of all answers)."""

    condition: str
    accuracy: float
    idk_rate: float = 0.0
    model_accuracy: float = 93.5


def paper_conditions() -> tuple[ConditionPlan, ...]:
    """The CLIP paper's Table 2 (Oxford-IIIT Pets) as expectations: idk rate = 1 - accuracy / accuracy on guesses."""
    table = read_reference(PAPER_TABLE2)
    humans = table[table["subject_kind"] == "human"]
    model = table.loc[table["subject_kind"] == "model", "accuracy"]
    model_accuracy = float(model.iloc[0]) if len(model) else 93.5
    return tuple(ConditionPlan(condition=row.condition, accuracy=float(row.accuracy),
                               idk_rate=round(100.0 * (1.0 - row.accuracy / row.accuracy_on_guesses), 2),
                               model_accuracy=model_accuracy) for row in humans.itertuples())


@dataclass(frozen=True)
class StudyDesign:
    """What the planner simulates. ``trials_per_person``: test trials per participant and condition."""

    n_classes: int = 37
    items_per_class: int = 10
    k: int = 5
    trials_per_person: int = 20
    design: str = "within"
    conditions: tuple[ConditionPlan, ...] = field(default_factory=paper_conditions)
    person_sd: float = 0.7
    item_sd: float = 1.6
    class_sd: float = 0.5
    confuser_share: float = 0.7

    def check(self) -> None:
        for name in ("n_classes", "items_per_class", "k", "trials_per_person"):
            if int(getattr(self, name)) < 1:
                raise ReportInputError(f"{name} must be at least 1")
        if self.n_classes < 3:
            raise ReportInputError("the simulator needs at least 3 classes")
        if self.design not in DESIGNS:
            raise ReportInputError(f"unknown design {self.design!r} (use {' or '.join(DESIGNS)})")
        if not self.conditions:
            raise ReportInputError("the design has no conditions")
        names = [c.condition for c in self.conditions]
        unknown = sorted(set(names) - set(CONDITIONS))
        if unknown or len(set(names)) != len(names):
            raise ReportInputError(f"conditions must be distinct names among {', '.join(CONDITIONS)}")
        for c in self.conditions:
            if not 0 < c.accuracy < 100 or not 0 < c.model_accuracy < 100:
                raise ReportInputError(f"{c.condition}: expected accuracies must be percentages in (0, 100)")
            if not 0 <= c.idk_rate < 100 - c.accuracy:
                raise ReportInputError(f"{c.condition}: the idk rate ({c.idk_rate}%) must be below the error rate "
                                       f"({100 - c.accuracy:.1f}%): an idk answer is a wrong answer")

    @property
    def n_items(self) -> int:
        return self.n_classes * self.items_per_class

    @property
    def capacity(self) -> int:
        """Participants per condition that fill the design (k answers for every item)."""
        return math.ceil(self.n_items * self.k / self.trials_per_person)

    @property
    def one_pass(self) -> int:
        """Participants per condition who answer every item once."""
        return math.ceil(self.n_items / self.trials_per_person)

    def population(self, plan: ConditionPlan) -> Population:
        base = Population(n_classes=self.n_classes, person_sd=self.person_sd, item_sd=self.item_sd,
                          class_sd=self.class_sd, confuser_share=self.confuser_share)
        return base.matching(accuracy=plan.accuracy / 100.0, idk_rate=plan.idk_rate / 100.0,
                             model_accuracy=plan.model_accuracy / 100.0)

    def default_grid(self, points: int = 7) -> list[int]:
        """Participant numbers from one pass over the items to 4 x the design's capacity, capacity included."""
        low, high = self.one_pass, 4 * self.capacity
        grid = np.unique(np.round(np.geomspace(low, max(high, low + 1), points)).astype(int))
        return sorted(set(grid.tolist()) | {self.capacity})


def plan_halfwidths(design: StudyDesign, *, participants: Sequence[int] | None = None, n_studies: int = 10,
                    n_resamples: int = 300, seed: int = 0, average: str = "macro",
                    level: float = 0.95) -> pd.DataFrame:
    """Mean 95% half-width (percentage points) of every Table 2 cell and of human - model accuracy, per N.

    For each condition and N (participants per condition), ``n_studies`` studies are simulated and bootstrapped
    as the report does. Beyond the design's capacity k grows so that everyone gets their trials
    (``within_design`` is False there).
    """
    design.check()
    _check_average(average)
    grid = sorted(set(int(n) for n in (participants or design.default_grid())))
    if not grid or grid[0] < 1:
        raise ReportInputError("participant numbers must be at least 1")
    rows = []
    for c_index, plan in enumerate(design.conditions):
        population = design.population(plan)
        for n in grid:
            k = max(design.k, math.ceil(n * design.trials_per_person / design.n_items))
            found: dict[tuple[str, str], list[tuple[float, float]]] = {}
            for s in range(n_studies):
                study_seed = int(np.random.SeedSequence([seed, c_index, n, s]).generate_state(1)[0])
                study = simulate_study(population, n_participants=n, items_per_class=design.items_per_class, k=k,
                                       seed=study_seed, condition=plan.condition, per_person=design.trials_per_person)
                boot = bootstrap(study.trials(), average=average, n_resamples=n_resamples, seed=study_seed, level=level)
                for row in bootstrap_table2(boot).itertuples():
                    found.setdefault((row.subject_kind, row.metric), []).append(
                        ((row.ci_high - row.ci_low) / 2.0, row.estimate))
                diff = differences_table(boot)
                diff = diff[(diff["comparison"] == "human - model") & (diff["metric"] == "accuracy")]
                for row in diff.itertuples():
                    found.setdefault(("difference", "accuracy"), []).append(((row.ci_high - row.ci_low) / 2.0,
                                                                            row.estimate))
            answers = min(n * design.trials_per_person, design.n_items * k) / design.n_items
            for (kind, metric), values in found.items():
                hw, est = np.array(values).T
                rows.append([plan.condition, n, answers, n <= design.capacity, kind, metric, float(np.nanmean(hw)),
                             float(np.nanstd(hw)), float(np.nanmean(est)), float(np.nanstd(est)), n_studies])
    return pd.DataFrame(rows, columns=list(CURVE_COLUMNS))


def plan_study(design: StudyDesign, *, target_halfwidth: float = 3.0, difference: float | None = None,
               power: float = 0.8, level: float = 0.95, halfwidths: pd.DataFrame | None = None,
               **simulation) -> pd.DataFrame:
    """Participants per condition (and in total) that bring each Table 2 cell to ``target_halfwidth`` points.

    With ``difference`` (percentage points) one more row per condition: the participants that detect a human
    - model accuracy difference of that size with ``power`` (two-sided, at ``level``). ``halfwidths``: a
    :func:`plan_halfwidths` result to reuse; otherwise it is simulated with ``simulation`` (its keywords).
    """
    design.check()
    if target_halfwidth <= 0:
        raise ReportInputError("the target half-width must be positive")
    if difference is not None and difference == 0:
        raise ReportInputError("a difference of 0 cannot be detected")
    if not 0 < power < 1:
        raise ReportInputError("power must be a fraction in (0, 1)")
    curve = halfwidths if halfwidths is not None else plan_halfwidths(design, level=level, **simulation)
    z = NormalDist().inv_cdf((1 + level) / 2)
    rows = []
    for (condition, kind, metric), part in curve.groupby(["condition", "subject_kind", "metric"], sort=False):
        if kind == "difference":
            if difference is None:
                continue
            # power = Phi(|d| / se - z) with se = halfwidth / z  =>  halfwidth <= z |d| / (z + z_power)
            target = z * abs(difference) / (z + NormalDist().inv_cdf(power))
            note = (f"{power:.0%} power to detect a human - model accuracy difference of {abs(difference):g} points "
                    f"(the report's {level:.0%} CI excludes 0)")
        else:
            target = target_halfwidth
            note = "model cells depend on the items only, not on participants" if kind == "model" else ""
        rows.append([condition, kind, metric, target, *_needed(part, target, design), note])
    out = pd.DataFrame(rows, columns=list(PLAN_COLUMNS))
    order = {c.condition: i for i, c in enumerate(design.conditions)}
    kinds = {"human": 0, "model": 1, "difference": 2}
    return out.assign(_c=out["condition"].map(order), _k=out["subject_kind"].map(kinds),
                      _m=out["metric"].map(METRICS.index)).sort_values(["_c", "_k", "_m"]) \
        .drop(columns=["_c", "_k", "_m"]).reset_index(drop=True)


def _needed(part: pd.DataFrame, target: float, design: StudyDesign) -> list:
    """participants per condition, total, answers per item, within design, half-width at capacity, capacity."""
    part = part.sort_values("n_participants")
    n = part["n_participants"].to_numpy(dtype=float)
    hw = part["halfwidth"].to_numpy(dtype=float)
    ok = ~np.isnan(hw)
    n, hw = n[ok], hw[ok]
    at_capacity = _interpolate(n, hw, design.capacity)
    if len(n) == 0:
        needed = math.nan
    elif part["subject_kind"].iloc[0] == "model":  # items only: reached or not, whatever N
        needed = 0.0 if np.mean(hw) <= target else math.nan
    elif hw[0] <= target:
        needed = float(n[0])  # already at the smallest number simulated (one pass over the items)
    else:
        j = int(np.argmax(hw <= target)) if (hw <= target).any() else len(n) - 1
        a, b = _local_fit(n, hw, max(j, 1))
        needed = max(math.ceil(a / (target**2 - b)), int(n[0])) if a > 0 and target**2 > b else math.nan
    if math.isnan(needed):
        return [math.nan, math.nan, math.nan, False, at_capacity, design.capacity]
    per_condition = int(needed)
    total = per_condition * (len(design.conditions) if design.design == "between" else 1)
    answers = per_condition * design.trials_per_person / design.n_items
    return [per_condition, total, answers, per_condition <= design.capacity, at_capacity, design.capacity]


def _local_fit(n: np.ndarray, hw: np.ndarray, j: int) -> tuple[float, float]:
    """a, b of halfwidth^2 = a / N + b through grid points j - 1 and j (the ones bracketing the target, or the last two)."""
    if len(n) < 2:
        return 0.0, float(hw[0] ** 2) if len(hw) else math.nan
    x0, x1, y0, y1 = 1.0 / n[j - 1], 1.0 / n[j], hw[j - 1] ** 2, hw[j] ** 2
    a = (y0 - y1) / (x0 - x1)
    return float(a), float(y1 - a * x1)


def _interpolate(n: np.ndarray, hw: np.ndarray, at: float) -> float:
    """The half-width at ``at`` participants, from the two grid points around it (or the nearest two)."""
    if len(n) == 0:
        return math.nan
    if len(n) == 1:
        return float(hw[0])
    j = int(np.clip(np.searchsorted(n, at), 1, len(n) - 1))
    a, b = _local_fit(n, hw, j)
    return math.sqrt(max(a / at + b, 0.0))


__all__ = ["ConditionPlan", "StudyDesign", "paper_conditions", "plan_halfwidths", "plan_study"]
