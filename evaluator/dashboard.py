"""Reads for a study's dashboard: who took part, answers per condition against k x items, model runs, protocol, plan.

A fixed number of queries whatever the study's size (grouped in the database; a test counts them). The live
precision is evaluator/dashboard_precision.py (it needs the report stack; this module does not).
"""

from __future__ import annotations

import math

from django.db.models import Count, Q
from django.utils import timezone

from evaluator.models import StudyPlan
from evaluator.selectors import model_run_progress, model_runs_for_study
from studyapp.models import Assignment, Participant, Study, StudyItem, StudyProtocol


def study_dashboard(*, study: Study) -> dict:
    """Participants, answers per condition against k x items, model runs with their progress, protocol, plans."""
    n_items = StudyItem.objects.filter(study=study).count()
    wanted = n_items * study.k_per_item
    counts = {
        "joined": Count("id"),
        "started": Count("id", filter=Q(consent=Participant.Consent.GIVEN)),
        "declined": Count("id", filter=Q(consent=Participant.Consent.DECLINED)),
        "completed": Count("id", filter=Q(completed_at__isnull=False)),
        "simulated": Count("id", filter=Q(simulated=True)),
        "attention_failed": Count("id", filter=Q(attention_failed=True)),
        "counted": Count("id", filter=Q(consent=Participant.Consent.GIVEN, simulated=False, attention_failed=False)),
        "withdrawn": Count("id", filter=Q(withdrawn_at__isnull=False)),
    }
    # Aliased: an aggregate may not take a field's name (simulated, attention_failed).
    found = Participant.objects.filter(study=study).aggregate(**{f"n_{k}": v for k, v in counts.items()})
    people = {k: found[f"n_{k}"] for k in counts}
    test_trials = Assignment.objects.filter(condition__study=study, is_attention_check=False)
    answered = test_trials.filter(status=Assignment.Status.ANSWERED)
    answers = {row["condition"]: row for row in answered.values("condition").annotate(
        answers=Count("id"),
        counted=Count("id", filter=Q(participant__simulated=False, participant__attention_failed=False)),
        items=Count("item", distinct=True))}
    full = {}
    for condition_id in (answered.values("condition", "item").annotate(n=Count("id"))
                         .filter(n__gte=study.k_per_item).values_list("condition", flat=True)):
        full[condition_id] = full.get(condition_id, 0) + 1
    # A lapsed reservation is a free place even before a sweep marks it expired.
    live = dict(test_trials.filter(status=Assignment.Status.RESERVED, expires_at__gte=timezone.now())
                .values("condition").annotate(n=Count("id")).values_list("condition", "n"))
    conditions = []
    for condition in study.conditions.order_by("shots"):
        row = answers.get(condition.pk, {})
        conditions.append({
            "condition": condition.name, "answers": row.get("answers", 0), "counted": row.get("counted", 0),
            "wanted": wanted, "percent": round(100 * row.get("answers", 0) / wanted, 1) if wanted else 0.0,
            "items_answered": row.get("items", 0), "items_full": full.get(condition.pk, 0),
            "live_reservations": live.get(condition.pk, 0),
        })
    runs = [(run, model_run_progress(run=run)) for run in model_runs_for_study(study=study)]
    return {
        "study": study, "n_items": n_items, "k": study.k_per_item, "wanted": wanted,
        "capacity": math.ceil(wanted / study.items_per_participant) if study.items_per_participant else 0,
        "people": people, "conditions": conditions, "runs": runs,
        "protocol": StudyProtocol.objects.filter(study=study).only("sha256", "written_at", "retrospective").first(),
        "plan": StudyPlan.objects.filter(study=study).order_by("-created_at").first(),
    }
