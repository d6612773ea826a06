"""Recovering work that no message will ever deliver: every worker's sweeper thread runs model_runs_sweep and
house_trainings_sweep."""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from evaluator.models import HouseTraining, ModelRun, ScoringChunk
from evaluator.services import queue
from evaluator.services.runs import ACTIVE, model_run_finish_if_complete
from evaluator.services.training import house_trainings_send

logger = logging.getLogger(__name__)


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
    orphaned = Q(status=running, heartbeat_at__lt=now - timedelta(seconds=settings.SCORING_STALE_S))
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
    grace = now - timedelta(seconds=settings.SCORING_REQUEUE_GRACE_S)
    lost = active.filter(Q(queued_at__lt=grace) | Q(queued_at__isnull=True), status=ScoringChunk.Status.PENDING)
    n_lost = 0
    if lost.exists() and queue.queue_size() == 0:
        for chunk in lost.only("pk", "queued_at"):
            if ScoringChunk.objects.filter(pk=chunk.pk, status=ScoringChunk.Status.PENDING,
                                           queued_at=chunk.queued_at).update(queued_at=now):
                to_send.append(chunk.pk)
                n_lost += 1
        if n_lost:
            logger.warning("%d pending chunk(s) had no message in the queue; re-sent", n_lost)
    if to_send:
        try:
            queue.chunks_send(chunk_ids=to_send)
        except queue.QueueUnavailable as exc:
            logger.warning("%s", exc)
    finished = sum(model_run_finish_if_complete(run_id=run_id)
                   for run_id in ModelRun.objects.filter(status__in=ACTIVE).values_list("pk", flat=True))
    return {"requeued": len(to_send) - n_lost, "resent": n_lost, "finished": finished}


def house_trainings_sweep() -> int:
    """Re-send the house model trainings no message will deliver; returns how many.

    - orphaned: RUNNING without a heartbeat for SCORING_STALE_S (its worker died; the broker would redeliver the
      message only after its visibility timeout, an hour): a new message, which any worker may claim;
    - lost: PENDING SCORING_REQUEUE_GRACE_S after it was sent while the queue is empty.
    The conditional update on ``queued_at`` keeps several sweeping workers from sending the same one twice.
    """
    now = timezone.now()
    stale = now - timedelta(seconds=settings.SCORING_STALE_S)
    grace = now - timedelta(seconds=settings.SCORING_REQUEUE_GRACE_S)
    not_recent = Q(queued_at__isnull=True) | Q(queued_at__lt=stale)
    orphaned = Q(status=HouseTraining.Status.RUNNING, heartbeat_at__lt=stale) & not_recent
    lost = Q(status=HouseTraining.Status.PENDING) & (Q(queued_at__isnull=True) | Q(queued_at__lt=grace))
    candidates = list(HouseTraining.objects.filter(orphaned | lost).only("pk", "status", "queued_at"))
    if any(t.status == HouseTraining.Status.PENDING for t in candidates) and queue.queue_size() != 0:
        candidates = [t for t in candidates if t.status == HouseTraining.Status.RUNNING]  # still in the queue
    to_send = [t.pk for t in candidates
               if HouseTraining.objects.filter(pk=t.pk, status=t.status, queued_at=t.queued_at).update(queued_at=now)]
    if to_send:
        logger.warning("house model training(s) %s had no live worker or message; re-sent", to_send)
        try:
            house_trainings_send(training_ids=to_send)
        except queue.QueueUnavailable as exc:
            logger.warning("%s", exc)
    return len(to_send)
