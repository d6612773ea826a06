"""evaluator.tasks: the Celery wiring (queue, late acknowledgement, retries) and the failure callback."""

import pytest

from evaluator.celery_app import app
from evaluator.models import ModelRun, ScoringChunk
from evaluator.tasks import score_chunk
from tests.evaluator.helpers import create_run
from tests.factories import make_study

pytestmark = pytest.mark.django_db


def test_the_celery_task_scores_a_chunk_and_its_failure_callback_fails_the_run_with_the_error(
    tiny_checkpoint, eager_celery, tmp_path
):
    study = make_study()
    run = create_run(study, tiny_checkpoint, chunk_size=100)
    assert score_chunk.delay(run.chunks.get().pk).get() == "scored"
    assert ModelRun.objects.get(pk=run.pk).status == ModelRun.Status.DONE

    moved = tmp_path / "moved.pt"
    moved.write_bytes(tiny_checkpoint.read_bytes())
    doomed = create_run(study, moved, name="doomed", chunk_size=100)
    moved.unlink()
    result = score_chunk.delay(doomed.chunks.get().pk)

    assert result.failed()
    doomed.refresh_from_db()
    assert doomed.status == ModelRun.Status.FAILED
    assert doomed.error.startswith("ModelUnavailable: Checkpoint") and "not available" in doomed.error
    assert doomed.chunks.get().status == ScoringChunk.Status.FAILED


def test_the_task_is_routed_to_the_scoring_queue_and_acknowledged_only_after_the_work():
    assert app.amqp.router.route({}, "evaluator.score_chunk")["queue"].name == "scoring"
    assert score_chunk.acks_late and score_chunk.reject_on_worker_lost
    assert app.conf.worker_prefetch_multiplier == 1
    assert app.conf.broker_connection_retry_on_startup and app.conf.broker_connection_max_retries is None
    assert score_chunk.soft_time_limit < score_chunk.time_limit
    assert score_chunk.max_retries and score_chunk.retry_backoff



@pytest.mark.django_db(transaction=True)  # the training is sent when its request commits
def test_the_training_task_runs_the_training_it_was_sent_and_records_a_failure(settings, tmp_path, eager_celery):
    from evaluator.models import HouseTraining
    from evaluator.services.training import house_training_request

    settings.DEMO_DATA = str(tmp_path / "no training data")

    training = house_training_request(study=make_study(), options={})  # eager: the task runs on commit

    training.refresh_from_db()
    assert training.status == HouseTraining.Status.FAILED and "training data is missing" in training.error
