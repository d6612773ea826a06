"""A run's lifecycle: create it with its chunks (queued on commit), cancel, fail, resume, finish.

A run scores every item of a study in each chosen condition: one ModelPrediction per (run, condition, method,
item), guaranteed by the prediction_unique constraint. Work is split into ScoringChunks (some items, all
conditions: each image is encoded once and reused by every condition); evaluator.services.chunks scores them.
"""

from __future__ import annotations

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Count
from django.utils import timezone

from evaluator.errors import ScoringSetupError
from evaluator.house import training_check, training_check_enforce
from evaluator.models import ModelRun, ScoringChunk
from evaluator.services import queue
from evaluator.services.specs import ModelSpec, default_templates, model_run_check_name, model_run_default_name
from studyapp.models import ClassLabel, Condition, Study, StudyItem

ACTIVE = (ModelRun.Status.PENDING, ModelRun.Status.RUNNING)


class RunExists(ScoringSetupError):
    def __init__(self, run: ModelRun):
        self.run = run
        super().__init__(f"study already has a run named {run.name!r} ({run.status})")


def model_run_create(
    *,
    study: Study,
    spec: ModelSpec,
    name: str = "",
    conditions: list[int] | None = None,
    templates: list[str] | tuple[str, ...] | None = None,
    fewshot_methods: list[str] | tuple[str, ...] | None = None,
    device: str = "auto",
    chunk_size: int | None = None,
    allow_trained_items: bool = False,
) -> ModelRun:
    """Create a pending run with its chunks and queue them once the transaction commits.

    ``conditions`` are shot counts (0, 1, 2; default: all of the study's). One-/two-shot conditions are
    scored with each of ``fewshot_methods`` (default: the paper's linear probe and the zero-shot prior), each
    a subject of its own. The run records the exact prompt strings and hyperparameters. Raises RunExists when
    the study already has a run of that name (resume it instead), TrainedOnStudyItems when the model was
    trained on the study's test items or shots (unless ``allow_trained_items``, which marks the run) and
    ScoringSetupError for anything else invalid.
    """
    import clipmodel
    from clipmodel.fewshot import DEFAULT_METHODS, default_params

    if not study.is_frozen:
        raise ScoringSetupError("open the study first: a draft study's items and shots may still change")
    available = sorted(study.conditions.values_list("shots", flat=True))
    shots = sorted(set(available if conditions is None else conditions))
    if not shots or any(s not in available for s in shots):
        names = ", ".join(Condition.Shots(s).label for s in available)
        raise ScoringSetupError(f"conditions must be among the study's: {names}")
    methods = list(dict.fromkeys(fewshot_methods or DEFAULT_METHODS))
    if any(m not in clipmodel.FEW_SHOT_METHODS for m in methods):
        raise ScoringSetupError(f"few-shot methods must be among {', '.join(clipmodel.FEW_SHOT_METHODS)}")
    try:
        templates = clipmodel.validate_templates(list(templates)) if templates else default_templates(study=study)
    except ValueError as exc:
        raise ScoringSetupError(str(exc)) from None
    name = model_run_check_name(name=name or model_run_default_name(spec=spec), spec=spec)
    existing = _existing_run(study=study, name=name)
    if existing:
        raise RunExists(existing)
    check = training_check(study=study, model_name=spec.model_name, pretrained=spec.pretrained,
                           checkpoint=spec.checkpoint)
    training_check_enforce(check=check, run_name=name, allow_trained_items=allow_trained_items)
    prompt_names = list(ClassLabel.objects.filter(dataset_id=study.dataset_id).order_by("index")
                        .values_list("prompt_name", flat=True))
    chunk_size = chunk_size or settings.SCORING_CHUNK_SIZE
    item_ids = list(StudyItem.objects.filter(study=study).order_by("item_id").values_list("item_id", flat=True))
    try:
        with transaction.atomic():
            run = ModelRun.objects.create(
                study=study, name=name, model_name=spec.model_name, pretrained=spec.pretrained,
                checkpoint=spec.checkpoint, is_house_model=spec.is_house_model, templates=list(templates),
                prompts=clipmodel.class_prompts(classnames=prompt_names, templates=templates),
                fewshot_methods=methods, fewshot_params={m: default_params(m) for m in methods},
                training_data=check.as_json(), allow_trained_items=allow_trained_items and not check.clean,
                condition_shots=shots, device_request=device or "auto",
                items_total=len(item_ids) * sum(1 if s == 0 else len(methods) for s in shots), chunk_size=chunk_size,
            )
            _add_chunks(run=run, item_ids=item_ids, chunk_size=chunk_size)
    except IntegrityError:
        # Another request created a run of this name between our look-up and our insert.
        existing = _existing_run(study=study, name=name)
        if existing is None:
            raise
        raise RunExists(existing) from None
    if not item_ids:
        model_run_finish_if_complete(run_id=run.pk)  # nothing to score: done, not pending forever
        run.refresh_from_db()
    return run


def _existing_run(*, study: Study, name: str) -> ModelRun | None:
    return ModelRun.objects.filter(study=study, name=name).first()


def predictions_per_item(*, run: ModelRun) -> int:
    """Predictions one item gets: one per zero-shot condition, one per method in each few-shot condition."""
    return sum(1 if shots == 0 else len(run.fewshot_methods) for shots in run.condition_shots)


def _add_chunks(*, run: ModelRun, item_ids: list[int], chunk_size: int) -> list[int]:
    """Chunks for ``item_ids`` after the run's existing ones, queued on commit; returns their pks."""
    last = run.chunks.order_by("-index").values_list("index", flat=True).first()
    start = 0 if last is None else last + 1
    now = timezone.now()
    chunks = ScoringChunk.objects.bulk_create(
        ScoringChunk(run=run, index=start + n, item_ids=item_ids[offset : offset + chunk_size], queued_at=now)
        for n, offset in enumerate(range(0, len(item_ids), chunk_size))
    )
    ids = [chunk.pk for chunk in chunks]  # SQLite and PostgreSQL return the new keys
    transaction.on_commit(lambda: queue.chunks_send(chunk_ids=ids))
    return ids


def model_run_cancel(*, run: ModelRun) -> bool:
    """Stop a pending or running run; a chunk being scored right now still finishes and is kept."""
    changed = ModelRun.objects.filter(pk=run.pk, status__in=ACTIVE).update(
        status=ModelRun.Status.CANCELLED, finished_at=timezone.now()
    )
    run.refresh_from_db()
    return bool(changed)


def model_run_fail(*, run_id: int, error: str, chunk_id: int | None = None) -> bool:
    """Mark an active run failed with the error text (the tasks' failure callback)."""
    now = timezone.now()
    if chunk_id is not None:
        ScoringChunk.objects.filter(pk=chunk_id).exclude(status=ScoringChunk.Status.DONE).update(
            status=ScoringChunk.Status.FAILED, error=error[:10000], finished_at=now
        )
    return bool(ModelRun.objects.filter(pk=run_id, status__in=ACTIVE).update(
        status=ModelRun.Status.FAILED, error=error[:10000], finished_at=now
    ))


def model_run_resume(*, run: ModelRun, retry_failed_items: bool = False) -> int:
    """Queue whatever is still missing (after a failure, a cancel or lost work); returns chunks queued.

    With ``retry_failed_items`` the items that got an error prediction (e.g. a corrupt image since
    replaced) are deleted first and scored again. A run still in progress is left alone (0): its
    chunks are queued already, and the sweeper re-sends any whose message was lost.
    """
    with transaction.atomic():
        # Locked so that two resumes at once (admin and command) do not both queue the missing items.
        run = ModelRun.objects.select_for_update().get(pk=run.pk)
        if run.status in ACTIVE and not retry_failed_items:
            return 0
        if retry_failed_items:
            run.predictions.filter(predicted__isnull=True).delete()
        run.chunks.filter(status__in=[ScoringChunk.Status.PENDING, ScoringChunk.Status.FAILED]).delete()
        busy = {i for ids in run.chunks.filter(status=ScoringChunk.Status.RUNNING).values_list("item_ids", flat=True)
                for i in ids}
        missing = sorted(set(_missing_item_ids(run=run)) - busy)
        ids = _add_chunks(run=run, item_ids=missing, chunk_size=run.chunk_size or settings.SCORING_CHUNK_SIZE)
        status = ModelRun.Status.PENDING if ids or busy else ModelRun.Status.DONE
        ModelRun.objects.filter(pk=run.pk).update(
            status=status, error="", started_at=None, finished_at=None if status != ModelRun.Status.DONE else timezone.now()
        )
    return len(ids)


def _missing_item_ids(*, run: ModelRun) -> list[int]:
    """Study items without a prediction in every one of the run's conditions (one per shots value)."""
    complete = (run.predictions.values("item_id").annotate(n=Count("id"))
                .filter(n__gte=predictions_per_item(run=run)).values("item_id"))
    return list(StudyItem.objects.filter(study_id=run.study_id).exclude(item_id__in=complete)
                .values_list("item_id", flat=True))


def model_run_finish_if_complete(*, run_id: int) -> bool:
    """Mark the run done once every chunk is; the last chunk to finish (or a sweeper) gets here."""
    if ScoringChunk.objects.filter(run_id=run_id).exclude(status=ScoringChunk.Status.DONE).exists():
        return False
    return bool(ModelRun.objects.filter(pk=run_id, status__in=ACTIVE).update(
        status=ModelRun.Status.DONE, finished_at=timezone.now()
    ))
