"""studyapp.services.participants.flow: the way through the parts, resuming, completion, leaving and returns."""

import io
import uuid
from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from studyapp.models import Assignment, Participant, Response, Study
from studyapp.selectors.hot_reads import participant_trial_following_get
from studyapp.selectors.participants import NextStep, Step, participant_conditions
from studyapp.services.participants import participant_enrol, response_submit
from studyapp.services.participants.flow import (
    _phase_enter,
    assignment_show,
    participant_allocate_next_step,
    participant_complete,
    participant_start,
    participant_step_after_answer,
    participant_withdraw,
    participants_mark_returned,
)
from tests.factories import make_dataset, make_study
from tests.studyapp.helpers import answer, attention_study, finish, join_url, participant_of, path, small_study, start, trial_code

pytestmark = pytest.mark.django_db


def live_reservations(study: Study) -> int:
    return Assignment.objects.filter(condition__study=study, status=Assignment.Status.RESERVED).count()


def test_reloading_after_an_answer_resumes_at_the_next_unanswered_trial():
    study = small_study()
    client = Client()
    page = start(client, study)
    first_url = path(page)
    page = answer(client, page)
    # Reload, back button: the answered trial sends them on; the next trial stays the same.
    assert path(client.get(first_url, follow=True)) == path(page)
    assert path(client.get(f"/s/{study.code}/next", follow=True)) == path(page)
    assert path(client.get(path(page), follow=True)) == path(page)
    assert Response.objects.count() == 1


def test_pages_fetched_with_get_never_allocate_trials_or_complete_the_participant():
    # A GET can be repeated by a browser, a prefetcher or a link preview: only a POST moves a participant on.
    study = small_study(design=Study.Design.WITHIN)
    client = Client()
    page = start(client, study)
    participant = participant_of(client, study)
    for assignment in participant.assignments.all():  # part 1 answered behind the pages' back
        response_submit(assignment=assignment, choice="0")

    def state():
        participant.refresh_from_db()
        return Assignment.objects.count(), participant.phases_entered, participant.completed_at

    before = state()
    for url in (f"/s/{study.code}/next", join_url(study), f"/s/{study.code}/instructions", f"/s/{study.code}/done",
                path(page)):
        assert client.get(url, follow=True).status_code == 200, url
    assert state() == before
    waiting = client.get(f"/s/{study.code}/next")
    assert waiting.status_code == 200 and f'action="/s/{study.code}/instructions"' in waiting.content.decode()
    page = client.post(f"/s/{study.code}/instructions", follow=True)
    assert Assignment.objects.get(code=trial_code(page)).condition.shots == 1


def test_within_subjects_phases_run_zero_then_one_then_two_shot():
    study = small_study(design=Study.Design.WITHIN)
    client = Client()
    page = start(client, study)
    shots_seen = []
    while trial_code(page):
        shots_seen.append(Assignment.objects.get(code=trial_code(page)).condition.shots)
        page = answer(client, page)
    assert shots_seen == sorted(shots_seen) and set(shots_seen) == {0, 1, 2}
    assert path(page) == f"/s/{study.code}/done"


def test_completion_shows_the_code_and_links_to_the_completion_url_only_after_every_answer():
    study = small_study(design=Study.Design.BETWEEN, completion_url="https://app.prolific.com/submissions/complete")
    client = Client()
    page = start(client, study, PROLIFIC_PID="5f00done", SESSION_ID="s-1")
    participant = participant_of(client, study)
    assert client.get(f"/s/{study.code}/done").url == path(page)  # not yet: back to the open trial
    page = finish(client, page)
    participant.refresh_from_db()
    html = page.content.decode()
    assert path(page) == f"/s/{study.code}/done"
    assert participant.completed_at is not None
    assert participant.completion_code in html
    assert f"https://app.prolific.com/submissions/complete?cc={participant.completion_code}" in html
    assert "done.js" in html
    assert Response.objects.filter(assignment__participant=participant).count() == 2


def test_a_completion_url_with_its_own_query_is_used_as_it_is():
    study = small_study(design=Study.Design.BETWEEN, completion_url="https://example.org/done?cc=PROLIFIC1")
    client = Client()
    html = finish(client, start(client, study, PROLIFIC_PID="5f00done", SESSION_ID="s-1")).content.decode()
    assert 'href="https://example.org/done?cc=PROLIFIC1"' in html


def test_a_participant_failing_the_attention_checks_is_flagged_at_completion_and_kept():
    study = attention_study()
    client = Client()
    page = start(client, study)
    while trial_code(page):
        assignment = Assignment.objects.get(code=trial_code(page))
        wrong = str((assignment.item.label.index + 1) % 3)
        page = answer(client, page, choice=wrong if assignment.is_attention_check else None)
    participant = participant_of(client, study)
    assert participant.completed_at is not None and participant.attention_failed
    assert participant.assignments.filter(response__isnull=False).count() == 8


def test_leaving_frees_every_live_reservation_at_once_and_keeps_the_answers():
    # k = 1: every item has one place, so a second participant gets nothing while the first holds them.
    study = make_study(dataset=make_dataset(n_classes=2, test_per_class=2), shots=(0,), k_per_item=1,
                       items_per_participant=4, return_url="https://app.prolific.com/submissions/complete?cc=RETURN")
    client = Client()
    page = answer(client, start(client, study))
    participant = participant_of(client, study)
    assert live_reservations(study) == 3
    confirm = client.get(f"/s/{study.code}/leave")
    assert confirm.status_code == 200 and "Stop and leave the study?" in confirm.content.decode()
    assert live_reservations(study) == 3  # a GET only asks
    left = client.post(f"/s/{study.code}/leave")
    assert left.status_code == 302 and left.url == "https://app.prolific.com/submissions/complete?cc=RETURN"
    participant.refresh_from_db()
    assert participant.withdrawn_at is not None and participant.completed_at is None
    assert live_reservations(study) == 0  # free at once, not when the reservations would have lapsed
    assert Response.objects.filter(assignment__participant=participant).count() == 1  # the answer stays
    # The freed places go to the next person straight away.
    other = Client()
    other_page = start(other, study)
    assert trial_code(other_page) and Assignment.objects.filter(participant=participant_of(other, study)).count() == 3
    # The one who left answers nothing more and sees no more images.
    stale = client.post(page.request["PATH_INFO"], {"choice": "0"}, follow=True)
    assert stale.request["PATH_INFO"] == f"/s/{study.code}/left"
    assert Response.objects.filter(assignment__participant=participant).count() == 1
    assert client.get(page.request["PATH_INFO"] + "/image").status_code == 404
    assert client.get(f"/s/{study.code}/next", follow=True).request["PATH_INFO"] == f"/s/{study.code}/left"


def test_the_admin_marks_participants_returned_from_pasted_or_uploaded_ids(admin_client):
    study = make_study(dataset=make_dataset(n_classes=2, test_per_class=2), shots=(0,), items_per_participant=2)
    for pid in ("5f00a", "5f00b", "5f00c"):
        start(Client(), study, PROLIFIC_PID=pid, SESSION_ID=f"s-{pid}")
    assert live_reservations(study) == 6
    url = reverse("admin:studyapp_study_returns", args=[study.pk])
    pasted = admin_client.post(url, {"ids": "5f00a\n nobody-here , 5f00a"})
    html = pasted.content.decode()
    assert "Marked returned: 1 (5f00a)" in html and "nobody-here" in html
    upload = io.BytesIO(b"Participant id,Status\n5f00b,RETURNED\n")
    upload.name = "prolific_export.csv"
    admin_client.post(url, {"ids": "", "file": upload})
    withdrawn = set(Participant.objects.filter(study=study, withdrawn_at__isnull=False).values_list("external_id",
                                                                                                   flat=True))
    assert withdrawn == {"5f00a", "5f00b"}
    assert live_reservations(study) == 2  # only 5f00c still holds places


def test_failing_the_attention_checks_ends_on_a_page_asking_to_return_the_study_without_a_code():
    study = make_study(dataset=make_dataset(n_classes=3, train_per_class=4), design=Study.Design.BETWEEN,
                       items_per_participant=2, attention_check_rate=0.5, attention_threshold=0.75,
                       return_url="https://example.org/return")
    client = Client()
    page = start(client, study)
    while trial_code(page):
        trial = Assignment.objects.get(code=trial_code(page))
        wrong = str((trial.item.label.index + 1) % 3)
        page = answer(client, page, wrong if trial.is_attention_check else None)
    participant = participant_of(client, study)
    participant.refresh_from_db()
    html = page.content.decode()
    assert participant.attention_failed and participant.completed_at is not None
    assert participant.completion_code not in html
    assert "return the study" in html and "reject" not in html.lower()
    assert 'href="https://example.org/return"' in html


def test_returns_sort_each_id_into_withdrawn_already_or_unknown_once():
    study = make_study(dataset=make_dataset(n_classes=2, test_per_class=2), shots=(0,), items_per_participant=2)
    clients = {pid: Client() for pid in ("live", "left", "done")}
    for pid, client in clients.items():
        start(client, study, pid=pid)
    participant_withdraw(participant=participant_of(clients["left"], study))
    finish(clients["done"], clients["done"].get(f"/s/{study.code}/next", follow=True))
    assert participant_of(clients["done"], study).completed_at is not None

    elsewhere = make_study(dataset=make_dataset(n_classes=2, test_per_class=2), shots=(0,), items_per_participant=2)
    start(Client(), elsewhere, pid="live")  # the same id in another study is another participant

    outcome = participants_mark_returned(study=study, external_ids=["live", "left", "", "done", "nobody", "live"])

    assert outcome == {"withdrawn": ["live"], "already": ["left", "done"], "unknown": ["nobody"]}
    assert Participant.objects.get(study=elsewhere).withdrawn_at is None


def test_a_finished_participant_cannot_be_withdrawn_and_leaving_twice_changes_nothing():
    study = small_study()
    done, leaving = Client(), Client()
    finish(done, start(done, study))
    finished = participant_of(done, study)
    start(leaving, study)
    left = participant_of(leaving, study)

    assert participant_withdraw(participant=finished) is False
    assert participant_withdraw(participant=left) is True
    first = Participant.objects.get(pk=left.pk).withdrawn_at
    assert participant_withdraw(participant=left) is False
    finished.refresh_from_db()
    assert finished.withdrawn_at is None and finished.completed_at is not None
    assert Participant.objects.get(pk=left.pk).withdrawn_at == first


def test_attention_checks_flag_only_the_participant_who_failed_them():
    study = attention_study()
    outcomes = {}
    for name, fail in (("careless", True), ("careful", False)):
        client = Client()
        page = start(client, study)
        while trial_code(page):
            assignment = Assignment.objects.get(code=trial_code(page))
            right = str(assignment.item.label.index)
            wrong = str((assignment.item.label.index + 1) % 3)
            page = answer(client, page, choice=(wrong if fail else right) if assignment.is_attention_check else None)
        outcomes[name] = participant_of(client, study).attention_failed
    assert outcomes == {"careless": True, "careful": False}


def first_trial(study: Study) -> Assignment:
    return Assignment.objects.get(code=trial_code(start(Client(), study)))


def test_showing_a_trial_notes_the_first_time_only_even_from_a_stale_copy():
    study = small_study()
    first_trial(study)  # another participant's trial, shown by its page
    trial = first_trial(study)
    Assignment.objects.update(shown_at=None)  # none shown yet (the pages above showed them)
    trial.refresh_from_db()
    stale = Assignment.objects.get(pk=trial.pk)  # another tab's copy, read before the first show

    shown = assignment_show(assignment=trial)
    first = Assignment.objects.get(pk=trial.pk).shown_at
    again = assignment_show(assignment=stale)

    assert shown is trial and first is not None and shown.shown_at == first
    assert again.shown_at == first and Assignment.objects.get(pk=trial.pk).shown_at == first
    # Only this trial was marked shown.
    assert set(Assignment.objects.exclude(pk=trial.pk).values_list("shown_at", flat=True)) == {None}


def test_an_answered_trial_is_not_shown_again():
    study = small_study()
    trial = first_trial(study)
    response_submit(assignment=trial, choice="0")
    trial.refresh_from_db()
    assert assignment_show(assignment=trial) is None


def test_a_lapsed_trial_is_taken_back_as_reserved_when_its_place_is_free_and_not_when_it_is_taken():
    study = small_study(design=Study.Design.BETWEEN, shots=(0,), k_per_item=1, items_per_participant=2)
    trial = first_trial(study)
    slot = trial.slot
    Assignment.objects.filter(pk=trial.pk).update(status=Assignment.Status.EXPIRED)
    trial.refresh_from_db()

    back = assignment_show(assignment=trial)
    assert back is not None and (back.status, back.slot) == (Assignment.Status.RESERVED, slot)

    Assignment.objects.filter(pk=trial.pk).update(status=Assignment.Status.EXPIRED)
    trial.refresh_from_db()
    someone = Participant.objects.create(study=study, enrolment=uuid.uuid4(), consent=Participant.Consent.GIVEN,
                                         condition=trial.condition)
    Assignment.objects.create(participant=someone, condition=trial.condition,
                              item=trial.item, position=99, slot=slot, status=Assignment.Status.RESERVED,
                              expires_at=timezone.now() + timedelta(minutes=30))
    assert assignment_show(assignment=trial) is None


def participant_with_checks(study: Study, checks: list[bool], *, wrong_test_answers: int = 1) -> Participant:
    """A participant who answered attention checks right or wrong as listed, and some test items wrongly."""
    participant = Participant.objects.create(study=study, enrolment=uuid.uuid4(), consent=Participant.Consent.GIVEN)
    condition = study.conditions.first()
    items = list(study.dataset.items.select_related("label").order_by("pk"))
    labels = list(study.dataset.classes.order_by("index"))
    kinds = [True] * len(checks) + [False] * wrong_test_answers
    rights = checks + [False] * wrong_test_answers
    for position, (item, is_check, right) in enumerate(zip(items, kinds, rights, strict=False)):
        trial = Assignment.objects.create(participant=participant, condition=condition, item=item, position=position,
                                          is_attention_check=is_check, slot=None if is_check else 0,
                                          status=Assignment.Status.ANSWERED, expires_at=timezone.now())
        choice = item.label if right else next(label for label in labels if label.pk != item.label_id)
        Response.objects.create(assignment=trial, choice=choice)
    return participant


@pytest.mark.parametrize(("checks", "threshold", "failed"), [
    ([True, False], 0.5, False),  # exactly at the threshold passes
    ([True, False, False, False], 0.5, True),
    ([True], 1.0, False),  # the wrongly answered test item is not a check
    ([], 1.0, False),  # no checks, no flag
])
def test_the_attention_flag_compares_the_share_of_right_checks_with_the_threshold(checks, threshold, failed):
    study = small_study(attention_threshold=threshold)
    participant = participant_complete(participant=participant_with_checks(study, checks))
    assert participant.completed_at is not None and participant.attention_failed is failed


def test_completing_twice_keeps_the_first_completion():
    study = small_study()
    participant = participant_complete(participant=participant_with_checks(study, [True]))
    first = participant.completed_at
    assert participant_complete(participant=participant).completed_at == first


# After an answer: participant_step_after_answer finds the next trial in what the answer read before (no query)
# where it can, and must say exactly what participant_allocate_next_step says (the full way, which the tests below
# ask afterwards).


def as_the_answer_reads_it(trial: Assignment) -> tuple[Assignment, Assignment | None]:
    """The trial with its participant, study and condition, and the trial that follows it, read as the answer view
    reads them (before the answer)."""
    participant = trial.participant
    return participant_trial_following_get(study_code=participant.study.code, participant_code=participant.code,
                                           code=trial.code)


def the_full_way(trial: Assignment) -> NextStep:
    return participant_allocate_next_step(participant=Participant.objects.select_related("study").get(
        pk=trial.participant_id))


def same_step(a: NextStep, b: NextStep) -> bool:
    return (a.step, a.assignment and a.assignment.pk) == (b.step, b.assignment and b.assignment.pk)


def test_after_each_answer_the_next_step_is_the_full_ways_with_one_read_inside_a_part():
    study = small_study(design=Study.Design.WITHIN)
    trial = first_trial(study)
    reads_inside_a_part, parts_entered = [], 0
    while True:
        read, following = as_the_answer_reads_it(trial)
        response_submit(assignment=read, choice="0")
        with CaptureQueriesContext(connection) as queries:
            step = participant_step_after_answer(assignment=read, following=following)
        assert same_step(step, the_full_way(read))
        if step.step != Step.TRIAL:
            break
        if step.assignment.condition_id == read.condition_id:
            reads_inside_a_part.append(len(queries))
        else:  # the part's end: the next part was entered (allocated) on the way
            parts_entered += 1
            assert Participant.objects.get(pk=read.participant_id).phases_entered == parts_entered + 1
        trial = Assignment.objects.get(pk=step.assignment.pk)
    assert step.step == Step.COMPLETE and Participant.objects.get(pk=read.participant_id).completed_at is not None
    assert parts_entered == 2 and reads_inside_a_part == [0, 0, 0]  # three parts of two trials


def test_after_a_refused_answer_the_next_step_skips_the_trial_that_went_to_someone_else():
    study = small_study(design=Study.Design.BETWEEN, shots=(0,), k_per_item=1, items_per_participant=2)
    trial = first_trial(study)
    Assignment.objects.filter(pk=trial.pk).update(status=Assignment.Status.EXPIRED)
    someone = Participant.objects.create(study=study, enrolment=uuid.uuid4(), consent=Participant.Consent.GIVEN,
                                         condition=trial.condition)
    Assignment.objects.create(participant=someone, condition=trial.condition, item=trial.item, position=99,
                              slot=trial.slot, status=Assignment.Status.RESERVED,
                              expires_at=timezone.now() + timedelta(minutes=30))
    read, following = as_the_answer_reads_it(trial)
    assert response_submit(assignment=read, choice="0").refused
    step = participant_step_after_answer(assignment=read, following=following)
    second = Assignment.objects.get(participant=trial.participant, position=1)
    assert step.step == Step.TRIAL and step.assignment.pk == second.pk
    assert same_step(step, the_full_way(read))


def test_after_an_answer_a_lapsed_next_trial_with_a_free_place_is_taken_back_as_the_full_way_does():
    study = small_study(design=Study.Design.BETWEEN, shots=(0,), items_per_participant=2)
    trial = first_trial(study)
    second = Assignment.objects.get(participant=trial.participant, position=1)
    Assignment.objects.filter(pk=second.pk).update(status=Assignment.Status.EXPIRED)
    read, following = as_the_answer_reads_it(trial)
    assert following.pk == second.pk and following.status == Assignment.Status.EXPIRED
    response_submit(assignment=read, choice="0")
    step = participant_step_after_answer(assignment=read, following=following)
    assert step.step == Step.TRIAL and step.assignment.pk == second.pk
    assert Assignment.objects.get(pk=second.pk).status == Assignment.Status.RESERVED
    assert same_step(step, the_full_way(read))


def test_after_an_answer_a_participant_who_left_goes_to_the_page_for_those_who_left():
    study = small_study(design=Study.Design.WITHIN)
    trial = first_trial(study)
    participant_withdraw(participant=trial.participant)
    read, following = as_the_answer_reads_it(trial)
    assert response_submit(assignment=read, choice="0").refused
    step = participant_step_after_answer(assignment=read, following=following)
    assert step.step == Step.WITHDRAWN and same_step(step, the_full_way(read))
    assert not Response.objects.exists()


def test_a_late_answer_in_an_earlier_part_sends_the_participant_to_their_current_part():
    study = small_study(design=Study.Design.WITHIN, k_per_item=1)
    trial = first_trial(study)
    # Their first trial lapsed and its place went to someone else, so part one ended without it.
    Assignment.objects.filter(pk=trial.pk).update(status=Assignment.Status.EXPIRED)
    someone = Participant.objects.create(study=study, enrolment=uuid.uuid4(), consent=Participant.Consent.GIVEN)
    theirs = Assignment.objects.create(participant=someone, condition=trial.condition, item=trial.item, position=0,
                                       slot=trial.slot, status=Assignment.Status.RESERVED,
                                       expires_at=timezone.now() + timedelta(minutes=30))
    second = Assignment.objects.get(participant=trial.participant, position=1)
    response_submit(assignment=as_the_answer_reads_it(second)[0], choice="0")
    part_two = participant_allocate_next_step(participant=Participant.objects.get(pk=trial.participant_id))
    assert part_two.step == Step.TRIAL and part_two.assignment.condition_id != trial.condition_id
    # Then the other reservation lapsed too, and the old tab's answer came in: taken back, as an answer.
    Assignment.objects.filter(pk=theirs.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    read, following = as_the_answer_reads_it(trial)
    assert following is None  # nothing else open in part one
    assert response_submit(assignment=read, choice="0").created
    step = participant_step_after_answer(assignment=read, following=following)
    assert step.step == Step.TRIAL and step.assignment.pk == part_two.assignment.pk
    assert same_step(step, the_full_way(read))


def test_an_answer_in_an_earlier_part_goes_to_the_current_part_even_with_a_reserved_trial_left_there():
    # Old tabs: part one's trials were taken back by their pages (a GET re-reserves a lapsed trial whose place is
    # free) after the participant had moved on to part two.
    study = small_study(design=Study.Design.WITHIN)
    trial = first_trial(study)
    participant = Participant.objects.select_related("study").get(pk=trial.participant_id)
    _phase_enter(participant=participant, index=1, condition=participant_conditions(participant=participant)[1])
    read, following = as_the_answer_reads_it(trial)
    assert following.status == Assignment.Status.RESERVED and following.condition_id == trial.condition_id
    response_submit(assignment=read, choice="0")
    step = participant_step_after_answer(assignment=read, following=following)
    assert step.step == Step.TRIAL and step.assignment.condition_id != trial.condition_id
    assert same_step(step, the_full_way(read))


def test_a_participant_marked_complete_goes_to_the_end_after_an_answer_whatever_is_left():
    study = small_study(design=Study.Design.WITHIN)
    trial = first_trial(study)
    Participant.objects.filter(pk=trial.participant_id).update(completed_at=timezone.now())
    read, following = as_the_answer_reads_it(trial)
    assert following.status == Assignment.Status.RESERVED
    step = participant_step_after_answer(assignment=read, following=following)
    assert step.step == Step.COMPLETE and same_step(step, the_full_way(read))


def test_before_leaving_the_instructions_a_participant_is_sent_back_to_them_and_nothing_is_allocated():
    study = small_study()
    participant = participant_enrol(study=study, enrolment=uuid.uuid4(), consent=True)
    assert participant_allocate_next_step(participant=participant) == NextStep(Step.INSTRUCTIONS)
    assert not Assignment.objects.exists()
    assert participant_start(participant=participant).step == Step.TRIAL


def test_a_part_entered_from_another_tab_is_not_allocated_again_from_a_stale_copy():
    # Two tabs of one participant leave the instructions: the second holds a copy read before the first entered the
    # part. Entering is a compare-and-set on the number of parts entered, so the second finds the first's batch.
    study = attention_study()
    first = participant_enrol(study=study, enrolment=uuid.uuid4(), consent=True)
    stale = Participant.objects.get(pk=first.pk)
    opened = participant_start(participant=first)
    batch = list(Assignment.objects.order_by("position").values_list("id", flat=True))

    again = participant_start(participant=stale)

    assert again == opened and again.step == Step.TRIAL
    assert list(Assignment.objects.order_by("position").values_list("id", flat=True)) == batch
    assert Participant.objects.get(pk=first.pk).phases_entered == 1
