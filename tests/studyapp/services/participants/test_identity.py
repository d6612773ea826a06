"""studyapp.services.participants.identity: joining behind consent, resuming only with proof, the join rate."""

import re
import threading
import uuid

import pytest
from django.db import connections
from django.test import Client

from studyapp.models import Assignment, Participant
from studyapp.services.participants import Entry, JoinLink, participant_enter
from studyapp.services.studies import study_close
from tests.factories import make_study
from tests.studyapp.helpers import answer, consent, join_url, participant_of, path, small_study, start, trial_code

pytestmark = pytest.mark.django_db


def test_the_join_link_shows_the_studys_consent_text_before_anything_is_recorded():
    study = small_study(consent_text="We store your answers for science.")
    page = Client().get(join_url(study))
    assert page.status_code == 200
    assert "We store your answers for science." in page.content.decode()
    assert not Participant.objects.exists()


def test_consenting_leads_to_the_instructions_and_then_the_first_trial():
    study = small_study(instructions="Look closely at each animal.")
    client = Client()
    page = consent(client, study)
    assert path(page) == f"/s/{study.code}/instructions"
    assert "Look closely at each animal." in page.content.decode()
    assert not Assignment.objects.exists()
    page = client.post(f"/s/{study.code}/instructions", follow=True)
    assert trial_code(page)
    participant = participant_of(client, study)
    assert participant.consent == Participant.Consent.GIVEN


def test_declining_records_the_refusal_and_nothing_else():
    study = small_study()
    client = Client()
    page = consent(client, study, decision="decline", PROLIFIC_PID="p-1", STUDY_ID="s-1", SESSION_ID="x-1")
    assert path(page) == f"/s/{study.code}/declined"
    assert "nothing else about you has been recorded" in page.content.decode()
    participant = Participant.objects.get()
    assert participant.consent == Participant.Consent.DECLINED
    # Not even the id: an id held by a refusal would keep its owner out (see tests/security/test_identity.py).
    assert (participant.external_id, participant.external_study_id, participant.external_session_id,
            participant.condition) == (None, "", "", None)
    assert not Assignment.objects.exists()
    # Coming back does not sneak them into the trials; their link offers the consent form again.
    assert path(client.get(f"/s/{study.code}/next", follow=True)) == f"/s/{study.code}/declined"
    assert path(client.get(join_url(study), follow=True)) == f"/s/{study.code}/declined"
    again = client.get(join_url(study, PROLIFIC_PID="p-1"), follow=True)
    assert path(again) == f"/s/{study.code}/join" and "I agree" in again.content.decode()
    assert not Assignment.objects.exists()


def test_prolific_parameters_are_stored_and_the_same_prolific_session_resumes_the_same_participant():
    study = small_study()
    first = Client()
    page = consent(first, study, PROLIFIC_PID="5f1e0a", STUDY_ID="study-9", SESSION_ID="sess-3")
    page = first.post(f"/s/{study.code}/instructions", follow=True)
    page = answer(first, page)
    current = path(page)
    # A new browser (no cookie) with the same id and session continues where the participant is, once it
    # has been through the consent form (the session is the proof; see tests/security/test_identity.py).
    second = Client()
    resumed = consent(second, study, PROLIFIC_PID="5f1e0a", STUDY_ID="study-9", SESSION_ID="sess-3")
    assert path(resumed) == current
    participant = Participant.objects.get()
    assert (participant.external_id, participant.external_study_id, participant.external_session_id) == (
        "5f1e0a", "study-9", "sess-3",
    )
    assert participant_of(second, study) == participant


def test_a_generic_pid_parameter_identifies_the_participant_too():
    study = small_study()
    consent(Client(), study, pid="panel-42")
    again = consent(Client(), study, pid="panel-42")
    assert path(again) == f"/s/{study.code}/join" and 'name="resume_code"' in again.content.decode()
    assert Participant.objects.get().external_id == "panel-42"


def test_an_anonymous_participant_resumes_through_the_signed_cookie():
    study = small_study()
    client = Client()
    page = start(client, study)
    page = answer(client, page)
    resumed = client.get(join_url(study), follow=True)
    assert path(resumed) == path(page)
    assert Participant.objects.count() == 1


def test_a_forged_cookie_is_ignored():
    study = small_study()
    victim = Client()
    start(victim, study)
    code = participant_of(victim, study).code
    attacker = Client()
    attacker.cookies[f"participant_{study.code.hex}"] = str(code)
    page = attacker.get(join_url(study))
    assert "I agree" in page.content.decode()  # a stranger gets the consent page, not the victim's trials
    assert attacker.get(f"/s/{study.code}/next").url == f"/s/{study.code}/join"


def test_a_double_submitted_consent_form_enrols_one_participant():
    study = small_study()
    client = Client()
    page = client.get(join_url(study))
    enrol = re.search(r'name="enrol" value="([^"]+)"', page.content.decode())[1]
    # The second post carries no participant cookie yet: the browser sent it before the first reply came back.
    for _ in range(2):
        same_browser = Client()
        same_browser.cookies["studyapp_browser"] = client.cookies["studyapp_browser"].value
        same_browser.post(join_url(study), {"enrol": enrol, "decision": "accept"})
    assert Participant.objects.count() == 1


def test_a_tampered_enrolment_token_is_refused():
    study = small_study()
    page = Client().post(join_url(study), {"enrol": "not-signed", "decision": "accept"})
    assert page.status_code == 200 and "expired" in page.content.decode()
    assert not Participant.objects.exists()


def test_joining_twice_with_one_external_id_enrols_once():
    study = small_study()
    link = JoinLink(external_id="dup", external_session_id="s-1")
    a = participant_enter(study=study, enrolment=uuid.uuid4(), consent=True, link=link)
    b = participant_enter(study=study, enrolment=uuid.uuid4(), consent=True, link=link)
    assert (a.entry.value, b.entry.value) == ("joined", "resumed")
    assert a.participant == b.participant and Participant.objects.count() == 1


@pytest.mark.parametrize("status", ["draft", "closed"])
def test_a_study_that_is_not_open_turns_new_participants_away_politely(status):
    study = small_study(open_it=status != "draft")
    if status == "closed":
        study_close(study=study)
    page = Client().get(join_url(study))
    assert page.status_code in (404, 410)
    assert "not accepting participants" in page.content.decode()
    assert not Participant.objects.exists()


def test_a_malformed_join_link_is_refused():
    study = small_study()
    page = Client().get(join_url(study, PROLIFIC_PID="x" * 201))
    assert page.status_code == 400
    assert not Participant.objects.exists()


def test_too_many_new_participants_from_one_address_are_asked_to_wait(settings):
    settings.STUDY_JOIN_RATE_PER_MINUTE = 2
    study = small_study()
    statuses = [consent(Client(), study).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    assert Participant.objects.count() == 2


@pytest.mark.django_db(transaction=True)
def test_simultaneous_joins_with_one_prolific_id_and_session_enrol_one_participant():
    # Eight browsers post their own consent forms at once with the same id and session: one enrols, the
    # others prove they are that participant (the session matches) and resume it; none is refused.
    study = make_study()
    barrier = threading.Barrier(8)
    joined, failures = [], []

    def join():
        try:
            barrier.wait()
            outcome = participant_enter(study=study, enrolment=uuid.uuid4(), consent=True,
                                        link=JoinLink(external_id="same", external_session_id="session-1"))
            joined.append((outcome.entry.value, outcome.participant.pk))
        except Exception as exc:  # reported below
            failures.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=join) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert sorted(entry for entry, _ in joined) == ["joined"] + ["resumed"] * 7
    assert len({pk for _, pk in joined}) == 1
    assert Participant.objects.filter(study=study).count() == 1


def test_a_resume_code_copied_by_hand_matches_whatever_its_case_spaces_and_dashes():
    study = small_study()
    link = JoinLink(external_id="panel-1")
    first = participant_enter(study=study, enrolment=uuid.uuid4(), consent=True, link=link)
    stored = first.participant.resume_code  # "ABCDE-FGHJK"
    typed = " " + " ".join(stored.replace("-", "").lower()) + " "

    again = participant_enter(study=study, enrolment=uuid.uuid4(), consent=True, link=link, resume_code=typed)
    other = stored[:-1] + ("2" if stored[-1] != "2" else "3")
    wrong = participant_enter(study=study, enrolment=uuid.uuid4(), consent=True, link=link, resume_code=other)

    assert (again.entry, again.participant) == (Entry.RESUMED, first.participant)
    assert wrong.entry == Entry.PROOF_WRONG
