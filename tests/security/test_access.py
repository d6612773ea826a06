"""Who may see what: the admin, reports and labelled images only for staff with the right permissions; a
participant only their own trials, through opaque codes, in their own study."""

import re
import uuid

import pytest
from django.contrib.auth.models import Permission, User
from django.core import signing
from django.test import Client

from studyapp.models import Assignment, Item, Participant, Response, ShotExample, Study
from tests.factories import make_dataset, make_study
from tests.security.crawl import crawl_participant_pages
from tests.studyapp.helpers import consent, join_url, participant_of, start, trial_code

pytestmark = pytest.mark.django_db

PASSWORD = "a long password for tests 7"


def admin_urls(study: Study, item: Item) -> list[str]:
    return [
        "/admin/", "/admin/studyapp/study/", f"/admin/studyapp/study/{study.pk}/change/",
        f"/admin/studyapp/study/{study.pk}/report/", "/admin/studyapp/item/", f"/admin/studyapp/item/{item.code}/image.jpg",
        "/admin/studyapp/dataset/import/", "/admin/studyapp/participant/",
        # The dashboard, its live precision, the protocol download and the planning pages (evaluator/urls.py).
        f"/studies/{study.code}/dashboard/", f"/studies/{study.code}/dashboard/precision",
        f"/studies/{study.code}/protocol.json", f"/studies/{study.code}/plan/",
        f"/runs/{uuid.uuid4()}/",  # last: tests below treat it apart
    ]


def logged_in(user: User) -> Client:
    client = Client()
    assert client.login(username=user.username, password=PASSWORD)
    return client


@pytest.mark.parametrize("who", ["anonymous", "participant", "non-staff user"])
def test_admin_pages_reports_and_labelled_images_send_everyone_but_staff_to_the_login(who):
    study = make_study()
    item = study.dataset.items.first()
    if who == "anonymous":
        client = Client()
    elif who == "participant":
        client = Client()
        start(client, study)
    else:
        client = logged_in(User.objects.create_user("member", password=PASSWORD))
    for url in admin_urls(study, item):
        response = client.get(url)
        assert response.status_code == 302 and response.url.startswith("/admin/login/"), url
    progress = client.get(f"/runs/{uuid.uuid4()}/progress.json")
    assert progress.status_code == 403 and progress.json() == {"error": "staff only"}


def test_staff_without_permissions_cannot_import_datasets_or_see_items_images_or_reports():
    study = make_study()
    item = study.dataset.items.first()
    client = logged_in(User.objects.create_user("intern", password=PASSWORD, is_staff=True))
    assert client.get("/admin/").status_code == 200  # the (empty) admin index
    for url in admin_urls(study, item)[1:-1]:
        assert client.get(url).status_code == 403, url
    refused = client.post("/admin/studyapp/dataset/import/", {"name": "etc", "path": "/etc", "format": "folder"})
    assert refused.status_code == 403


def test_staff_with_the_matching_permissions_get_exactly_what_they_were_given():
    study = make_study()
    item = study.dataset.items.first()
    user = User.objects.create_user("curator", password=PASSWORD, is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_item"))
    client = logged_in(user)
    image = client.get(f"/admin/studyapp/item/{item.code}/image.jpg")
    assert image.status_code == 200 and image["Content-Type"] == "image/jpeg"
    assert client.get("/admin/studyapp/dataset/import/").status_code == 403  # viewing is not importing
    assert client.get(f"/admin/studyapp/study/{study.pk}/report/").status_code == 403
    superuser = User.objects.create_superuser("boss", password=PASSWORD)
    assert logged_in(superuser).get("/admin/studyapp/dataset/import/").status_code == 200


def small_study(**fields) -> Study:
    fields.setdefault("items_per_participant", 2)
    return make_study(dataset=make_dataset(n_classes=3, train_per_class=2, test_per_class=2), **fields)


def test_another_participants_trial_is_indistinguishable_from_a_trial_that_does_not_exist():
    study = small_study()
    victim, attacker = Client(), Client()
    victim_trial = start(victim, study).request["PATH_INFO"]
    start(attacker, study)
    before = Assignment.objects.values_list("code", "status", "shown_at").get(code=victim_trial.rsplit("/", 1)[1])
    real = [attacker.get(victim_trial), attacker.get(victim_trial + "/image"), attacker.post(victim_trial, {"choice": "0"})]
    made_up = f"/s/{study.code}/t/{uuid.uuid4()}"
    fake = [attacker.get(made_up), attacker.get(made_up + "/image"), attacker.post(made_up, {"choice": "0"})]
    assert [(r.status_code, r.content) for r in real] == [(r.status_code, r.content) for r in fake]
    assert {r.status_code for r in real} == {404}
    after = Assignment.objects.values_list("code", "status", "shown_at").get(code=victim_trial.rsplit("/", 1)[1])
    assert after == before and not Response.objects.exists()


def test_a_trial_code_is_useless_under_another_study_even_to_its_owner():
    first, second = small_study(), small_study()
    client = Client()
    own_trial = trial_code(start(client, first))
    start(client, second)  # the same browser is a participant of both
    assert client.get(f"/s/{second.code}/t/{own_trial}").status_code == 404
    assert client.post(f"/s/{second.code}/t/{own_trial}", {"choice": "0"}).status_code == 404
    assert not Response.objects.exists()


def test_a_participant_cookie_copied_to_another_study_or_signed_with_another_key_is_ignored():
    first, second = small_study(), small_study()
    client = Client()
    start(client, first)
    value = client.cookies[f"participant_{first.code.hex}"].value
    stranger = Client()
    stranger.cookies[f"participant_{second.code.hex}"] = value  # a validly signed cookie, wrong study
    assert "I agree" in stranger.get(join_url(second)).content.decode()
    participant = participant_of(client, first)
    # Signed exactly like the server signs it (name + salt, timestamped), but with a key the attacker made up.
    forged = signing.TimestampSigner(key="django.http.cookies" + "x" * 50,
                                     salt=f"participant_{first.code.hex}studyapp.participant")
    attacker = Client()
    attacker.cookies[f"participant_{first.code.hex}"] = forged.sign(str(participant.code))
    assert "I agree" in attacker.get(join_url(first)).content.decode()
    assert attacker.get(f"/s/{first.code}/next").url == f"/s/{first.code}/join"


def test_shot_examples_are_served_only_to_participants_of_their_condition():
    study = small_study(design=Study.Design.BETWEEN)
    other = small_study()
    clients = {}
    for n in range(3):  # conditions are balanced: three participants, one per condition
        client = Client()
        start(client, study, pid=f"p{n}")
        clients[participant_of(client, study).condition.shots] = client
    assert set(clients) == {0, 1, 2}
    two_shot_example = ShotExample.objects.filter(condition__study=study, condition__shots=2).first()
    url = f"/s/{study.code}/examples/{two_shot_example.code}"
    assert clients[2].get(url).status_code == 200
    assert clients[0].get(url).status_code == 404 and clients[1].get(url).status_code == 404
    not_started = Client()
    consent(not_started, study, pid="p3")  # on the instructions page: in no part yet
    assert not_started.get(url).status_code == 404
    assert Client().get(url).status_code == 404
    foreign = ShotExample.objects.filter(condition__study=other).first()
    assert clients[2].get(f"/s/{study.code}/examples/{foreign.code}").status_code == 404


def test_every_code_in_a_participant_url_is_a_random_uuid4_and_no_database_id_appears():
    crawl = crawl_participant_pages()
    participant_urls = [hop.url.split("?")[0] for hop in crawl.hops if hop.url.startswith("/s/")]
    participant_urls += [hop.headers["Location"] for hop in crawl.hops if hop.headers.get("Location", "").startswith("/s/")]
    assert len(participant_urls) > 100
    for url in participant_urls:
        segments = url.strip("/").split("/")[1:]
        for before, segment in zip(["s", *segments], segments, strict=False):
            if re.fullmatch(r"[0-9a-f-]{36}", segment):
                assert uuid.UUID(segment).version == 4, url
            elif before == "practice":
                # The practice image's place in the study's practice list (1, 2, ...), the same for everyone: no
                # database id, and its label is shown after the answer anyway.
                assert re.fullmatch(r"[1-9][0-9]?", segment), url
            else:
                assert segment in {"join", "instructions", "next", "t", "image", "examples", "done", "declined",
                                   "full", "practice", "leave", "left"}, url
    assert Participant.objects.count() > 5
