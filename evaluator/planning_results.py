"""A stored plan read for a target: participants per Table 2 cell, and in sentences (evaluator.report.plan_study)."""

from __future__ import annotations

import math

import pandas as pd

from evaluator.models import StudyPlan
from evaluator.report import plan_study
from evaluator.report.figures import METRIC_LABELS
from evaluator.services.planning import design_from_json, plan_curve


def study_plan_table(*, plan: StudyPlan, target_halfwidth: float = 3.0, difference: float | None = None,
                     power: float = 0.8) -> pd.DataFrame:
    """Participants per condition (and in total) that reach the target half-width, and with ``difference`` those
    that detect a human - model accuracy difference with ``power``: evaluator.report.plan_study on the stored curve."""
    return plan_study(design_from_json(plan.design), target_halfwidth=target_halfwidth, difference=difference,
                      power=power, halfwidths=plan_curve(plan))


def plan_summary(table: pd.DataFrame) -> list[str]:
    """The plan in sentences: participants for every human cell, and per condition for the difference."""
    if table.empty:
        return []
    out = []
    target = float(table["target_halfwidth"].iloc[0])
    humans = table[table["subject_kind"] == "human"]
    unreachable = humans[humans["participants_per_condition"].isna()]
    if not unreachable.empty:
        cells = ", ".join(f"{r.condition} {METRIC_LABELS.get(r.metric, r.metric).lower()}"
                          for r in unreachable.itertuples())
        out.append(f"Not reachable at ±{target:g} points with these items (more items are needed, not more people): "
                   f"{cells}.")
    elif not humans.empty:
        worst = humans.loc[humans["participants_total"].idxmax()]
        beyond = "" if bool(humans["within_design"].all()) else (
            " Some cells need more answers per item than k: the design would have to grow.")
        out.append(f"Every human cell reaches ±{target:g} points with {int(worst['participants_per_condition'])} "
                   f"participants per condition ({int(worst['participants_total'])} in total); the last to get there "
                   f"is {worst['condition']} {METRIC_LABELS.get(worst['metric'], worst['metric']).lower()}.{beyond}")
    for row in table[table["subject_kind"] == "difference"].itertuples():
        if math.isnan(row.participants_per_condition):
            out.append(f"{row.condition}: {row.note}: not reachable with these items.")
        else:
            out.append(f"{row.condition}: {row.note}: {int(row.participants_per_condition)} participants "
                       f"per condition.")
    return out
