"""Creating runs (names, templates, model choice), the task wiring, trials for reports, the command, the UI."""

import io
import json

import pytest
import torch
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.urls import reverse

import clipmodel
from clipmodel.fewshot import DEFAULT_C, DEFAULT_PRIOR_LAMBDA
from evaluator.celery_app import app
from evaluator.errors import ScoringSetupError
from evaluator.models import ModelPrediction, ModelRun, ScoringChunk
from evaluator.selectors import model_trials
from evaluator.services import (
    ModelSpec,
    RunExists,
    default_templates,
    model_run_default_name,
    model_run_score_chunk,
    model_spec_resolve,
    study_benchmark,
)
from evaluator.tasks import score_chunk
from studyapp.models import ClassLabel, Dataset, StudyItem
from studyapp.services.images import image_path
from tests.evaluator.helpers import assert_scored_exactly_once, create_run, score_all
from tests.factories import make_dataset, make_study

pytestmark = pytest.mark.django_db


def test_a_house_model_run_is_named_as_the_house_model_and_never_as_clip(tiny_house_checkpoint):
    spec = model_spec_resolve(checkpoint=str(tiny_house_checkpoint))

    assert spec.is_house_model
    name = model_run_default_name(spec=spec)
    assert name.startswith(f"house model ({clipmodel.HOUSE_MODEL_NAME}, sha256-")
    assert "CLIP" not in name
    run = create_run(make_study(), tiny_house_checkpoint)
    assert run.is_house_model and run.name == name
    with pytest.raises(ScoringSetupError, match="only OpenAI's CLIP"):
        create_run(make_study(), tiny_house_checkpoint, name="CLIP ViT-B/32")
    with pytest.raises(ScoringSetupError, match="must start with 'house model'"):
        create_run(make_study(), tiny_house_checkpoint, name="our model")


def test_only_openai_weights_are_called_clip():
    assert model_run_default_name(spec=ModelSpec(model_name="ViT-B-32", pretrained="openai")) == "CLIP ViT-B/32"
    assert model_run_default_name(spec=ModelSpec(model_name="RN50", pretrained="openai")) == "CLIP RN50"
    laion = model_run_default_name(spec=ModelSpec(model_name="ViT-B-32", pretrained="laion2b_s34b_b79k"))
    assert laion == "OpenCLIP ViT-B-32 (laion2b_s34b_b79k)"


def test_a_plain_checkpoint_run_names_its_architecture_file_and_hash(tiny_checkpoint):
    name = model_run_default_name(spec=model_spec_resolve(checkpoint=str(tiny_checkpoint)))
    assert name.startswith("tiny-test (checkpoint tiny.pt, sha256-")


def test_model_choices_that_cannot_be_one_reproducible_model_are_refused(tmp_path):
    with pytest.raises(ScoringSetupError, match="pretrained tag"):
        model_spec_resolve(model_name="ViT-B-32")  # random weights would differ in every worker
    with pytest.raises(ScoringSetupError, match="not found"):
        model_spec_resolve(checkpoint=str(tmp_path / "missing.pt"))
    with pytest.raises(ScoringSetupError, match="either"):
        model_spec_resolve(model_name="ViT-B-32", pretrained="openai", checkpoint=str(tmp_path / "x.pt"))


PETS_BREEDS = [
    "Abyssinian", "American Bulldog", "American Pit Bull Terrier", "Basset Hound", "Beagle", "Bengal", "Birman",
    "Bombay", "Boxer", "British Shorthair", "Chihuahua", "Egyptian Mau", "English Cocker Spaniel", "English Setter",
    "German Shorthaired", "Great Pyrenees", "Havanese", "Japanese Chin", "Keeshond", "Leonberger", "Maine Coon",
    "Miniature Pinscher", "Newfoundland", "Persian", "Pomeranian", "Pug", "Ragdoll", "Russian Blue", "Saint Bernard",
    "Samoyed", "Scottish Terrier", "Shiba Inu", "Siamese", "Sphynx", "Staffordshire Bull Terrier", "Wheaten Terrier",
    "Yorkshire Terrier",
]


def test_pets_studies_get_the_clip_paper_pets_prompt_and_prompt_names_in_class_index_order(tiny_checkpoint):
    dataset = make_dataset(name="any name", class_names=PETS_BREEDS, train_per_class=2, test_per_class=1)
    # Prompt names as an import sets them for Pets (CLIP's), in an order unlike the class order.
    for label in dataset.classes.all():
        ClassLabel.objects.filter(pk=label.pk).update(prompt_name=f"breed {36 - label.index}")
    study = make_study(dataset=dataset)

    assert default_templates(study=study) == ("a photo of a {}, a type of pet.",)
    run = create_run(study, tiny_checkpoint, templates=None, conditions=[0])
    assert run.templates == ["a photo of a {}, a type of pet."]
    assert run.prompts == [[f"a photo of a breed {36 - i}, a type of pet."] for i in range(37)]
    score_all(run)  # scored with exactly those prompts, column i = class index i
    clip = clipmodel.load_clip(checkpoint=tiny_checkpoint)
    weights = clipmodel.prompt_weights(clip=clip, prompts=run.prompts)
    prediction = ModelPrediction.objects.filter(run=run).select_related("item").first()
    features = clipmodel.encode_images(clip=clip, images=[image_path(relative_path=prediction.item.image)])
    expected = clipmodel.zero_shot_probs(image_features=features, text_weights=weights, logit_scale=clip.logit_scale)
    assert torch.allclose(torch.tensor(prediction.probs), expected[0], atol=1e-5)


def test_a_study_of_a_subset_of_a_benchmarks_classes_gets_the_generic_templates(tiny_checkpoint):
    study = make_study(dataset=make_dataset(class_names=["Abyssinian", "Beagle", "Bengal"]))
    assert default_templates(study=study) == clipmodel.templates_for(None)
    assert study_benchmark(study=study) is None


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


def test_only_the_chosen_conditions_are_scored(tiny_checkpoint):
    study = make_study()
    run = create_run(study, tiny_checkpoint, conditions=[0, 2])
    score_all(run)
    assert run.condition_shots == [0, 2]
    assert set(ModelPrediction.objects.filter(run=run).values_list("condition__shots", flat=True)) == {0, 2}
    assert_scored_exactly_once(run)
    with pytest.raises(ScoringSetupError, match="conditions must be among"):
        create_run(make_study(shots=(0,)), tiny_checkpoint, conditions=[1])


def test_a_draft_study_cannot_be_scored(tiny_checkpoint):
    with pytest.raises(ScoringSetupError, match="open the study"):
        create_run(make_study(open_it=False), tiny_checkpoint)


def test_a_second_run_with_the_same_name_is_refused_so_that_a_rerun_resumes_instead(tiny_checkpoint):
    study = make_study()
    run = create_run(study, tiny_checkpoint)
    with pytest.raises(RunExists) as exc:
        create_run(study, tiny_checkpoint)
    assert exc.value.run == run


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


def test_model_trials_gives_one_row_per_answer_in_the_shared_trial_schema(tiny_checkpoint):
    study = make_study()
    broken = StudyItem.objects.filter(study=study).first().item
    from studyapp.services.images import image_path

    image_path(relative_path=broken.image).write_bytes(b"garbage")
    run = create_run(study, tiny_checkpoint)
    score_all(run)
    unfinished = create_run(study, tiny_checkpoint, name="unfinished")

    rows = model_trials(study=study)

    assert len(rows) == run.items_total - 5  # the corrupt item has no answer in any condition or method
    # One subject in zero-shot, one per few-shot method in the one- and two-shot conditions.
    probe = f"{run.name} · linear probe (paper, C={DEFAULT_C:g})"
    prior = f"{run.name} · zero-shot prior (λ={DEFAULT_PRIOR_LAMBDA:g})"
    assert {(row["subject"], row["condition"]) for row in rows} == {
        (run.name, "zero-shot"), (probe, "one-shot"), (probe, "two-shot"), (prior, "one-shot"), (prior, "two-shot")}
    assert unfinished.name not in {row["subject"] for row in rows}
    assert set(rows[0]) == {"subject", "subject_kind", "condition", "item", "target", "response", "rt_ms",
                            "p_target", "p_response"}
    by_key = {(r["subject"], r["condition"], r["item"]): r for r in rows}
    prediction = ModelPrediction.objects.filter(run=run, condition__shots=1, method="linear-probe",
                                                predicted__isnull=False).select_related("item__label", "predicted").first()
    row = by_key[(probe, "one-shot", str(prediction.item.code))]
    assert row == {
        "subject": probe, "subject_kind": "model", "condition": "one-shot", "item": str(prediction.item.code),
        "target": prediction.item.label.name, "response": prediction.predicted.name, "rt_ms": None,
        "p_target": prediction.p_target, "p_response": prediction.p_predicted,
    }
    assert {r["condition"] for r in rows} == {"zero-shot", "one-shot", "two-shot"}


def test_the_trials_pass_the_report_schema_validation(tiny_checkpoint):
    import pandas as pd

    from evaluator.report.trials import validate_trials

    study = make_study()
    score_all(create_run(study, tiny_checkpoint))
    validated = validate_trials(pd.DataFrame(model_trials(study=study)))
    assert set(validated["subject_kind"]) == {"model"}


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
    import evaluator.services as services

    study = make_study()
    vanishing = tmp_path / "vanishing.pt"
    vanishing.write_bytes(tiny_checkpoint.read_bytes())
    real_send = services._send

    def send_after_losing_the_checkpoint(*, chunk_ids):
        vanishing.unlink(missing_ok=True)  # gone between creating the run and a worker loading it
        real_send(chunk_ids=chunk_ids)

    monkeypatch.setattr(services, "_send", send_after_losing_the_checkpoint)
    with pytest.raises(CommandError, match="failed: ModelUnavailable"):
        call_command("score_study", str(study.code), "--checkpoint", str(vanishing), stdout=io.StringIO(),
                     stderr=io.StringIO())
    assert ModelRun.objects.get(study=study).status == ModelRun.Status.FAILED


@pytest.fixture
def staff_client(client):
    user = get_user_model().objects.create_user("staff", password="pw-for-tests-only", is_staff=True,
                                                is_superuser=True)
    client.force_login(user)
    return client


def test_run_progress_json_is_for_staff_only(client, tiny_checkpoint):
    run = create_run(make_study(), tiny_checkpoint)
    url = reverse("evaluator:run_progress_json", args=[run.code])
    assert client.get(url).status_code == 403
    user = get_user_model().objects.create_user("participant-ish", password="pw-for-tests-only")
    client.force_login(user)
    assert client.get(url).status_code == 403


def test_run_progress_json_and_page_show_the_progress_to_staff(staff_client, tiny_checkpoint):
    run = create_run(make_study(), tiny_checkpoint, chunk_size=4)
    model_run_score_chunk(chunk_id=run.chunks.order_by("index").first().pk)

    data = json.loads(staff_client.get(reverse("evaluator:run_progress_json", args=[run.code])).content)

    assert (data["status"], data["items_done"], data["items_total"]) == ("running", 4 * 5, 12 * 5)
    assert {"rate_items_per_s", "eta_s", "items_failed", "percent"} <= set(data)
    page = staff_client.get(reverse("evaluator:run_progress", args=[run.code]))
    assert page.status_code == 200 and run.name in page.content.decode()


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


def test_dataset_format_alone_selects_the_pets_prompt(tiny_checkpoint):
    dataset = make_dataset(name="my cats and dogs")
    Dataset.objects.filter(pk=dataset.pk).update(source_format=Dataset.Format.OXFORD_PETS)
    dataset.refresh_from_db()
    assert default_templates(study=make_study(dataset=dataset)) == ("a photo of a {}, a type of pet.",)


@pytest.mark.django_db(transaction=True)
def test_score_study_fails_fast_when_redis_is_unreachable_and_leaves_the_run_pending_for_the_sweepers(tiny_checkpoint):
    from tests.evaluator.conftest import broker
    from tests.processes import free_port

    study = make_study()
    with broker(f"redis://127.0.0.1:{free_port()}/0"), pytest.raises(CommandError, match="could not queue"):
        call_command("score_study", str(study.code), "--checkpoint", str(tiny_checkpoint), stdout=io.StringIO(),
                     stderr=io.StringIO())
    run = ModelRun.objects.get(study=study)
    assert run.status == ModelRun.Status.PENDING and run.chunks.filter(status="pending").count() == 1


def _lookup_missing_the_first_time(monkeypatch):
    """As when two requests create the same run at once: the second looked before the first had committed."""
    import evaluator.services as services

    real, calls = services._existing_run, []

    def racing(*, study, name):
        calls.append(name)
        return None if len(calls) == 1 else real(study=study, name=name)

    monkeypatch.setattr(services, "_existing_run", racing)


def test_two_runs_created_with_the_same_name_at_once_give_run_exists_and_not_a_database_error(tiny_checkpoint,
                                                                                             monkeypatch):
    study = make_study()
    first = create_run(study, tiny_checkpoint)
    _lookup_missing_the_first_time(monkeypatch)
    with pytest.raises(RunExists) as exc:
        create_run(study, tiny_checkpoint)
    assert exc.value.run == first and ModelRun.objects.filter(study=study).count() == 1
    assert first.chunks.count() == ScoringChunk.objects.count()  # nothing of the refused run was kept


def test_the_admin_answers_a_concurrent_duplicate_run_with_the_run_exists_message(staff_client, tiny_checkpoint,
                                                                                 monkeypatch):
    study = make_study()
    create_run(study, tiny_checkpoint, name="same name")
    _lookup_missing_the_first_time(monkeypatch)
    response = staff_client.post(reverse("admin:evaluator_modelrun_add"), {
        "study": study.pk, "source": "checkpoint", "checkpoint": str(tiny_checkpoint), "conditions": ["0"],
        "fewshot_methods": ["linear-probe"], "name": "same name", "device": "cpu",
    })
    assert response.status_code == 200
    assert "study already has a run named &#x27;same name&#x27;" in response.content.decode()
