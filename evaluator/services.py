"""Model scoring runs: create, queue, score chunks exactly once, cancel, resume, recover.

A run scores every item of a study in each chosen condition: one ModelPrediction per (run, condition,
item), guaranteed by the prediction_unique constraint. Work is split into ScoringChunks (some items, all
conditions: each image is encoded once and reused by every condition). A Celery task may only work on
a chunk it claimed with a conditional UPDATE, so duplicate, redelivered or requeued messages are
harmless; a chunk's predictions and its DONE mark are written in one transaction, and a chunk scores
only the (condition, item) pairs that have no prediction yet, so a rerun scores only what is missing.
"""

from __future__ import annotations

import logging
import os
import re
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Case, Count, F, Q, When
from django.utils import timezone

from evaluator.celery_app import SCORING_QUEUE, app
from evaluator.conf import setting
from evaluator.errors import ScoringSetupError
from evaluator.house import training_check, training_check_enforce
from evaluator.models import ModelPrediction, ModelRun, ScoringChunk
from studyapp.models import ClassLabel, Condition, Item, Study, StudyItem

if TYPE_CHECKING:
    import clipmodel
    from evaluator import scoring

logger = logging.getLogger(__name__)

ACTIVE = (ModelRun.Status.PENDING, ModelRun.Status.RUNNING)
# A chunk claimed this often without finishing is poison (it keeps killing or timing out its worker).
MAX_CHUNK_ATTEMPTS = 5
HEARTBEAT_EVERY_S = 2.0


class RunExists(ScoringSetupError):
    def __init__(self, run: ModelRun):
        self.run = run
        super().__init__(f"study already has a run named {run.name!r} ({run.status})")


class QueueUnavailable(RuntimeError):
    """The broker (Redis) could not take the run's tasks; the run stays pending and is re-sent later."""


@dataclass(frozen=True)
class ModelSpec:
    """Which weights a run uses. Exactly one source: a pretrained tag, a checkpoint file, or the house model."""

    model_name: str = ""
    pretrained: str = ""
    checkpoint: str = ""
    is_house_model: bool = False


# ---------------------------------------------------------------------------------------------- set-up


def model_spec_resolve(*, model_name: str = "", pretrained: str = "", checkpoint: str = "") -> ModelSpec:
    """Check a user's model choice and say whether a checkpoint is the house model (it records its name)."""
    import clipmodel

    model_name, pretrained, checkpoint = model_name.strip(), pretrained.strip(), checkpoint.strip()
    if pretrained and checkpoint:
        raise ScoringSetupError("give either a pretrained tag or a checkpoint, not both")
    if checkpoint:
        path = Path(checkpoint).expanduser().resolve()
        if not path.is_file():
            raise ScoringSetupError(f"checkpoint not found: {path}")
        from clipmodel.loading import read_house_checkpoint  # torch is imported only where models run

        try:
            house = read_house_checkpoint(path)
        except clipmodel.ModelUnavailable as exc:  # corrupt or truncated: never "a plain state dict"
            raise ScoringSetupError(str(exc)) from None
        if house is None and not model_name:
            raise ScoringSetupError(f"{path} is a plain state dict: give its open_clip architecture as the model")
        if house is not None:
            return ModelSpec(model_name=str(house.get("model_name", "")), checkpoint=str(path),
                             is_house_model=house.get("model_name") == clipmodel.HOUSE_MODEL_NAME)
        return ModelSpec(model_name=model_name, checkpoint=str(path))
    if not model_name or not pretrained:
        # Random weights differ in every worker process, so their predictions would not be one model's.
        raise ScoringSetupError("give a model with a pretrained tag (e.g. ViT-B-32 + openai) or a checkpoint")
    return ModelSpec(model_name=model_name, pretrained=pretrained)


def _short_sha(path: str) -> str:
    from clipmodel.cache import file_sha256

    return file_sha256(path)[:12]


def model_run_default_name(*, spec: ModelSpec) -> str:
    """A subject name that says what the model is; "CLIP" only for OpenAI's CLIP weights."""
    if spec.is_house_model:
        return f"house model ({spec.model_name}, sha256-{_short_sha(spec.checkpoint)})"
    if spec.checkpoint:
        return f"{spec.model_name} (checkpoint {Path(spec.checkpoint).name}, sha256-{_short_sha(spec.checkpoint)})"
    if spec.pretrained == "openai":
        arch = re.sub(r"^ViT-([A-Za-z])-(\d+)", r"ViT-\1/\2", spec.model_name)
        return f"CLIP {arch}"
    return f"OpenCLIP {spec.model_name} ({spec.pretrained})"


def _check_name(*, name: str, spec: ModelSpec) -> str:
    name = name.strip()
    if not name:
        raise ScoringSetupError("the run needs a name")
    if re.search(r"\bCLIP\b", name, flags=re.IGNORECASE) and spec.pretrained != "openai":
        raise ScoringSetupError(f"{name!r}: only OpenAI's CLIP weights (pretrained=openai) may be called CLIP")
    if spec.is_house_model and not name.lower().startswith("house model"):
        raise ScoringSetupError(f"{name!r}: a house-model run's name must start with 'house model'")
    return name


def default_templates(*, study: Study) -> tuple[str, ...]:
    """CLIP's templates when the dataset's classes are a known benchmark's (Oxford-IIIT Pets, EuroSAT,
    CIFAR-10; an official Pets import counts as Pets), else open_clip's 80 ImageNet templates."""
    import clipmodel
    from clipmodel.templates import benchmark_by_key

    names = list(study.dataset.classes.order_by("index").values_list("name", flat=True))
    if study.dataset.source_format == study.dataset.Format.OXFORD_PETS:
        return benchmark_by_key("oxford-pets").templates
    return tuple(clipmodel.prompt_defaults(names)[1])


def study_benchmark(*, study: Study) -> str | None:
    """"oxford-pets", "eurosat" or "cifar10" when the study's classes are that benchmark's (an official Pets
    import counts as Pets, as in default_templates), else None."""
    import clipmodel

    if study.dataset.source_format == study.dataset.Format.OXFORD_PETS:
        return "oxford-pets"
    match = clipmodel.benchmark_match(list(study.dataset.classes.values_list("name", flat=True)))
    return match.benchmark.key if match else None


def read_templates_file(path: str | Path) -> tuple[str, ...]:
    """One template per line with ``{}`` for the class name; blank lines and # comments are skipped."""
    import clipmodel

    lines = Path(path).read_text(encoding="utf-8").splitlines()
    templates = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    try:
        return clipmodel.validate_templates(templates)
    except ValueError as exc:
        raise ScoringSetupError(f"{path}: {exc}") from None


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
    name = _check_name(name=name or model_run_default_name(spec=spec), spec=spec)
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
    transaction.on_commit(lambda: _send(chunk_ids=ids))
    return ids


def _send(*, chunk_ids: list[int]) -> None:
    from evaluator.tasks import score_chunk

    try:
        for chunk_id in chunk_ids:
            score_chunk.apply_async(args=[chunk_id])
    except Exception as exc:  # kombu raises OperationalError, redis ConnectionError, …
        raise QueueUnavailable(
            f"could not queue {len(chunk_ids)} chunk(s) on {_broker_label()} ({type(exc).__name__}: {exc}); the run "
            "stays pending and a worker re-sends its chunks once Redis is reachable"
        ) from exc


def _broker_label() -> str:
    return re.sub(r"//[^@/]*@", "//***@", str(app.conf.broker_url))


# ---------------------------------------------------------------------------------------------- lifecycle


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


# ---------------------------------------------------------------------------------------------- scoring


def _claim(*, chunk_id: int, task_id: str, worker: str, retries: int) -> ScoringChunk | None:
    """Take the chunk if it is pending, orphaned (stale heartbeat), or already ours (a retry or a redelivery
    of our own message after our worker died). Returns None when someone else has it or it is finished.

    Every claim counts as an attempt (poison detection) except our own task's retry after a transient
    error: Celery numbers retries, while a redelivery after a killed worker repeats the number."""
    now = timezone.now()
    stale = now - timedelta(seconds=setting("SCORING_STALE_S"))
    running = ScoringChunk.Status.RUNNING
    claimable = Q(status=ScoringChunk.Status.PENDING) | Q(status=running, heartbeat_at__lt=stale)
    attempts = F("attempts") + 1
    if task_id:
        claimable |= Q(status=running, task_id=task_id)
        own_retry = Q(status=running, task_id=task_id, task_retries__lt=retries)
        attempts = Case(When(own_retry, then=F("attempts")), default=attempts)
    claimed = ScoringChunk.objects.filter(claimable, pk=chunk_id, run__status__in=ACTIVE).update(
        status=running, task_id=task_id, task_retries=retries, worker=worker[:200], claimed_at=now, heartbeat_at=now,
        attempts=attempts,
    )
    if not claimed:
        return None
    return ScoringChunk.objects.select_related("run__study__dataset").get(pk=chunk_id)


class _Heartbeat:
    """Tells sweepers this chunk's worker is alive; throttled to one UPDATE every few seconds."""

    def __init__(self, chunk_id: int):
        self.chunk_id = chunk_id
        self.last = time.monotonic()

    def __call__(self) -> None:
        if time.monotonic() - self.last >= HEARTBEAT_EVERY_S:
            ScoringChunk.objects.filter(pk=self.chunk_id, status=ScoringChunk.Status.RUNNING).update(
                heartbeat_at=timezone.now()
            )
            self.last = time.monotonic()


def _record_model(*, run: ModelRun, clip: clipmodel.LoadedClip) -> None:
    """The first worker records what the model is; any later worker must have loaded the same weights."""
    from evaluator import scoring

    if run.fingerprint == clip.fingerprint:
        return  # recorded already (run was read with the chunk claim)
    ModelRun.objects.filter(pk=run.pk, fingerprint="").update(
        fingerprint=clip.fingerprint, fingerprint_info=clip.fingerprint_info, device=str(clip.device),
        dtype=scoring.dtype_label(clip), versions=scoring.library_versions(),
    )
    recorded = ModelRun.objects.values_list("fingerprint", flat=True).get(pk=run.pk)
    if recorded != clip.fingerprint:
        raise scoring.ScoringError(
            f"this worker loaded {clip.fingerprint} but the run was scored with {recorded}: "
            "the weights changed (e.g. a checkpoint was replaced); create a new run"
        )


def _test_delay(heartbeat: _Heartbeat) -> None:
    delay = setting("SCORING_TEST_DELAY_S")
    end = time.monotonic() + delay
    while time.monotonic() < end:
        time.sleep(min(0.1, end - time.monotonic()))
        heartbeat()


def model_run_score_chunk(*, chunk_id: int, task_id: str = "", worker: str = "", retries: int = 0) -> str:
    """Score one chunk if this caller can claim it; returns "scored", "skipped" or "failed".

    Only (condition, item) pairs without a prediction are scored. An unusable image gives that item an
    error prediction; anything else raises (the task's failure callback then fails the run).
    """
    from evaluator import scoring  # torch is imported only where models run

    chunk = _claim(chunk_id=chunk_id, task_id=task_id, worker=worker or f"local:{os.getpid()}", retries=retries)
    if chunk is None:
        return "skipped"
    run = chunk.run
    if chunk.attempts > MAX_CHUNK_ATTEMPTS:
        model_run_fail(run_id=run.pk, chunk_id=chunk.pk,
                       error=f"chunk {chunk.index} was started {chunk.attempts - 1} times without finishing "
                             "(its worker was killed or timed out each time)")
        return "failed"
    ModelRun.objects.filter(pk=run.pk, status=ModelRun.Status.PENDING).update(
        status=ModelRun.Status.RUNNING, started_at=timezone.now()
    )
    heartbeat = _Heartbeat(chunk.pk)
    started = time.perf_counter()
    clip = scoring.load_model(run=run)
    _record_model(run=run, clip=clip)
    prepared = scoring.prepare_run(run=run, clip=clip, heartbeat=heartbeat)
    ready = time.perf_counter()
    rows = _score_items(run=run, prepared=prepared, item_ids=chunk.item_ids, heartbeat=heartbeat)
    scored = time.perf_counter()
    _test_delay(heartbeat)
    with transaction.atomic():
        ModelPrediction.objects.bulk_create(rows, ignore_conflicts=True)
        ScoringChunk.objects.filter(pk=chunk.pk, status=ScoringChunk.Status.RUNNING).update(
            status=ScoringChunk.Status.DONE, finished_at=timezone.now(), heartbeat_at=timezone.now()
        )
    model_run_finish_if_complete(run_id=run.pk)
    logger.info("run %s chunk %s: %d predictions; model+classifiers %.2f s, encode+classify %.2f s, write %.2f s",
                run.pk, chunk.index, len(rows), ready - started, scored - ready, time.perf_counter() - scored)
    return "scored"


def _score_items(*, run: ModelRun, prepared: scoring.PreparedRun, item_ids: list[int], heartbeat) -> list[ModelPrediction]:
    import torch

    from evaluator import scoring

    keys = sorted(prepared.classifiers)  # (condition pk, method): one subject's answers each
    done = set(run.predictions.filter(item_id__in=item_ids).values_list("condition_id", "method", "item_id"))
    items = [item for item in Item.objects.filter(pk__in=item_ids).only("pk", "image", "content_hash", "label_id")
             if any((*key, item.pk) not in done for key in keys)]
    features, errors = scoring.encode_items(clip=prepared.clip, items=items, heartbeat=heartbeat)
    scored = [item for item in items if item.pk in features]
    rows = []
    for condition_id, method in keys:
        todo = [item for item in scored if (condition_id, method, item.pk) not in done]
        if todo:
            probs = scoring.probabilities(prepared=prepared, key=(condition_id, method),
                                          features=torch.stack([features[i.pk] for i in todo]))
            for item, p in zip(todo, probs.tolist(), strict=True):
                best = max(range(len(p)), key=p.__getitem__)
                rows.append(ModelPrediction(
                    run=run, condition_id=condition_id, method=method, item_id=item.pk,
                    predicted_id=prepared.class_ids[best], probs=p, p_target=p[prepared.class_index[item.label_id]],
                    p_predicted=p[best],
                ))
        rows += [ModelPrediction(run=run, condition_id=condition_id, method=method, item_id=item.pk,
                                 error=errors[item.pk])
                 for item in items if item.pk in errors and (condition_id, method, item.pk) not in done]
    return rows


# ---------------------------------------------------------------------------------------------- recovery


def _queue_size() -> int | None:
    """Messages waiting in the scoring queue; None when the broker cannot tell (then nothing is re-sent)."""
    from kombu.exceptions import ChannelError


    try:
        with app.connection_for_read() as conn:
            conn.ensure_connection(max_retries=1)
            return conn.default_channel.queue_declare(queue=SCORING_QUEUE, passive=True).message_count
    except ChannelError:
        return 0  # Redis deletes an empty list: no key, no messages
    except Exception as exc:
        logger.warning("cannot read the size of queue %r: %s", SCORING_QUEUE, exc)
        return None


def model_runs_sweep(*, worker: str = "", restarted: bool = False) -> dict[str, int]:
    """Recover work that no message will ever deliver; every worker runs this periodically.

    - orphaned chunks (RUNNING, no heartbeat for SCORING_STALE_S: the worker died) go back to PENDING and are
      re-sent; with ``restarted`` a worker also takes back at once what its previous process (same node
      name, other pid) held;
    - when the queue is empty but chunks are still PENDING long after they were sent, their messages were
      lost (e.g. Redis restarted without persistence): they are re-sent;
    - runs whose chunks are all done are marked done.
    Conditional updates keep several sweeping workers from sending the same chunk twice (and a duplicate
    would only be skipped by the claim).
    """
    now = timezone.now()
    active = ScoringChunk.objects.filter(run__status__in=ACTIVE)
    running = ScoringChunk.Status.RUNNING
    orphaned = Q(status=running, heartbeat_at__lt=now - timedelta(seconds=setting("SCORING_STALE_S")))
    if restarted and ":" in worker:
        node = worker.rsplit(":", 1)[0]
        orphaned |= Q(status=running, worker__startswith=f"{node}:") & ~Q(worker=worker)
    to_send = []
    for chunk in active.filter(orphaned).only("pk", "heartbeat_at", "worker"):
        if ScoringChunk.objects.filter(pk=chunk.pk, status=running, heartbeat_at=chunk.heartbeat_at).update(
            status=ScoringChunk.Status.PENDING, queued_at=now
        ):
            logger.warning("chunk %s was orphaned by %s; requeued", chunk.pk, chunk.worker)
            to_send.append(chunk.pk)
    grace = now - timedelta(seconds=setting("SCORING_REQUEUE_GRACE_S"))
    lost = active.filter(Q(queued_at__lt=grace) | Q(queued_at__isnull=True), status=ScoringChunk.Status.PENDING)
    n_lost = 0
    if lost.exists() and _queue_size() == 0:
        for chunk in lost.only("pk", "queued_at"):
            if ScoringChunk.objects.filter(pk=chunk.pk, status=ScoringChunk.Status.PENDING,
                                           queued_at=chunk.queued_at).update(queued_at=now):
                to_send.append(chunk.pk)
                n_lost += 1
        if n_lost:
            logger.warning("%d pending chunk(s) had no message in the queue; re-sent", n_lost)
    if to_send:
        try:
            _send(chunk_ids=to_send)
        except QueueUnavailable as exc:
            logger.warning("%s", exc)
    finished = sum(model_run_finish_if_complete(run_id=run_id)
                   for run_id in ModelRun.objects.filter(status__in=ACTIVE).values_list("pk", flat=True))
    return {"requeued": len(to_send) - n_lost, "resent": n_lost, "finished": finished}
