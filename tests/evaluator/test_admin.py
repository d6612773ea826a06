"""evaluator.admin: "Score a study", the run list with progress, cancel; the form's errors."""

import pytest
from django.urls import reverse

from evaluator.models import ModelRun
from evaluator.tasks import score_chunk
from tests.evaluator.helpers import create_run, existing_run_lookup_misses_once
from tests.factories import make_study

pytestmark = pytest.mark.django_db


def test_the_admin_scores_a_study_lists_progress_and_cancels(staff_client, tiny_checkpoint, monkeypatch,
                                                            django_capture_on_commit_callbacks):
    study = make_study()
    sent = []
    monkeypatch.setattr(score_chunk, "apply_async", lambda args, **kw: sent.append(args[0]))
    add_url = reverse("admin:evaluator_modelrun_add")
    assert "Score a study" in staff_client.get(add_url).content.decode()

    with django_capture_on_commit_callbacks(execute=True):
        response = staff_client.post(add_url, {
            "study": study.pk, "source": "checkpoint", "checkpoint": str(tiny_checkpoint), "conditions": ["0", "1"],
            "fewshot_methods": ["linear-probe"], "templates": "a photo of a {}.", "name": "", "device": "cpu",
        })
    assert response.status_code == 302, response.content.decode()[:2000]
    run = ModelRun.objects.get(study=study)
    assert (run.condition_shots, run.fewshot_methods, run.device_request) == ([0, 1], ["linear-probe"], "cpu")
    assert len(sent) == run.chunks.count()

    changelist = staff_client.get(reverse("admin:evaluator_modelrun_changelist")).content.decode()
    assert run.name in changelist and "0/24" in changelist
    staff_client.post(reverse("admin:evaluator_modelrun_changelist"),
                      {"action": "cancel_runs", "_selected_action": [run.pk]})
    assert ModelRun.objects.get(pk=run.pk).status == ModelRun.Status.CANCELLED
    assert staff_client.get(reverse("admin:evaluator_modelrun_change", args=[run.pk])).status_code == 200


def test_the_admin_form_explains_a_house_model_that_is_not_trained_yet(staff_client, settings, tmp_path):
    settings.DEMO_DATA = str(tmp_path / "no-data")  # no training data, no cached house model
    study = make_study()
    response = staff_client.post(reverse("admin:evaluator_modelrun_add"), {
        "study": study.pk, "source": "house", "conditions": ["0"], "device": "auto",
    })
    assert response.status_code == 200
    assert "house model is not trained yet" in response.content.decode()
    assert not ModelRun.objects.exists()


def test_the_admin_answers_a_concurrent_duplicate_run_with_the_run_exists_message(staff_client, tiny_checkpoint,
                                                                                 monkeypatch):
    study = make_study()
    create_run(study, tiny_checkpoint, name="same name")
    existing_run_lookup_misses_once(monkeypatch)
    response = staff_client.post(reverse("admin:evaluator_modelrun_add"), {
        "study": study.pk, "source": "checkpoint", "checkpoint": str(tiny_checkpoint), "conditions": ["0"],
        "fewshot_methods": ["linear-probe"], "name": "same name", "device": "cpu",
    })
    assert response.status_code == 200
    assert "study already has a run named &#x27;same name&#x27;" in response.content.decode()



@pytest.mark.django_db(transaction=True)  # the training is sent when its request commits
def test_scoring_with_a_house_model_not_trained_yet_asks_a_worker_to_train_it_first(staff_client, settings, tmp_path,
                                                                                   monkeypatch):
    from evaluator.models import HouseTraining
    from tests.evaluator.helpers import write_demo_data

    settings.DEMO_DATA = str(tmp_path / "data")
    write_demo_data(tmp_path / "data")
    monkeypatch.setattr("evaluator.services.queue.task_send", lambda **kw: None)
    study = make_study()

    response = staff_client.post(reverse("admin:evaluator_modelrun_add"), {
        "study": study.pk, "source": "house", "conditions": ["0"], "device": "auto"}, follow=True)

    assert "a worker trains it" in response.content.decode()
    training = HouseTraining.objects.get()
    assert [r["study"] for r in training.then_score] == [study.pk] and not ModelRun.objects.exists()
    assert str(training.code) in response.content.decode()  # the trainings list
