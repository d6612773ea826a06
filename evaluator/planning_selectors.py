"""Reads of planning simulations: which plans a study has and their progress (no report stack: the pages that poll
it stay light). The plan for a target half-width is evaluator/planning_results.py."""

from __future__ import annotations

import uuid
from datetime import timedelta

from django.utils import timezone

from evaluator.models import StudyPlan
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
