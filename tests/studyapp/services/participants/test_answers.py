"""studyapp.services.participants.answers: an answer recorded exactly once, only as a value the page offered."""

import re
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from django.db import connection, connections, transaction
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from studyapp.models import Assignment, Participant, Response, Study
from studyapp.selectors.study_cache import study_frozen
from studyapp.services.participants import (
    InvalidChoice,
    answers,
    participant_enrol,
    participant_withdraw,
    response_submit,
)
from studyapp.services.participants.answers import ClientTimings
from tests.factories import make_dataset, make_study
from tests.studyapp.helpers import answer, participant_of, path, small_study, start, trial_code

pytestmark = pytest.mark.django_db


def test_i_dont_know_is_offered_only_when_the_study_allows_it():
    study = small_study(allow_idk=False)
    client = Client()
    page = start(client, study)
    assert 'value="idk"' not in page.content.decode()
    assert answer(client, page, choice="idk").status_code == 400
    assert not Response.objects.exists()


def test_a_double_submit_stores_one_answer_and_keeps_the_first():
    study = small_study()
    client = Client()
    page = start(client, study)
    url = path(page)
    first = client.post(url, {"choice": "0", "rt_client_ms": "1234"})
    second = client.post(url, {"choice": "1", "rt_client_ms": "99"})
    assert first.status_code == second.status_code == 302
    response = Response.objects.get()
    assert (response.choice.index, response.rt_client_ms) == (0, 1234)
    assert response.rt_server_ms is not None


def test_a_trial_works_as_a_plain_form_post_without_javascript():
    study = small_study()
    client = Client()
    page = start(client, study)
    html = page.content.decode()
    form_action = re.search(r'<form method="post" action="([^"]+)"', html)[1]
    assert form_action == path(page)  # the answer goes to the trial's own URL
    page = client.post(form_action, {"choice": "idk", "rt_client_ms": ""}, follow=True)
    response = Response.objects.get()
    assert response.is_idk and response.rt_client_ms is None


def test_a_late_answer_whose_item_went_to_someone_else_is_refused_politely():
    study = small_study(design=Study.Design.BETWEEN, shots=(0,), k_per_item=1, items_per_participant=6)
    slow, fast = Client(), Client()
    page = start(slow, study)
    Assignment.objects.update(expires_at=timezone.now() - timedelta(minutes=1))
    start(fast, study)  # expires the slow participant's reservations and takes every item
    page = answer(slow, page)
    assert "went to someone else" in page.content.decode()
    assert path(page) == f"/s/{study.code}/full"
    assert not Response.objects.filter(assignment__participant=participant_of(slow, study)).exists()


def test_a_garbled_client_time_does_not_cost_the_answer():
    study = small_study()
    client = Client()
    answer(client, start(client, study), choice="1", rt_client_ms="NaN")
    assert Response.objects.get().rt_client_ms is None


def test_an_unknown_class_is_refused():
    study = small_study()
    client = Client()
    assert answer(client, start(client, study), choice="99").status_code == 400
    assert not Response.objects.exists()


def test_an_answer_to_a_trial_freed_by_leaving_is_refused_not_taken_back():
    study = make_study(dataset=make_dataset(n_classes=2, test_per_class=2), shots=(0,), items_per_participant=2)
    client = Client()
    page = start(client, study)
    participant = participant_of(client, study)
    trial = Assignment.objects.get(code=trial_code(page))
    participant_withdraw(participant=participant)

    outcome = response_submit(assignment=trial, choice="0")
    assert outcome.refused and not Response.objects.exists()
    trial.refresh_from_db()
    assert trial.status == Assignment.Status.EXPIRED


def test_an_answer_stores_the_pages_timings_and_attention_and_garbled_values_as_missing():
    study = make_study(dataset=make_dataset(n_classes=2, test_per_class=2), shots=(0,), items_per_participant=2)
    client = Client()
    page = start(client, study)
    page = answer(client, page, "0", rt_client_ms="812.4", images_ready_ms="95", clock_start_ms="103",
                  blur_count="2", hidden_ms="1500")
    answer(client, page, "1", rt_client_ms="NaN", images_ready_ms="-5", clock_start_ms="1e400", blur_count="x",
           hidden_ms="")
    first, second = Response.objects.order_by("id")
    assert (first.rt_client_ms, first.images_ready_ms, first.clock_start_ms, first.blur_count, first.hidden_ms) == (
        812, 95, 103, 2, 1500)
    assert (second.rt_client_ms, second.images_ready_ms, second.clock_start_ms, second.blur_count,
            second.hidden_ms) == (None, None, None, None, None)


def lapsed_trial(study: Study) -> Assignment:
    """A participant's first trial, whose reservation lapsed and was marked expired (its slot freed)."""
    client = Client()
    trial = Assignment.objects.get(code=trial_code(start(client, study)))
    Assignment.objects.filter(pk=trial.pk).update(status=Assignment.Status.EXPIRED,
                                                  expires_at=timezone.now() - timedelta(minutes=1))
    trial.refresh_from_db()
    return trial


def test_a_late_answer_whose_place_is_still_free_is_kept_in_its_old_slot():
    study = small_study(design=Study.Design.BETWEEN, shots=(0,), k_per_item=2, items_per_participant=2)
    trial = lapsed_trial(study)
    old_slot = trial.slot

    outcome = response_submit(assignment=trial, choice="1")

    assert outcome.created and not outcome.refused
    trial.refresh_from_db()
    assert (trial.status, trial.slot) == (Assignment.Status.ANSWERED, old_slot)
    assert Response.objects.get(assignment=trial).choice.index == 1


def test_a_late_answer_whose_old_slot_was_taken_gets_another_free_slot_of_its_item():
    study = small_study(design=Study.Design.BETWEEN, shots=(0,), k_per_item=2, items_per_participant=2)
    trial = lapsed_trial(study)
    old_slot = trial.slot
    # Someone else holds the old slot of the same item now (a live reservation).
    someone = Participant.objects.create(study=study, enrolment=uuid.uuid4(), consent=Participant.Consent.GIVEN,
                                         condition=trial.condition)
    Assignment.objects.create(participant=someone, condition=trial.condition,
                              item=trial.item, position=99, slot=old_slot, status=Assignment.Status.RESERVED,
                              expires_at=timezone.now() + timedelta(minutes=30))

    outcome = response_submit(assignment=trial, choice="0")

    assert outcome.created
    trial.refresh_from_db()
    assert trial.status == Assignment.Status.ANSWERED and trial.slot not in (None, old_slot)
    assert trial.slot < study.k_per_item


def test_a_garbled_resubmission_of_an_answered_trial_returns_the_stored_answer_and_a_new_one_is_refused():
    study = small_study()
    client = Client()
    trial = Assignment.objects.get(code=trial_code(start(client, study)))
    first = response_submit(assignment=trial, choice="1", rt_client_ms=850)

    again = response_submit(assignment=trial, choice="not-a-class")

    assert first.created and first.response.rt_client_ms == 850
    assert not again.created and again.response == first.response
    fresh = Assignment.objects.exclude(pk=trial.pk).filter(status=Assignment.Status.RESERVED).first()
    with pytest.raises(InvalidChoice):
        response_submit(assignment=fresh, choice="not-a-class")
    with pytest.raises(InvalidChoice):
        response_submit(assignment=fresh, choice=" 1")  # only the exact values the page rendered


def first_trial(study: Study) -> Assignment:
    """A new participant's first trial, reserved and shown (through the pages, as a browser gets it), read with its
    condition and study as the trial page reads it."""
    return Assignment.objects.select_related("condition__study").get(code=trial_code(start(Client(), study)))


def test_a_new_answer_comes_back_as_the_stored_row_itself():
    study = small_study()
    trial = first_trial(study)
    before = timezone.now()

    outcome = response_submit(assignment=trial, choice="2")

    stored = Response.objects.get()
    assert outcome.created and not outcome.refused
    assert outcome.response.pk == stored.pk is not None
    # Loaded-from-the-database state: saving it again updates the row rather than trying to insert a second one.
    assert (outcome.response._state.adding, outcome.response._state.db) == (False, "default")
    assert (stored.assignment_id, stored.choice.index, stored.is_idk) == (trial.pk, 2, False)
    assert before <= stored.created_at <= timezone.now() and stored.created_at == outcome.response.created_at
    trial.refresh_from_db()
    assert trial.status == Assignment.Status.ANSWERED


def test_i_dont_know_is_stored_as_no_choice():
    study = small_study(allow_idk=True)
    outcome = response_submit(assignment=first_trial(study), choice="idk")
    stored = Response.objects.get()
    assert outcome.created and (stored.choice_id, stored.is_idk) == (None, True)


def test_every_class_the_page_offers_is_an_answer_written_as_the_page_writes_it():
    # Twelve classes: the two-digit values "10" and "11" are answers too; "010" and "1 0" are not.
    study = make_study(dataset=make_dataset(n_classes=12, test_per_class=1), shots=(0,), items_per_participant=1)
    for value, index in [("0", 0), ("10", 10), ("11", 11)]:
        outcome = response_submit(assignment=first_trial(study), choice=value)
        assert outcome.response.choice.index == index
    trial = first_trial(study)
    for value in ["010", "1 0", "12", "00", "-1", "+1", "1.0", "", "１", "٣"]:
        with pytest.raises(InvalidChoice, match=f"^not a class of this study: {re.escape(repr(value))}$"):
            response_submit(assignment=trial, choice=value)
    assert Response.objects.count() == 3


def test_i_dont_know_is_refused_with_its_reason_where_the_study_does_not_offer_it():
    trial = first_trial(small_study(allow_idk=False))
    with pytest.raises(InvalidChoice, match="^this study has no \"I don't know\" option$"):
        response_submit(assignment=trial, choice="idk")
    assert not Response.objects.exists()


def test_the_server_response_time_runs_from_showing_the_trial_to_the_answer_in_whole_clamped_milliseconds():
    study = small_study(k_per_item=5)
    trials = [first_trial(study) for _ in range(4)]
    now = timezone.now()
    shown = [now - timedelta(seconds=2.5), now + timedelta(minutes=5), now - timedelta(days=40), None]
    for trial, shown_at in zip(trials, shown, strict=True):
        Assignment.objects.filter(pk=trial.pk).update(shown_at=shown_at)
        trial.refresh_from_db()
    times = [response_submit(assignment=trial, choice="0").response.rt_server_ms for trial in trials]
    stored = Response.objects.select_related("assignment").get(assignment=trials[0])
    # The answer's own timestamp is the "now" its server time was measured to.
    assert times[0] == int((stored.created_at - stored.assignment.shown_at).total_seconds() * 1000)
    assert 2500 <= times[0] < 4500
    assert times[1] == 0  # a clock that went backwards gives no negative time
    assert times[2] == 2**31 - 1  # 40 days is past what the column holds: the largest value it can hold
    assert times[3] is None  # never shown: no server-side time
    assert [r.rt_server_ms for r in Response.objects.order_by("id")] == times


@pytest.mark.parametrize(("sent", "stored"), [(-1, 0), (0, 0), (1, 1), (2**31 - 1, 2**31 - 1), (2**31, 2**31 - 1),
                                              (None, None)])
def test_each_client_timing_is_clamped_into_what_the_column_holds(sent, stored):
    study = small_study()
    fields = ["rt_client_ms", "images_ready_ms", "clock_start_ms", "blur_count", "hidden_ms"]
    for field in fields:
        trial = first_trial(study)
        # The other fields get distinct values of their own, so a field stored in another's column shows.
        others = {name: 7 + i for i, name in enumerate(fields) if name != field}
        response = response_submit(assignment=trial, choice="0", timings=ClientTimings(**{field: sent}, **others))
        row = Response.objects.get(pk=response.response.pk)
        assert getattr(row, field) == stored, field
        assert {name: getattr(row, name) for name in others} == others


def test_a_repeated_answer_returns_the_first_one_as_stored_and_changes_nothing():
    study = small_study()
    trial = first_trial(study)
    first = response_submit(assignment=trial, choice="1", rt_client_ms=500)

    again = response_submit(assignment=trial, choice="2", rt_client_ms=900)

    assert (again.created, again.refused) == (False, False)
    assert again.response.pk == first.response.pk
    assert (again.response.choice.index, again.response.rt_client_ms) == (1, 500)
    assert Response.objects.count() == 1


def test_an_answer_to_a_lapsed_trial_is_kept_though_someone_else_has_left_the_study():
    # Only the answering participant's own withdrawal refuses a late answer, not anybody's.
    study = small_study(design=Study.Design.BETWEEN, shots=(0,), k_per_item=2, items_per_participant=2)
    leaver = Client()
    start(leaver, study)
    participant_withdraw(participant=participant_of(leaver, study))
    trial = lapsed_trial(study)

    outcome = response_submit(assignment=trial, choice="1")

    assert outcome.created and not outcome.refused
    trial.refresh_from_db()
    assert trial.status == Assignment.Status.ANSWERED


def test_a_trial_reserved_again_between_the_claim_and_the_lock_is_still_answered_once(monkeypatch):
    # The race the one-statement claim can lose: the trial lapsed and was reserved again by a page view in between.
    # The claim then finds it not "reserved"; under the row lock it is reserved again, and the answer takes it.
    study = small_study()
    trial = first_trial(study)
    monkeypatch.setattr(answers, "_claim", lambda *, assignment_id: False)

    outcome = response_submit(assignment=trial, choice="0")

    assert outcome.created and not outcome.refused
    trial.refresh_from_db()
    assert trial.status == Assignment.Status.ANSWERED
    assert Response.objects.get().assignment_id == trial.pk
    assert Assignment.objects.filter(status=Assignment.Status.ANSWERED).count() == 1


def statements(queries: CaptureQueriesContext) -> list[str]:
    """The first word of each statement run (savepoints left out: the test itself runs in a transaction)."""
    words = [q["sql"].split(None, 1)[0].upper() for q in queries.captured_queries]
    return [w for w in words if w not in ("SAVEPOINT", "RELEASE", "ROLLBACK")]


def test_an_answer_is_one_conditional_update_and_one_insert_and_a_repeat_writes_nothing():
    # The usual case claims the trial and stores the answer, nothing more; a repeat reads the stored answer and does
    # not even try to insert a second one (the unique constraint would refuse it, at the cost of a rollback).
    study = small_study()
    trial = first_trial(study)
    study_frozen(study=study)  # the study's classes, read once per process (studyapp.selectors.study_cache)
    with CaptureQueriesContext(connection) as first:
        response_submit(assignment=trial, choice="1")
    with CaptureQueriesContext(connection) as repeat:
        again = response_submit(assignment=trial, choice="2")
    assert statements(first) == ["UPDATE", "INSERT"]
    assert "INSERT" not in statements(repeat) and not again.created


def test_an_answer_colliding_with_one_stored_meanwhile_returns_the_stored_one_and_leaves_no_trace():
    # The race the row lock does not order (none is known): a response for the trial appears between the claim and
    # the insert. The unique constraint refuses the second; the whole attempt rolls back.
    study = small_study()
    trial = first_trial(study)
    stored = Response.objects.create(assignment=trial, choice=trial.item.label)

    outcome = response_submit(assignment=trial, choice="2")

    assert (outcome.response, outcome.created, outcome.refused) == (stored, False, False)
    assert Response.objects.get().choice_id == trial.item.label_id
    trial.refresh_from_db()
    assert trial.status == Assignment.Status.RESERVED  # the claim rolled back with the insert


def test_a_late_answer_reads_the_trial_with_its_study_once():
    # The locked re-read of a lapsed trial brings its condition and study along: taking it back needs both.
    study = small_study(design=Study.Design.BETWEEN, shots=(0,), k_per_item=2, items_per_participant=2)
    trial = Assignment.objects.select_related("condition__study").get(pk=lapsed_trial(study).pk)
    study_frozen(study=study)
    with CaptureQueriesContext(connection) as queries:
        assert response_submit(assignment=trial, choice="1").created
    study_reads = [q["sql"] for q in queries.captured_queries if 'FROM "studyapp_study"' in q["sql"]]
    assert study_reads == []


@pytest.mark.django_db(transaction=True)
def test_a_late_answer_holding_its_trials_lock_does_not_hold_up_joins():
    # The late answer locks its trial's row only: were the joined condition and study rows locked too, every join
    # (which queues on the study row to balance conditions) would wait for it.
    if connection.vendor != "postgresql":
        pytest.skip("row locks: SQLite lets one writer at a time in anyway")
    study = small_study(design=Study.Design.BETWEEN, shots=(0,), k_per_item=2, items_per_participant=2)
    trial = Assignment.objects.select_related("condition__study").get(pk=lapsed_trial(study).pk)
    locked, release = threading.Event(), threading.Event()
    errors = []

    def late_answer():
        try:
            with transaction.atomic():
                answers._claim_otherwise(assignment=trial)
                locked.set()
                release.wait(timeout=30)
        except Exception as exc:  # reported below
            errors.append(exc)
        finally:
            connections.close_all()

    holder = threading.Thread(target=late_answer)
    holder.start()
    try:
        assert locked.wait(timeout=30)
        joined = ThreadPoolExecutor(1).submit(
            lambda: (participant_enrol(study=study, enrolment=uuid.uuid4(), consent=True), connections.close_all()))
        joined.result(timeout=10)  # a bound, not a measurement: blocked behind the lock, it would never return
    finally:
        release.set()
        holder.join()
    assert errors == []
