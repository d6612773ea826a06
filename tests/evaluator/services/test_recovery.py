"""evaluator.services.recovery: the sweeper requeues orphaned chunks and re-sends lost messages."""

from datetime import timedelta

import pytest
from django.utils import timezone

from evaluator.models import ModelRun, ScoringChunk
from evaluator.services.chunks import model_run_score_chunk
from evaluator.services.recovery import model_runs_sweep
from tests.evaluator.helpers import assert_scored_exactly_once, create_run
from tests.factories import make_study

pytestmark = pytest.mark.django_db


def test_a_chunk_whose_worker_stopped_sending_heartbeats_is_requeued_by_the_sweeper(tiny_checkpoint, settings, monkeypatch):
    settings.SCORING_STALE_S = 30
    run = create_run(make_study(), tiny_checkpoint, chunk_size=100)
    chunk = run.chunks.get()
    ScoringChunk.objects.filter(pk=chunk.pk).update(
        status=ScoringChunk.Status.RUNNING, task_id="dead", worker="w1@host:123",
        heartbeat_at=timezone.now() - timedelta(seconds=10),
    )
    sent = []
    monkeypatch.setattr("evaluator.services.queue.chunks_send", lambda *, chunk_ids: sent.extend(chunk_ids))
    monkeypatch.setattr("evaluator.services.queue.queue_size", lambda: 1)

    assert model_runs_sweep()["requeued"] == 0  # 10 s of silence is not yet death
    ScoringChunk.objects.filter(pk=chunk.pk).update(heartbeat_at=timezone.now() - timedelta(seconds=31))
    assert model_runs_sweep()["requeued"] == 1
    assert sent == [chunk.pk]

    assert model_run_score_chunk(chunk_id=chunk.pk, task_id="fresh") == "scored"
    assert_scored_exactly_once(run)
    assert ModelRun.objects.get(pk=run.pk).status == ModelRun.Status.DONE


def test_a_restarted_worker_takes_back_at_once_what_its_previous_process_held(tiny_checkpoint, monkeypatch):
    run = create_run(make_study(), tiny_checkpoint, chunk_size=100)
    chunk = run.chunks.get()
    ScoringChunk.objects.filter(pk=chunk.pk).update(status=ScoringChunk.Status.RUNNING, worker="w1@host:123",
                                                    heartbeat_at=timezone.now())
    sent = []
    monkeypatch.setattr("evaluator.services.queue.chunks_send", lambda *, chunk_ids: sent.extend(chunk_ids))

    model_runs_sweep(worker="w2@host:555", restarted=True)
    assert sent == []
    model_runs_sweep(worker="w1@host:456", restarted=True)
    assert sent == [chunk.pk]


def test_pending_chunks_whose_messages_were_lost_are_sent_again_once_the_queue_is_empty(tiny_checkpoint, monkeypatch, settings):
    settings.SCORING_REQUEUE_GRACE_S = 60
    run = create_run(make_study(), tiny_checkpoint, chunk_size=4)
    sent = []
    monkeypatch.setattr("evaluator.services.queue.chunks_send", lambda *, chunk_ids: sent.extend(chunk_ids))
    queue = {"size": 3}
    monkeypatch.setattr("evaluator.services.queue.queue_size", lambda: queue["size"])
    run.chunks.update(queued_at=timezone.now() - timedelta(minutes=5))

    model_runs_sweep()
    assert sent == []  # messages are still waiting in the queue
    queue["size"] = 0
    model_runs_sweep()
    assert sorted(sent) == sorted(run.chunks.values_list("pk", flat=True))
    sent.clear()
    model_runs_sweep()
    assert sent == []  # just re-sent: give them the grace period



def test_a_training_whose_worker_died_is_sent_again_and_a_new_worker_may_take_it(settings, monkeypatch):
    from evaluator.models import HouseTraining
    from evaluator.services.recovery import house_trainings_sweep
    from evaluator.services.training import _claim

    settings.SCORING_STALE_S = 30
    sent = []
    monkeypatch.setattr("evaluator.services.queue.task_send", lambda *, name, ids, **kw: sent.extend(ids))
    monkeypatch.setattr("evaluator.services.queue.queue_size", lambda: 0)
    training = HouseTraining.objects.create(status=HouseTraining.Status.RUNNING, worker="w1@host:1",
                                            heartbeat_at=timezone.now() - timedelta(seconds=10),
                                            queued_at=timezone.now() - timedelta(minutes=5))

    assert house_trainings_sweep() == 0 and _claim(training_id=training.pk, worker="w2@host:2") is None  # alive
    HouseTraining.objects.filter(pk=training.pk).update(heartbeat_at=timezone.now() - timedelta(seconds=31))
    assert house_trainings_sweep() == 1 and sent == [training.pk]
    assert house_trainings_sweep() == 0  # just sent: no second message
    assert _claim(training_id=training.pk, worker="w2@host:2").worker == "w2@host:2"


def test_a_pending_training_whose_message_was_lost_is_sent_again_once_the_queue_is_empty(settings, monkeypatch):
    from evaluator.models import HouseTraining
    from evaluator.services.recovery import house_trainings_sweep

    settings.SCORING_REQUEUE_GRACE_S = 60
    sent, queue = [], {"size": 1}
    monkeypatch.setattr("evaluator.services.queue.task_send", lambda *, name, ids, **kw: sent.extend(ids))
    monkeypatch.setattr("evaluator.services.queue.queue_size", lambda: queue["size"])
    training = HouseTraining.objects.create(queued_at=timezone.now() - timedelta(minutes=5))

    assert house_trainings_sweep() == 0  # its message may still be waiting
    queue["size"] = 0
    assert house_trainings_sweep() == 1 and sent == [training.pk]
