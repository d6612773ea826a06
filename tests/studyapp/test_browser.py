"""End to end in Debian's Chromium (headless, through Playwright): what a participant really sees."""

import io
import re
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import unquote

import pytest
from PIL import Image
from playwright.sync_api import sync_playwright

from studyapp.models import Assignment, ClassNameTranslation, Participant, Response, Study
from studyapp.services.studies import study_open
from tests.factories import make_dataset, make_study
from tests.studyapp.browser import (
    CHROMIUM,
    DESKTOP,
    PHONE,
    pets_study,
    screenshot,
    serious_violations,
    tab_to,
    wait_ready,
)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

BREEDS = ["Abyssinian", "Bengal", "Siamese"]
# What the page measured of every image of the trial: when the last one arrived, on the page's clock.
LAST_IMAGE_ARRIVED = """() => Math.max(...[...document.querySelectorAll('#subject, .choices img')].map(img => {
  const entry = performance.getEntriesByName(img.currentSrc || img.src)[0];
  return entry ? entry.responseEnd : 0;
}))"""


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
        arrived = []
        while "/t/" in page.url:
            trial_urls.append(page.url)
            wait_ready(page)
            pages.append(page.content())
            assert page.locator("#subject").get_attribute("alt") == "Image to classify"
            examples = page.locator(".choices img")
            gallery_sizes.append(examples.count())
            gallery_urls.append(set(examples.evaluate_all("images => images.map(i => i.src)")))
            # Every image of the trial is there and decoded before the trial starts (nothing loads while it runs).
            assert page.evaluate("[...document.querySelectorAll('#subject, .choices img')].every(i => i.complete "
                                 "&& i.naturalWidth > 0)")
            arrived.append(page.evaluate(LAST_IMAGE_ARRIVED))
            if examples.count():
                # The examples are the answers themselves: each card holds its class's photos and its name.
                assert sorted(page.locator(".card-name").all_inner_texts()) == BREEDS
            with page.expect_navigation():
                if trial % 3 == 0:
                    # Keyboard only: typing filters (the filter has focus), Enter picks the single match.
                    page.keyboard.type("beng")
                    assert page.locator(".choices .choice:visible").all_inner_texts() == ["Bengal"]
                    page.keyboard.press("Enter")
                elif trial % 3 == 1:
                    page.get_by_role("button", name="Siamese", exact=True).dblclick()  # a double click is one answer
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
    # No trial's clock started before its images were decoded, nor before the last of them arrived.
    for response, last_arrival in zip(answers, arrived, strict=True):
        assert response.images_ready_ms is not None and response.clock_start_ms >= response.images_ready_ms
        assert response.images_ready_ms >= last_arrival
        assert response.blur_count == 0 and response.hidden_ms == 0
    assert gallery_sizes == [0, 0, 3, 3, 6, 6]
    # The second trial of every part had its photo fetched while the first ran (prefetched), before its page.
    for first, second in ((0, 1), (2, 3), (4, 5)):
        image, page_url = trial_urls[second] + "/image", trial_urls[second]
        assert requested.index(image) < requested.index(page_url), (first, second)

    for url in requested:
        lowered = unquote(url).lower()
        assert not any(spelling in lowered for spelling in label_spellings), url
        assert not any(secret.lower() in lowered for secret in secrets), url
    for html in pages:
        assert not any(secret in html for secret in secrets)


def in_a_thread(query):
    """A database read while Playwright's loop runs in this thread (Django refuses it from an async context)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(query).result()


def keyboard_walk(page, live_server, study: Study, *, violations: list[str], label: str) -> None:
    """Join, practise, and answer every trial of all three parts with the keyboard alone, checking every page
    with axe-core on the way (the enlarge dialog too)."""
    page.goto(f"{live_server.url}/s/{study.code}/join?pid={label}")
    violations += serious_violations(page, f"{label} consent")
    tab_to(page, "button[value=accept]")
    with page.expect_navigation():
        page.keyboard.press("Enter")
    violations += serious_violations(page, f"{label} instructions")
    tab_to(page, "a.button.primary")  # "Practise first"
    with page.expect_navigation():
        page.keyboard.press("Enter")
    wait_ready(page)
    violations += serious_violations(page, f"{label} practice")
    page.keyboard.type("sia")
    with page.expect_navigation():
        page.keyboard.press("Enter")
    violations += serious_violations(page, f"{label} practice feedback")
    tab_to(page, "button.primary")  # "Start the study" (it has the focus already)
    with page.expect_navigation():
        page.keyboard.press("Enter")
    trial = 0
    while "/t/" in page.url:
        wait_ready(page)
        shots = page.locator(".card-answer img").count() // 3
        if trial % 2 == 0:
            violations += serious_violations(page, f"{label} trial {trial} ({shots}-shot)")
        with page.expect_navigation():
            if shots == 0:
                page.keyboard.type("beng")  # typing goes to the filter; Enter picks the single match
                page.keyboard.press("Enter")
            elif shots == 1 and trial % 2 == 0:
                page.keyboard.press("ArrowDown")  # from the filter into the cards
                page.keyboard.press("ArrowRight")
                page.keyboard.press("Enter")
            elif shots == 1:
                tab_to(page, "button.idk")  # "I don't know", without scrolling back
                page.keyboard.press("Enter")
            else:
                tab_to(page, ".enlarge")  # enlarge a card's examples, then answer from the dialog
                page.keyboard.press("Enter")
                page.wait_for_selector("dialog#enlarged[open]")
                assert page.evaluate("document.activeElement.id") == "enlarged-choose"
                violations.extend(serious_violations(page, f"{label} enlarged examples"))
                page.keyboard.press("Enter")
        trial += 1
    assert page.url.endswith("/done"), page.url
    violations += serious_violations(page, f"{label} done")


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["1280x900", "390x844"])
def test_all_three_parts_can_be_done_with_the_keyboard_alone_and_axe_finds_nothing_serious(live_server, viewport):
    dataset = make_dataset(n_classes=3, class_names=BREEDS, train_per_class=4, test_per_class=2)
    study = make_study(dataset=dataset, items_per_participant=2, practice_trials=1)
    violations, problems = [], []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(**CHROMIUM)
        page = browser.new_page(viewport=viewport)
        page.on("pageerror", lambda error: problems.append(str(error)))
        keyboard_walk(page, live_server, study, violations=violations, label=f"kb{viewport['width']}")
        browser.close()
    assert violations == [] and problems == []
    participant = Participant.objects.get(study=study)
    answers = Response.objects.filter(assignment__participant=participant)
    assert participant.completed_at is not None and answers.count() == 6
    assert answers.filter(is_idk=True).count() == 1  # the one-shot trial answered with "I don't know"
    assert all(r.clock_start_ms >= r.images_ready_ms for r in answers)


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["1280x900", "390x844"])
def test_axe_finds_nothing_serious_on_the_other_participant_pages(live_server, viewport):
    dataset = make_dataset(n_classes=3, class_names=BREEDS, train_per_class=4, test_per_class=2)
    study = make_study(dataset=dataset, items_per_participant=2, attention_check_rate=0.5, attention_threshold=1.0,
                       return_url=f"{live_server.url}/")
    gated = make_study(dataset=dataset, min_window_width=2000, min_window_height=2000, title="Big screens only")
    with_id = make_study(dataset=dataset, completion_url="https://example.org/done", title="Ids only")
    closed = make_study(dataset=dataset, open_it=False, title="Not open yet")
    violations = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(**CHROMIUM)

        def visit(url: str, where: str):
            page = browser.new_page(viewport=viewport)
            page.goto(url)
            violations.extend(serious_violations(page, where))
            return page

        base = live_server.url
        visit(f"{base}/s/{gated.code}/join", "screen gate")
        visit(f"{base}/s/{with_id.code}/join", "id required")
        visit(f"{base}/s/{closed.code}/join", "closed")
        visit(f"{base}/s/{study.code}/t/{study.code}", "404")
        page = visit(f"{base}/s/{study.code}/join", "consent")
        with page.expect_navigation():
            page.get_by_role("button", name="I do not agree").click()
        violations.extend(serious_violations(page, "declined"))
        page = visit(f"{base}/s/{study.code}/join", "consent")
        with page.expect_navigation():
            page.get_by_role("button", name="I agree, continue").click()
        with page.expect_navigation():
            page.get_by_role("button", name="Start").click()
        wait_ready(page)
        with page.expect_navigation():
            page.get_by_role("link", name="Stop and leave the study").click()
        violations.extend(serious_violations(page, "leave"))
        with page.expect_navigation():
            page.get_by_role("button", name="Yes, stop and leave").click()
        assert page.url == f"{base}/"  # the study's return URL
        page.goto(f"{base}/s/{study.code}/left")
        violations.extend(serious_violations(page, "left"))
        # Someone who fails the attention checks (the threshold is 100 %: one wrong check is enough).
        page = visit(f"{base}/s/{study.code}/join?pid=checks", "consent")
        with page.expect_navigation():
            page.get_by_role("button", name="I agree, continue").click()
        with page.expect_navigation():
            page.get_by_role("button", name="Start").click()
        while "/t/" in page.url:
            wait_ready(page)
            with page.expect_navigation():
                page.get_by_role("button", name="I don't know").click()
        assert "return the study" in page.content()
        violations.extend(serious_violations(page, "please return"))
        browser.close()
    assert violations == []


def test_in_the_pets_two_shot_part_the_last_breeds_card_answers_with_the_photo_in_view(live_server, tmp_path):
    study = pets_study(tmp_path, items_per_participant=1)
    last_breed = sorted(study.dataset.classes.values_list("name", flat=True), key=str.casefold)[-1]
    shots = {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(**CHROMIUM)
        page = browser.new_page(viewport=DESKTOP)
        page.goto(f"{live_server.url}/s/{study.code}/join")
        with page.expect_navigation():
            page.get_by_role("button", name="I agree, continue").click()
        with page.expect_navigation():
            page.get_by_role("button", name="Start").click()
        wait_ready(page)
        shots["zero"] = screenshot(page, tmp_path, "participant-zero-shot.png")
        for _ in range(2):  # the zero- and one-shot trials
            wait_ready(page)
            with page.expect_navigation():
                page.get_by_role("button", name="I don't know").click()
        wait_ready(page)
        assert page.locator(".card-answer").count() == 37 and page.locator(".card-answer img").count() == 74
        shots["two"] = screenshot(page, tmp_path, "participant-two-shot.png")
        card = page.get_by_role("button", name=last_breed, exact=True)
        card.scroll_into_view_if_needed()
        page.wait_for_timeout(100)
        assert page.evaluate("window.scrollY") > 300  # the page did scroll down to the last card
        # The photo is in view, unobscured, while the last card is clicked.
        box = page.locator("#subject").bounding_box()
        assert box["y"] >= 0 and box["y"] + box["height"] <= DESKTOP["height"] and box["height"] > 150
        assert page.evaluate("""() => { const r = document.getElementById('subject').getBoundingClientRect();
            return document.elementFromPoint(r.x + r.width / 2, r.y + r.height / 2).id; }""") == "subject"
        shots["two-scrolled"] = screenshot(page, tmp_path, "participant-two-shot-last-card.png")
        with page.expect_navigation():
            card.click()
        browser.close()
    two_shot = Response.objects.get(assignment__condition__shots=2)
    assert two_shot.choice.name == last_breed
    assert all(path.stat().st_size > 1000 for path in shots.values())


def test_on_a_phone_the_photo_stays_pinned_at_the_top_while_the_cards_scroll(live_server, tmp_path):
    study = pets_study(tmp_path, items_per_participant=1, shots=(2,))
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(**CHROMIUM)
        context = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True, device_scale_factor=1)
        page = context.new_page()
        page.goto(f"{live_server.url}/s/{study.code}/join")
        page.get_by_role("button", name="I agree, continue").tap()
        page.wait_for_url("**/instructions")
        page.get_by_role("button", name="Start").tap()
        page.wait_for_url("**/t/*")
        wait_ready(page)
        screenshot(page, tmp_path, "participant-phone.png")
        page.locator(".card-answer").last.scroll_into_view_if_needed()
        box = page.locator("#subject").bounding_box()
        assert box["y"] >= 0 and box["y"] + box["height"] <= PHONE["height"] * 0.35  # pinned small at the top
        idk = page.get_by_role("button", name="I don't know").bounding_box()
        assert 0 <= idk["y"] <= PHONE["height"] * 0.45  # reachable without scrolling back
        context.close()
        browser.close()


def test_the_screen_gate_shows_a_clear_page_before_consent_and_records_nothing(live_server):
    dataset = make_dataset(n_classes=3, class_names=BREEDS)
    study = make_study(dataset=dataset, min_window_width=1000, min_window_height=600, allow_phones=False)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(**CHROMIUM)
        small = browser.new_page(viewport={"width": 800, "height": 700})
        small.goto(f"{live_server.url}/s/{study.code}/join")
        assert small.locator("#screen-gate").is_visible() and not small.locator("#consent").is_visible()
        assert "at least 1000 × 600 pixels" in small.locator("#screen-gate").inner_text()
        small.set_viewport_size(DESKTOP)  # a bigger window gets the consent form back
        small.wait_for_selector("#consent:not([hidden])")
        phone = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True, user_agent=(
            "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Mobile "
            "Safari/537.36")).new_page()
        phone.goto(f"{live_server.url}/s/{study.code}/join")
        assert "cannot be done on a phone" in phone.content() and phone.locator("button[value=accept]").count() == 0
        browser.close()
    assert not Participant.objects.exists()


def test_leaving_from_a_trial_frees_the_places_at_once_and_sends_the_participant_to_the_return_url(live_server):
    dataset = make_dataset(n_classes=3, class_names=BREEDS, test_per_class=2)
    study = make_study(dataset=dataset, items_per_participant=2, return_url=f"{live_server.url}/?returned=1")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(**CHROMIUM)
        page = browser.new_page(viewport=DESKTOP)
        page.goto(f"{live_server.url}/s/{study.code}/join")
        page.get_by_role("button", name="I agree, continue").click()
        page.get_by_role("button", name="Start").click()
        page.wait_for_url("**/t/*")
        wait_ready(page)
        with page.expect_navigation():
            page.get_by_role("button", name="Bengal", exact=True).click()
        wait_ready(page)
        assert in_a_thread(lambda: Assignment.objects.filter(status=Assignment.Status.RESERVED).count()) == 1
        page.get_by_role("link", name="Stop and leave the study").click()
        page.get_by_role("button", name="Yes, stop and leave").click()
        page.wait_for_url(f"{live_server.url}/?returned=1")
        browser.close()
    participant = Participant.objects.get(study=study)
    assert participant.withdrawn_at is not None
    assert not Assignment.objects.filter(status=Assignment.Status.RESERVED).exists()  # free at once
    assert Response.objects.filter(assignment__participant=participant).count() == 1  # kept


def test_attention_per_trial_counts_blurs_and_hidden_time_while_the_clock_runs(live_server):
    dataset = make_dataset(n_classes=3, class_names=BREEDS, test_per_class=2)
    study = make_study(dataset=dataset, shots=(0,), items_per_participant=2)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(**CHROMIUM)
        context = browser.new_context(viewport=DESKTOP)
        page = context.new_page()
        page.goto(f"{live_server.url}/s/{study.code}/join")
        page.get_by_role("button", name="I agree, continue").click()
        page.get_by_role("button", name="Start").click()
        page.wait_for_url("**/t/*")
        wait_ready(page)
        page.wait_for_timeout(50)
        # A switch to another tab and back. Headless Chromium keeps every tab "visible" (bringing another to the
        # front or minimising the window changes nothing there), so the browser's own events are sent as a tab
        # switch sends them: blur, visibilitychange to hidden, then back; trial.js's real handlers count them.
        page.evaluate("""() => {
            Object.defineProperty(document, 'visibilityState', {configurable: true, get: () => 'hidden'});
            window.dispatchEvent(new Event('blur'));
            document.dispatchEvent(new Event('visibilitychange'));
        }""")
        page.wait_for_timeout(400)
        page.evaluate("""() => {
            Object.defineProperty(document, 'visibilityState', {configurable: true, get: () => 'visible'});
            document.dispatchEvent(new Event('visibilitychange'));
            window.dispatchEvent(new Event('focus'));
        }""")
        with page.expect_navigation():
            page.get_by_role("button", name="Bengal", exact=True).click()
        wait_ready(page)
        with page.expect_navigation():
            page.get_by_role("button", name="Siamese", exact=True).click()
        browser.close()
    first, second = Response.objects.order_by("assignment__position")
    assert first.blur_count >= 1 and first.hidden_ms >= 300
    assert second.blur_count == 0 and second.hidden_ms == 0


def test_a_korean_participant_sees_no_english_on_any_page(live_server):
    dataset = make_dataset(n_classes=3, class_names=BREEDS, train_per_class=4, test_per_class=2)
    study = make_study(dataset=dataset, open_it=False, language="ko", items_per_participant=1, practice_trials=1,
                       title="고양이 품종 연구")
    for label, name in zip(dataset.classes.order_by("index"), ["아비시니안", "벵갈", "샴"], strict=True):
        ClassNameTranslation.objects.create(study=study, label=label, name=name)
    study = study_open(study=study)
    # Key caps and the recruiter's name are written so on Korean keyboards and sites; the resume code is a code.
    allowed = {"Enter", "Tab", "Prolific"}
    english = []

    def check(page, where: str) -> None:
        text = page.evaluate("""() => [document.body.innerText, document.title,
            ...[...document.querySelectorAll('[alt], [aria-label], [placeholder], [title]')].map(
                e => [e.alt, e.getAttribute('aria-label'), e.placeholder, e.title].join(' '))].join(' ')""")
        text = re.sub(r"[A-Z0-9]{5}-[A-Z0-9]{5}|[0-9A-F]{20}", "", text)  # resume and completion codes
        words = set(re.findall(r"[A-Za-z]{2,}", text)) - allowed
        if words:
            english.append(f"{where}: {sorted(words)}")
        assert page.evaluate("document.documentElement.lang") == "ko"

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(**CHROMIUM)
        page = browser.new_page(viewport=DESKTOP)
        page.goto(f"{live_server.url}/s/{study.code}/join?pid=ko-1")
        check(page, "consent")
        with page.expect_navigation():
            page.locator("button[value=accept]").click()
        check(page, "instructions")
        with page.expect_navigation():
            page.locator("a.button.primary").click()
        wait_ready(page)
        check(page, "practice")
        with page.expect_navigation():
            page.locator("button.idk").click()
        check(page, "practice feedback")
        with page.expect_navigation():
            page.locator("button.primary").click()
        while "/t/" in page.url:
            wait_ready(page)
            check(page, page.url.rsplit("/", 1)[-1][:8])
            if page.locator(".enlarge").count():
                page.locator(".enlarge").first.click()
                check(page, "enlarged examples")
                page.locator("#enlarged-close").click()
            with page.expect_navigation():
                page.locator(".choices .choice").first.click()
        check(page, "done")
        page.goto(f"{live_server.url}/s/{study.code}/leave")
        check(page, "leave (after done: done again)")
        page.goto(f"{live_server.url}/s/{study.code}/t/{study.code}")
        check(page, "404")
        browser.close()
    assert english == []
