"""The Django side of the reports: humans and models in one trial table, commands, the admin page."""

import csv
import io
from datetime import timedelta

import pandas as pd
import pytest
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone

from evaluator.models import ModelPrediction, ModelRun
from evaluator.study_reports import study_trials
from studyapp.models import Assignment, Participant, Response
from tests.factories import make_dataset, make_study

pytestmark = pytest.mark.django_db


def answer(*, participant, condition, item, slot, choice=None, position=0):
    assignment = Assignment.objects.create(
        participant=participant, condition=condition, item=item, position=position, slot=slot,
        status=Assignment.Status.ANSWERED, expires_at=timezone.now() + timedelta(minutes=5),
    )
    Response.objects.create(assignment=assignment, choice=choice, is_idk=choice is None, rt_client_ms=1200)


@pytest.fixture
def scored_study():
    """Two humans and one model on 2 classes x 2 test items, zero-shot only (every value by hand)."""
    study = make_study(dataset=make_dataset(n_classes=2, train_per_class=1, test_per_class=2), shots=(0,), k_per_item=2)
    zero = study.conditions.get()
    items = [si.item for si in study.study_items.select_related("item__label").order_by("item__label__index", "item_id")]
    a, b = (Participant.objects.create(study=study, consent="given") for _ in range(2))
    labels = list(study.dataset.classes.order_by("index"))
    # Human a: right, right, idk, wrong. Human b: right, wrong, right, right.
    for i, (item, choice) in enumerate(zip(items, [labels[0], labels[0], None, labels[0]], strict=True)):
        answer(participant=a, condition=zero, item=item, slot=0, choice=choice, position=i)
    for i, (item, choice) in enumerate(zip(items, [labels[0], labels[1], labels[1], labels[1]], strict=True)):
        answer(participant=b, condition=zero, item=item, slot=1, choice=choice, position=i)
    run = ModelRun.objects.create(study=study, name="house model (test)", status=ModelRun.Status.DONE,
                                  condition_shots=[0], fingerprint="house-vit-64@abc")
    for item in items:  # the model is always right, with 0.9 on the true class (class-index order)
        probs = [0.9, 0.1] if item.label.index == 0 else [0.1, 0.9]
        ModelPrediction.objects.create(run=run, condition=zero, item=item, predicted=item.label, probs=probs,
                                       p_target=0.9, p_predicted=0.9)
    return study


def test_humans_and_models_share_one_trial_table(scored_study):
    trials = study_trials(study=scored_study)
    assert len(trials) == 12
    assert set(trials["subject_kind"]) == {"human", "model"}
    assert (trials.loc[trials.subject_kind == "model", "subject"] == "house model (test)").all()
    assert trials["response"].value_counts()["idk"] == 1
    # Items are named by opaque codes, never by filenames that could carry the label.
    assert not trials["item"].str.contains("Class").any()


def test_export_trials_writes_the_long_table(scored_study, tmp_path):
    call_command("export_trials", str(scored_study.code), "--out", str(tmp_path / "t.csv"), stdout=io.StringIO())
    rows = list(csv.DictReader((tmp_path / "t.csv").open()))
    assert len(rows) == 12
    assert list(rows[0])[:7] == ["subject", "subject_kind", "condition", "item", "target", "response", "rt_ms"]


def test_study_report_computes_table2_from_the_database(scored_study, tmp_path):
    call_command("study_report", str(scored_study.code), "--out", str(tmp_path / "r"), "--no-static",
                 "--bootstrap", "20", stdout=io.StringIO())
    table = pd.read_csv(tmp_path / "r" / "table2.csv").set_index("subject_kind")
    # Class A: a right, right; b right, wrong → 3/4. Class B: a idk, wrong; b right, right → 2/4.
    assert table.loc["human", "accuracy"] == pytest.approx(100 * (3 / 4 + 2 / 4) / 2)
    # Guesses: A 3/4; B 2/3 (a's idk dropped).
    assert table.loc["human", "accuracy_on_guesses"] == pytest.approx(100 * (3 / 4 + 2 / 3) / 2)
    # Majority: A1 unanimous right, A2 tie → A 1/2; B1 (idk vs B) tie, B2 (A vs B) tie → B 0.
    assert table.loc["human", "majority_vote_full"] == pytest.approx(100 * (1 / 2 + 0) / 2)
    # On guesses: B1 has the single guess B → right; A2 and B2 still ties → (1/2 + 1/2) / 2.
    assert table.loc["human", "majority_vote_on_guesses"] == pytest.approx(50.0)
    assert table.loc["model", "accuracy"] == pytest.approx(100.0)
    assert (tmp_path / "r" / "report.html").read_text().count("house model (test)") >= 1


def test_the_admin_shows_the_report_page_to_staff_only(scored_study, client, admin_user):
    url = reverse("admin:studyapp_study_report", args=[scored_study.pk])
    assert client.get(url).status_code == 302  # to the login page
    client.force_login(admin_user)
    response = client.get(url)
    assert response.status_code == 200
    assert b"Table 2" in response.content and b"house model (test)" in response.content


def test_the_report_header_names_the_benchmark_and_lists_every_runs_exact_prompts(tiny_checkpoint):
    from evaluator.study_reports import study_report_meta
    from tests.evaluator.helpers import create_run, score_all

    folders = ["AnnualCrop", "Forest", "HerbaceousVegetation", "Highway", "Industrial", "Pasture", "PermanentCrop",
               "Residential", "River", "SeaLake"]
    study = make_study(dataset=make_dataset(class_names=folders, train_per_class=2, test_per_class=1))
    run = create_run(study, tiny_checkpoint, templates=None, conditions=[0])
    score_all(run)
    other = make_study(dataset=make_dataset(n_classes=2, train_per_class=2, test_per_class=1))

    meta = study_report_meta(study=study)

    assert meta["benchmark"] == "eurosat" and "benchmark" not in study_report_meta(study=other)
    assert len(meta["prompts"]) == 10
    assert meta["prompts"][9] == {"model": run.name, "class": "SeaLake", "prompts": [
        "a centered satellite photo of sealake.", "a centered satellite photo of a sealake.",
        "a centered satellite photo of the sealake."]}
    assert meta["model_notes"] == [f"{run.name}: training data unknown (a checkpoint that records no training data "
                                   "(tiny.pt)): see the CLIP paper §5 on data overlap"]
