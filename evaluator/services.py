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
from django.db import transaction
from django.db.models import Case, Count, F, Q, When
from django.utils import timezone

from evaluator.celery_app import SCORING_QUEUE, app
from evaluator.conf import setting
from evaluator.models import ModelPrediction, ModelRun, ScoringChunk
from studyapp.models import Condition, Item, Study, StudyItem

if TYPE_CHECKING:
    import clipmodel
    from evaluator import scoring

logger = logging.getLogger(__name__)

ACTIVE = (ModelRun.Status.PENDING, ModelRun.Status.RUNNING)
# A chunk claimed this often without finishing is poison (it keeps killing or timing out its worker).
MAX_CHUNK_ATTEMPTS = 5
HEARTBEAT_EVERY_S = 2.0


class ScoringSetupError(ValueError):
    """A run cannot be created or resumed as asked; the message says why."""


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


def data_root() -> Path:
    return Path(settings.DEMO_DATA) if settings.DEMO_DATA else settings.BASE_DIR.parent / "shared" / "data"


def house_exclusions() -> list[str]:
    """The demo's Pets test items come from the official trainval list, which the house model trains on:
    leave them out so the model never sees a study's test item."""
    from studyapp.services.demo import pets_demo_rows

    pets = data_root() / "oxford_pets"
    if not pets.is_dir():
        return []
    return [f"oxford_pets/{row['filename']}" for row in pets_demo_rows(pets_root=pets) if row["split"] == "test"]


def house_checkpoint(*, train: bool, progress: bool = False) -> Path:
    """The house model's checkpoint under HUMANCLIP_CACHE; trains it first (minutes on CPU) when ``train``."""
    import clipmodel
    from studyapp.services.datasets import DatasetImportError

    try:
        exclude = house_exclusions()
    except DatasetImportError as exc:  # an unreadable Pets folder must be a message, not a crash
        raise ScoringSetupError(f"the house model's training data is unusable: {exc}") from None
    if train:
        return clipmodel.ensure_house_model(
            data_root=data_root(), cache_dir=settings.HUMANCLIP_CACHE, progress=progress, exclude=exclude
        )
    from clipmodel.house import house_model_path

    try:
        path = house_model_path(data_root=data_root(), cache_dir=settings.HUMANCLIP_CACHE, exclude=exclude)
    except OSError as exc:  # its cache key covers the training data's manifests
        raise ScoringSetupError(f"the house model is not trained yet and its training data is missing ({exc})") from None
    if not path.is_file():
        raise ScoringSetupError(
            "the house model is not trained yet: run `manage.py score_study STUDY` once (it trains it), "
            "or `python -m clipmodel.train`, or choose a checkpoint"
        )
    return path


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

        house = read_house_checkpoint(path)
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
    """clipmodel's templates for the dataset; a dataset name like "Oxford-IIIT Pet (demo split)" is matched
    by keyword, because templates_for only knows short keys and would fall back to the 80 ImageNet ones."""
    import clipmodel

    name = study.dataset.name
    fallback = clipmodel.templates_for(None)
    templates = clipmodel.templates_for(name)
    if templates == fallback:
        lowered = name.lower()
        key = ("oxford_pets" if "pet" in lowered or study.dataset.source_format == "oxford-pets"
               else "eurosat" if "eurosat" in lowered else "cifar10" if "cifar" in lowered else None)
        templates = clipmodel.templates_for(key) if key else fallback
    return tuple(templates)


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
    fewshot_method: str = "zero-shot-prior",
    device: str = "auto",
    chunk_size: int | None = None,
) -> ModelRun:
    """Create a pending run with its chunks and queue them once the transaction commits.

    ``conditions`` are shot counts (0, 1, 2; default: all of the study's). Raises RunExists when the study
    already has a run of that name (resume it instead) and ScoringSetupError for anything else invalid.
    """
    import clipmodel

    if not study.is_frozen:
        raise ScoringSetupError("open the study first: a draft study's items and shots may still change")
    available = sorted(study.conditions.values_list("shots", flat=True))
    shots = sorted(set(available if conditions is None else conditions))
    if not shots or any(s not in available for s in shots):
        names = ", ".join(Condition.Shots(s).label for s in available)
        raise ScoringSetupError(f"conditions must be among the study's: {names}")
    if fewshot_method not in clipmodel.FEW_SHOT_METHODS:
        raise ScoringSetupError(f"few-shot method must be one of {', '.join(clipmodel.FEW_SHOT_METHODS)}")
    try:
        templates = clipmodel.validate_templates(list(templates)) if templates else default_templates(study=study)
    except ValueError as exc:
        raise ScoringSetupError(str(exc)) from None
    name = _check_name(name=name or model_run_default_name(spec=spec), spec=spec)
    existing = ModelRun.objects.filter(study=study, name=name).first()
    if existing:
        raise RunExists(existing)
    chunk_size = chunk_size or settings.SCORING_CHUNK_SIZE
    item_ids = list(StudyItem.objects.filter(study=study).order_by("item_id").values_list("item_id", flat=True))
    with transaction.atomic():
        run = ModelRun.objects.create(
            study=study, name=name, model_name=spec.model_name, pretrained=spec.pretrained,
            checkpoint=spec.checkpoint, is_house_model=spec.is_house_model, templates=list(templates),
            fewshot_method=fewshot_method, condition_shots=shots, device_request=device or "auto",
            items_total=len(item_ids) * len(shots), chunk_size=chunk_size,
        )
        _add_chunks(run=run, item_ids=item_ids, chunk_size=chunk_size)
    if not item_ids:
        model_run_finish_if_complete(run_id=run.pk)  # nothing to score: done, not pending forever
        run.refresh_from_db()
    return run


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
                .filter(n__gte=len(run.condition_shots)).values("item_id"))
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

    condition_ids = sorted(prepared.classifiers)
    done = set(run.predictions.filter(item_id__in=item_ids).values_list("condition_id", "item_id"))
    items = [item for item in Item.objects.filter(pk__in=item_ids).only("pk", "image", "content_hash", "label_id")
             if any((c, item.pk) not in done for c in condition_ids)]
    features, errors = scoring.encode_items(clip=prepared.clip, items=items, heartbeat=heartbeat)
    scored = [item for item in items if item.pk in features]
    rows = []
    for condition_id in condition_ids:
        if scored:
            probs = scoring.probabilities(prepared=prepared, condition_id=condition_id,
                                          features=torch.stack([features[i.pk] for i in scored]))
            for item, p in zip(scored, probs.tolist(), strict=True):
                if (condition_id, item.pk) in done:
                    continue
                best = max(range(len(p)), key=p.__getitem__)
                rows.append(ModelPrediction(
                    run=run, condition_id=condition_id, item_id=item.pk, predicted_id=prepared.class_ids[best],
                    probs=p, p_target=p[prepared.class_index[item.label_id]], p_predicted=p[best],
                ))
        rows += [ModelPrediction(run=run, condition_id=condition_id, item_id=item.pk, error=errors[item.pk])
                 for item in items if item.pk in errors and (condition_id, item.pk) not in done]
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
