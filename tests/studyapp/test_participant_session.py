"""The participant session of issue 15, through the Django client and the services: leaving frees places at once,
returns marked by the researcher, attention checks as Prolific expects, practice, translations, the screen gate's
server side, per-answer timings and attention, and the report's attention exclusions."""

import io
import re

import pytest
from django.db import IntegrityError, transaction
from django.test import Client
from django.urls import reverse

from evaluator.report import ReportOptions, compute_tables
from evaluator.study_reports import study_trials
from studyapp.models import Assignment, ClassNameTranslation, Participant, Response, ShotExample, Study
from studyapp.selectors.participants import practice_item_ids
from studyapp.services.participants import participant_withdraw
from studyapp.services.participants.allocation import checks_minimum_per_part
from studyapp.services.studies import study_open
from tests.factories import make_dataset, make_study
from tests.studyapp.test_participants_flow import answer, consent, join_url, participant_of, start, trial_code

pytestmark = pytest.mark.django_db

IPHONE = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
          "Version/17.0 Mobile/15E148 Safari/604.1")


def live_reservations(study: Study) -> int:
    return Assignment.objects.filter(condition__study=study, status=Assignment.Status.RESERVED).count()


def test_leaving_frees_every_live_reservation_at_once_and_keeps_the_answers():
    # k = 1: every item has one place, so a second participant gets nothing while the first holds them.
    study = make_study(dataset=make_dataset(n_classes=2, test_per_class=2), shots=(0,), k_per_item=1,
                       items_per_participant=4, return_url="https://app.prolific.com/submissions/complete?cc=RETURN")
    client = Client()
    page = answer(client, start(client, study))
    participant = participant_of(client, study)
    assert live_reservations(study) == 3
    confirm = client.get(f"/s/{study.code}/leave")
    assert confirm.status_code == 200 and "Stop and leave the study?" in confirm.content.decode()
    assert live_reservations(study) == 3  # a GET only asks
    left = client.post(f"/s/{study.code}/leave")
    assert left.status_code == 302 and left.url == "https://app.prolific.com/submissions/complete?cc=RETURN"
    participant.refresh_from_db()
    assert participant.withdrawn_at is not None and participant.completed_at is None
    assert live_reservations(study) == 0  # free at once, not when the reservations would have lapsed
    assert Response.objects.filter(assignment__participant=participant).count() == 1  # the answer stays
    # The freed places go to the next person straight away.
    other = Client()
    other_page = start(other, study)
    assert trial_code(other_page) and Assignment.objects.filter(participant=participant_of(other, study)).count() == 3
    # The one who left answers nothing more and sees no more images.
    stale = client.post(page.request["PATH_INFO"], {"choice": "0"}, follow=True)
    assert stale.request["PATH_INFO"] == f"/s/{study.code}/left"
    assert Response.objects.filter(assignment__participant=participant).count() == 1
    assert client.get(page.request["PATH_INFO"] + "/image").status_code == 404
    assert client.get(f"/s/{study.code}/next", follow=True).request["PATH_INFO"] == f"/s/{study.code}/left"


def test_an_answer_to_a_trial_freed_by_leaving_is_refused_not_taken_back():
    study = make_study(dataset=make_dataset(n_classes=2, test_per_class=2), shots=(0,), items_per_participant=2)
    client = Client()
    page = start(client, study)
    participant = participant_of(client, study)
    trial = Assignment.objects.get(code=trial_code(page))
    participant_withdraw(participant=participant)
    from studyapp.services.participants import response_submit

    outcome = response_submit(assignment=trial, choice="0")
    assert outcome.refused and not Response.objects.exists()
    trial.refresh_from_db()
    assert trial.status == Assignment.Status.EXPIRED


def test_the_admin_marks_participants_returned_from_pasted_or_uploaded_ids(admin_client):
    study = make_study(dataset=make_dataset(n_classes=2, test_per_class=2), shots=(0,), items_per_participant=2)
    for pid in ("5f00a", "5f00b", "5f00c"):
        start(Client(), study, PROLIFIC_PID=pid, SESSION_ID=f"s-{pid}")
    assert live_reservations(study) == 6
    url = reverse("admin:studyapp_study_returns", args=[study.pk])
    pasted = admin_client.post(url, {"ids": "5f00a\n nobody-here , 5f00a"})
    html = pasted.content.decode()
    assert "Marked returned: 1 (5f00a)" in html and "nobody-here" in html
    upload = io.BytesIO(b"Participant id,Status\n5f00b,RETURNED\n")
    upload.name = "prolific_export.csv"
    admin_client.post(url, {"ids": "", "file": upload})
    withdrawn = set(Participant.objects.filter(study=study, withdrawn_at__isnull=False).values_list("external_id",
                                                                                                   flat=True))
    assert withdrawn == {"5f00a", "5f00b"}
    assert live_reservations(study) == 2  # only 5f00c still holds places


def test_a_study_longer_than_five_minutes_gives_everyone_at_least_two_attention_checks():
    dataset = make_dataset(n_classes=3, train_per_class=6, test_per_class=12)
    long_study = make_study(dataset=dataset, design=Study.Design.BETWEEN, items_per_participant=60,
                            attention_check_rate=0.01)  # 1 % of 36 items would mostly round to none
    short_study = make_study(dataset=dataset, design=Study.Design.BETWEEN, items_per_participant=5,
                             attention_check_rate=0.01)
    assert checks_minimum_per_part(study=long_study) == 2 and checks_minimum_per_part(study=short_study) == 0
    within = make_study(dataset=dataset, items_per_participant=20, attention_check_rate=0.05)
    assert checks_minimum_per_part(study=within) == 1  # three parts: at least three checks in all
    for n in range(4):
        start(Client(), long_study, pid=f"long-{n}")
    per_person = [p.assignments.filter(is_attention_check=True).count()
                  for p in Participant.objects.filter(study=long_study)]
    assert min(per_person) >= 2


def test_failing_the_attention_checks_ends_on_a_page_asking_to_return_the_study_without_a_code():
    study = make_study(dataset=make_dataset(n_classes=3, train_per_class=4), design=Study.Design.BETWEEN,
                       items_per_participant=2, attention_check_rate=0.5, attention_threshold=0.75,
                       return_url="https://example.org/return")
    client = Client()
    page = start(client, study)
    while trial_code(page):
        trial = Assignment.objects.get(code=trial_code(page))
        wrong = str((trial.item.label.index + 1) % 3)
        page = answer(client, page, wrong if trial.is_attention_check else None)
    participant = participant_of(client, study)
    participant.refresh_from_db()
    html = page.content.decode()
    assert participant.attention_failed and participant.completed_at is not None
    assert participant.completion_code not in html
    assert "return the study" in html and "reject" not in html.lower()
    assert 'href="https://example.org/return"' in html


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


def test_a_korean_study_shows_translated_class_names_and_leaves_prompt_names_alone():
    dataset = make_dataset(n_classes=3, class_names=["Abyssinian", "Bengal", "Siamese"], test_per_class=2)
    study = make_study(dataset=dataset, open_it=False, shots=(1,), language="ko", items_per_participant=2)
    for label, name in zip(dataset.classes.order_by("index"), ["아비시니안", "벵갈", "샴"], strict=True):
        ClassNameTranslation.objects.create(study=study, label=label, name=name)
    study = study_open(study=study)
    client = Client()
    page = start(client, study)
    html = page.content.decode()
    assert page["Content-Language"] == "ko" and '<html lang="ko">' in html
    assert re.findall(r'<span class="card-name">([^<]+)</span>', html) == ["벵갈", "샴", "아비시니안"]
    assert "모르겠음" in html and "I don't know" not in html and "Abyssinian" not in html
    assert sorted(dataset.classes.values_list("prompt_name", flat=True)) == ["abyssinian", "bengal", "siamese"]
    # Frozen with the study, by the database.
    with pytest.raises(IntegrityError), transaction.atomic():
        ClassNameTranslation.objects.filter(study=study).update(name="고양이")
    # The trial table and the report keep the dataset's names.
    answer(client, page)
    assert set(study_trials(study=study)["target"]) <= {"Abyssinian", "Bengal", "Siamese"}


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


def test_an_answer_stores_the_pages_timings_and_attention_and_garbled_values_as_missing():
    study = make_study(dataset=make_dataset(n_classes=2, test_per_class=2), shots=(0,), items_per_participant=2)
    client = Client()
    page = start(client, study)
    page = answer(client, page, "0", rt_client_ms="812.4", images_ready_ms="95", clock_start_ms="103",
                  blur_count="2", hidden_ms="1500")
    answer(client, page, "1", rt_client_ms="NaN", images_ready_ms="-5", clock_start_ms="1e400", blur_count="x",
           hidden_ms="")
    first, second = Response.objects.order_by("id")
    assert (first.rt_client_ms, first.images_ready_ms, first.clock_start_ms, first.blur_count, first.hidden_ms) == (
        812, 95, 103, 2, 1500)
    assert (second.rt_client_ms, second.images_ready_ms, second.clock_start_ms, second.blur_count,
            second.hidden_ms) == (None, None, None, None, None)


def test_the_report_leaves_out_inattentive_answers_or_participants_only_when_asked():
    # Two participants, four answers each, all correct but one of "b"'s, given with the page hidden 9 s. The true
    # accuracies are known: all answers 7/8; without that answer 7/7; without participant b 4/4.
    study = make_study(dataset=make_dataset(n_classes=2, test_per_class=2), shots=(0,), items_per_participant=4)
    for name in ("a", "b"):
        client = Client()
        page = start(client, study, pid=name)
        n = 0
        while trial_code(page):
            trial = Assignment.objects.get(code=trial_code(page))
            bad = name == "b" and n == 0
            choice = str((trial.item.label.index + 1) % 2) if bad else None
            page = answer(client, page, choice, hidden_ms="9000" if bad else "0", blur_count="1" if bad else "0")
            n += 1
    trials = study_trials(study=study)
    assert {"blur_count", "hidden_ms"} <= set(trials.columns)

    def accuracy(**options) -> tuple[float, int]:
        tables, counts = compute_tables(trials, options=ReportOptions(bootstrap=0, average="micro", **options))
        row = tables["table2"].query("subject_kind == 'human'").iloc[0]
        return round(row["accuracy"], 1), counts["n_human_answers"]

    assert accuracy() == (87.5, 8)  # off by default
    assert accuracy(max_hidden_ms=5000) == (100.0, 7)
    assert accuracy(max_blur_count=0, attention_unit="participant") == (100.0, 4)
    _, counts = compute_tables(trials, options=ReportOptions(bootstrap=0, max_hidden_ms=5000))
    assert counts["inattentive_answers_excluded"] == 1


def test_the_admin_edits_class_name_translations_of_a_draft_study_and_shows_them_read_only_once_open(admin_client):
    dataset = make_dataset(n_classes=2)
    draft = make_study(dataset=dataset, open_it=False, language="ko")
    url = reverse("admin:studyapp_study_change", args=[draft.pk])
    assert 'name="class_names-TOTAL_FORMS"' in admin_client.get(url).content.decode()
    label = dataset.classes.get(index=0)
    ClassNameTranslation.objects.create(study=draft, label=label, name="고양이")
    opened = study_open(study=draft)
    html = admin_client.get(reverse("admin:studyapp_study_change", args=[opened.pk])).content.decode()
    assert "고양이" in html and 'name="class_names-0-name"' not in html  # read-only, like the study's design
