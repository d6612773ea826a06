"""Training the house model in a worker, then scoring the studies that wait for it.

`manage.py score_study STUDY` without a model, when the house model for the studies now in the database is not
cached, asks for a training instead of training in its own foreground: a worker trains it (minutes on a CPU;
progress in the admin and in the command), then creates the run the command asked for. Requests made while a
training is still pending join it, so the demo's two studies share one training.
"""

from __future__ import annotations

import logging
import os
import re
import time
from datetime import timedelta
from functools import partial

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from evaluator.celery_app import HOUSE_TRAINING_TASK
from evaluator.errors import ScoringSetupError
from evaluator.house import house_checkpoint
from evaluator.models import HouseTraining
from evaluator.services import queue
from evaluator.services.runs import RunExists, model_run_create, model_run_resume
from evaluator.services.specs import model_spec_resolve
from studyapp.models import Study

logger = logging.getLogger(__name__)

HEARTBEAT_EVERY_S = 2.0
# tqdm's line for a training epoch, e.g. "epoch 2/5:  45%|████▌     | 53/119 [00:50<01:02, loss=3.1]".
EPOCH_BAR = re.compile(r"epoch (\d+)/(\d+):\s*(\d+)%")


def house_training_request(*, study: Study, options: dict | None = None) -> HouseTraining:
    """Ask a worker to train the house model and then to score ``study`` with it (``model_run_create(study=study,
    **options)``, options JSON-serialisable). Joins the running training if it started after the study was opened
    (so it leaves out the study's items), else the pending one, else queues a new training."""
    request = {"study": study.pk, **(options or {})}
    joinable = Q(status=HouseTraining.Status.PENDING)
    if study.opened_at is not None:
        joinable |= Q(status=HouseTraining.Status.RUNNING, started_at__gt=study.opened_at)
    for _ in range(3):
        try:
            with transaction.atomic():
                # Locked so that a training being marked done never misses a request that joins it at that moment.
                training = HouseTraining.objects.select_for_update().filter(joinable).order_by("created_at").first()
                if training is None:
                    training = HouseTraining.objects.create(then_score=[request], queued_at=timezone.now())
                    transaction.on_commit(partial(house_trainings_send, training_ids=[training.pk]))
                elif request not in training.then_score:
                    training.then_score = [*training.then_score, request]
                    training.save(update_fields=["then_score"])
            return training
        except IntegrityError:
            continue  # another request created the pending training at the same moment: join it
    raise ScoringSetupError("could not request a house model training (database contention); try again")


def house_trainings_send(*, training_ids: list[int]) -> None:
    queue.task_send(name=HOUSE_TRAINING_TASK, ids=training_ids, what="house model training(s)",
                    then="the training stays pending and a worker re-sends it once Redis is reachable")


class _Progress:
    """Records the trainer's progress lines on the row (throttled), which is also the training's heartbeat."""

    def __init__(self, training_id: int):
        self.training_id = training_id
        self.last = 0.0
        self.lines: list[str] = []

    def __call__(self, line: str) -> None:
        self.lines = [*self.lines[-19:], line]
        if time.monotonic() - self.last < HEARTBEAT_EVERY_S:
            return
        fields = {"detail": line[:300], "heartbeat_at": timezone.now()}
        match = EPOCH_BAR.search(line)
        if match:
            epoch, epochs, percent = (int(g) for g in match.groups())
            fields["progress"] = min(1.0, (epoch - 1 + percent / 100) / epochs)
        HouseTraining.objects.filter(pk=self.training_id, status=HouseTraining.Status.RUNNING).update(**fields)
        self.last = time.monotonic()


def _claim(*, training_id: int, worker: str) -> HouseTraining | None:
    """Take the training if it is pending or orphaned (its worker stopped sending heartbeats). Once it is RUNNING
    no request joins it any more, so what it reads of ``then_score`` here is final."""
    now = timezone.now()
    stale = now - timedelta(seconds=settings.SCORING_STALE_S)
    claimable = Q(status=HouseTraining.Status.PENDING) | Q(status=HouseTraining.Status.RUNNING, heartbeat_at__lt=stale)
    claimed = HouseTraining.objects.filter(claimable, pk=training_id).update(
        status=HouseTraining.Status.RUNNING, worker=worker[:200], started_at=now, heartbeat_at=now)
    return HouseTraining.objects.get(pk=training_id) if claimed else None


def house_training_run(*, training_id: int, worker: str = "") -> str:
    """Train the house model (or find it in the cache), then create the runs that wait for it; returns "done",
    "failed" or "skipped" (someone else has the training, or it is finished)."""
    training = _claim(training_id=training_id, worker=worker or f"local:{os.getpid()}")
    if training is None:
        return "skipped"
    progress = _Progress(training.pk)
    try:
        path = house_checkpoint(train=True, progress=True, on_output=progress)
    except (ScoringSetupError, OSError, RuntimeError, ValueError) as exc:
        house_training_fail(training_id=training.pk, error=f"{exc}\n" + "\n".join(progress.lines[-10:]))
        return "failed"
    with transaction.atomic():
        # Locked so that no request joins between our reading what to score and marking the training done.
        requests = HouseTraining.objects.select_for_update().values_list("then_score", flat=True).get(pk=training.pk)
        HouseTraining.objects.filter(pk=training.pk).update(
            status=HouseTraining.Status.DONE, progress=1.0, checkpoint=str(path), finished_at=timezone.now(),
            detail=(f"trained: {path}" if progress.lines else f"found in the cache: {path}")[:300])
    problems = _score_waiting_studies(requests=requests, spec=model_spec_resolve(checkpoint=str(path)))
    if problems:
        HouseTraining.objects.filter(pk=training.pk).update(error="\n".join(problems))
    return "done"


def _score_waiting_studies(*, requests: list[dict], spec) -> list[str]:
    """Create (or resume) each requested run; returns what could not be done, in words."""
    problems = []
    for request in requests:
        options = {key: value for key, value in request.items() if key != "study"}
        study = Study.objects.filter(pk=request["study"]).first()
        if study is None:
            continue  # deleted while it waited
        try:
            model_run_create(study=study, spec=spec, **options)
        except RunExists as exists:  # asked twice, or created by a command that waited: score what is missing
            model_run_resume(run=exists.run)
        except (ScoringSetupError, queue.QueueUnavailable) as exc:
            problems.append(f"{study.title}: {exc}")
            logger.warning("no house model run for study %s: %s", study.pk, exc)
    return problems


def house_training_fail(*, training_id: int, error: str) -> bool:
    """Mark a pending or running training failed with the error text (also the task's failure callback)."""
    return bool(HouseTraining.objects.filter(
        pk=training_id, status__in=[HouseTraining.Status.PENDING, HouseTraining.Status.RUNNING],
    ).update(status=HouseTraining.Status.FAILED, error=error[:10000], finished_at=timezone.now()))
