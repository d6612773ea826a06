"""Participant identity: a Prolific id is not a password, and no part leaks into another (issue 14).

Each attack below was run against the app as an outsider would run it, over HTTP with Django's test
client; every one of them worked before the fix. Prolific ids and panel ids are not secrets (they
appear in exports, emails and URLs), so knowing one must never be enough to act as that participant.
"""

import base64
import binascii
import re
import time
from datetime import timedelta

import pytest
from django.core import signing
from django.test import Client
from django.utils import timezone

from studyapp.models import Assignment, Participant, Response, ShotExample, Study
from studyapp.pages import ENROL
from tests.factories import make_dataset, make_study
from tests.studyapp.helpers import answer, consent, join_url, participant_of, start, trial_code

pytestmark = pytest.mark.django_db

COOKIE = "participant_{}"
RESUME_CODE = re.compile(r'<code class="resume-code">([^<]+)</code>')


def small_study(**fields) -> Study:
    fields.setdefault("items_per_participant", 2)
    return make_study(dataset=make_dataset(n_classes=4, train_per_class=3, test_per_class=2), **fields)


def path(response) -> str:
    return response.request["PATH_INFO"]


def bound_to(client: Client, study: Study) -> Participant | None:
    """The participant the browser's cookie names, or None."""
    if COOKIE.format(study.code.hex) not in client.cookies or not client.cookies[COOKIE.format(study.code.hex)].value:
        return None
    try:
        return participant_of(client, study)
    except (signing.BadSignature, Participant.DoesNotExist):
        return None


def trial_state(study: Study) -> list[tuple]:
    return list(Assignment.objects.filter(condition__study=study).order_by("id").values_list(
        "participant_id", "status", "shown_at"))


def resume_code_shown(client: Client, study: Study, **params) -> str:
    """Consent and read the resume code the instructions page shows at the start."""
    page = consent(client, study, **params)
    assert path(page).endswith("/instructions"), path(page)
    return RESUME_CODE.search(page.content.decode())[1]


def post_resume_code(client: Client, study: Study, code: str, **params):
    """The consent form, then the resume-code form that follows it for an id that is already taken."""
    page = consent(client, study, **params)
    html = page.content.decode()
    assert 'name="resume_code"' in html, path(page)
    return client.post(join_url(study, **params), {"enrol": ENROL.search(html)[1], "decision": "accept",
                                                   "resume_code": code}, follow=True)


# 1. Takeover by a known id


def test_a_known_prolific_id_in_a_fresh_browser_does_not_reach_the_participants_trials():
    study = small_study()
    victim = Client()
    trial = path(start(victim, study, PROLIFIC_PID="5f00victim", STUDY_ID="s-1", SESSION_ID="victim-session"))
    owner = participant_of(victim, study)
    before = trial_state(study)

    attacker = Client()
    page = attacker.get(join_url(study, PROLIFIC_PID="5f00victim", STUDY_ID="s-1"))
    # Nothing but the consent page, the same for every visitor: no redirect, no cookie naming the victim.
    assert page.status_code == 200 and "I agree" in page.content.decode()
    assert bound_to(attacker, study) is None
    # Agreeing without the victim's session (made up, or none at all) does not make them the victim either.
    made_up = consent(attacker, study, PROLIFIC_PID="5f00victim", STUDY_ID="s-1", SESSION_ID="guessed-session")
    assert made_up.status_code == 403 and "already taken part" in made_up.content.decode()
    without = consent(attacker, study, PROLIFIC_PID="5f00victim", STUDY_ID="s-1")
    assert 'name="resume_code"' in without.content.decode()
    assert bound_to(attacker, study) is None
    assert attacker.get(trial).status_code == 404
    assert attacker.get(f"/s/{study.code}/done").url == f"/s/{study.code}/join"
    assert trial_state(study) == before and not Response.objects.exists()
    assert Participant.objects.filter(study=study).count() == 1
    owner.refresh_from_db()
    assert owner.completion_code not in (made_up.content.decode() + without.content.decode())


def test_a_prolific_participant_resumes_in_a_new_browser_with_the_same_session_only():
    study = small_study()
    first = Client()
    page = answer(first, start(first, study, PROLIFIC_PID="5f00p", STUDY_ID="s-1", SESSION_ID="sess-1"))
    second = Client()
    resumed = consent(second, study, PROLIFIC_PID="5f00p", STUDY_ID="s-1", SESSION_ID="sess-1")
    assert path(resumed) == path(page)
    assert bound_to(second, study) == participant_of(first, study)


def test_a_known_panel_id_needs_the_resume_code_shown_at_the_start():
    study = small_study()
    victim = Client()
    code = resume_code_shown(victim, study, pid="panel-7")
    trial = path(victim.post(f"/s/{study.code}/instructions", follow=True))
    before = trial_state(study)

    attacker = Client()
    asked = consent(attacker, study, pid="panel-7")
    assert asked.status_code == 200 and 'name="resume_code"' in asked.content.decode()
    for guess in ("", "AAAAA-AAAAA", code[:-1] + ("A" if code[-1] != "A" else "B")):
        refused = post_resume_code(attacker, study, guess, pid="panel-7")
        assert refused.status_code in (200, 403) and bound_to(attacker, study) is None
    assert attacker.get(trial).status_code == 404
    assert trial_state(study) == before

    # The participant, on another device, with their code: back at their trial.
    other_device = Client()
    back = post_resume_code(other_device, study, code.lower().replace("-", " "), pid="panel-7")
    assert path(back) == trial
    assert bound_to(other_device, study) == participant_of(victim, study)


def test_the_resume_code_is_shown_at_the_start_to_participants_with_an_id_and_to_nobody_else():
    study = small_study()
    assert not RESUME_CODE.search(consent(Client(), study).content.decode())  # anonymous: the cookie is all
    client = Client()
    code = resume_code_shown(client, study, pid="panel-9")
    participant = participant_of(client, study)
    assert code == participant.resume_code and re.fullmatch(r"[A-HJKMNP-Z2-9]{5}-[A-HJKMNP-Z2-9]{5}", code)
    trial = client.post(f"/s/{study.code}/instructions", follow=True)
    assert RESUME_CODE.search(trial.content.decode())[1] == code  # in the trial page's instructions too
    others = Participant.objects.exclude(pk=participant.pk).values_list("resume_code", flat=True)
    assert code not in others
    assert code not in consent(Client(), study, pid="panel-10").content.decode()


def test_wrong_resume_codes_are_limited_per_id(settings):
    study = small_study()
    resume_code_shown(Client(), study, pid="panel-8")
    statuses = [post_resume_code(Client(), study, "WRONG-CODE1", pid="panel-8").status_code for _ in range(11)]
    assert statuses[:10] == [403] * 10 and statuses[10] == 429


# 2. Forced rebinding by a link


def test_a_link_with_another_id_never_switches_a_browser_to_that_participant():
    study = small_study()
    attacker, victim = Client(), Client()
    attackers_trial = path(start(attacker, study, pid="attacker"))
    victims_trial = path(start(victim, study, pid="victim"))
    me = participant_of(victim, study)
    # The attacker sends the victim their own join link (an email, a forum post): a plain GET.
    page = victim.get(join_url(study, pid="attacker"))
    assert page.status_code == 200 and "I agree" in page.content.decode()
    assert bound_to(victim, study) == me
    assert victim.get(attackers_trial).status_code == 404
    assert path(victim.get(f"/s/{study.code}/next", follow=True)) == victims_trial


def test_a_browser_already_taking_part_follows_its_own_link_to_where_it_is():
    study = small_study()
    client = Client()
    trial = path(start(client, study, pid="same"))
    again = client.get(join_url(study, pid="same"), follow=True)
    assert path(again) == trial


# 3. Lock-out by declining


def test_declining_with_an_id_nobody_used_yet_does_not_lock_its_owner_out():
    study = small_study()
    consent(Client(), study, decision="decline", PROLIFIC_PID="5f00owner", SESSION_ID="stolen-link")
    owner = Client()
    page = consent(owner, study, PROLIFIC_PID="5f00owner", SESSION_ID="own-session")
    assert path(page) == f"/s/{study.code}/instructions"
    assert participant_of(owner, study).consent == Participant.Consent.GIVEN


def test_declining_with_someone_elses_id_changes_nothing_of_theirs():
    study = small_study()
    owner = Client()
    trial = path(start(owner, study, PROLIFIC_PID="5f00owner", SESSION_ID="own-session"))
    theirs = participant_of(owner, study)

    def state():
        return trial_state(study), Participant.objects.filter(pk=theirs.pk).values_list(
            "consent", "external_id", "external_session_id", "completed_at").get()

    before = state()
    for session in ("own-session", "other-session", ""):
        intruder = Client()
        consent(intruder, study, decision="decline", PROLIFIC_PID="5f00owner", SESSION_ID=session)
        assert bound_to(intruder, study) != theirs
    assert state() == before
    assert path(owner.get(f"/s/{study.code}/next", follow=True)) == trial


# 4. The consent token is not a credential


def consent_page(client: Client, study: Study, **params) -> str:
    page = client.get(join_url(study, **params))
    assert page.status_code == 200
    return ENROL.search(page.content.decode())[1]


def test_a_saved_consent_form_posted_from_another_browser_enrols_nobody_and_binds_nobody():
    study = small_study()
    victim = Client()
    token = consent_page(victim, study, pid="victim")
    victim.post(join_url(study, pid="victim"), {"enrol": token, "decision": "accept"})
    victims = participant_of(victim, study)
    for params in ({"pid": "victim"}, {"pid": "someone-else"}, {}):
        attacker = Client()
        attacker.get(join_url(study, **params))  # a browser of its own, with whatever cookies the site gives it
        replay = attacker.post(join_url(study, **params), {"enrol": token, "decision": "accept"}, follow=True)
        assert "expired" in replay.content.decode()
        assert bound_to(attacker, study) is None
    assert Participant.objects.filter(study=study).count() == 1
    assert participant_of(victim, study) == victims


def test_a_consent_form_expires_after_some_minutes(monkeypatch):
    study = small_study()
    client = Client()
    token = consent_page(client, study)
    later = time.time() + 6 * 60 * 60
    monkeypatch.setattr(signing.time, "time", lambda: later)
    page = client.post(join_url(study), {"enrol": token, "decision": "accept"})
    assert page.status_code == 200 and "expired" in page.content.decode()
    assert not Participant.objects.exists()


def test_a_consent_token_carries_no_readable_participant_id():
    study = small_study()
    client = Client()
    token = consent_page(client, study, pid="readable-id")
    client.post(join_url(study, pid="readable-id"), {"enrol": token, "decision": "accept"})
    participant = participant_of(client, study)
    payload = token.split(":")[0]
    try:
        decoded = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)).decode(errors="replace")
    except (binascii.Error, ValueError):
        decoded = ""
    for secret in (str(participant.code), participant.code.hex, "readable-id"):
        assert secret not in token and secret not in decoded


def test_a_consent_token_enrols_once_even_when_posted_again_by_its_own_browser():
    study = small_study()
    client = Client()
    token = consent_page(client, study, pid="once")
    client.post(join_url(study, pid="once"), {"enrol": token, "decision": "accept"})
    first = participant_of(client, study)
    # The same browser posts it again (a double click whose first reply was lost; a reload of the form).
    client.cookies.pop(COOKIE.format(study.code.hex))
    client.post(join_url(study, pid="other"), {"enrol": token, "decision": "accept"})
    assert participant_of(client, study) == first
    assert Participant.objects.filter(study=study).count() == 1


# 5. Examples are for the part that shows them


def test_no_example_is_served_during_the_no_example_part():
    study = small_study(design=Study.Design.WITHIN, items_per_participant=1)
    client = Client()
    page = start(client, study)
    assert Assignment.objects.get(code=trial_code(page)).condition.shots == 0
    # Codes passed on by another participant, or kept from an earlier identity.
    for shots in (1, 2):
        for example in ShotExample.objects.filter(condition__study=study, condition__shots=shots):
            assert client.get(f"/s/{study.code}/examples/{example.code}").status_code == 404
    page = answer(client, page)  # part 2 (one-shot)
    one_shot = ShotExample.objects.filter(condition__study=study, condition__shots=1)
    two_shot = ShotExample.objects.filter(condition__study=study, condition__shots=2)
    assert all(client.get(f"/s/{study.code}/examples/{e.code}").status_code == 200 for e in one_shot)
    assert all(client.get(f"/s/{study.code}/examples/{e.code}").status_code == 404 for e in two_shot)
    answer(client, page)  # part 3 (two-shot): a part-2 code is no longer a way in
    assert all(client.get(f"/s/{study.code}/examples/{e.code}").status_code == 200 for e in two_shot)
    assert all(client.get(f"/s/{study.code}/examples/{e.code}").status_code == 404 for e in one_shot)


def test_a_participant_removed_by_the_researcher_gets_no_image_any_more():
    # The image views used to remember who was asking for the life of the process.
    study = small_study(design=Study.Design.BETWEEN, shots=(2,))
    client = Client()
    page = start(client, study)
    example = ShotExample.objects.filter(condition__study=study).first()
    url = f"/s/{study.code}/examples/{example.code}"
    assert client.get(url).status_code == 200
    assert client.get(path(page) + "/image").status_code == 200
    participant = participant_of(client, study)
    Response.objects.filter(assignment__participant=participant).delete()
    participant.delete()  # withdrawn: the researcher deletes their data
    assert client.get(url).status_code == 404
    assert client.get(path(page) + "/image").status_code == 404


# 6. Answers are the exact values on the page


@pytest.mark.parametrize("choice", ["\u0663", "\uff13", "\u09e9", "+3", "03", " 3", "3 ", "3\n", "3_0"])
def test_a_choice_spelled_otherwise_than_on_the_page_is_not_an_answer(choice):
    study = small_study()
    client = Client()
    page = start(client, study)
    assert 'value="3"' in page.content.decode()  # class 3 exists and is offered as "3"
    refused = client.post(path(page), {"choice": choice})
    assert refused.status_code == 400
    assert not Response.objects.exists()


# 7. One person, many identities


def test_a_study_with_a_completion_url_turns_away_visitors_without_an_id():
    study = small_study(completion_url="https://app.prolific.com/submissions/complete?cc=C0DE")
    assert study.participant_id_required
    page = Client().get(join_url(study))
    assert page.status_code == 400 and "link from the site that sent you" in page.content.decode()
    posted = Client().post(join_url(study), {"enrol": "x", "decision": "accept"})
    assert posted.status_code == 400
    assert not Participant.objects.exists()
    assert path(consent(Client(), study, PROLIFIC_PID="5f00ok", SESSION_ID="s")) == f"/s/{study.code}/instructions"


def test_whether_an_id_is_required_is_the_researchers_choice():
    assert not small_study().participant_id_required
    assert not small_study(completion_url="https://example.org/done", participant_id_required=False) \
        .participant_id_required
    required = small_study(participant_id_required=True)
    assert required.participant_id_required
    assert Client().get(join_url(required)).status_code == 400
    open_to_all = small_study(completion_url="https://example.org/done", participant_id_required=False)
    assert path(consent(Client(), open_to_all)) == f"/s/{open_to_all.code}/instructions"


def test_one_id_is_one_participant_however_many_browsers_bring_it():
    study = small_study(participant_id_required=True)
    start(Client(), study, pid="one-person")
    for _ in range(3):
        consent(Client(), study, pid="one-person")
    assert Participant.objects.filter(study=study).count() == 1


def test_the_admin_shows_participants_that_look_like_one_person(admin_client):
    study = small_study()
    for n in range(3):
        consent(Client(REMOTE_ADDR="203.0.113.5", HTTP_USER_AGENT="Firefox/1"), study, pid=f"alias-{n}")
    consent(Client(REMOTE_ADDR="203.0.113.5", HTTP_USER_AGENT="Chrome/2"), study, pid="other-browser")
    consent(Client(REMOTE_ADDR="198.51.100.9", HTTP_USER_AGENT="Firefox/1"), study, pid="other-address")
    # Long ago: not "within minutes" of the others.
    old = consent(Client(REMOTE_ADDR="203.0.113.5", HTTP_USER_AGENT="Firefox/1"), study, pid="last-week")
    assert old.status_code == 200
    Participant.objects.filter(external_id="last-week").update(created_at=timezone.now() - timedelta(days=7))
    stored = Participant.objects.values_list("client_hash", flat=True)
    assert not any("203.0.113.5" in h or "198.51.100.9" in h for h in stored)  # the address is kept hashed only
    listing = admin_client.get("/admin/studyapp/participant/?lookalike=yes").content.decode()
    shown = set(re.findall(r"alias-\d|other-browser|other-address|last-week", listing))
    assert shown == {"alias-0", "alias-1", "alias-2"}
