"""The database export of human answers (studyapp.selectors.trials) and the report's exclusions on it.

The report's own tests run on CSV files; these start from the database, so an export that counted
attention checks as answers, or lost the simulated or attention-failed flag, fails here."""

import csv
import io
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from evaluator.report import ReportOptions, compute_tables
from evaluator.study_reports import study_trials
from studyapp.models import Assignment, ClassLabel, Item, Participant, Response, ShotExample
from studyapp.selectors.trials import TRIAL_COLUMNS, human_trials
from tests.factories import make_dataset, make_study
from tests.studyapp.helpers import answer, start, trial_code

pytestmark = pytest.mark.django_db


def answered(*, participant, condition, item, choice, position, slot=None, check=False):
    assignment = Assignment.objects.create(
        participant=participant, condition=condition, item=item, position=position, slot=slot, is_attention_check=check,
        status=Assignment.Status.ANSWERED, expires_at=timezone.now() + timedelta(minutes=5),
    )
    Response.objects.create(assignment=assignment, choice=choice, is_idk=False, rt_client_ms=900)


@pytest.fixture
def study_with_three_kinds_of_participant():
    """Two classes x two test items, zero-shot, k = 3. The real participant answers every test item
    right and one attention check wrong; the simulated and the attention-failed one answer every test
    item wrong. Each also holds a reservation that was never answered."""
    study = make_study(dataset=make_dataset(n_classes=2, train_per_class=3, test_per_class=2), shots=(0,), k_per_item=3,
                       attention_check_rate=0.2)
    zero = study.conditions.get()
    items = [si.item for si in study.study_items.select_related("item").order_by("item_id")]
    labels = list(ClassLabel.objects.filter(dataset=study.dataset).order_by("index"))
    wrong = {label.pk: next(other for other in labels if other.pk != label.pk) for label in labels}
    check_item, unanswered_item = Item.objects.filter(dataset=study.dataset, split="train").exclude(
        id__in=ShotExample.objects.values("item_id"))[:2]
    people = {
        "real": Participant.objects.create(study=study, consent="given"),
        "simulated": Participant.objects.create(study=study, consent="given", simulated=True),
        "attention_failed": Participant.objects.create(study=study, consent="given", attention_failed=True),
    }
    for slot, (kind, person) in enumerate(people.items()):
        for position, item in enumerate(items):
            choice = item.label if kind == "real" else wrong[item.label_id]
            answered(participant=person, condition=zero, item=item, choice=choice, position=position, slot=slot)
        answered(participant=person, condition=zero, item=check_item, choice=wrong[check_item.label_id],
                 position=len(items), check=True)
    Assignment.objects.create(participant=people["real"], condition=zero, item=unanswered_item, position=99, slot=None,
                              is_attention_check=True, expires_at=timezone.now())  # reserved, never answered
    return study, people, items


def test_the_export_has_one_row_per_answered_test_trial_and_no_attention_check(study_with_three_kinds_of_participant):
    study, people, items = study_with_three_kinds_of_participant
    rows = human_trials(study=study)
    assert len(rows) == 3 * len(items)
    assert {row["item"] for row in rows} == {str(item.code) for item in items}
    assert all(list(row) == TRIAL_COLUMNS for row in rows)


def test_each_row_carries_its_participants_simulated_and_attention_failed_flags(study_with_three_kinds_of_participant):
    study, people, _ = study_with_three_kinds_of_participant
    flags = {row["subject"]: (row["simulated"], row["attention_failed"]) for row in human_trials(study=study)}
    assert flags == {
        f"human-{people['real'].code}": (False, False),
        f"human-{people['simulated'].code}": (True, False),
        f"human-{people['attention_failed'].code}": (False, True),
    }


def test_export_trials_writes_both_flags_to_the_csv(study_with_three_kinds_of_participant, tmp_path):
    study, people, items = study_with_three_kinds_of_participant
    call_command("export_trials", str(study.code), "--out", str(tmp_path / "t.csv"), stdout=io.StringIO())
    rows = list(csv.DictReader((tmp_path / "t.csv").open()))
    assert len(rows) == 3 * len(items)
    by_subject = {row["subject"]: (row["simulated"], row["attention_failed"]) for row in rows}
    assert by_subject[f"human-{people['simulated'].code}"] == ("True", "False")
    assert by_subject[f"human-{people['attention_failed'].code}"] == ("False", "True")
    assert by_subject[f"human-{people['real'].code}"] == ("False", "False")


@pytest.mark.parametrize(("include_simulated", "include_attention_failed", "accuracy", "participants"), [
    (False, False, 100.0, 1),  # the real participant alone, whose one wrong answer was an attention check
    (True, False, 50.0, 2),
    (False, True, 50.0, 2),
    (True, True, 100 / 3, 3),
])
def test_the_report_from_the_database_leaves_out_simulated_and_attention_failed_participants_unless_asked(
        study_with_three_kinds_of_participant, include_simulated, include_attention_failed, accuracy, participants):
    study, _, items = study_with_three_kinds_of_participant
    options = ReportOptions(include_simulated=include_simulated, include_attention_failed=include_attention_failed,
                            bootstrap=0, static=False)
    tables, counts = compute_tables(study_trials(study=study), options=options)
    human = tables["table2"].set_index("subject_kind").loc["human"]
    assert human["accuracy"] == pytest.approx(accuracy)
    assert counts["n_participants"] == participants and counts["n_human_answers"] == participants * len(items)


def test_the_report_leaves_out_inattentive_answers_or_participants_only_when_asked():
    # Two participants, four answers each, all correct but one of "b"'s, given with the page hidden 9 s. The true
    # accuracies are known: all answers 7/8; without that answer 7/7; without participant b 4/4.
    study = make_study(dataset=make_dataset(n_classes=2, test_per_class=2), shots=(0,), items_per_participant=4)
    for name in ("a", "b"):
        client = Client()
        page = start(client, study, pid=name)
        n = 0
        while trial_code(page):
            trial = Assignment.objects.get(code=trial_code(page))
            bad = name == "b" and n == 0
            choice = str((trial.item.label.index + 1) % 2) if bad else None
            page = answer(client, page, choice, hidden_ms="9000" if bad else "0", blur_count="1" if bad else "0")
            n += 1
    trials = study_trials(study=study)
    assert {"blur_count", "hidden_ms"} <= set(trials.columns)

    def accuracy(**options) -> tuple[float, int]:
        tables, counts = compute_tables(trials, options=ReportOptions(bootstrap=0, average="micro", **options))
        row = tables["table2"].query("subject_kind == 'human'").iloc[0]
        return round(row["accuracy"], 1), counts["n_human_answers"]

    assert accuracy() == (87.5, 8)  # off by default
    assert accuracy(max_hidden_ms=5000) == (100.0, 7)
    assert accuracy(max_blur_count=0, attention_unit="participant") == (100.0, 4)
    _, counts = compute_tables(trials, options=ReportOptions(bootstrap=0, max_hidden_ms=5000))
    assert counts["inattentive_answers_excluded"] == 1
