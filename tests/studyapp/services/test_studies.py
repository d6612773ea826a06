import threading
import time

import pytest
from django.db import connection
from django.utils import timezone

from studyapp.models import Condition, FrozenStudyError, ShotExample, Study, StudyItem
from studyapp.services.studies import StudySetupError, study_close, study_create, study_open, study_set_conditions
from tests.factories import make_dataset, make_study

pytestmark = pytest.mark.django_db


def test_one_shot_examples_are_a_subset_of_the_two_shot_examples():
    study = make_study(dataset=make_dataset(n_classes=4, train_per_class=3))
    one = set(ShotExample.objects.filter(condition__study=study, condition__shots=1).values_list("label", "item"))
    two = set(ShotExample.objects.filter(condition__study=study, condition__shots=2).values_list("label", "item"))
    assert len(one) == 4 and len(two) == 8
    assert one <= two


def test_shots_come_from_a_split_disjoint_from_the_test_items():
    study = make_study()
    shot_splits = set(ShotExample.objects.filter(condition__study=study).values_list("item__split", flat=True))
    test_splits = set(study.study_items.values_list("item__split", flat=True))
    assert shot_splits == {"train"} and test_splits == {"test"}


def test_the_same_seed_draws_the_same_items_and_shots():
    dataset = make_dataset(n_classes=3, train_per_class=5, test_per_class=6)
    a = study_create(dataset=dataset, title="a", seed=7, test_items_per_class=3)
    b = study_create(dataset=dataset, title="b", seed=7, test_items_per_class=3)
    assert set(a.study_items.values_list("item", flat=True)) == set(b.study_items.values_list("item", flat=True))
    shots = lambda s: set(ShotExample.objects.filter(condition__study=s).values_list("condition__shots", "item"))  # noqa: E731
    assert shots(a) == shots(b)


def test_an_open_study_refuses_changes_to_its_items_and_shots():
    study = make_study()
    with pytest.raises(FrozenStudyError):
        StudyItem.objects.filter(study=study).first().delete()
    with pytest.raises(FrozenStudyError):
        Condition(study=study, shots=0).save()
    with pytest.raises(FrozenStudyError):
        ShotExample.objects.filter(condition__study=study).first().save()


def test_too_few_training_images_for_two_shots_is_a_clear_error():
    dataset = make_dataset(n_classes=2, train_per_class=1)
    with pytest.raises(StudySetupError, match="2 shot example"):
        study_create(dataset=dataset, title="x")


def test_opening_twice_keeps_the_first_opening_time_and_changes_nothing():
    study = make_study()
    before = set_up(study)
    again = study_open(study=study)
    assert again.status == "open" and again.opened_at == study.opened_at
    assert set_up(again) == before


def test_a_closed_study_cannot_be_reopened():
    study = study_close(study=make_study())
    with pytest.raises(StudySetupError, match="cannot be reopened"):
        study_open(study=study)
    assert Study.objects.get(pk=study.pk).status == "closed"


@pytest.mark.parametrize("status", ["open", "closed"])
def test_replacing_the_conditions_of_an_open_or_closed_study_is_refused_and_changes_nothing(status):
    study = make_study()
    if status == "closed":
        study_close(study=study)
    before = set_up(study)
    with pytest.raises(FrozenStudyError, match=f"is {status}: its items, classes and shots are frozen"):
        study_set_conditions(study=study, shots=(0,))
    assert set_up(study) == before


def set_up(study: Study) -> tuple:
    """What the study shows: its test items, conditions and shot examples."""
    return (
        sorted(study.study_items.values_list("item_id", flat=True)),
        sorted(study.conditions.values_list("id", "shots")),
        sorted(ShotExample.objects.filter(condition__study=study).values_list("condition_id", "label_id", "item_id", "rank")),
    )


@pytest.mark.django_db(transaction=True)  # two connections: the open runs in a thread of its own
def test_an_open_that_comes_while_conditions_are_replaced_waits_for_them_and_checks_the_new_set():
    study = make_study(dataset=make_dataset(n_classes=2, train_per_class=2, test_per_class=2), open_it=False)
    outcome, last_write = {}, []
    opener = threading.Thread(target=open_in_thread, args=(study.pk, outcome))

    def start_the_open_once_the_study_is_read(execute, sql, params, many, context):
        result = execute(sql, params, many, context)
        if sql.lstrip().startswith(("INSERT", "DELETE")):
            last_write[:] = [timezone.now()]
        if not opener.is_alive() and not outcome and sql.lstrip().startswith("SELECT") and '"studyapp_study"' in sql:
            opener.start()
            wait_until_done_or_blocked(opener)
        return result

    with connection.execute_wrapper(start_the_open_once_the_study_is_read):
        study_set_conditions(study=study, shots=(0, 1))
    opener.join(timeout=60)
    assert outcome.get("status") == "open", outcome
    assert Study.objects.get(pk=study.pk).opened_at > last_write[0]  # opened after the new set was written
    assert sorted(study.conditions.values_list("shots", flat=True)) == [0, 1]
    assert ShotExample.objects.filter(condition__study=study).count() == 2


def open_in_thread(pk: int, outcome: dict) -> None:
    try:
        outcome["status"] = study_open(study=Study.objects.get(pk=pk)).status
    except Exception as exc:  # reported by the test's assertion
        outcome["error"] = repr(exc)
    finally:
        connection.close()


def wait_until_done_or_blocked(thread: threading.Thread) -> None:
    """Until the thread has finished or waits for a lock. PostgreSQL says when a session waits for a
    lock; SQLite does not, so there a thread still running after a second counts as waiting (its
    open alone takes milliseconds)."""
    deadline = time.monotonic() + (30 if connection.vendor == "postgresql" else 1)
    while thread.is_alive() and time.monotonic() < deadline:
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT count(*) FROM pg_locks WHERE NOT granted")
                if cursor.fetchone()[0]:
                    return
        time.sleep(0.02)
