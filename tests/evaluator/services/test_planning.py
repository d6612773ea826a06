"""Planning before a study opens: the study's own design simulated (evaluator/services/planning.py), once per design,
in a Celery task or the command, resumable, and read for any target half-width or difference."""

import io

import pandas as pd
import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.urls import reverse
from django.utils import timezone

from evaluator.models import StudyPlan
from evaluator.planning_results import plan_summary, study_plan_table
from evaluator.planning_selectors import study_plan_progress
from evaluator.report import ReportInputError, plan_halfwidths, plan_study
from evaluator.services import planning as planning_service
from evaluator.services.planning import (
    PlanUnavailable,
    design_from_json,
    design_to_json,
    parse_per_condition,
    plan_curve,
    study_design,
    study_plan_compute,
    study_plan_request,
    study_plan_send,
)
from studyapp.models import Study
from tests.evaluator.helpers import broker, flush_redis
from tests.factories import make_dataset, make_study
from tests.processes import wait_for

pytestmark = pytest.mark.django_db
QUICK = {"n_studies": 2, "n_resamples": 40}  # small simulations: these tests check the plumbing, not the statistics


def a_draft(**fields) -> Study:
    fields.setdefault("k_per_item", 3)
    fields.setdefault("items_per_participant", 4)
    return make_study(dataset=make_dataset(n_classes=3, train_per_class=2, test_per_class=4), open_it=False, **fields)


@pytest.fixture
def staff(client):
    client.force_login(get_user_model().objects.create_superuser("boss", "boss@example.org", "pw-for-the-test"))
    return client


# ----------------------------------------------------------------------------------------------- design


def test_the_design_is_the_studys_own_with_the_papers_expectations_by_default():
    study = a_draft(design=Study.Design.BETWEEN, test_items_per_class=3)
    design = study_design(study=study)
    assert (design.n_classes, design.items_per_class, design.k, design.trials_per_person, design.design) == \
        (3, 3, 3, 4, "between")
    assert [(c.condition, c.accuracy, c.model_accuracy) for c in design.conditions] == [
        ("zero-shot", 53.7, 93.5), ("one-shot", 75.7, 93.5), ("two-shot", 75.7, 93.5)]
    assert design.conditions[0].idk_rate == pytest.approx(100 * (1 - 53.7 / 69.7), abs=0.01)
    assert design.capacity == 7  # ceil(9 items x k 3 / 4 trials per person)


def test_an_expected_accuracy_keeps_the_papers_share_of_idk_among_the_errors_and_no_idk_means_none():
    design = study_design(study=a_draft(), accuracy={"zero-shot": 76.85}, model_accuracy={"two-shot": 80})
    zero, _, two = design.conditions
    assert zero.accuracy == 76.85 and zero.idk_rate == pytest.approx(22.96 / 2, abs=0.02)  # half the errors, half the idk
    assert two.model_accuracy == 80
    assert all(c.idk_rate == 0 for c in study_design(study=a_draft(allow_idk=False)).conditions)


def test_expected_values_are_read_in_order_or_by_name_and_mistakes_are_refused():
    names = ["zero-shot", "one-shot"]
    assert parse_per_condition("60, 70", names, what="x") == {"zero-shot": 60, "one-shot": 70}
    assert parse_per_condition("one-shot=72", names, what="x") == {"one-shot": 72}
    assert parse_per_condition("", names, what="x") == {}
    with pytest.raises(ReportInputError, match="one value per condition"):
        parse_per_condition("60", names, what="x")
    with pytest.raises(ReportInputError, match="no condition two-shot"):
        parse_per_condition("two-shot=60", names, what="x")
    with pytest.raises(ReportInputError, match="not a list of numbers"):
        parse_per_condition("sixty,70", names, what="x")
    with pytest.raises(ReportInputError, match="below the error rate"):
        study_design(study=a_draft(), accuracy={"zero-shot": 80}, idk_rate={"zero-shot": 30})


def test_a_design_survives_its_json_round_trip():
    design = study_design(study=a_draft(), accuracy={"one-shot": 66})
    assert design_from_json(design_to_json(design)) == design


# ----------------------------------------------------------------------------------------------- compute


def test_simulating_one_size_at_a_time_gives_exactly_the_whole_grid_of_plan_halfwidths():
    study = a_draft()
    design = study_design(study=study)
    plan = study_plan_request(study=study, design=design, send=False, **QUICK)
    assert plan.grid == design.default_grid() and plan.status == StudyPlan.Status.PENDING
    steps = []
    assert study_plan_compute(plan_id=plan.pk, task_id="t1", on_step=lambda d, t: steps.append((d, t))) == "done"
    plan.refresh_from_db()
    assert plan.status == StudyPlan.Status.DONE and plan.steps_done == len(plan.grid)
    assert steps == [(i + 1, len(plan.grid)) for i in range(len(plan.grid))]
    whole = plan_halfwidths(design, n_studies=2, n_resamples=40, seed=0)
    key = ["condition", "n_participants", "subject_kind", "metric"]
    stored = plan_curve(plan).sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(stored, whole.sort_values(key).reset_index(drop=True), check_dtype=False)
    pd.testing.assert_frame_equal(study_plan_table(plan=plan, target_halfwidth=4.0, difference=15),
                                  plan_study(design, target_halfwidth=4.0, difference=15, halfwidths=whole))


def test_the_same_design_is_simulated_once_and_another_expectation_is_another_plan():
    study = a_draft()
    design = study_design(study=study)
    plan = study_plan_request(study=study, design=design, send=False, **QUICK)
    study_plan_compute(plan_id=plan.pk, task_id="t1")
    again = study_plan_request(study=study, design=design, send=False, **QUICK)
    assert again.pk == plan.pk and again.status == StudyPlan.Status.DONE
    other = study_plan_request(study=study, design=study_design(study=study, accuracy={"zero-shot": 60}), send=False,
                               **QUICK)
    assert other.pk != plan.pk and other.status == StudyPlan.Status.PENDING
    assert study_plan_request(study=study, design=design, send=False, n_studies=3, n_resamples=40).pk != plan.pk


def test_a_plan_held_by_a_live_worker_is_not_taken_and_one_whose_worker_died_resumes_where_it_stopped(monkeypatch):
    study = a_draft()
    plan = study_plan_request(study=study, design=study_design(study=study), send=False, **QUICK)
    first_size = plan_halfwidths(design_from_json(plan.design), participants=plan.grid[:1], **plan.simulation)
    StudyPlan.objects.filter(pk=plan.pk).update(status=StudyPlan.Status.RUNNING, task_id="dead", steps_done=1,
                                                curve_csv=first_size.to_csv(index=False), heartbeat_at=timezone.now())
    assert study_plan_compute(plan_id=plan.pk, task_id="t2") == "skipped"  # its heartbeat is fresh
    StudyPlan.objects.filter(pk=plan.pk).update(heartbeat_at=timezone.now() - timezone.timedelta(hours=1))
    simulated = []
    real = planning_service.plan_halfwidths

    def counting(design, *, participants, **kwargs):
        simulated.extend(participants)
        return real(design, participants=participants, **kwargs)

    monkeypatch.setattr(planning_service, "plan_halfwidths", counting)
    assert study_plan_compute(plan_id=plan.pk, task_id="t2") == "done"
    assert simulated == plan.grid[1:]  # the first size was kept
    plan.refresh_from_db()
    assert plan.task_id == "t2" and set(plan_curve(plan)["n_participants"]) == set(plan.grid)
    assert study_plan_compute(plan_id=plan.pk, task_id="t3") == "skipped"  # done: nothing to claim


def test_a_design_the_simulator_cannot_run_fails_the_plan_with_the_reason_and_a_new_request_retries_it(monkeypatch):
    study = a_draft()
    plan = study_plan_request(study=study, design=study_design(study=study), send=False, **QUICK)

    def refuse(*args, **kwargs):
        raise ReportInputError("the simulator needs at least 3 classes")

    monkeypatch.setattr(planning_service, "plan_halfwidths", refuse)
    assert study_plan_compute(plan_id=plan.pk, task_id="t1") == "failed"
    plan.refresh_from_db()
    assert plan.status == StudyPlan.Status.FAILED and "at least 3 classes" in plan.error
    assert study_plan_request(study=study, design=study_design(study=study), send=False, **QUICK).status == "pending"


@pytest.fixture
def redis(redis_url):
    flush_redis(redis_url)
    with broker(redis_url):
        yield redis_url


@pytest.mark.services
@pytest.mark.django_db(transaction=True)
def test_a_real_worker_takes_the_plan_sent_when_the_request_commits_and_a_duplicate_message_changes_nothing(
        redis, start_worker):
    study = a_draft()
    plan = study_plan_request(study=study, design=study_design(study=study), **QUICK)  # no transaction: sent now
    assert StudyPlan.objects.get(pk=plan.pk).queued_at is not None
    worker = start_worker("planner", redis)
    wait_for(lambda: StudyPlan.objects.get(pk=plan.pk).status in ("done", "failed"), timeout=120,
             what="the worker to finish the plan")
    plan.refresh_from_db()
    assert plan.status == StudyPlan.Status.DONE, plan.error + worker.output()[-3000:]
    assert plan.worker.startswith("planner@") and study_plan_progress(plan=plan)["percent"] == 100.0
    finished_at = plan.finished_at
    study_plan_send(plan_id=plan.pk)  # a duplicate or redelivered message
    wait_for(lambda: "evaluator.plan_study" in worker.output() and worker.output().count("succeeded") >= 2,
             timeout=60, what="the worker to take the second message")
    plan.refresh_from_db()
    assert plan.finished_at == finished_at and "'skipped'" in worker.output()


def test_the_summary_says_how_many_participants_reach_the_target_and_detect_the_difference():
    study = a_draft()
    plan = study_plan_request(study=study, design=study_design(study=study), send=False, **QUICK)
    study_plan_compute(plan_id=plan.pk, task_id="t1")
    plan.refresh_from_db()
    table = study_plan_table(plan=plan, target_halfwidth=30.0, difference=40)
    lines = plan_summary(table)
    assert lines[0].startswith("Every human cell reaches ±30 points with ")
    assert sum("80% power to detect a human - model accuracy difference of 40 points" in line for line in lines) == 3
    assert plan_summary(study_plan_table(plan=plan, target_halfwidth=0.2))[0].startswith("Not reachable at ±0.2")


# ----------------------------------------------------------------------------------------------- command


def test_the_command_simulates_the_studys_design_stores_it_and_reuses_it(tmp_path):
    study = a_draft()
    out, err = io.StringIO(), io.StringIO()
    call_command("plan_study", str(study.code), "--target-halfwidth", "25", "--expected-accuracy", "60,75,80",
                 "--difference", "30", "--studies", "2", "--resamples", "40", "--csv", str(tmp_path / "plan.csv"),
                 stdout=out, stderr=err)
    text = out.getvalue()
    assert "zero-shot: expected accuracy 60%" in text and "two-shot: expected accuracy 80%" in text
    assert "Every human cell reaches ±25 points with" in text
    assert "80% power to detect a human - model accuracy difference of 30 points" in text
    assert "simulated 1/" in err.getvalue()
    table = pd.read_csv(tmp_path / "plan.csv")
    assert set(table["subject_kind"]) == {"human", "model", "difference"}
    again = io.StringIO()
    err2 = io.StringIO()
    call_command("plan_study", str(study.code), "--target-halfwidth", "10", "--expected-accuracy", "60,75,80",
                 "--studies", "2", "--resamples", "40", stdout=again, stderr=err2)
    assert "Reusing the stored simulation" in err2.getvalue() and StudyPlan.objects.count() == 1


def test_the_command_refuses_bad_input_with_a_clear_message():
    study = a_draft()
    with pytest.raises(CommandError, match="no study with code"):
        call_command("plan_study", "not-a-code", stdout=io.StringIO())
    with pytest.raises(CommandError, match="one value per condition"):
        call_command("plan_study", str(study.code), "--expected-accuracy", "60", stdout=io.StringIO())
    assert not StudyPlan.objects.exists()


# ----------------------------------------------------------------------------------------------- pages


def test_the_planning_page_queues_a_plan_shows_its_progress_then_its_result(staff, redis,
                                                                          django_capture_on_commit_callbacks):
    study = a_draft()
    page = staff.get(reverse("evaluator:study_plans", args=[study.code]))
    assert page.status_code == 200 and b"zero-shot: expected human accuracy" in page.content
    form = {"n_studies": 2, "n_resamples": 50, "accuracy:zero-shot": 60, "accuracy:one-shot": 75,
            "accuracy:two-shot": 75, "model:zero-shot": 90, "model:one-shot": 90, "model:two-shot": 90}
    with django_capture_on_commit_callbacks(execute=True):  # the test's transaction never commits
        response = staff.post(reverse("evaluator:study_plans", args=[study.code]), form)
    plan = StudyPlan.objects.get()
    assert response.status_code == 302 and response.url == reverse("evaluator:study_plan", args=[study.code, plan.code])
    waiting = staff.get(response.url).content.decode()
    assert "Queued for a worker on the scoring queue" in waiting and 'id="plan-progress"' in waiting
    assert [c["accuracy"] for c in plan.design["conditions"]] == [60, 75, 75]
    assert study_plan_compute(plan_id=plan.pk, task_id="as a worker would") == "done"
    progress = staff.get(reverse("evaluator:study_plan_progress", args=[study.code, plan.code])).json()
    assert progress["status"] == "done" and progress["steps_done"] == progress["steps_total"]
    result = staff.get(response.url + "?target=20&difference=25").content.decode()
    assert "Every human cell reaches ±20 points with" in result and "difference of 25 points" in result
    assert "model cells depend on the items only" in result and 'id="plan-progress"' not in result


@pytest.mark.django_db(transaction=True)  # the request's on_commit runs at once, as in production
def test_without_a_broker_the_plan_stays_pending_and_the_page_says_how_to_compute_it(staff):
    study = a_draft()
    form = {"n_studies": 2, "n_resamples": 50, "accuracy:zero-shot": 60, "accuracy:one-shot": 75,
            "accuracy:two-shot": 75, "model:zero-shot": 90, "model:one-shot": 90, "model:two-shot": 90}
    with broker("redis://127.0.0.1:1/0"):  # nothing listens there
        response = staff.post(reverse("evaluator:study_plans", args=[study.code]), form, follow=True)
    plan = StudyPlan.objects.get()
    assert plan.status == "pending" and plan.queued_at is None
    page = response.content.decode()
    assert "could not queue the planning task" in page.lower() and "manage.py plan_study" in page
    with pytest.raises(PlanUnavailable), broker("redis://127.0.0.1:1/0"):
        study_plan_send(plan_id=plan.pk)


def test_a_pending_plan_shows_its_progress_bar_and_polls(staff):
    study = a_draft()
    plan = study_plan_request(study=study, design=study_design(study=study), send=False, **QUICK)
    page = staff.get(reverse("evaluator:study_plan", args=[study.code, plan.code])).content.decode()
    assert 'id="plan-progress"' in page and "evaluator/dashboard.js" in page
    assert "Not queued yet" in page and f"manage.py plan_study {study.code}" in page


def test_the_planning_page_says_what_is_wrong_with_impossible_expectations(staff):
    study = a_draft()
    form = {"n_studies": 2, "n_resamples": 50, "accuracy:zero-shot": 80, "idk:zero-shot": 30, "accuracy:one-shot": 75,
            "accuracy:two-shot": 75, "model:zero-shot": 90, "model:one-shot": 90, "model:two-shot": 90}
    page = staff.post(reverse("evaluator:study_plans", args=[study.code]), form)
    assert page.status_code == 200 and b"below the error rate" in page.content and not StudyPlan.objects.exists()
