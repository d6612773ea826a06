"""Reads about studies, shared by views, admin, commands and the evaluator."""

import uuid

from django.db.models import Count, Q
from django.utils import timezone

from studyapp.models import Assignment, Study


class StudyNotFound(LookupError):
    pass


def study_get_by_code(*, code: str) -> Study:
    """Every command and URL names a study by its public code, never by primary key."""
    try:
        return Study.objects.select_related("dataset").get(code=uuid.UUID(str(code)))
    except (ValueError, Study.DoesNotExist):
        raise StudyNotFound(f"no study with code {code!r}") from None


def study_progress(*, study: Study) -> list[dict]:
    """Per condition: items, answers, items that reached k answers."""
    out = []
    now = timezone.now()
    n_items = study.study_items.count()
    for condition in study.conditions.all():
        per_item = (
            Assignment.objects.filter(condition=condition, is_attention_check=False, status=Assignment.Status.ANSWERED)
            .values("item")
            .annotate(n=Count("id"))
        )
        counts = [row["n"] for row in per_item]
        out.append(
            {
                "condition": condition.name,
                "items": n_items,
                "responses": sum(counts),
                "items_complete": sum(1 for n in counts if n >= study.k_per_item),
                # A lapsed reservation is a free place even before a sweep marks it expired.
                "live_reservations": Assignment.objects.filter(
                    Q(condition=condition) & Q(status=Assignment.Status.RESERVED) & Q(expires_at__gte=now)
                ).count(),
            }
        )
    return out
