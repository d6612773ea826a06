"""Small steps of the participant flow over HTTP (a ParticipantBrowser against a real server)."""

from urllib.parse import urlencode

from studyapp.pages import CHOICE, CSRF, ENROL, TRIAL_PATH
from tests.participant_client import Page, ParticipantBrowser


def form_token(page: Page) -> str:
    return CSRF.search(page.html)[1]


def offered_choices(page: Page) -> list[str]:
    return CHOICE.findall(page.html)


def trial_code(page: Page) -> str | None:
    match = TRIAL_PATH.match(page.path)
    return match[1] if match else None


def first_trial(browser: ParticipantBrowser, study_code: str, *, external_id: str) -> Page:
    """Join with an external id, consent, leave the instructions: the first trial page."""
    join = f"/s/{study_code}/join?{urlencode({'pid': external_id})}"
    page = browser.get(join)
    assert page.status == 200, (page.status, page.path)
    page = browser.follow(browser.post(join, {"csrfmiddlewaretoken": form_token(page),
                                              "enrol": ENROL.search(page.html)[1], "decision": "accept"}))
    page = browser.follow(browser.post(f"/s/{study_code}/instructions", {"csrfmiddlewaretoken": form_token(page)}))
    assert trial_code(page), (page.status, page.path)
    return page
