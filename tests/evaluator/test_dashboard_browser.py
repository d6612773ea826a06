"""The admin's study list and the study dashboard in Debian's Chromium (headless, Playwright) at 1280 x 900:
nothing overflows, the site is named after the project, the dashboard's live precision loads.

Screenshots go to the test's tmp folder; with UPDATE_DOC_SCREENSHOTS=1 to docs/screenshots/ as well."""

import os
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from PIL import Image
from playwright.sync_api import sync_playwright

from studyapp.models import Study
from tests.factories import make_dataset, make_study

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

CHROMIUM = {"executable_path": "/usr/bin/chromium", "headless": True,
            "args": ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]}
DOCS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


def staff_session() -> str:
    """A logged-in staff session (made before Playwright starts: Django's ORM refuses to run inside its loop)."""
    user = get_user_model().objects.create_superuser("staff", "staff@example.org", "pw-for-the-test")
    client = Client()
    client.force_login(user)
    return client.cookies["sessionid"].value


def staff_page(browser, live_server, session: str):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.add_cookies([{"name": "sessionid", "value": session, "url": live_server.url}])
    return context.new_page()


def keep(path: Path) -> None:
    """With UPDATE_DOC_SCREENSHOTS=1, a 128-colour copy (a fraction of the size) for the docs."""
    if os.environ.get("UPDATE_DOC_SCREENSHOTS") == "1":
        DOCS.mkdir(parents=True, exist_ok=True)
        Image.open(path).convert("RGB").quantize(colors=128).save(DOCS / path.name, optimize=True)


def two_demo_like_studies() -> list[Study]:
    pets = make_study(dataset=make_dataset(n_classes=6, train_per_class=2, test_per_class=3, name="Oxford-IIIT Pet"),
                      title="Pets: humans vs CLIP (CLIP paper §4)", design=Study.Design.WITHIN, k_per_item=5,
                      items_per_participant=20)
    eurosat = make_study(dataset=make_dataset(n_classes=4, train_per_class=2, test_per_class=3, name="EuroSAT RGB"),
                         title="EuroSAT: a specialised domain", design=Study.Design.BETWEEN)
    return [pets, eurosat]


def test_the_study_list_fits_1280_pixels_and_the_admin_is_named_after_the_project(live_server, tmp_path):
    two_demo_like_studies()
    session = staff_session()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(**CHROMIUM)
        page = staff_page(browser, live_server, session)
        page.goto(f"{live_server.url}/admin/studyapp/study/")
        shot = tmp_path / "admin-study-list-1280.png"
        page.screenshot(path=str(shot), full_page=True)
        keep(shot)
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        table = page.evaluate("(() => { const t = document.querySelector('#result_list'); "
                              "return [t.scrollWidth, t.parentElement.clientWidth]; })()")
        row_heights = page.evaluate("Array.from(document.querySelectorAll('#result_list tbody tr'))"
                                    ".map(r => r.getBoundingClientRect().height)")
        header = page.locator("#site-name").inner_text()
        title = page.title()
        browser.close()
    assert overflow <= 0, f"the page is {overflow} px wider than the window"
    assert table[0] <= table[1], f"the study table ({table[0]} px) is wider than its box ({table[1]} px)"
    assert max(row_heights) < 60, f"a study row wraps over several lines: {row_heights} px"
    assert header == "Human vs CLIP" and "Django" not in title


def test_the_dashboard_loads_its_live_precision_without_console_errors_and_fits_1280_pixels(live_server, tmp_path):
    from tests.evaluator.test_dashboard import a_finished_run, answered_study

    study = answered_study(n_people=5, shots=(0, 1, 2), simulated=True)
    a_finished_run(study)
    session = staff_session()
    problems = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(**CHROMIUM)
        page = staff_page(browser, live_server, session)
        page.on("console", lambda message: message.type == "error" and problems.append(message.text))
        page.on("pageerror", lambda error: problems.append(str(error)))
        page.on("response", lambda r: r.status >= 400 and problems.append(f"{r.status} {r.url}"))
        page.goto(f"{live_server.url}/studies/{study.code}/dashboard/?target=3&include_simulated=on")
        page.wait_for_selector("table.precision", timeout=60_000)
        shot = tmp_path / "study-dashboard-1280.png"
        page.screenshot(path=str(shot), full_page=True)
        keep(shot)
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        rule = page.locator(".stopping-rule").inner_text()
        cells = page.locator("table.precision tbody tr").count()
        browser.close()
    assert problems == [] and overflow <= 0
    assert "human cells have reached ±3 points" in rule
    assert cells == 3 * 4 * 2  # humans and the model, three conditions, four metrics
