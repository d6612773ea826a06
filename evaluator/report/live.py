"""The live precision of a running study: every Table 2 cell's CI and how many more participants reach a target.

Each cell's CI and half-width are the report's own (the two-way bootstrap of the answers so far). The
projection uses the same bootstrap twice more per condition: on all N participants and on random halves of
them (each person with only their own answers), with the items of a class projected to the design's m_c
(m_c - 1 draws from the n_c answered so far: an m-out-of-n bootstrap). The two half-widths fix a and b of

    halfwidth(N)^2 = a / N + b                       (a: participants' share of the variance, b: the items')

and "more participants" = a / (target^2 - b) - N, unreachable when target^2 <= b. A majority vote is kept per
item as it is now, so early on the vote cells' projection is conservative (docs/reports.md has the measured
errors). Pure functions: no Django.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd

from .bootstrap import bootstrap, bootstrap_table2
from .metrics import _check_average, encode
from .trials import CONDITIONS, PREPARED_ATTR, ReportInputError

LIVE_COLUMNS = ("subject_kind", "subject", "condition", "metric", "estimate", "ci_low", "ci_high", "halfwidth",
                "target_halfwidth", "reached", "n_participants", "capacity", "participants_needed",
                "more_participants", "within_design", "projected_halfwidth_at_capacity", "n_resamples", "resample")


def live_precision(trials, *, target_halfwidth: float = 3.0, items_per_class: Mapping[str, int] | int | None = None,
                   k: int | None = None, trials_per_person: int | None = None, average: str = "macro",
                   n_resamples: int = 1000, seed: int | None = 0, level: float = 0.95) -> pd.DataFrame:
    """Every Table 2 cell of a running study: estimate, CI, half-width, and how many more participants reach the target.

    ``items_per_class`` (class name -> the study's items, or one number for all classes), ``k`` and
    ``trials_per_person`` describe the design; with them the projection counts the items nobody answered yet
    and ``capacity`` (participants per condition that fill the design) is known. Model cells depend on items
    only: reached or not (``more_participants`` 0 or NaN).
    """
    _check_average(average)
    if target_halfwidth <= 0:
        raise ReportInputError("the target half-width must be positive")
    enc = encode(trials)
    current = bootstrap_table2(enc, average=average, n_resamples=n_resamples, seed=seed, level=level)
    groups = enc.groups
    projections = {}
    capacity = math.nan
    if items_per_class is not None and k and trials_per_person:
        total_items = (items_per_class * len(enc.classes) if isinstance(items_per_class, int)
                       else sum(int(v) for v in items_per_class.values()))
        capacity = math.ceil(total_items * k / trials_per_person)
    for condition in CONDITIONS:
        here = (groups["condition"] == condition).to_numpy()[enc.group]
        if not ((groups["subject_kind"] == "human") & (groups["condition"] == condition)).any():
            continue
        part = enc.trials.loc[here].reset_index(drop=True)
        part.attrs[PREPARED_ATTR] = True
        projections[condition] = _project(encode(part), items_per_class, average=average, n_resamples=n_resamples,
                                          seed=seed, level=level)
    rows = []
    for row in current.itertuples(index=False):
        halfwidth = (row.ci_high - row.ci_low) / 2.0
        reached = bool(halfwidth <= target_halfwidth)
        n_people = projections[row.condition]["_participants"] if row.condition in projections else 0
        if row.subject_kind == "model":
            needed, more, within, at_capacity = (0 if reached else math.nan), (0 if reached else math.nan), \
                bool(reached), math.nan
        else:
            a, b, n_now = projections[row.condition][row.metric]
            at_capacity = math.sqrt(max(a / capacity + b, 0.0)) if capacity == capacity else math.nan
            if reached:
                needed = n_now
            elif a > 0 and target_halfwidth**2 > b:
                needed = max(math.ceil(a / (target_halfwidth**2 - b)), n_now + 1)
            else:
                needed = math.nan
            more = needed - n_now if needed == needed else math.nan
            within = bool(needed == needed and (capacity != capacity or needed <= capacity))
        rows.append([row.subject_kind, row.subject, row.condition, row.metric, row.estimate, row.ci_low, row.ci_high,
                     halfwidth, target_halfwidth, reached, n_people, capacity, needed, more, within, at_capacity,
                     row.n_resamples, row.resample])
    return pd.DataFrame(rows, columns=list(LIVE_COLUMNS))


def _project(enc, items_per_class, *, average, n_resamples, seed, level, halves: int = 3) -> dict:
    """Per metric of the condition's human row: (a, b) of halfwidth^2 = a / M + b and the participants now.

    The half-widths of all participants (N) and of random halves of them (N/2, each with only their own
    answers) fix a and b; items are projected to the design's count in both. ``_participants``: N.
    """
    is_human = (enc.groups["subject_kind"].to_numpy() == "human")[enc.group]
    people = np.unique(enc.subject[is_human])
    n_now = len(people)
    full = _human_halfwidths(enc, items_per_class, average=average, n_resamples=n_resamples, seed=seed, level=level)
    out = {"_participants": n_now}
    if n_now < 4:
        return out | {metric: (0.0, math.nan, n_now) for metric in full}
    rng = np.random.default_rng(seed)
    half = n_now // 2
    sums = {metric: 0.0 for metric in full}
    for _ in range(halves):
        chosen = np.zeros(len(enc.subjects), dtype=bool)
        chosen[rng.choice(people, half, replace=False)] = True
        keep = ~is_human | chosen[enc.subject]
        part = enc.trials.loc[keep].reset_index(drop=True)
        part.attrs[PREPARED_ATTR] = True
        found = _human_halfwidths(encode(part), items_per_class, average=average, n_resamples=n_resamples, seed=seed,
                                  level=level)
        for metric in sums:
            sums[metric] += found.get(metric, math.nan) ** 2 / halves
    for metric, h_full in full.items():
        h2_half = sums[metric]
        if np.isnan(h_full) or np.isnan(h2_half):
            out[metric] = (0.0, math.nan, n_now)
            continue
        # halfwidth^2 = a / N + b through (N/2, mean of the halves) and (N, all participants)
        a = max((h2_half - h_full**2) / (1.0 / half - 1.0 / n_now), 0.0)
        out[metric] = (a, h_full**2 - a / n_now, n_now)
    return out


def _human_halfwidths(enc, items_per_class, *, average, n_resamples, seed, level) -> dict[str, float]:
    class_items = None
    if items_per_class is not None:
        if isinstance(items_per_class, int):
            planned = np.full(len(enc.classes), items_per_class)
        else:
            planned = np.array([int(items_per_class.get(c, 0)) for c in enc.classes])
        class_items = np.maximum(planned, np.bincount(enc.item_class, minlength=len(enc.classes)))
    ci = bootstrap_table2(bootstrap(enc, average=average, n_resamples=n_resamples, seed=seed, level=level,
                                    class_items=class_items))
    return {row.metric: (row.ci_high - row.ci_low) / 2.0 for row in ci[ci["subject_kind"] == "human"].itertuples()}
