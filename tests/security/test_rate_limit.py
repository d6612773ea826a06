"""The join endpoint is rate-limited per address and study: a script cannot fill a study with junk participants."""

import threading
import time
import uuid

import pytest
from django.core.cache.backends.db import DatabaseCache
from django.test import Client

from studyapp.models import Participant
from studyapp.pages import CSRF, ENROL
from tests.factories import make_dataset, make_study
from tests.participant_client import ParticipantBrowser
from tests.studyapp.helpers import at_once, consent, join_url


def small_study():
    return make_study(dataset=make_dataset(n_classes=2, test_per_class=1), items_per_participant=1)


@pytest.mark.django_db
def test_the_limit_counts_new_enrolments_per_address_and_study_only(settings):
    settings.STUDY_JOIN_RATE_PER_MINUTE = 2
    study, other_study = small_study(), small_study()
    first = Client(REMOTE_ADDR="203.0.113.7")
    assert consent(first, study).status_code == 200
    assert consent(Client(REMOTE_ADDR="203.0.113.7"), study).status_code == 200
    refused = consent(Client(REMOTE_ADDR="203.0.113.7"), study)
    assert refused.status_code == 429 and refused["Retry-After"] == "60"
    assert "Please wait a moment" in refused.content.decode()
    assert Participant.objects.filter(study=study).count() == 2
    # Another address, and the same address on another study, are not affected.
    assert consent(Client(REMOTE_ADDR="198.51.100.1"), study).status_code == 200
    assert consent(Client(REMOTE_ADDR="203.0.113.7"), other_study).status_code == 200
    # A participant who is already enrolled resumes freely: only new enrolments count.
    assert first.get(join_url(study), follow=True).status_code == 200


@pytest.mark.django_db
def test_behind_the_proxy_the_limit_counts_the_address_the_proxy_appended_not_one_the_client_forged(settings):
    settings.STUDY_JOIN_RATE_PER_MINUTE = 1
    settings.BEHIND_PROXY = True
    study = small_study()
    proxy = "10.0.0.2"  # every request reaches the app from the proxy
    assert consent(Client(REMOTE_ADDR=proxy, HTTP_X_FORWARDED_FOR="203.0.113.7"), study).status_code == 200
    # Two different participants behind the same proxy are not one address.
    assert consent(Client(REMOTE_ADDR=proxy, HTTP_X_FORWARDED_FOR="198.51.100.1"), study).status_code == 200
    # A forged first entry does not make a new address: the proxy's (last) entry is what counts.
    forged = Client(REMOTE_ADDR=proxy, HTTP_X_FORWARDED_FOR="192.0.2.99, 203.0.113.7")
    assert consent(forged, study).status_code == 429
    assert Participant.objects.filter(study=study).count() == 2


@pytest.mark.django_db
def test_without_a_proxy_a_client_sent_forwarded_header_is_ignored(settings):
    settings.STUDY_JOIN_RATE_PER_MINUTE = 1
    study = small_study()
    assert consent(Client(REMOTE_ADDR="203.0.113.7", HTTP_X_FORWARDED_FOR="192.0.2.1"), study).status_code == 200
    assert consent(Client(REMOTE_ADDR="203.0.113.7", HTTP_X_FORWARDED_FOR="192.0.2.2"), study).status_code == 429


@pytest.mark.django_db(transaction=True)
def test_concurrent_joins_cannot_slip_past_the_limit_between_reading_and_writing_the_counter(settings, monkeypatch):
    # A slow cache read widens the gap between reading the counter and writing it back: without the
    # check being serialised, joins arriving together all read the same count and all get in.
    settings.STUDY_JOIN_RATE_PER_MINUTE = 3
    study = small_study()
    original_get = DatabaseCache.get

    def slow_get(self, *args, **kwargs):
        time.sleep(0.15)
        return original_get(self, *args, **kwargs)

    monkeypatch.setattr(DatabaseCache, "get", slow_get)
    statuses = at_once(lambda: consent(Client(REMOTE_ADDR="203.0.113.9"), study).status_code, 8)
    assert sorted(statuses) == [200] * 3 + [429] * 5
    assert Participant.objects.filter(study=study).count() == 3


def _consent_over_http(base_url: str, study) -> int:
    browser = ParticipantBrowser(base_url=base_url)
    join = f"/s/{study.code}/join?pid=burst-{uuid.uuid4()}"
    page = browser.get(join)
    return browser.post(join, {"csrfmiddlewaretoken": CSRF.search(page.html)[1],
                               "enrol": ENROL.search(page.html)[1], "decision": "accept"}).status


@pytest.mark.services
@pytest.mark.django_db(transaction=True)
def test_the_limit_holds_across_web_workers_and_against_a_concurrent_burst(gunicorn_server):
    # Every request comes from 127.0.0.1. The counter lives in the database cache, so three worker
    # processes share it; twenty joins fired at once must still enrol at most five.
    study = small_study()
    server = gunicorn_server(workers=3, threads=2, STUDY_JOIN_RATE_PER_MINUTE="5")
    statuses: list[int] = []
    lock = threading.Lock()

    def one() -> None:
        status = _consent_over_http(server.url, study)
        with lock:
            statuses.append(status)

    threads = [threading.Thread(target=one) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    enrolled = Participant.objects.filter(study=study).count()
    assert sorted(set(statuses)) == [302, 429]
    assert enrolled == statuses.count(302) and enrolled <= 5
    # Sequentially afterwards: still refused within the minute.
    assert _consent_over_http(server.url, study) == 429


@pytest.mark.django_db
def test_admin_logins_from_an_address_with_too_many_failures_are_refused_without_checking_the_password(settings):
    from django.contrib.auth.models import User

    settings.ADMIN_LOGIN_MAX_FAILURES = 3
    User.objects.create_superuser("boss", password="correct horse battery")
    guesser = Client(REMOTE_ADDR="203.0.113.9")
    for guess in ("123456", "password", "letmein"):
        wrong = guesser.post("/admin/login/", {"username": "boss", "password": guess})
        assert wrong.status_code == 200 and "Please enter the correct username and password" in wrong.content.decode()
    refused = guesser.post("/admin/login/", {"username": "boss", "password": "correct horse battery"})
    assert refused.status_code == 429 and refused["Retry-After"] == "900"
    assert "_auth_user_id" not in guesser.session  # the right password from that address did not log in
    # Another address is not affected, and a successful login is not a failure.
    colleague = Client(REMOTE_ADDR="198.51.100.4")
    assert colleague.post("/admin/login/", {"username": "boss", "password": "correct horse battery"}).status_code == 302
    assert colleague.get("/admin/").status_code == 200
