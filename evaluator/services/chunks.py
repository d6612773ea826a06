"""Scoring one chunk exactly once: claim it, load the model and the run's classifiers, score what is missing,
write the predictions and the DONE mark in one transaction.

A Celery task may only work on a chunk it claimed with a conditional UPDATE, so duplicate, redelivered or
requeued messages are harmless; a chunk scores only the (condition, method, item) triples that have no
prediction yet, so a rerun scores only what is missing.
"""

from __future__ import annotations

import logging
import os
import time
from datetime import timedelta
from typing import TYPE_CHECKING, NamedTuple

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Case, F, Q, When
from django.utils import timezone

from evaluator.models import ModelPrediction, ModelRun, ScoringChunk
from evaluator.services.runs import ACTIVE, model_run_fail, model_run_finish_if_complete
from studyapp.models import Item

if TYPE_CHECKING:
    import clipmodel
    from evaluator import scoring

logger = logging.getLogger(__name__)

# A chunk claimed this often without finishing is poison (it keeps killing or timing out its worker).
MAX_CHUNK_ATTEMPTS = 5
HEARTBEAT_EVERY_S = 2.0


def _claim(*, chunk_id: int, task_id: str, worker: str, retries: int) -> ScoringChunk | None:
    """Take the chunk if it is pending, orphaned (stale heartbeat), or already ours (a retry or a redelivery
    of our own message after our worker died). Returns None when someone else has it or it is finished.

    Every claim counts as an attempt (poison detection) except our own task's retry after a transient
    error: Celery numbers retries, while a redelivery after a killed worker repeats the number."""
    now = timezone.now()
    stale = now - timedelta(seconds=settings.SCORING_STALE_S)
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
    with transaction.atomic():
        _predictions_insert(run_id=run.pk, rows=rows)
        ScoringChunk.objects.filter(pk=chunk.pk, status=ScoringChunk.Status.RUNNING).update(
            status=ScoringChunk.Status.DONE, finished_at=timezone.now(), heartbeat_at=timezone.now()
        )
    model_run_finish_if_complete(run_id=run.pk)
    logger.info("run %s chunk %s: %d predictions; model+classifiers %.2f s, encode+classify %.2f s, write %.2f s",
                run.pk, chunk.index, len(rows), ready - started, scored - ready, time.perf_counter() - scored)
    return "scored"


class Prediction(NamedTuple):
    """One ModelPrediction row before it is written: a tuple, not a model instance (see _predictions_insert)."""

    condition_id: int
    method: str
    item_id: int
    predicted_id: int | None
    probs: list[float]
    p_target: float | None
    p_predicted: float | None
    error: str


def _score_items(*, run: ModelRun, prepared: scoring.PreparedRun, item_ids: list[int], heartbeat) -> list[Prediction]:
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
            # argmax, like max(), returns the first of equal maxima
            for item, p, best in zip(todo, probs.tolist(), probs.argmax(dim=1).tolist(), strict=True):
                rows.append(Prediction(
                    condition_id=condition_id, method=method, item_id=item.pk, predicted_id=prepared.class_ids[best],
                    probs=p, p_target=p[prepared.class_index[item.label_id]], p_predicted=p[best], error="",
                ))
        rows += [Prediction(condition_id=condition_id, method=method, item_id=item.pk, predicted_id=None, probs=[],
                            p_target=None, p_predicted=None, error=errors[item.pk])
                 for item in items if item.pk in errors and (condition_id, method, item.pk) not in done]
    return rows


def _predictions_insert(*, run_id: int, rows: list[Prediction]) -> None:
    """Write the chunk's predictions with one executemany INSERT; a row the run has already (a rerun after a
    crash between encode and commit) is left as it is, as bulk_create(ignore_conflicts=True) would.

    Plain SQL rather than bulk_create because that needs a model instance per row and compiles every field of
    every row: for the 64 px house model those cost ~0.1 s of a 1.1 s run (docs/evaluator.md, Benchmark).
    ON CONFLICT DO NOTHING (SQLite >= 3.24, PostgreSQL) ignores only the unique constraint; a row breaking
    another constraint still raises, where SQLite's INSERT OR IGNORE would drop it silently.
    """
    if not rows:
        return
    meta = ModelPrediction._meta
    fields = [meta.get_field(name) for name in ("run", *Prediction._fields, "created_at")]
    quote = connection.ops.quote_name
    sql = (f"INSERT INTO {quote(meta.db_table)} ({', '.join(quote(field.column) for field in fields)}) "
           f"VALUES ({', '.join(['%s'] * len(fields))}) ON CONFLICT DO NOTHING")
    # The fields' own conversions for the database: JSON for probs, the backend's form of a datetime.
    probs_field = meta.get_field("probs")
    created_at = meta.get_field("created_at").get_db_prep_save(timezone.now(), connection)
    with connection.cursor() as cursor:
        cursor.executemany(sql, [(run_id, *row[:4], probs_field.get_db_prep_save(row.probs, connection), *row[5:],
                                  created_at) for row in rows])
