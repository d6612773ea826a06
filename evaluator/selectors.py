"""Reads about model runs: progress for the admin, the command and the JSON endpoint; trials for reports."""

from __future__ import annotations

import uuid

from django.db.models import Count, Q
from django.utils import timezone

from evaluator.models import ModelPrediction, ModelRun, ScoringChunk
from studyapp.models import Condition, Study


class RunNotFound(LookupError):
    pass


def model_run_get_by_code(*, code: str) -> ModelRun:
    try:
        return ModelRun.objects.select_related("study").get(code=uuid.UUID(str(code)))
    except (ValueError, ModelRun.DoesNotExist):
        raise RunNotFound(f"no model run with code {code!r}") from None


def model_run_progress(*, run: ModelRun) -> dict:
    """Items (predictions) done of total, failed items, chunks, rate since the run (re)started and ETA."""
    run = ModelRun.objects.get(pk=run.pk)
    counts = run.predictions.aggregate(done=Count("id"), failed=Count("id", filter=Q(predicted__isnull=True)))
    chunks = dict(run.chunks.values_list("status").annotate(n=Count("id")).order_by())
    rate = eta = None
    if run.started_at:
        end = run.finished_at or timezone.now()
        elapsed = (end - run.started_at).total_seconds()
        recent = run.predictions.filter(created_at__gte=run.started_at).count()
        if elapsed > 0 and recent:
            rate = recent / elapsed
            if run.status in (ModelRun.Status.PENDING, ModelRun.Status.RUNNING):
                eta = max(0, run.items_total - counts["done"]) / rate
    total = run.items_total
    return {
        "run": str(run.code),
        "name": run.name,
        "status": run.status,
        "items_total": total,
        "items_done": counts["done"],
        "items_failed": counts["failed"],
        "percent": round(100 * counts["done"] / total, 1) if total else 100.0,
        "chunks_total": sum(chunks.values()),
        "chunks_done": chunks.get(ScoringChunk.Status.DONE, 0),
        "chunks_running": chunks.get(ScoringChunk.Status.RUNNING, 0),
        "rate_items_per_s": round(rate, 3) if rate else None,
        "eta_s": round(eta, 1) if eta is not None else None,
        "started_at": run.started_at.isoformat() if run.started_at else None,
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
        "error": run.error,
    }


def model_runs_for_study(*, study: Study, statuses: tuple[str, ...] | None = None) -> list[ModelRun]:
    runs = ModelRun.objects.filter(study=study)
    if statuses:
        runs = runs.filter(status__in=statuses)
    return list(runs.order_by("created_at"))


def model_trials(*, study: Study, runs: list[ModelRun] | None = None) -> list[dict]:
    """One row per model answer, in the shared long trial schema.

    Each run is one subject in the zero-shot condition and one subject per few-shot method in the one-/two-
    shot conditions, named by ModelRun.subject (e.g. "<run> · linear probe (paper, C=3.16)").
    Default: the study's finished (done) runs. Items the model could not score (an error prediction)
    have no answer and are left out, as an unanswered trial would be for a human.
    """
    if runs is None:
        runs = model_runs_for_study(study=study, statuses=(ModelRun.Status.DONE,))
    by_pk = {run.pk: run for run in runs}
    condition_names = {c.pk: c.name for c in Condition.objects.filter(study=study)}
    rows = (
        ModelPrediction.objects.filter(run__in=runs, predicted__isnull=False)
        .order_by("run__created_at", "method", "condition__shots", "item_id")
        .values_list("run_id", "method", "condition_id", "item__code", "item__label__name", "predicted__name",
                     "p_target", "p_predicted")
    )
    return [
        {
            "subject": by_pk[run_id].subject(method),
            "subject_kind": "model",
            "condition": condition_names[condition_id],
            "item": str(item_code),
            "target": target,
            "response": response,
            "rt_ms": None,
            "p_target": p_target,
            "p_response": p_response,
        }
        for run_id, method, condition_id, item_code, target, response, p_target, p_response in rows
    ]
