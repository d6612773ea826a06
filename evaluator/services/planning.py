"""Planning a study before it opens: simulate its own design and say how many participants it needs.

The study gives the design (classes with items, items per class, k, trials per person and condition, within or
between subjects, its conditions); the researcher gives the expected accuracies (default: the CLIP paper's Table 2).
`evaluator.report.plan_halfwidths` simulates the design for a grid of participant numbers and bootstraps every
simulated study as the report does (about 26 s for the default 370-item design), so it runs in a Celery task (or in
`manage.py plan_study`), one grid size at a time: each size's rows are stored on the StudyPlan as they come (the
page shows the progress; a plan taken over after its worker died resumes at the next size), and a plan is computed
once per design and settings (``StudyPlan.key``). Simulating one size alone gives exactly that size's rows of the
whole grid (each simulated study is seeded by (seed, condition, size, study)). Reading a plan for a target
half-width or a difference is instant (evaluator/planning_selectors.py).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import asdict, replace
from datetime import timedelta

import pandas as pd
from django.conf import settings
from django.db import InterfaceError, OperationalError, transaction
from django.db.models import Count, Q
from django.utils import timezone

from evaluator.celery_app import PLAN_STUDY_TASK, app
from evaluator.models import StudyPlan
from evaluator.report import ConditionPlan, ReportInputError, StudyDesign, paper_conditions, plan_halfwidths
from studyapp.models import Study, StudyItem

logger = logging.getLogger(__name__)

# Defaults of the simulation (docs/reports.md measured the default design with them).
N_STUDIES, N_RESAMPLES, SEED = 10, 300, 0


class PlanUnavailable(RuntimeError):
    """The broker (Redis) could not take the plan's task; the plan stays pending."""


def _stale_after() -> timedelta:
    # A running plan heartbeats after every grid size; one size of a large design can take minutes.
    return timedelta(seconds=settings.PLANNING_STALE_S)


# ------------------------------------------------------------------------------------------------- design


def parse_per_condition(text: str | None, conditions: list[str], *, what: str) -> dict[str, float]:
    """"60,75,75" (the study's conditions in order) or "zero-shot=60,two-shot=75" -> {condition: value}."""
    if not text or not text.strip():
        return {}
    parts = [p.strip() for p in text.split(",") if p.strip()]
    named = all("=" in p for p in parts)
    if not named and len(parts) != len(conditions):
        raise ReportInputError(f"{what}: give one value per condition ({', '.join(conditions)}) or name them "
                               f"(e.g. {conditions[0]}=60)")
    pairs = [p.split("=", 1) for p in parts] if named else list(zip(conditions, parts, strict=True))
    try:
        values = {name.strip(): float(value) for name, value in pairs}
    except ValueError:
        raise ReportInputError(f"{what}: {text!r} is not a list of numbers") from None
    unknown = sorted(set(values) - set(conditions))
    if unknown:
        raise ReportInputError(f"{what}: the study has no condition {', '.join(unknown)} (it has "
                               f"{', '.join(conditions)})")
    return values


def study_design(*, study: Study, accuracy: Mapping[str, float] | None = None,
                 idk_rate: Mapping[str, float] | None = None,
                 model_accuracy: Mapping[str, float] | None = None) -> StudyDesign:
    """The study's own design with expected values per condition (percent). Defaults: the CLIP paper's Table 2 for
    that condition; an accuracy given without an idk rate keeps the paper's share of idk among the errors; a study
    without "I don't know" has none."""
    per_class = list(StudyItem.objects.filter(study=study).values("item__label").annotate(n=Count("id"))
                     .values_list("n", flat=True))
    if not per_class:
        raise ReportInputError("the study has no test items")
    paper = {c.condition: c for c in paper_conditions()}
    conditions = []
    for name in [c.name for c in study.conditions.order_by("shots")]:
        base = paper.get(name, ConditionPlan(name, accuracy=50.0, idk_rate=10.0))
        acc = float((accuracy or {}).get(name, base.accuracy))
        idk = (idk_rate or {}).get(name)
        if idk is None:  # the paper's share of idk among the errors
            idk = base.idk_rate * (100 - acc) / (100 - base.accuracy)
        conditions.append(ConditionPlan(name, accuracy=acc, idk_rate=round(float(idk), 2) if study.allow_idk else 0.0,
                                        model_accuracy=float((model_accuracy or {}).get(name, base.model_accuracy))))
    design = StudyDesign(n_classes=len(per_class), items_per_class=max(1, round(sum(per_class) / len(per_class))),
                         k=study.k_per_item, trials_per_person=study.items_per_participant, design=str(study.design),
                         conditions=tuple(conditions))
    design.check()
    return design


def design_to_json(design: StudyDesign) -> dict:
    return asdict(design)


def design_from_json(data: Mapping) -> StudyDesign:
    return replace(StudyDesign(**{k: v for k, v in data.items() if k != "conditions"}),
                   conditions=tuple(ConditionPlan(**c) for c in data["conditions"]))


# ------------------------------------------------------------------------------------------------- writes


def study_plan_request(*, study: Study, design: StudyDesign, n_studies: int = N_STUDIES,
                       n_resamples: int = N_RESAMPLES, seed: int = SEED, send: bool = True) -> StudyPlan:
    """The plan of this design and settings: the stored one (done, running or pending), else a new pending one.

    With ``send``, a pending plan (new, failed before, or whose message was lost) is queued for a worker once the
    transaction commits (PlanUnavailable if Redis cannot take it; the plan stays pending).
    """
    design.check()
    if n_studies < 1 or n_resamples < 1:
        raise ReportInputError("simulate at least one study with at least one resample")
    simulation = {"n_studies": int(n_studies), "n_resamples": int(n_resamples), "seed": int(seed)}
    document = {"design": design_to_json(design), "simulation": simulation}
    key = hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()
    plan, _ = StudyPlan.objects.get_or_create(study=study, key=key, defaults={
        "design": document["design"], "simulation": simulation, "grid": design.default_grid()})
    # A failed plan is tried again from the sizes it has (conditional: one request resets it).
    StudyPlan.objects.filter(pk=plan.pk, status=StudyPlan.Status.FAILED).update(status=StudyPlan.Status.PENDING,
                                                                                 error="")
    plan.refresh_from_db()
    if send and plan.status == StudyPlan.Status.PENDING:
        transaction.on_commit(lambda: study_plan_send(plan_id=plan.pk))
    return plan


def study_plan_send(*, plan_id: int) -> None:
    try:
        # The result lives on the plan: no result backend is needed (nor asked for) to queue it.
        app.send_task(PLAN_STUDY_TASK, args=[plan_id], ignore_result=True)
    except Exception as exc:  # kombu OperationalError, redis ConnectionError, ...
        raise PlanUnavailable(f"could not queue the planning task ({type(exc).__name__}: {exc}); run "
                              "`manage.py plan_study` instead, or try again once Redis is reachable") from exc
    StudyPlan.objects.filter(pk=plan_id).update(queued_at=timezone.now())


def study_plan_compute(*, plan_id: int, task_id: str, worker: str = "",
                       on_step: Callable[[int, int], None] | None = None) -> str:
    """Simulate the plan's remaining grid sizes, storing each as it is done. Claims the plan first with a
    conditional update (pending; running under the same task id, i.e. a retry or redelivery; or running with a
    heartbeat older than PLANNING_STALE_S, i.e. its worker died), so a plan is computed by one worker at a time.
    ``on_step(done, total)`` is called after each size (the command's progress). Returns "done", "skipped" (not
    claimable), "failed" (an invalid design; the plan says why) or "lost" (taken over meanwhile)."""
    now = timezone.now()
    claimed = StudyPlan.objects.filter(pk=plan_id).filter(
        Q(status=StudyPlan.Status.PENDING) | Q(status=StudyPlan.Status.RUNNING, task_id=task_id)
        | Q(status=StudyPlan.Status.RUNNING, heartbeat_at__lt=now - _stale_after())
    ).update(status=StudyPlan.Status.RUNNING, task_id=task_id, worker=worker, started_at=now, heartbeat_at=now)
    if not claimed:
        return "skipped"
    plan = StudyPlan.objects.get(pk=plan_id)
    ours = StudyPlan.objects.filter(pk=plan_id, task_id=task_id, status=StudyPlan.Status.RUNNING)
    try:
        design = design_from_json(plan.design)
        parts = [plan_curve(plan)] if plan.curve_csv else []
        done = set(parts[0]["n_participants"]) if parts else set()
        for n in plan.grid:
            if n in done:
                continue
            parts.append(plan_halfwidths(design, participants=[n], **plan.simulation))
            curve = pd.concat(parts, ignore_index=True)
            steps = curve["n_participants"].nunique()
            if not ours.update(curve_csv=curve.to_csv(index=False), steps_done=steps, heartbeat_at=timezone.now()):
                return "lost"
            if on_step is not None:
                on_step(steps, len(plan.grid))
        ours.update(status=StudyPlan.Status.DONE, finished_at=timezone.now())
        return "done"
    except (OperationalError, InterfaceError):
        raise  # the database was briefly unreachable: the task retries under the same id and resumes
    except Exception as exc:
        ours.update(status=StudyPlan.Status.FAILED, error=f"{type(exc).__name__}: {exc}", finished_at=timezone.now())
        if isinstance(exc, ReportInputError):
            return "failed"
        logger.exception("planning %s failed", plan.code)
        raise


def plan_curve(plan: StudyPlan) -> pd.DataFrame:
    """The stored half-width curve (plan_halfwidths' columns)."""
    if not plan.curve_csv:
        return pd.DataFrame()
    return pd.read_csv(io.StringIO(plan.curve_csv), dtype={"condition": str, "subject_kind": str, "metric": str})
