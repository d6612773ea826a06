"""End to end in Debian's Chromium (headless, through Playwright): what a participant really sees."""

import io
from urllib.parse import unquote

import pytest
from PIL import Image
from playwright.sync_api import sync_playwright

from studyapp.models import Participant, Response, Study
from tests.factories import make_dataset, make_study

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

CHROMIUM = {
    "executable_path": "/usr/bin/chromium",
    "args": ["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
    "headless": True,
}
BREEDS = ["Abyssinian", "Bengal", "Siamese"]


def test_a_participant_walks_from_consent_through_every_condition_to_completion_and_nothing_leaks(live_server):
    dataset = make_dataset(n_classes=3, class_names=BREEDS, train_per_class=3, test_per_class=2)
    study = make_study(dataset=dataset, design=Study.Design.WITHIN, items_per_participant=2,
                       completion_url=f"{live_server.url}/", consent_text="Consent for the browser test.")
    secrets = [s for item in dataset.items.all() for s in (item.original_filename, item.content_hash, str(item.code))]
    label_spellings = {v for name in BREEDS for v in (name.lower(), name.lower().replace(" ", "_"))}
    requested, pages, problems = [], [], []
    gallery_sizes, gallery_urls, trial_urls = [], [], []

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(**CHROMIUM)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.on("request", lambda request: requested.append(request.url))
        # CSP violations and script errors end up here.
        page.on("console", lambda message: message.type == "error" and problems.append(message.text))
        page.on("pageerror", lambda error: problems.append(str(error)))

        page.goto(f"{live_server.url}/s/{study.code}/join?PROLIFIC_PID=browser-1&STUDY_ID=s&SESSION_ID=x")
        pages.append(page.content())
        assert "Consent for the browser test." in page.content()
        with page.expect_navigation():
            page.get_by_role("button", name="I agree, continue").click()
        pages.append(page.content())
        with page.expect_navigation():
            page.get_by_role("button", name="Start").click()

        trial = 0
        while "/t/" in page.url:
            trial_urls.append(page.url)
            page.wait_for_function("document.getElementById('subject').naturalWidth > 0")
            pages.append(page.content())
            assert page.locator("#subject").get_attribute("alt") == "Image to classify"
            examples = page.locator(".gallery .example img")
            gallery_sizes.append(examples.count())
            gallery_urls.append(set(examples.evaluate_all("images => images.map(i => i.src)")))
            if examples.count():
                # The examples sit on the trial page itself, named, and actually load.
                assert page.locator(".gallery").get_attribute("open") is not None
                assert sorted(set(page.locator(".gallery .example span").all_inner_texts())) == BREEDS
                examples.last.scroll_into_view_if_needed()
                page.wait_for_function("[...document.querySelectorAll('.gallery img')].every(i => i.naturalWidth > 0)")
            with page.expect_navigation():
                if trial % 3 == 0:
                    # Keyboard only: typing filters (the filter has focus), Enter picks the single match.
                    page.keyboard.type("beng")
                    assert page.locator(".choices .choice:visible").all_inner_texts() == ["Bengal"]
                    page.keyboard.press("Enter")
                elif trial % 3 == 1:
                    page.get_by_role("button", name="Siamese").dblclick()  # a double click is one answer
                else:
                    page.get_by_role("button", name="I don't know").click()
            trial += 1

        assert page.url.endswith(f"/s/{study.code}/done")
        pages.append(page.content())
        shown_code = page.locator(".completion-code").inner_text()
        page.wait_for_url(f"{live_server.url}/?cc={shown_code}")  # done.js sends them on
        image_urls = {url for url in requested if url.endswith("/image") or "/examples/" in url}
        assert len(image_urls) == 6 + 3 + 6  # six trials, then each shot condition's own example codes
        one_shot_examples = set().union(*(urls for urls in gallery_urls if len(urls) == 3))
        assert len(one_shot_examples) == 3
        for url in image_urls:
            fetched = page.request.get(url)  # with the participant's cookie
            if url in one_shot_examples:
                assert fetched.status == 404  # examples are served in their own part only; this one is over
                continue
            assert fetched.headers["content-type"] == "image/jpeg"
            decoded = Image.open(io.BytesIO(fetched.body()))
            assert not decoded.getexif() and "exif" not in decoded.info
        browser.close()

    assert problems == []
    participant = Participant.objects.get(study=study, external_id="browser-1")
    assert participant.completed_at is not None and participant.completion_code == shown_code
    answers = list(
        Response.objects.filter(assignment__participant=participant).order_by(
            "assignment__condition__shots", "assignment__position"
        )
    )
    assert [r.assignment.condition.shots for r in answers] == [0, 0, 1, 1, 2, 2]
    assert [str(r.assignment.code) for r in answers] == [url.rsplit("/", 1)[1] for url in trial_urls]
    expected = ["Bengal", "Siamese", None, "Bengal", "Siamese", None]
    assert [None if r.is_idk else r.choice.name for r in answers] == expected
    assert all(r.rt_client_ms is not None and r.rt_client_ms > 0 and r.rt_server_ms is not None for r in answers)
    assert gallery_sizes == [0, 0, 3, 3, 6, 6]

    for url in requested:
        lowered = unquote(url).lower()
        assert not any(spelling in lowered for spelling in label_spellings), url
        assert not any(secret.lower() in lowered for secret in secrets), url
    for html in pages:
        assert not any(secret in html for secret in secrets)
