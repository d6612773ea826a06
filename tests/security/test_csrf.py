"""CSRF: every form carries a token, and every state-changing POST without a valid one is refused and changes nothing."""

import re

import pytest
from django.contrib.auth.models import User
from django.test import Client

from studyapp.models import Assignment, Participant, Response
from studyapp.pages import CSRF, ENROL
from tests.factories import make_dataset, make_study
from tests.security.crawl import crawl_participant_pages
from tests.studyapp.helpers import join_url

pytestmark = pytest.mark.django_db



def token(response) -> str:
    return CSRF.search(response.content.decode())[1]


def counts() -> tuple[int, int, int]:
    return Participant.objects.count(), Assignment.objects.count(), Response.objects.count()


def test_every_post_form_on_every_participant_page_carries_a_csrf_token():
    crawl = crawl_participant_pages()
    kinds = set()
    for hop in crawl.html():
        for form in re.findall(r"<form\b[^>]*>.*?</form>", hop.text, re.S | re.I):
            if re.search(r'method="post"', form, re.I):
                assert 'name="csrfmiddlewaretoken"' in form, hop
                path = hop.url.split("?")[0]
                kinds.add("trial" if "/t/" in path else path.rsplit("/", 1)[-1])
    assert {"join", "instructions", "trial"} <= kinds  # consent, start and answer forms were all seen


def study_and_client():
    study = make_study(dataset=make_dataset(n_classes=2, test_per_class=1), items_per_participant=1)
    return study, Client(enforce_csrf_checks=True)


def to_consent(client, study):
    return client.get(join_url(study))


def to_instructions(client, study):
    page = client.get(join_url(study))
    return client.post(join_url(study), {"csrfmiddlewaretoken": token(page), "enrol": ENROL.search(
        page.content.decode())[1], "decision": "accept"}, follow=True)


def to_trial(client, study):
    page = to_instructions(client, study)
    return client.post(f"/s/{study.code}/instructions", {"csrfmiddlewaretoken": token(page)}, follow=True)


STEPS = {
    # step: (how to get to the form, the POST it makes without a token)
    "consent": (to_consent, lambda study, page: (join_url(study), {
        "enrol": ENROL.search(page.content.decode())[1], "decision": "accept"})),
    "start": (to_instructions, lambda study, page: (f"/s/{study.code}/instructions", {})),
    "answer": (to_trial, lambda study, page: (page.request["PATH_INFO"], {"choice": "0"})),
}


@pytest.mark.parametrize("step", STEPS)
def test_a_participant_post_without_a_token_is_refused_and_changes_nothing(step):
    study, client = study_and_client()
    reach, make_post = STEPS[step]
    page = reach(client, study)
    assert page.status_code == 200
    before = counts()
    path, data = make_post(study, page)
    refused = client.post(path, data)
    assert refused.status_code == 403
    assert "Please reload the page" in refused.content.decode()  # templates/403_csrf.html, in the study's language
    assert counts() == before
    # With the page's own token the same POST goes through: the refusal was the missing token.
    assert client.post(path, {**data, "csrfmiddlewaretoken": token(page)}).status_code == 302


@pytest.mark.parametrize("step", STEPS)
def test_a_post_with_another_browsers_token_is_refused(step):
    study, victim = study_and_client()
    reach, make_post = STEPS[step]
    page = reach(victim, study)
    attacker = Client(enforce_csrf_checks=True)
    attackers_token = token(attacker.get(join_url(study)))
    before = counts()
    path, data = make_post(study, page)
    assert victim.post(path, {**data, "csrfmiddlewaretoken": attackers_token}).status_code == 403
    assert counts() == before


def test_a_cross_site_post_is_refused_even_with_a_valid_token():
    study, client = study_and_client()
    page = to_trial(client, study)
    refused = client.post(page.request["PATH_INFO"], {"csrfmiddlewaretoken": token(page), "choice": "0"},
                          HTTP_ORIGIN="https://attacker.example")
    assert refused.status_code == 403
    assert not Response.objects.exists()


def test_the_admin_login_form_is_csrf_protected():
    User.objects.create_superuser("boss", password="a long admin password 1")
    client = Client(enforce_csrf_checks=True)
    client.get("/admin/login/")
    refused = client.post("/admin/login/", {"username": "boss", "password": "a long admin password 1"})
    assert refused.status_code == 403
    assert "_auth_user_id" not in client.session
