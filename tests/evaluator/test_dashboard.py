"""The study dashboard: counts, model runs, the live precision from the report's own bootstrap, its cache, staff only,
and a page whose number of queries does not grow with participants, answers or items."""

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from evaluator import dashboard_precision
from evaluator.dashboard import study_dashboard
from evaluator.dashboard_precision import live_precision_rows, study_live_precision
from evaluator.models import ModelPrediction, ModelRun
from evaluator.report import ReportOptions, compute_report, prepare_trials
from evaluator.study_reports import study_trials
from studyapp.models import Assignment, Participant, Response, Study
from tests.factories import make_dataset, make_study

pytestmark = pytest.mark.django_db


def answered_study(*, n_people: int, n_classes: int = 3, per_class: int = 4, k: int | None = None,
                   simulated: bool = False, shots=(0, 1), seed: int = 0) -> Study:
    """n_people answer every test item in every condition: right with probability 0.7, else another class or idk."""
    study = make_study(dataset=make_dataset(n_classes=n_classes, train_per_class=2, test_per_class=per_class),
                       shots=shots, k_per_item=k or n_people, items_per_participant=n_classes * per_class)
    rng = np.random.default_rng(seed)
    labels = list(study.dataset.classes.order_by("index"))
    items = [si.item for si in study.study_items.select_related("item__label").order_by("item_id")]
    expires = timezone.now() + timedelta(minutes=30)
    for j in range(n_people):
        person = Participant.objects.create(study=study, consent="given", simulated=simulated,
                                            completed_at=timezone.now())
        for condition in study.conditions.all():
            assignments = Assignment.objects.bulk_create([
                Assignment(participant=person, condition=condition, item=item, position=i, slot=j,
                           status=Assignment.Status.ANSWERED, expires_at=expires) for i, item in enumerate(items)])
            responses = []
            for assignment, item in zip(assignments, items, strict=True):
                draw = rng.random()
                choice = item.label if draw < 0.7 else None if draw < 0.8 else labels[(item.label.index + 1) % n_classes]
                responses.append(Response(assignment=assignment, choice=choice, is_idk=choice is None,
                                          rt_client_ms=900))
            Response.objects.bulk_create(responses)
    return study


def a_finished_run(study: Study, name: str = "house model (test)") -> ModelRun:
    """A model that is right on every item with p = 0.8 (probabilities in class-index order)."""
    n = study.dataset.classes.count()
    shots = list(study.conditions.values_list("shots", flat=True))
    run = ModelRun.objects.create(study=study, name=name, status=ModelRun.Status.DONE, condition_shots=shots,
                                  fewshot_methods=["prototype"], fingerprint="house-vit-64@abc",
                                  items_total=study.study_items.count() * len(shots))
    for condition in study.conditions.all():
        for study_item in study.study_items.select_related("item__label"):
            probs = [0.2 / (n - 1)] * n
            probs[study_item.item.label.index] = 0.8
            ModelPrediction.objects.create(run=run, condition=condition, item=study_item.item,
                                           method="" if condition.shots == 0 else "prototype",
                                           predicted=study_item.item.label, probs=probs, p_target=0.8,
                                           p_predicted=0.8)
    return run


@pytest.fixture(autouse=True)
def _empty_cache():
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def staff(client):
    client.force_login(get_user_model().objects.create_superuser("boss", "boss@example.org", "pw-for-the-test"))
    return client


# ------------------------------------------------------------------------------------------------ counts


def test_the_dashboard_counts_participants_answers_against_k_times_items_and_reservations():
    study = answered_study(n_people=3, k=5)
    people = list(Participant.objects.filter(study=study).order_by("pk"))
    Participant.objects.filter(pk=people[0].pk).update(attention_failed=True)
    Participant.objects.create(study=study, consent="declined")
    Participant.objects.create(study=study, consent="given", simulated=True)
    Participant.objects.filter(pk=people[1].pk).update(withdrawn_at=timezone.now())
    item = study.study_items.first().item
    Assignment.objects.create(participant=Participant.objects.filter(simulated=True).get(),
                              condition=study.conditions.get(shots=0), item=item, position=0, slot=3,
                              expires_at=timezone.now() + timedelta(minutes=5))

    dash = study_dashboard(study=study)

    assert dash["people"] == {"joined": 5, "started": 4, "declined": 1, "completed": 3, "simulated": 1,
                              "attention_failed": 1, "counted": 2, "withdrawn": 1}
    zero, one = dash["conditions"]
    assert (zero["condition"], zero["answers"], zero["counted"], zero["wanted"]) == ("zero-shot", 36, 24, 60)
    assert (zero["items_answered"], zero["items_full"], zero["live_reservations"]) == (12, 0, 1)
    assert (one["answers"], one["live_reservations"], one["percent"]) == (36, 0, 60.0)
    assert dash["capacity"] == 5


def test_items_reach_k_when_they_have_k_answers():
    study = answered_study(n_people=2, k=2, shots=(0,))
    (row,) = study_dashboard(study=study)["conditions"]
    assert row["items_full"] == row["items_answered"] == 12 and row["percent"] == 100.0


def test_the_dashboard_lists_model_runs_with_their_progress(staff):
    study = answered_study(n_people=1, shots=(0,))
    run = a_finished_run(study)
    ModelRun.objects.create(study=study, name="queued run", items_total=12)
    page = staff.get(reverse("evaluator:study_dashboard", args=[study.code])).content.decode()
    assert "house model (test)" in page and "house-vit-64@abc" in page and "12 / 12 (100.0 %)" in page
    assert "queued run" in page and "0 / 12 (0.0 %)" in page
    assert reverse("evaluator:run_progress", args=[run.code]) in page


# ------------------------------------------------------------------------------------------ live precision


def test_the_live_precision_is_the_reports_own_ci_for_every_table2_cell():
    study = answered_study(n_people=6, simulated=True, shots=(0, 1), seed=1)
    a_finished_run(study)
    result = study_live_precision(study=study, target_halfwidth=3.0, include_simulated=True)
    report = compute_report(prepare_trials(study_trials(study=study), include_simulated=True),
                            options=ReportOptions(bootstrap=result.n_resamples, static=False, include_simulated=True,
                                                  beyond_paper=False))
    ci = report.tables["table2_ci"].set_index(["subject_kind", "subject", "condition", "metric"])
    table = result.table
    assert len(table) == 2 * 4 * 2  # humans and the model's row, in two conditions, four metrics
    for row in table.itertuples():
        expected = ci.loc[(row.subject_kind, row.subject, row.condition, row.metric)]
        assert (row.ci_low, row.ci_high) == pytest.approx((expected["ci_low"], expected["ci_high"]))
        assert row.halfwidth == pytest.approx((expected["ci_high"] - expected["ci_low"]) / 2)
    humans = table[table["subject_kind"] == "human"]
    assert (humans["n_participants"] == 6).all() and (humans["capacity"] == 6).all()
    rows = live_precision_rows(result)
    assert {r["metric"] for r in rows} == {"Accuracy", "Majority vote, full dataset", "Accuracy on guesses",
                                           "Majority vote on guesses"}
    assert all(r["need"] for r in rows)


def test_simulated_participants_are_left_out_unless_asked_as_in_the_report():
    study = answered_study(n_people=4, simulated=True, shots=(0,))
    result = study_live_precision(study=study)
    assert result.table is None and "simulated or attention-failed participants are left out" in result.message
    assert study_live_precision(study=study, include_simulated=True).table is not None


def test_an_empty_study_says_there_is_nothing_yet():
    study = make_study(dataset=make_dataset(n_classes=3))
    assert study_live_precision(study=study).message == "No answers and no finished model run yet."


def test_the_live_precision_is_served_from_the_cache_until_an_answer_arrives_after_the_brief_window(settings):
    settings.DASHBOARD_LIVE_CACHE_S = 3600
    study = answered_study(n_people=4, shots=(0,))
    first = study_live_precision(study=study)
    with CaptureQueriesContext(connection) as captured:
        again = study_live_precision(study=study)
    assert again.cached and again.computed_at == first.computed_at
    assert len(captured) == 2  # only what says whether it is out of date: the answers and the finished runs
    late = Participant.objects.create(study=study, consent="given")
    condition = study.conditions.get()
    item = study.study_items.first().item
    assignment = Assignment.objects.create(participant=late, condition=condition, item=item, position=0, slot=9,
                                           status=Assignment.Status.ANSWERED, expires_at=timezone.now())
    Response.objects.create(assignment=assignment, choice=item.label)
    within_window = study_live_precision(study=study)
    assert within_window.cached and within_window.n_answers == first.n_answers  # at most the window old
    settings.DASHBOARD_LIVE_CACHE_S = 0
    fresh = study_live_precision(study=study)
    assert not fresh.cached and fresh.n_answers == first.n_answers + 1
    assert study_live_precision(study=study).cached  # nothing new since


def test_while_one_request_computes_the_others_get_the_previous_result(settings):
    settings.DASHBOARD_LIVE_CACHE_S = 0
    study = answered_study(n_people=4, shots=(0,))
    first = study_live_precision(study=study)
    ModelRun.objects.create(study=study, name="new", status=ModelRun.Status.DONE)  # out of date now
    key = dashboard_precision.LIVE_CACHE_KEY.format(study=study.code, target="3", simulated=0, attention=0)
    cache.add(f"{key}:lock", 1)  # another request is computing it
    served = study_live_precision(study=study)
    assert served.cached and served.computed_at == first.computed_at
    cache.delete(f"{key}:lock")
    assert not study_live_precision(study=study).cached


def test_the_precision_fragment_shows_the_stopping_rule_for_the_target_set(staff):
    study = answered_study(n_people=5, shots=(0,))
    page = staff.get(reverse("evaluator:study_precision", args=[study.code]) + "?target=20").content.decode()
    assert "target ±20" in page and "human cells have reached ±20 points" in page
    assert "Majority vote on guesses" in page
    strict = staff.get(reverse("evaluator:study_precision", args=[study.code]) + "?target=0.5").content.decode()
    assert "0 of 4 human cells have reached ±0.5 points" in strict


# ----------------------------------------------------------------------------------------------- the page


def test_the_dashboard_page_links_everything_and_loads_the_precision_by_script(staff):
    study = answered_study(n_people=2, shots=(0,))
    page = staff.get(reverse("evaluator:study_dashboard", args=[study.code]) + "?target=2").content.decode()
    assert 'data-url="/studies/' in page and "precision?target=2" in page
    for url in (reverse("evaluator:study_protocol", args=[study.code]), reverse("evaluator:study_plans",
                                                                               args=[study.code]),
                reverse("admin:studyapp_study_report", args=[study.pk]), reverse("studyapp:join", args=[study.code])):
        assert url in page
    assert f"sha256:{study.protocol.sha256}" in page
    assert "evaluator/dashboard.js" in page and "<script>" not in page  # no inline script (CSP)


def test_the_study_list_and_the_study_page_link_the_dashboard_and_the_admin_is_named_after_the_project(staff):
    study = answered_study(n_people=1, shots=(0,))
    listing = staff.get(reverse("admin:studyapp_study_changelist")).content.decode()
    assert reverse("evaluator:study_dashboard", args=[study.code]) in listing
    assert "12 / 0 / 0 of 12" in listing  # answers per condition of k x items
    detail = staff.get(reverse("admin:studyapp_study_change", args=[study.pk])).content.decode()
    for name in ("study_dashboard", "study_plans", "study_protocol"):
        assert reverse(f"evaluator:{name}", args=[study.code]) in detail
    index = staff.get(reverse("admin:index")).content.decode()
    assert "Human vs CLIP" in index and "Django administration" not in index


@pytest.mark.parametrize("name", ["study_dashboard", "study_precision", "study_protocol", "study_plans"])
def test_the_pages_are_for_staff_who_may_view_studies(client, name):
    study = answered_study(n_people=1, shots=(0,))
    url = reverse(f"evaluator:{name}", args=[study.code])
    assert client.get(url).status_code == 302  # to the login page
    user = get_user_model().objects.create_user("helper", password="pw-for-the-test", is_staff=True)
    client.force_login(user)
    assert client.get(url).status_code == 403
    client.force_login(get_user_model().objects.create_superuser("boss", "b@example.org", "pw-for-the-test"))
    assert client.get(url).status_code == 200
    assert client.get(url.replace(str(study.code), "00000000-0000-0000-0000-000000000000")).status_code == 404


def dashboard_queries(client, study) -> int:
    url = reverse("evaluator:study_dashboard", args=[study.code])
    client.get(url)  # the session and permission caches warm up
    with CaptureQueriesContext(connection) as captured:
        assert client.get(url).status_code == 200
    return len(captured)


def test_the_dashboard_costs_the_same_queries_for_2_participants_as_for_8_and_a_fixed_number_per_run(staff):
    small = answered_study(n_people=2, n_classes=3, per_class=2, shots=(0,))
    large = answered_study(n_people=8, n_classes=6, per_class=4, shots=(0,))
    a_finished_run(small), a_finished_run(large)
    assert dashboard_queries(staff, small) == dashboard_queries(staff, large)
    one_run = dashboard_queries(staff, large)
    a_finished_run(large, name="second run")
    # model_run_progress's own reads: the run, its prediction counts, its chunks (and its rate once started)
    assert dashboard_queries(staff, large) - one_run == 3
    assert one_run <= 20, one_run


def test_loading_the_urls_does_not_load_the_report_stack_into_every_web_worker():
    """Participants' requests never need pandas or plotly; only the staff pages that do import them."""
    code = ("import django, sys; django.setup(); from django.urls import get_resolver; get_resolver().url_patterns; "
            "print(sorted(m for m in ('pandas', 'plotly', 'numpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[2], capture_output=True,
                         text=True, timeout=120, env={**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
