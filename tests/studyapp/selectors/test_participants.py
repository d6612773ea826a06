"""studyapp.selectors.participants: the trial page (choices, shot cards, progress), practice and the screen gate."""

import re

import pytest
from django.test import Client

from studyapp.models import Assignment, Participant, Response, ShotExample, Study
from studyapp.selectors.participants import practice_item_ids
from tests.factories import make_dataset, make_study
from tests.studyapp.helpers import answer, consent, join_url, small_study, start, trial_code

pytestmark = pytest.mark.django_db

IPHONE = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
          "Version/17.0 Mobile/15E148 Safari/604.1")


def test_the_trial_page_offers_every_class_sorted_and_i_dont_know():
    dataset = make_dataset(n_classes=3, class_names=["Siamese", "abyssinian", "Bengal"], train_per_class=2)
    study = make_study(dataset=dataset)
    html = start(Client(), study).content.decode()
    names = re.findall(r'<button type="submit" name="choice" value="\d+" class="choice">([^<]+)</button>', html)
    assert names == ["abyssinian", "Bengal", "Siamese"]
    assert 'value="idk"' in html
    assert 'alt="Image to classify"' in html


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


def test_practice_uses_shot_split_images_that_are_no_test_item_shot_or_check_and_stores_nothing():
    dataset = make_dataset(n_classes=3, train_per_class=5, test_per_class=2)
    study = make_study(dataset=dataset, practice_trials=3, attention_check_rate=0.3, items_per_participant=2)
    practice = practice_item_ids(study=study)
    assert len(practice) == 3
    shots = set(ShotExample.objects.filter(condition__study=study).values_list("item_id", flat=True))
    tests = set(study.study_items.values_list("item_id", flat=True))
    assert not set(practice) & (shots | tests)
    assert set(dataset.items.filter(id__in=practice).values_list("split", flat=True)) == {"train"}
    client = Client()
    consent(client, study)
    for number in (1, 2, 3):
        page = client.get(f"/s/{study.code}/practice/{number}")
        assert page.status_code == 200 and client.get(f"/s/{study.code}/practice/{number}/image").status_code == 200
        item = dataset.items.get(id=practice[number - 1])
        feedback = client.post(f"/s/{study.code}/practice/{number}", {"choice": str(item.label.index)})
        assert "Correct!" in feedback.content.decode() and item.label.name in feedback.content.decode()
        wrong = client.post(f"/s/{study.code}/practice/{number}", {"choice": str((item.label.index + 1) % 3)})
        assert "Not quite" in wrong.content.decode() and item.label.name in wrong.content.decode()
    assert client.get(f"/s/{study.code}/practice/4").status_code == 404
    assert not Response.objects.exists() and not Assignment.objects.exists()
    page = client.post(f"/s/{study.code}/instructions", follow=True)  # "Start the study"
    while trial_code(page):
        page = answer(client, page)
    checks = set(Assignment.objects.filter(is_attention_check=True).values_list("item_id", flat=True))
    assert checks and not checks & set(practice)
    assert Client().get(f"/s/{study.code}/practice/1/image").status_code == 404  # strangers get nothing


def test_the_screen_gate_turns_away_small_windows_and_phones_before_consent_recording_nothing():
    study = make_study(dataset=make_dataset(n_classes=2), min_window_width=1000, min_window_height=600,
                       allow_phones=False)
    phone = Client(HTTP_USER_AGENT=IPHONE)
    page = phone.get(join_url(study))
    assert "This study cannot be done on a phone." in page.content.decode() and 'name="enrol"' not in page.content.decode()
    small = Client()
    form = small.get(join_url(study)).content.decode()
    assert 'data-min-width="1000"' in form and 'data-phones="0"' in form  # gate.js decides first
    enrol = re.search(r'name="enrol" value="([^"]+)"', form)[1]
    refused = small.post(join_url(study), {"enrol": enrol, "decision": "accept", "window_width": "390",
                                           "window_height": "844", "phone": "0"})
    assert "This study needs a bigger screen" in refused.content.decode()
    assert not Participant.objects.exists()
    fits = small.post(join_url(study), {"enrol": enrol, "decision": "accept", "window_width": "1280",
                                        "window_height": "900", "phone": "0"})
    assert fits.status_code == 302 and Participant.objects.count() == 1
