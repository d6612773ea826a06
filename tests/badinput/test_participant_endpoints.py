"""Malformed requests at every participant endpoint: a clear 4xx (never a 500), and nothing stored.

Every case starts from a participant sitting at a trial and compares the stored rows before and
after. The existing tests cover choice "99", "idk" where not allowed, a NaN client time, a forged
cookie and a tampered enrolment token; this corpus covers the rest.
"""

import pytest
from django.test import Client

from studyapp.models import Assignment, Participant, Response
from tests.factories import make_dataset, make_study
from tests.studyapp.helpers import join_url, start

pytestmark = pytest.mark.django_db


def rows() -> tuple:
    return (Participant.objects.count(), Assignment.objects.count(), Response.objects.count(),
            tuple(Assignment.objects.order_by("id").values_list("status", flat=True)))


@pytest.fixture
def at_trial():
    """(study, client, trial path) for a participant looking at their first trial."""
    study = make_study(dataset=make_dataset(n_classes=3, train_per_class=2, test_per_class=2), items_per_participant=2)
    client = Client()
    page = start(client, study)
    return study, client, page.request["PATH_INFO"]


@pytest.mark.parametrize("choice", [
    "", " ", "-1", "3", "1.5", "0x1", "1e3", "99999999999999999999", "idk!", "none", "<script>", "\x00",
    "\u0000", "0; DROP TABLE studyapp_response", "x" * 21,
])
def test_an_answer_that_is_not_one_of_the_offered_choices_is_a_400_and_stores_nothing(at_trial, choice):
    _study, client, trial = at_trial
    before = rows()
    response = client.post(trial, {"choice": choice, "rt_client_ms": "1000"})
    assert response.status_code == 400
    assert "Please choose one of the answers." in response.content.decode()
    assert rows() == before


def test_a_class_of_another_studys_dataset_is_not_an_answer_here(at_trial):
    _study, client, trial = at_trial
    make_study(dataset=make_dataset(n_classes=6, train_per_class=2, test_per_class=1))  # has class 5; ours stops at 2
    before = rows()
    assert client.post(trial, {"choice": "5"}).status_code == 400
    assert rows() == before


@pytest.mark.parametrize(("data", "content_type"), [
    ({}, None),  # no choice at all
    ({"choices": "0"}, None),  # misspelt field
    ('{"choice": "0"}', "application/json"),  # JSON is not what the form sends
    ("choice=%ff%fe", "application/x-www-form-urlencoded"),  # not UTF-8
    ("\x00\x01\x02garbage", "application/octet-stream"),
], ids=["empty", "misspelt-field", "json", "invalid-utf8", "binary"])
def test_a_body_that_is_not_the_answer_form_is_a_400_and_stores_nothing(at_trial, data, content_type):
    _study, client, trial = at_trial
    before = rows()
    kwargs = {"content_type": content_type} if content_type else {}
    assert client.post(trial, data, **kwargs).status_code == 400
    assert rows() == before


def test_a_body_over_the_upload_limit_is_refused_before_the_view_runs(at_trial, settings):
    _study, client, trial = at_trial
    before = rows()
    big = "x" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1)
    response = client.post(trial, {"choice": "0", "padding": big})
    assert response.status_code == 400
    assert "Traceback" not in response.content.decode()
    assert rows() == before


def test_too_many_form_fields_are_refused(at_trial, settings):
    _study, client, trial = at_trial
    before = rows()
    fields = {f"f{i}": "1" for i in range(settings.DATA_UPLOAD_MAX_NUMBER_FIELDS + 1)}
    assert client.post(trial, {"choice": "0", **fields}).status_code == 400
    assert rows() == before


def test_a_file_smuggled_into_an_answer_is_ignored_and_never_stored(at_trial, settings, tmp_path):
    _study, client, trial = at_trial
    payload = tmp_path / "evil.html"
    payload.write_bytes(b"<script>alert(1)</script>" * 1000)
    media_before = sorted(p.name for p in settings.MEDIA_ROOT.rglob("*"))
    with payload.open("rb") as fh:
        response = client.post(trial, {"choice": "1", "attachment": fh})
    assert response.status_code == 302  # the answer itself was fine
    assert Response.objects.get().choice.index == 1
    assert sorted(p.name for p in settings.MEDIA_ROOT.rglob("*")) == media_before


@pytest.mark.parametrize(("method", "where"), [
    ("put", "join"), ("patch", "join"), ("delete", "join"), ("post", "next"), ("put", "trial"), ("delete", "trial"),
    ("post", "image"), ("post", "done"), ("post", "declined"), ("post", "full"), ("options", "trial"), ("head", "image"),
])
def test_a_wrong_method_is_a_405_and_changes_nothing(at_trial, method, where):
    study, client, trial = at_trial
    path = {"join": join_url(study), "next": f"/s/{study.code}/next", "trial": trial, "image": trial + "/image",
            "done": f"/s/{study.code}/done", "declined": f"/s/{study.code}/declined", "full": f"/s/{study.code}/full"}
    before = rows()
    response = getattr(client, method)(path[where])
    assert response.status_code == 405
    assert rows() == before


@pytest.mark.parametrize("cookie", ["", "garbage", "x" * 3000, "00000000-0000-0000-0000-000000000000",
                                    "a:b:c", "\u00e9\u00e9\u00e9", '"quoted"'])
def test_a_missing_or_forged_participant_cookie_gets_no_trial_and_records_nothing(at_trial, cookie):
    study, _client, trial = at_trial
    stranger = Client()
    if cookie:
        stranger.cookies[f"participant_{study.code.hex}"] = cookie
    before = rows()
    assert stranger.get(trial).status_code == 404
    assert stranger.post(trial, {"choice": "0"}).status_code == 404
    assert stranger.get(trial + "/image").status_code == 404
    assert stranger.get(f"/s/{study.code}/next").url == f"/s/{study.code}/join"
    assert stranger.post(f"/s/{study.code}/instructions").url == f"/s/{study.code}/join"
    assert rows() == before


@pytest.mark.parametrize("enrol", ["", "x", "null", "a" * 201, "eyJhIjoxfQ:1abc:forged"])
def test_a_missing_or_forged_enrolment_token_enrols_nobody(enrol):
    study = make_study(dataset=make_dataset(n_classes=2, test_per_class=1))
    response = Client().post(join_url(study), {"enrol": enrol, "decision": "accept"})
    assert response.status_code == 200  # the consent page again, with the reason
    assert "I agree" in response.content.decode()
    assert not Participant.objects.exists()


@pytest.mark.parametrize("decision", ["", "yes", "ACCEPT", "accept ", "<script>"])
def test_an_unknown_consent_decision_enrols_nobody(decision):
    study = make_study(dataset=make_dataset(n_classes=2, test_per_class=1))
    client = Client()
    page = client.get(join_url(study))
    enrol = page.content.decode().split('name="enrol" value="')[1].split('"')[0]
    assert client.post(join_url(study), {"enrol": enrol, "decision": decision}).status_code == 200
    assert not Participant.objects.exists()


@pytest.mark.parametrize("query", ["PROLIFIC_PID=%00", "pid=a%0Ab", "PROLIFIC_PID=" + "p" * 201, "STUDY_ID=%1b[31m",
                                   "SESSION_ID=" + "s" * 300])
def test_a_join_link_with_malformed_parameters_is_a_400_and_enrols_nobody(query):
    study = make_study(dataset=make_dataset(n_classes=2, test_per_class=1))
    client = Client()
    assert client.get(f"/s/{study.code}/join?{query}").status_code == 400
    assert client.post(f"/s/{study.code}/join?{query}", {"decision": "accept"}).status_code == 400
    assert not Participant.objects.exists()


@pytest.mark.parametrize("path", ["/s/not-a-uuid/join", "/s/00000000-0000-0000-0000-000000000000/join",
                                  "/s/{study}/t/not-a-uuid", "/s/{study}/examples/../../admin/", "/s/{study}/t/%00"])
def test_malformed_or_unknown_codes_in_urls_are_a_404(at_trial, path):
    study, client, _trial = at_trial
    before = rows()
    assert client.get(path.format(study=study.code)).status_code == 404
    assert rows() == before
