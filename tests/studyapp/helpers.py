"""Helpers (no tests here) that walk a participant through the pages with Django's test client, and the small
studies the participant tests share."""

import re
import threading
from urllib.parse import urlencode

from django.db import connections
from django.test import Client, RequestFactory

from studyapp.models import Assignment, Participant, Study
from studyapp.pages import TRIAL_PATH
from tests.factories import make_dataset, make_study


def join_url(study: Study, **params) -> str:
    return f"/s/{study.code}/join" + (f"?{urlencode(params)}" if params else "")


def consent(client: Client, study: Study, decision: str = "accept", **params):
    """GET the join link, then submit the consent form; returns the final response (redirects followed)."""
    page = client.get(join_url(study, **params))
    assert page.status_code == 200, page.status_code
    enrol = re.search(r'name="enrol" value="([^"]+)"', page.content.decode())[1]
    return client.post(join_url(study, **params), {"enrol": enrol, "decision": decision}, follow=True)


def start(client: Client, study: Study, **params):
    """Consent (with the join link's `params`) and leave the instructions; returns the first trial page."""
    page = consent(client, study, **params)
    assert page.request["PATH_INFO"].endswith("/instructions"), page.request["PATH_INFO"]
    return client.post(f"/s/{study.code}/instructions", follow=True)


def trial_code(response) -> str | None:
    match = TRIAL_PATH.match(response.request["PATH_INFO"])
    return match[1] if match else None


def answer(client: Client, response, choice: str | None = None, **extra):
    """Answer the trial shown in `response` (correctly unless `choice` is given); returns the next page."""
    code = trial_code(response)
    assert code, f"not a trial page: {response.request['PATH_INFO']}"
    if choice is None:
        choice = str(Assignment.objects.get(code=code).item.label.index)
    return client.post(response.request["PATH_INFO"], {"choice": choice, **extra}, follow=True)


def finish(client: Client, response, choice: str | None = None):
    """Answer every remaining trial; returns the final page."""
    while trial_code(response):
        response = answer(client, response, choice)
    return response


def participant_of(client: Client, study: Study) -> Participant:
    """The participant the client's signed cookie names, read the way the server reads it."""
    request = RequestFactory().get("/", HTTP_COOKIE=client.cookies.output(header="", sep=";"))
    code = request.get_signed_cookie(f"participant_{study.code.hex}", salt="studyapp.participant")
    return Participant.objects.get(code=code)


def small_study(**fields) -> Study:
    """Three classes of two test items each, two trials a part unless `fields` say otherwise."""
    fields.setdefault("items_per_participant", 2)
    return make_study(dataset=make_dataset(n_classes=3, train_per_class=3, test_per_class=2), **fields)


def path(response) -> str:
    """The path of the page a followed response ended on."""
    return response.request["PATH_INFO"]


def attention_study(**fields) -> Study:
    """One zero-shot part of four test items, with as many attention checks (rate 0.5) drawn from spare shot images."""
    dataset = make_dataset(n_classes=3, train_per_class=6, test_per_class=4)
    return make_study(dataset=dataset, design=Study.Design.BETWEEN, shots=(0,), items_per_participant=4,
                      attention_check_rate=0.5, attention_threshold=0.75, **fields)


def at_once(work, n: int) -> list:
    """Run `work()` in n threads released together; returns what each returned. Every thread closes its own
    database connections; an exception in any of them fails the calling test."""
    barrier = threading.Barrier(n)
    results, failures = [], []

    def run():
        try:
            barrier.wait()
            results.append(work())
        except Exception as exc:  # reported below
            failures.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run) for _ in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == [], failures
    return results
