"""studyapp.services.participants.identity: joining behind consent, resuming only with proof, the join rate."""

import hashlib
import hmac
import re
import time
import uuid
from datetime import UTC, datetime

import pytest
from django.conf import settings
from django.core.cache.backends.db import DatabaseCache
from django.db import connection
from django.test import Client
from django.utils import timezone

from studyapp.models import Assignment, Participant, Study
from studyapp.services.participants import Entry, JoinLink, participant_enter
from studyapp.services.participants.identity import (
    RESUME_MAX_FAILURES,
    EntryOutcome,
    StudyNotOpen,
    client_fingerprint,
    join_rate_allow,
    participant_enrol,
)
from studyapp.services.studies import study_close
from tests.factories import make_study
from tests.studyapp.helpers import (
    answer,
    at_once,
    consent,
    join_url,
    participant_of,
    path,
    small_study,
    start,
    trial_code,
)

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
            participant.condition, participant.client_hash) == (None, "", "", None, "")
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
    def join():
        outcome = participant_enter(study=study, enrolment=uuid.uuid4(), consent=True,
                                    link=JoinLink(external_id="same", external_session_id="session-1"))
        return outcome.entry.value, outcome.participant.pk

    joined = at_once(join, 8)
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


def enter(study, **kwargs):
    """participant_enter with a fresh consent form (a new enrolment) unless one is given."""
    kwargs.setdefault("enrolment", uuid.uuid4())
    kwargs.setdefault("consent", True)
    kwargs.setdefault("link", JoinLink())
    return participant_enter(study=study, **kwargs)


def expiry_in_seconds(key_part: str) -> float:
    """How long the rate-limit counter whose key contains `key_part` has left (the "ratelimit" database cache)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT cache_key, expires FROM ratelimit_cache")
        rows = [(key, expires) for key, expires in cursor.fetchall() if key_part in key]
    assert len(rows) == 1, rows
    expires = rows[0][1]
    if isinstance(expires, str):  # SQLite hands back text
        expires = datetime.fromisoformat(expires)
    if timezone.is_naive(expires):
        expires = timezone.make_aware(expires, UTC)
    return (expires - timezone.now()).total_seconds()


def test_the_join_fingerprint_is_a_keyed_sha256_of_address_and_browser_and_empty_when_neither_is_known():
    # Stable across releases (it is compared with older participants'): HMAC-SHA256 of "address\nuser agent" under
    # a key derived from the secret key, as Django's salted_hmac derives it.
    key = hashlib.sha256(b"studyapp.participant.client" + settings.SECRET_KEY.encode()).digest()
    expected = hmac.new(key, b"203.0.113.7\nFirefox/140", hashlib.sha256).hexdigest()
    assert client_fingerprint(address="203.0.113.7", user_agent="Firefox/140") == expected
    assert client_fingerprint(address="", user_agent="") == ""
    only_address = client_fingerprint(address="203.0.113.7", user_agent="")
    only_browser = client_fingerprint(address="", user_agent="203.0.113.7")
    assert len(only_address) == len(only_browser) == 64 and only_address != only_browser

    joined = enter(small_study(), client_address="203.0.113.7", user_agent="Firefox/140")
    assert joined.participant.client_hash == expected
    assert enter(small_study()).participant.client_hash == ""  # nothing known about where they came from


def test_consenting_records_the_links_ids_and_a_condition_and_an_empty_id_as_none():
    study = small_study(design=Study.Design.BETWEEN)
    link = JoinLink(external_id="5f00aa", external_study_id="st-1", external_session_id="se-1")
    joined = enter(study, link=link).participant
    stored = Participant.objects.get(pk=joined.pk)
    assert (stored.external_id, stored.external_study_id, stored.external_session_id, stored.consent) == (
        "5f00aa", "st-1", "se-1", Participant.Consent.GIVEN)
    assert stored.condition.study_id == study.pk
    # Two visitors whose link names no id: two participants, neither holding the empty id.
    anonymous = [enter(study, link=JoinLink(external_id="")).participant for _ in range(2)]
    assert [p.external_id for p in anonymous] == [None, None] and anonymous[0].pk != anonymous[1].pk
    assert participant_enrol(study=study, enrolment=uuid.uuid4(), consent=True).client_hash == ""


def test_enrolling_in_a_study_that_is_not_open_is_an_error():
    draft, closed = small_study(open_it=False), small_study()
    study_close(study=closed)
    for study in (draft, closed):
        study.refresh_from_db()
        with pytest.raises(StudyNotOpen, match=f"^study {study.code} is {study.status}$"):
            participant_enrol(study=study, enrolment=uuid.uuid4(), consent=True)
    assert not Participant.objects.exists()


def test_after_closing_those_already_in_resume_and_newcomers_are_turned_away():
    study = small_study()
    form = uuid.uuid4()
    own = enter(study, enrolment=form).participant
    prolific = enter(study, link=JoinLink(external_id="5f00bb", external_session_id="se-2")).participant
    study_close(study=study)
    study.refresh_from_db()

    assert enter(study, enrolment=form) == EntryOutcome(Entry.RESUMED, own)
    assert enter(study, link=JoinLink(external_id="5f00bb", external_session_id="se-2")) == EntryOutcome(
        Entry.RESUMED, prolific)
    assert enter(study) == EntryOutcome(Entry.CLOSED)
    assert Participant.objects.count() == 2


def test_a_known_id_needs_its_proof_whichever_of_session_or_resume_code_the_person_has():
    study = small_study()
    with_session = enter(study, link=JoinLink(external_id="p-session", external_session_id="se-3")).participant
    panel = enter(study, link=JoinLink(external_id="p-panel")).participant
    # A Prolific participant in a browser whose link lost its SESSION_ID proves themselves with the resume code.
    no_session = JoinLink(external_id="p-session")
    assert enter(study, link=no_session).entry == Entry.PROOF_NEEDED
    assert enter(study, link=no_session, resume_code=with_session.resume_code) == EntryOutcome(
        Entry.RESUMED, with_session)
    assert enter(study, link=JoinLink(external_id="p-session", external_session_id="se-9")).entry == (
        Entry.SECOND_ATTEMPT)
    # A panel participant (no SESSION_ID recorded) whose link now carries one still needs the resume code.
    with_one = JoinLink(external_id="p-panel", external_session_id="se-4")
    assert enter(study, link=with_one).entry == Entry.PROOF_NEEDED
    assert enter(study, link=with_one, resume_code="WRONG-WRONG").entry == Entry.PROOF_WRONG
    assert enter(study, link=with_one, resume_code=panel.resume_code) == EntryOutcome(Entry.RESUMED, panel)
    # Declining never runs the proof check: it records a bare refusal.
    declined = enter(study, consent=False, link=JoinLink(external_id="p-panel"))
    assert declined.entry == Entry.JOINED and declined.participant.consent == Participant.Consent.DECLINED


def test_ten_wrong_resume_codes_lock_that_id_out_for_fifteen_minutes_and_no_other():
    study, other_study = small_study(), small_study()
    locked = enter(study, link=JoinLink(external_id="p-1")).participant
    neighbour = enter(study, link=JoinLink(external_id="p-2")).participant
    same_id_elsewhere = enter(other_study, link=JoinLink(external_id="p-1")).participant
    for _ in range(RESUME_MAX_FAILURES - 1):
        assert enter(study, link=JoinLink(external_id="p-1"), resume_code="WRONG").entry == Entry.PROOF_WRONG
    # After nine wrong codes the right one still works; the tenth wrong one locks the id.
    assert enter(study, link=JoinLink(external_id="p-1"), resume_code=locked.resume_code).entry == Entry.RESUMED
    assert enter(study, link=JoinLink(external_id="p-1"), resume_code="WRONG").entry == Entry.PROOF_WRONG
    assert enter(study, link=JoinLink(external_id="p-1"), resume_code=locked.resume_code).entry == Entry.PROOF_LOCKED
    assert 15 * 60 - 5 < expiry_in_seconds("resume-failures") <= 15 * 60
    assert enter(study, link=JoinLink(external_id="p-2"), resume_code=neighbour.resume_code).entry == Entry.RESUMED
    assert enter(other_study, link=JoinLink(external_id="p-1"),
                 resume_code=same_id_elsewhere.resume_code).entry == Entry.RESUMED


def test_the_join_rate_counts_new_participants_per_study_and_address_in_a_one_minute_window():
    study, other_study = small_study(), small_study()
    limited = {"client_address": "203.0.113.7", "joins_per_minute": 2}
    assert [enter(study, **limited).entry for _ in range(3)] == [Entry.JOINED, Entry.JOINED, Entry.RATE_LIMITED]
    assert 55 < expiry_in_seconds(f"join-rate:{study.code}:203.0.113.7") <= 60
    assert enter(study, client_address="198.51.100.1", joins_per_minute=2).entry == Entry.JOINED
    assert enter(other_study, **limited).entry == Entry.JOINED
    # Without a limit (None) nobody is counted or turned away.
    assert [enter(study, client_address="192.0.2.1").entry for _ in range(3)] == [Entry.JOINED] * 3
    assert Participant.objects.filter(study=study).count() == 6
    # Refused joins count too (three so far): the fourth is refused under a limit of 2, the fifth allowed under 5.
    assert not join_rate_allow(study=study, client="203.0.113.7", per_minute=2)
    assert join_rate_allow(study=study, client="203.0.113.7", per_minute=5)


@pytest.mark.django_db(transaction=True)
def test_wrong_resume_codes_sent_in_parallel_are_checked_no_more_than_ten_times(monkeypatch):
    # A slow counter read widens the gap between reading the failures and counting one more: without the check
    # being serialised, guesses arriving together all read "fewer than ten" and are all checked.
    study = small_study()
    enter(study, link=JoinLink(external_id="p-7"))
    original_get = DatabaseCache.get

    def slow_get(self, *args, **kwargs):
        time.sleep(0.05)
        return original_get(self, *args, **kwargs)

    monkeypatch.setattr(DatabaseCache, "get", slow_get)
    entries = at_once(lambda: enter(study, link=JoinLink(external_id="p-7"), resume_code="WRONG-GUESS").entry, 14)
    assert sorted(entry.value for entry in entries) == sorted(
        [Entry.PROOF_WRONG.value] * RESUME_MAX_FAILURES + [Entry.PROOF_LOCKED.value] * 4)
