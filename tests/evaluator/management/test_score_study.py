"""manage.py score_study: create or resume a run, queue it, follow it to the end with a progress bar."""

import io

import pytest
from django.core.management import CommandError, call_command

from evaluator.models import ModelPrediction, ModelRun
from evaluator.tasks import score_chunk
from tests.evaluator.helpers import assert_scored_exactly_once, broker
from tests.factories import make_study
from tests.processes import free_port

pytestmark = pytest.mark.django_db


def test_a_templates_file_is_validated_and_used(tiny_checkpoint, tmp_path):
    study = make_study()
    good = tmp_path / "templates.txt"
    good.write_text("# prompts\na photo of a {}.\n\nitap of a {}.\n")
    bad = tmp_path / "bad.txt"
    bad.write_text("a photo of a thing.\n")
    code = str(study.code)

    call_command("score_study", code, "--checkpoint", str(tiny_checkpoint), "--templates", str(good), "--no-wait",
                 stdout=io.StringIO())
    assert ModelRun.objects.get(study=study).templates == ["a photo of a {}.", "itap of a {}."]
    with pytest.raises(CommandError, match=r"exactly one '\{\}'"):
        call_command("score_study", code, "--checkpoint", str(tiny_checkpoint), "--templates", str(bad),
                     "--name", "other", "--no-wait", stdout=io.StringIO())


def test_score_study_without_waiting_queues_every_chunk_once_committed(
    tiny_checkpoint, django_capture_on_commit_callbacks, monkeypatch
):
    study = make_study()
    sent = []
    monkeypatch.setattr(score_chunk, "apply_async", lambda args, **kw: sent.append(args[0]))
    out = io.StringIO()
    with django_capture_on_commit_callbacks(execute=True):
        call_command("score_study", str(study.code), "--checkpoint", str(tiny_checkpoint), "--chunk-size", "5",
                     "--conditions", "zero-shot,two-shot", "--fewshot", "prototype", "--no-wait", stdout=out)
    run = ModelRun.objects.get(study=study)
    assert sorted(sent) == sorted(run.chunks.values_list("pk", flat=True)) and len(sent) == 3
    assert run.condition_shots == [0, 2] and run.fewshot_methods == ["prototype"] and run.chunk_size == 5
    assert f"run {run.code} created" in out.getvalue()


def test_score_study_rejects_unknown_studies_conditions_and_methods(tiny_checkpoint):
    study = make_study()
    with pytest.raises(CommandError, match="no study"):
        call_command("score_study", "not-a-code", "--checkpoint", str(tiny_checkpoint), "--no-wait")
    with pytest.raises(CommandError, match="unknown condition"):
        call_command("score_study", str(study.code), "--checkpoint", str(tiny_checkpoint), "--conditions", "3-shot")
    with pytest.raises(CommandError, match="few-shot method"):
        call_command("score_study", str(study.code), "--checkpoint", str(tiny_checkpoint), "--fewshot", "magic")


@pytest.mark.django_db(transaction=True)  # on_commit fires while the command waits
def test_score_study_waits_and_reports_a_finished_run(tiny_checkpoint, eager_celery):
    study = make_study()
    out = io.StringIO()
    call_command("score_study", str(study.code), "--checkpoint", str(tiny_checkpoint), "--chunk-size", "6",
                 stdout=out, stderr=io.StringIO())
    run = ModelRun.objects.get(study=study)
    assert run.status == ModelRun.Status.DONE
    assert f"run {run.code} done: 60/60 predictions, 0 failed item(s)" in out.getvalue()  # 12 items x 5 answers


@pytest.mark.django_db(transaction=True)  # on_commit fires while the command waits
def test_score_study_again_with_the_same_name_scores_only_what_is_missing(tiny_checkpoint, eager_celery):
    study = make_study()
    args = ("score_study", str(study.code), "--checkpoint", str(tiny_checkpoint), "--chunk-size", "6")
    call_command(*args, stdout=io.StringIO(), stderr=io.StringIO())
    run = ModelRun.objects.get(study=study)
    ModelPrediction.objects.filter(pk__in=list(run.predictions.values_list("pk", flat=True)[:4])).delete()
    first_ids = set(run.predictions.values_list("pk", flat=True))

    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO())

    assert "resumed" in out.getvalue()
    assert ModelRun.objects.filter(study=study).count() == 1
    assert_scored_exactly_once(run)
    assert first_ids <= set(run.predictions.values_list("pk", flat=True))
    with pytest.raises(CommandError, match="other settings"):
        call_command(*args, "--fewshot", "prototype", stdout=io.StringIO(), stderr=io.StringIO())


@pytest.mark.django_db(transaction=True)  # on_commit fires while the command waits
def test_score_study_fails_with_the_error_of_a_run_that_failed(tmp_path, eager_celery, monkeypatch, tiny_checkpoint):
    from evaluator.services import queue

    study = make_study()
    vanishing = tmp_path / "vanishing.pt"
    vanishing.write_bytes(tiny_checkpoint.read_bytes())
    real_send = queue.chunks_send

    def send_after_losing_the_checkpoint(*, chunk_ids):
        vanishing.unlink(missing_ok=True)  # gone between creating the run and a worker loading it
        real_send(chunk_ids=chunk_ids)

    monkeypatch.setattr(queue, "chunks_send", send_after_losing_the_checkpoint)
    with pytest.raises(CommandError, match="failed: ModelUnavailable"):
        call_command("score_study", str(study.code), "--checkpoint", str(vanishing), stdout=io.StringIO(),
                     stderr=io.StringIO())
    assert ModelRun.objects.get(study=study).status == ModelRun.Status.FAILED


@pytest.mark.django_db(transaction=True)
def test_score_study_fails_fast_when_redis_is_unreachable_and_leaves_the_run_pending_for_the_sweepers(tiny_checkpoint):
    study = make_study()
    with broker(f"redis://127.0.0.1:{free_port()}/0"), pytest.raises(CommandError, match="could not queue"):
        call_command("score_study", str(study.code), "--checkpoint", str(tiny_checkpoint), stdout=io.StringIO(),
                     stderr=io.StringIO())
    run = ModelRun.objects.get(study=study)
    assert run.status == ModelRun.Status.PENDING and run.chunks.filter(status="pending").count() == 1



@pytest.mark.django_db(transaction=True)  # the training is sent when its request commits
def test_without_a_model_and_no_trained_house_model_a_worker_is_asked_to_train_it_and_then_score(settings, tmp_path,
                                                                                               monkeypatch):
    from evaluator.models import HouseTraining
    from tests.evaluator.helpers import write_demo_data

    settings.DEMO_DATA = str(tmp_path / "data")
    write_demo_data(tmp_path / "data")
    sent = []
    monkeypatch.setattr("evaluator.services.queue.task_send", lambda *, name, ids, **kw: sent.append((name, ids)))
    study = make_study()
    out = io.StringIO()

    call_command("score_study", str(study.code), "--conditions", "zero-shot", "--no-wait", stdout=out)

    training = HouseTraining.objects.get()
    assert "a worker trains it" in out.getvalue() and str(training.code) in out.getvalue()
    assert sent == [("evaluator.house_training", [training.pk])]
    assert training.then_score == [{"study": study.pk, "name": "", "conditions": [0], "templates": None,
                                    "fewshot_methods": ["linear-probe", "zero-shot-prior"], "device": "auto",
                                    "chunk_size": None, "allow_trained_items": False}]
    assert not ModelRun.objects.exists()  # the worker creates it once the model exists
