"""Reads of planning simulations: progress for the page and the command, and the plan for a target."""

from __future__ import annotations

import math
import uuid
from datetime import timedelta

import pandas as pd
from django.utils import timezone

from evaluator.models import StudyPlan
from evaluator.planning_service import design_from_json, plan_curve
from evaluator.report import plan_study
from evaluator.report.figures import METRIC_LABELS
from studyapp.models import Study

# A pending plan that no worker has taken this long after it was queued: say so (and offer to send it again).
WAITING_FOR_WORKER_S = 30


class PlanNotFound(LookupError):
    pass


def study_plan_get_by_code(*, study: Study, code) -> StudyPlan:
    try:
        return StudyPlan.objects.get(study=study, code=uuid.UUID(str(code)))
    except (ValueError, StudyPlan.DoesNotExist):
        raise PlanNotFound(f"no plan {code!r} for this study") from None


def study_plans(*, study: Study, limit: int = 10) -> list[StudyPlan]:
    return list(StudyPlan.objects.filter(study=study).order_by("-created_at")[:limit])


def study_plan_progress(*, plan: StudyPlan) -> dict:
    plan = StudyPlan.objects.get(pk=plan.pk)
    total = len(plan.grid)
    waiting = (plan.status == StudyPlan.Status.PENDING and plan.queued_at is not None
               and timezone.now() - plan.queued_at > timedelta(seconds=WAITING_FOR_WORKER_S))
    return {
        "plan": str(plan.code),
        "status": plan.status,
        "steps_done": plan.steps_done,
        "steps_total": total,
        "percent": round(100 * plan.steps_done / total, 1) if total else 0.0,
        "grid": plan.grid,
        "queued": plan.queued_at is not None,
        "waiting_for_worker": waiting,
        "started_at": plan.started_at.isoformat() if plan.started_at else None,
        "finished_at": plan.finished_at.isoformat() if plan.finished_at else None,
        "seconds": round((plan.finished_at - plan.started_at).total_seconds(), 1)
        if plan.finished_at and plan.started_at else None,
        "error": plan.error,
    }


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
