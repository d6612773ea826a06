"""Real Redis, real `celery worker` processes, the real test database: scale-out and fault tests.

Workers are tuned through the environment (config/settings.py): SCORING_STALE_S and SCORING_SWEEP_S make
recovery take seconds, not minutes; a worker started with chunk_delay_s (tests/evaluator/slow_worker.py) takes
that much longer per chunk, so a fault can land mid-run. Every test ends with the same check: every
(condition, item) scored exactly once.
"""

import io

import pytest
from django.core.management import CommandError, call_command

from evaluator.models import ModelPrediction, ModelRun, ScoringChunk
from studyapp.models import StudyItem
from studyapp.services.images import image_path
from tests.evaluator.helpers import assert_scored_exactly_once, broker, create_run, flush_redis
from tests.factories import make_dataset, make_study
from tests.processes import RedisServer, free_port, wait_for

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]

FAST_RECOVERY = {"SCORING_STALE_S": 2, "SCORING_SWEEP_S": 0.5, "SCORING_REQUEUE_GRACE_S": 2}


def status(run) -> str:
    return ModelRun.objects.values_list("status", flat=True).get(pk=run.pk)


def chunks_done(run) -> int:
    return ScoringChunk.objects.filter(run=run, status=ScoringChunk.Status.DONE).count()


def wait_until_finished(run, *, timeout: float = 180, workers=()) -> str:
    def finished():
        return status(run) in ("done", "failed", "cancelled")

    try:
        wait_for(finished, timeout=timeout, what=f"run {run.name} to finish", interval=0.2)
    except AssertionError:
        logs = "\n".join(f"--- {w.name}\n{w.output()[-4000:]}" for w in workers)
        raise AssertionError(f"run still {status(run)} after {timeout} s\n{logs}") from None
    return status(run)


@pytest.fixture
def study():
    return make_study(dataset=make_dataset(n_classes=3, train_per_class=2, test_per_class=8))  # 24 items


@pytest.fixture
def redis(redis_url):
    flush_redis(redis_url)
    with broker(redis_url):
        yield redis_url


def test_two_workers_share_the_scoring_queue_and_every_item_is_scored_exactly_once(
    study, redis, start_worker, tiny_checkpoint
):
    workers = [start_worker(name, redis, chunk_delay_s=0.3) for name in ("w1", "w2")]

    run = create_run(study, tiny_checkpoint, chunk_size=2)

    assert wait_until_finished(run, workers=workers) == "done"
    assert_scored_exactly_once(run)
    who = {worker.rsplit("@", 1)[0] for worker in ScoringChunk.objects.filter(run=run).values_list("worker", flat=True)}
    assert who == {"w1", "w2"}
    run.refresh_from_db()
    assert run.fingerprint and run.device == "cpu"


def test_a_worker_killed_mid_run_leaves_its_chunk_to_a_new_worker_and_every_item_is_scored_exactly_once(
    study, redis, start_worker, tiny_checkpoint
):
    first = start_worker("w1", redis, chunk_delay_s=0.5, **FAST_RECOVERY)
    run = create_run(study, tiny_checkpoint, chunk_size=2)
    wait_for(lambda: chunks_done(run) >= 2 and ScoringChunk.objects.filter(run=run, status="running").exists(),
             timeout=60, what="the first worker to be mid-run")

    first.kill()
    stranded = ScoringChunk.objects.filter(run=run, status="running").count()
    assert status(run) == "running" and stranded == 1

    second = start_worker("w2", redis, chunk_delay_s=0.1, **FAST_RECOVERY)
    assert wait_until_finished(run, workers=[first, second]) == "done"
    assert_scored_exactly_once(run)
    assert ScoringChunk.objects.filter(run=run, attempts__gte=2).exists()  # the stranded chunk was redone


def test_a_redis_restart_mid_run_loses_the_queued_messages_but_not_the_run(
    study, start_worker, tiny_checkpoint, tmp_path
):
    server = RedisServer(tmp_path / "redis", port=free_port()).start()
    try:
        with broker(server.url):
            worker = start_worker("w1", server.url, chunk_delay_s=0.4, **FAST_RECOVERY)
            run = create_run(study, tiny_checkpoint, chunk_size=2)
            wait_for(lambda: chunks_done(run) >= 2, timeout=60, what="the run to be under way")

            server.stop()  # a crash: the queue with the remaining chunks' messages is gone
            # The worker notices the outage (and keeps retrying the broker) while the run stays running.
            wait_for(lambda: "Cannot connect to redis" in worker.output() or "broker lost" in worker.output(),
                     timeout=60, what="the worker to notice that Redis is gone")
            assert status(run) == "running"
            server.start()

            assert wait_until_finished(run, workers=[worker]) == "done"
            assert_scored_exactly_once(run)
            assert worker.proc.poll() is None  # the worker rode out the outage
    finally:
        server.stop()


def test_a_corrupt_image_in_the_media_store_fails_only_its_item(study, redis, start_worker, tiny_checkpoint):
    broken = StudyItem.objects.filter(study=study).order_by("item_id")[5].item
    image_path(relative_path=broken.image).write_bytes(b"\x00garbage, not an image" * 10)
    worker = start_worker("w1", redis)

    run = create_run(study, tiny_checkpoint, chunk_size=4)

    assert wait_until_finished(run, workers=[worker]) == "done"
    assert_scored_exactly_once(run)
    failed = ModelPrediction.objects.filter(run=run, predicted__isnull=True)
    assert set(failed.values_list("item_id", flat=True)) == {broken.pk}
    assert failed.count() == 5 and all("corrupt" in error for error in failed.values_list("error", flat=True))
    out = io.StringIO()
    call_command("score_study", str(study.code), "--checkpoint", str(tiny_checkpoint), stdout=out,
                 stderr=io.StringIO())
    assert "5 failed item(s)" in out.getvalue()  # the same command again: nothing missing, and it says so


def test_score_study_fails_with_a_clear_message_when_the_worker_cannot_load_the_model(
    study, redis, start_worker, tmp_path
):
    # Offline and nothing cached. How fast it fails is measured by benchmarks/bench_model_unavailable.py.
    start_worker("w1", redis, HF_HOME=tmp_path / "empty-hf-home")

    with pytest.raises(CommandError) as failure:
        call_command("score_study", str(study.code), "--model", "ViT-B-32", "--pretrained", "openai",
                     stdout=io.StringIO(), stderr=io.StringIO())

    assert "ModelUnavailable" in str(failure.value) and "HF_HUB_OFFLINE" in str(failure.value)
    run = ModelRun.objects.get(study=study)
    assert run.status == ModelRun.Status.FAILED and "How to provide weights" in run.error
    assert run.name == "CLIP ViT-B/32"


def test_score_study_shows_progress_until_real_workers_finish(study, redis, start_worker, tiny_checkpoint):
    start_worker("w1", redis)
    out, err = io.StringIO(), io.StringIO()

    call_command("score_study", str(study.code), "--checkpoint", str(tiny_checkpoint), "--chunk-size", "5",
                 "--name", "tiny for the command", stdout=out, stderr=err)

    run = ModelRun.objects.get(study=study)
    assert run.status == ModelRun.Status.DONE and run.name == "tiny for the command"
    assert "120/120 predictions, 0 failed item(s)" in out.getvalue()  # 24 items x 5 answers
    assert "120/120" in err.getvalue()  # the tqdm bar
    assert_scored_exactly_once(run)


def test_score_study_says_so_when_no_worker_consumes_the_queue(study, redis, tiny_checkpoint):
    with pytest.raises(CommandError, match="no worker consumes the 'scoring' queue"):
        call_command("score_study", str(study.code), "--checkpoint", str(tiny_checkpoint), "--worker-timeout", "1",
                     stdout=io.StringIO(), stderr=io.StringIO())
    assert ModelRun.objects.get(study=study).status == ModelRun.Status.PENDING
