"""The trial page served from its cached skeleton is byte for byte the page the template renders directly."""

import re

import pytest
from django.contrib.messages.storage.fallback import FallbackStorage
from django.contrib.sessions.backends.db import SessionStore
from django.template.loader import render_to_string
from django.test import Client, RequestFactory
from django.utils import translation

from studyapp import fragments
from studyapp.fragments import trial_fragments
from studyapp.models import ClassNameTranslation, Study
from studyapp.selectors.hot_reads import participant_trial_get
from studyapp.selectors.participants import trial_page
from studyapp.services.studies import study_open
from tests.factories import make_dataset, make_study
from tests.studyapp.helpers import answer, participant_of, start, trial_code

pytestmark = pytest.mark.django_db

_TOKEN = re.compile(r'(name="csrfmiddlewaretoken" value=")[^"]+(")')


def rendered_directly(client: Client, study: Study, path: str) -> str:
    """What templates/studyapp/trial.html renders for this page, without any cache."""
    assignment = participant_trial_get(study_code=study.code, participant_code=participant_of(client, study).code,
                                       code=trial_code(client.get(path)))
    page = trial_page(assignment=assignment)
    request = RequestFactory().get(path)
    request.session = SessionStore()
    request._messages = FallbackStorage(request)
    with translation.override(study.language):
        context = {"study": study, "assignment": assignment, "page": page,
                   "fragments": trial_fragments(study=study, condition_id=assignment.condition_id, page=page)}
        return render_to_string("studyapp/trial.html", context, request=request)


def same_page(served: str, direct: str) -> bool:
    # The CSRF token is masked afresh for every page: only its place is compared.
    return _TOKEN.sub(r"\1TOKEN\2", served) == _TOKEN.sub(r"\1TOKEN\2", direct)


def walk(client: Client, study: Study, page) -> list[str]:
    """Every trial page of the participant (each twice: the second comes from the skeleton the first made)."""
    seen = []
    while trial_code(page):
        path = page.request["PATH_INFO"]
        for _ in range(2):
            served = client.get(path).content.decode()
            assert same_page(served, rendered_directly(client, study, path)), path
        seen.append(served)
        page = answer(client, page)
    return seen


def test_every_trial_page_of_every_part_is_the_page_the_template_renders():
    study = make_study(dataset=make_dataset(n_classes=4, train_per_class=2, test_per_class=3),
                       items_per_participant=3, title="Pets <&> \"quoted\"",
                       instructions="Look closely.\n\nThen answer.")
    pages = walk(client := Client(), study, start(client, study))
    assert len(pages) == 9
    assert "Part 3 of 3" in pages[-1] and "Image 3 of 3" in pages[-1]
    assert "data-next-image" in pages[0] and "data-next-image" not in pages[2]  # the last of a part has no next
    # ... and they did come from skeletons (one per part, first trial or not, with a next trial or not).
    made = [skeleton for key, skeleton in fragments._skeletons.items() if key[0] == study.code]
    assert len(made) >= 6 and all(made)


def test_a_participant_with_a_resume_code_and_a_korean_study_with_translated_names_get_the_same_page():
    dataset = make_dataset(n_classes=3, train_per_class=2, test_per_class=2)
    study = make_study(dataset=dataset, open_it=False, shots=(0, 2), language="ko", items_per_participant=2)
    for label, name in zip(dataset.classes.order_by("index"), ("고양이", "개", "토끼"), strict=True):
        ClassNameTranslation.objects.create(study=study, label=label, name=name)
    study = study_open(study=study)
    client = Client()
    pages = walk(client, study, start(client, study, pid="panel-7"))
    resume = participant_of(client, study).resume_code
    assert all(resume in page and "고양이" in page for page in pages)


def test_pages_of_two_participants_share_nothing_but_the_skeleton():
    study = make_study(dataset=make_dataset(n_classes=3, train_per_class=2, test_per_class=4), items_per_participant=2)
    first, second = Client(), Client()
    a, b = start(first, study, pid="a-1"), start(second, study, pid="b-2")
    page_a, page_b = a.content.decode(), b.content.decode()
    assert trial_code(a) not in page_b and trial_code(b) not in page_a
    assert participant_of(first, study).resume_code not in page_b


def test_a_new_title_shows_at_once_and_a_message_is_shown_once():
    study = make_study(dataset=make_dataset(n_classes=3, train_per_class=2, test_per_class=2), items_per_participant=2)
    client = Client()
    page = start(client, study)
    path = page.request["PATH_INFO"]
    Study.objects.filter(pk=study.pk).update(title="Renamed while running")
    assert "Renamed while running" in client.get(path).content.decode()
    session = client.session  # a notice waiting for the next page, as after a timed-out trial
    request = RequestFactory().get(path)
    request.session = session
    storage = FallbackStorage(request)
    storage.add(20, "That image timed out.")
    from django.http import HttpResponse

    response = HttpResponse()
    storage.update(response)
    for morsel in response.cookies.values():
        client.cookies[morsel.key] = morsel.value
    assert "That image timed out." in client.get(path).content.decode()
    assert "That image timed out." not in client.get(path).content.decode()
