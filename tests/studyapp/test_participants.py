import io
import re
import uuid
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone
from PIL import Image

from studyapp.models import Assignment, Participant, Response, ShotExample, Study
from studyapp.services.participants import JoinLink, participant_enter, response_submit
from studyapp.services.studies import study_close
from tests.factories import make_dataset, make_study
from tests.studyapp.test_participants_flow import (
    answer,
    consent,
    finish,
    join_url,
    participant_of,
    start,
    trial_code,
)

pytestmark = pytest.mark.django_db


def small_study(**fields) -> Study:
    fields.setdefault("items_per_participant", 2)
    return make_study(dataset=make_dataset(n_classes=3, train_per_class=3, test_per_class=2), **fields)


def path(response) -> str:
    return response.request["PATH_INFO"]


# Joining and consent


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


# Trials


def test_the_trial_page_offers_every_class_sorted_and_i_dont_know():
    dataset = make_dataset(n_classes=3, class_names=["Siamese", "abyssinian", "Bengal"], train_per_class=2)
    study = make_study(dataset=dataset)
    html = start(Client(), study).content.decode()
    names = re.findall(r'<button type="submit" name="choice" value="\d+" class="choice">([^<]+)</button>', html)
    assert names == ["abyssinian", "Bengal", "Siamese"]
    assert 'value="idk"' in html
    assert 'alt="Image to classify"' in html


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


def test_shot_examples_are_the_answer_cards_with_their_names_in_one_and_two_shot_trials_only():
    study = small_study(design=Study.Design.WITHIN, items_per_participant=1)
    client = Client()
    page = start(client, study)
    counts = {}
    while trial_code(page):
        shots = Assignment.objects.get(code=trial_code(page)).condition.shots
        html = page.content.decode()
        # Each card is one answer button holding its class's example photos and its name.
        cards = re.findall(r'<button type="submit" name="choice" value="(\d+)" class="choice card-answer">'
                           r'<span class="thumbs">(.*?)</span><span class="card-name">([^<]+)</span></button>', html)
        examples = [url for _, thumbs, _ in cards for url in re.findall(r'src="(/s/[^"]+/examples/[0-9a-f-]{36})"',
                                                                          thumbs)]
        counts[shots] = (len(cards), len(examples))
        assert all(len(re.findall("<img", thumbs)) == shots for _, thumbs, _ in cards)
        for url in examples:
            image = client.get(url)
            assert image.status_code == 200 and image["Content-Type"] == "image/jpeg"
        if shots:
            by_value = {value: name for value, _, name in cards}
            labels = {str(e.label.index): e.label.name for e in ShotExample.objects.filter(condition__shots=shots)}
            assert by_value == labels  # a card's photos are examples of the class it answers
        page = answer(client, page)
    assert counts == {0: (0, 0), 1: (3, 3), 2: (3, 6)}


def test_the_progress_bar_and_trial_number_advance():
    study = small_study(design=Study.Design.BETWEEN)
    client = Client()
    page = start(client, study)
    assert "Image 1 of 2" in page.content.decode()
    page = answer(client, page)
    assert "Image 2 of 2" in page.content.decode()
    assert 'value="50"' in page.content.decode()


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


# Privacy: nothing may reveal a trial's label


def test_another_participants_trial_and_image_are_not_found():
    study = small_study()
    owner, other = Client(), Client()
    page = start(owner, study)
    start(other, study)
    url = path(page)
    assert other.get(url).status_code == 404
    assert other.get(url + "/image").status_code == 404
    assert other.post(url, {"choice": "0"}).status_code == 404
    assert Client().get(url + "/image").status_code == 404  # no cookie at all
    assert not Response.objects.exists()


def test_trial_images_are_jpeg_without_exif_and_name_no_file():
    study = small_study()
    client = Client()
    page = start(client, study)
    image = client.get(path(page) + "/image")
    assert image.status_code == 200 and image["Content-Type"] == "image/jpeg"
    assert "Content-Disposition" not in image
    # The participant's own browser may keep it (the page prefetches the next photo); no shared cache may.
    assert image["Cache-Control"] == "private, max-age=3600"
    decoded = Image.open(io.BytesIO(image.content))
    assert decoded.format == "JPEG" and not decoded.getexif() and "exif" not in decoded.info


def test_trial_pages_of_different_classes_differ_only_in_opaque_codes_and_progress():
    dataset = make_dataset(n_classes=3, train_per_class=2, test_per_class=1)
    study = make_study(dataset=dataset, shots=(1,), items_per_participant=3)
    client = Client()
    page = start(client, study)
    pages = {}
    while trial_code(page):
        assignment = Assignment.objects.get(code=trial_code(page))
        html = page.content.decode()
        html = html.replace(str(assignment.code), "CODE")
        html = re.sub(r'name="csrfmiddlewaretoken" value="[^"]+"', "CSRF", html)
        html = re.sub(r' data-next-image="[^"]+"', '', html)  # the next trial's opaque code, if there is one
        # Progress differs by design, and the first trial of a part carries a notice.
        html = re.sub(r"Image \d of \d|\d+% done|value=\"\d+\" aria-label|>\d+%<|<p class=\"notice\">.*?</p>", "", html,
                      flags=re.S)
        html = re.sub(r"\s+", " ", html)
        pages[assignment.item.label.name] = html
        page = answer(client, page)
    assert len(pages) == 3
    assert len(set(pages.values())) == 1


def test_nothing_served_names_an_original_filename_or_a_stored_path():
    study = small_study(design=Study.Design.WITHIN)
    client = Client()
    page = start(client, study)
    items = list(study.dataset.items.all())
    while True:
        html = page.content.decode()
        for item in items:
            assert item.original_filename not in html
            assert item.content_hash not in html and str(item.code) not in html
        if not trial_code(page):
            break
        page = answer(client, page)


# Attention checks


def attention_study(**fields) -> Study:
    dataset = make_dataset(n_classes=3, train_per_class=6, test_per_class=4)
    return make_study(dataset=dataset, design=Study.Design.BETWEEN, shots=(0,), items_per_participant=4,
                      attention_check_rate=0.5, attention_threshold=0.75, **fields)


def test_attention_checks_are_known_answer_items_that_are_never_shot_examples_nor_counted_as_answers():
    study = attention_study()
    client = Client()
    finish(client, start(client, study))
    participant = participant_of(client, study)
    checks = participant.assignments.filter(is_attention_check=True)
    assert checks.count() == 4  # rate 0.5: as many checks as test items
    assert all(a.slot is None and a.item.split == study.shot_split for a in checks)
    assert participant.assignments.filter(is_attention_check=False).count() == 4
    assert not participant.attention_failed


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


def test_without_spare_known_answer_items_attention_checks_are_skipped_with_a_warning(caplog):
    # Two training images per class, both used as two-shot examples: nothing left to check with.
    study = make_study(dataset=make_dataset(n_classes=3, train_per_class=2), attention_check_rate=0.3)
    client = Client()
    finish(client, start(client, study))
    assert not Assignment.objects.filter(is_attention_check=True).exists()
    assert "attention check" in caplog.text


def test_the_home_page_still_renders():
    assert Client().get("/").status_code == 200
