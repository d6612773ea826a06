"""Walk every participant-facing page there is, with Django's test client, and keep every response.

One crawl covers: the home page; join/consent, instructions, every trial page with its image and its
shot examples in all three conditions (within subjects, and between subjects one participant per
condition); answered-trial reloads, the "continue" page, done, full, declined, closed and not-yet-open
studies; the identity pages (id required, resume code asked for, wrong code, second attempt, resumed
with the code); and the error pages a participant can meet (bad link, expired consent form, CSRF
failure, unknown study or trial, another participant's trial, wrong method, bad answer, oversized body,
rate limit, timed-out trial, database outage). Security tests assert over all of it: headers, leaks, forms.
"""

import uuid
from dataclasses import dataclass, field
from datetime import timedelta

from django.db import OperationalError, connection
from django.test import Client, override_settings
from django.utils import timezone

from studyapp.models import Assignment, Dataset, Participant, Study
from studyapp.pages import ENROL, EXAMPLE_IMAGE
from studyapp.services.studies import study_close
from tests.factories import make_dataset, make_study
from tests.studyapp.helpers import answer, consent, join_url, trial_code

# Distinctive names: any appearance outside the answer buttons and the example gallery is a leak.
BREEDS = ["Abyssinian", "Bengal", "Siamese"]


@dataclass
class Hop:
    method: str
    url: str
    status: int
    headers: dict[str, str]
    set_cookies: list[str]
    body: bytes

    @property
    def content_type(self) -> str:
        return self.headers.get("Content-Type", "")

    @property
    def is_html(self) -> bool:
        return self.content_type.startswith("text/html")

    @property
    def text(self) -> str:
        return self.body.decode(errors="replace")

    def __str__(self) -> str:
        return f"{self.method} {self.url} -> {self.status}"


class RecordingClient(Client):
    """A test client that keeps every response it sees, redirects included."""

    def __init__(self, hops: list[Hop], **kwargs):
        kwargs.setdefault("REMOTE_ADDR", f"10.9.{len(hops) % 250}.{uuid.uuid4().int % 250}")
        super().__init__(**kwargs)
        self._hops = hops

    def request(self, **request):
        response = super().request(**request)
        query = response.request.get("QUERY_STRING", "")
        body = b"".join(response.streaming_content) if response.streaming else response.content
        self._hops.append(Hop(
            method=response.request["REQUEST_METHOD"],
            url=response.request["PATH_INFO"] + (f"?{query}" if query else ""),
            status=response.status_code,
            headers=dict(response.headers.items()),
            set_cookies=[morsel.OutputString() for morsel in response.cookies.values()],
            body=body,
        ))
        return response


@dataclass
class Crawl:
    hops: list[Hop]
    dataset: Dataset
    studies: list[Study]
    completion_codes: dict[str, str] = field(default_factory=dict)  # participant code -> completion code

    def html(self) -> list[Hop]:
        return [h for h in self.hops if h.is_html]

    def images(self) -> list[Hop]:
        return [h for h in self.hops if h.content_type.startswith("image/")]


def _path(response) -> str:
    return response.request["PATH_INFO"]


def walk_to_done(client: Client, study: Study, **params):
    """Consent, start, answer every trial (fetching its image and examples, like a browser), reload a bit."""
    page = consent(client, study, **params)
    if _path(page).endswith("/instructions"):
        page = client.post(f"/s/{study.code}/instructions", follow=True)
    first_trial = _path(page) if trial_code(page) else None
    while trial_code(page):
        client.get(_path(page) + "/image")
        for example in sorted(set(EXAMPLE_IMAGE.findall(page.content.decode()))):
            client.get(example)
        page = answer(client, page)
    if first_trial:
        client.get(first_trial, follow=True)  # reload an answered trial
    client.get(f"/s/{study.code}/next", follow=True)
    client.get(join_url(study, **params), follow=True)  # the join link again, after the end
    return page


def crawl_participant_pages() -> Crawl:
    hops: list[Hop] = []

    def browser(**kwargs) -> RecordingClient:
        return RecordingClient(hops, **kwargs)

    dataset = make_dataset(n_classes=3, class_names=BREEDS, train_per_class=3, test_per_class=2)
    within = make_study(dataset=dataset, design=Study.Design.WITHIN, items_per_participant=2,
                        completion_url="https://example.org/complete", title="Within study")
    between = make_study(dataset=dataset, design=Study.Design.BETWEEN, items_per_participant=2, title="Between study")
    tiny = make_study(dataset=dataset, shots=(0,), items_per_participant=6, k_per_item=1, title="Tiny study")
    closed = study_close(study=make_study(dataset=dataset, title="Closed study"))
    draft = make_study(dataset=dataset, open_it=False, title="Draft study")
    crawl = Crawl(hops=hops, dataset=dataset, studies=[within, between, tiny, closed, draft])

    browser().get("/")
    walk_to_done(browser(), within, PROLIFIC_PID="crawl-within", STUDY_ID="s", SESSION_ID="x")
    for n in range(3):  # between subjects: conditions are balanced, so three participants cover all three
        walk_to_done(browser(), between, pid=f"crawl-between-{n}")
    crawl.completion_codes = dict(Participant.objects.filter(completed_at__isnull=False)
                                  .values_list("code", "completion_code"))
    crawl.completion_codes = {str(k): v for k, v in crawl.completion_codes.items()}

    # A slow participant whose reservations expire, then someone takes every item: the slow one is told
    # politely that their image went to someone else, and the late one finds the study full.
    slow = browser()
    slow_page = consent(slow, tiny)
    slow_page = slow.post(f"/s/{tiny.code}/instructions", follow=True)
    Assignment.objects.filter(condition__study=tiny).update(expires_at=timezone.now() - timedelta(minutes=1))
    walk_to_done(browser(), tiny)
    slow.get(_path(slow_page), follow=True)
    slow.post(_path(slow_page), {"choice": "0"}, follow=True)
    walk_to_done(browser(), tiny)

    # Issue 15: practice with feedback, leaving (confirm, leave, left), the screen gate, failed attention checks.
    practice = make_study(dataset=dataset, practice_trials=2, items_per_participant=2, title="Practice study",
                          allow_phones=False, attention_check_rate=0.5, attention_threshold=1.0)
    crawl.studies.append(practice)
    learner = browser()
    consent(learner, practice)
    for number in (1, 2):
        learner.get(f"/s/{practice.code}/practice/{number}")
        learner.get(f"/s/{practice.code}/practice/{number}/image")
        learner.post(f"/s/{practice.code}/practice/{number}", {"choice": "0"})
    first = learner.post(f"/s/{practice.code}/instructions", follow=True)
    learner.get(f"/s/{practice.code}/leave")
    learner.post(f"/s/{practice.code}/leave", follow=True)
    learner.get(_path(first), follow=True)  # a trial of someone who left
    browser(HTTP_USER_AGENT="Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) Mobile/15E148").get(
        join_url(practice))
    careless = browser()
    page = consent(careless, practice)
    page = careless.post(f"/s/{practice.code}/instructions", follow=True)
    while trial_code(page):
        page = answer(careless, page, "idk")  # every check wrong: the please-return page

    # Declining, and coming back after declining.
    decliner = browser()
    consent(decliner, within, decision="decline", PROLIFIC_PID="crawl-decliner", SESSION_ID="d")
    decliner.get(f"/s/{within.code}/next", follow=True)

    # Identity: no id where one is required; a known id without proof, with a wrong code, with another
    # session; a known panel id with the right resume code (back to that participant's done page).
    browser().get(join_url(within))
    known_without_proof = browser()
    page = consent(known_without_proof, within, PROLIFIC_PID="crawl-within", STUDY_ID="s")
    known_without_proof.post(join_url(within, PROLIFIC_PID="crawl-within", STUDY_ID="s"), {
        "enrol": ENROL.search(page.content.decode())[1], "decision": "accept", "resume_code": "WRONG-CODE0"})
    consent(browser(), within, PROLIFIC_PID="crawl-within", STUDY_ID="s", SESSION_ID="another-session")
    returning = browser()
    page = consent(returning, between, pid="crawl-between-0")
    returning.post(join_url(between, pid="crawl-between-0"), {
        "enrol": ENROL.search(page.content.decode())[1], "decision": "accept",
        "resume_code": Participant.objects.get(study=between, external_id="crawl-between-0").resume_code}, follow=True)

    # Studies that are not open.
    browser().get(join_url(closed))
    browser().get(join_url(draft))

    # Error pages.
    stranger = browser()
    stranger.get(f"/s/{uuid.uuid4()}/join")
    stranger.get(join_url(within, PROLIFIC_PID="x" * 201))
    stranger.post(join_url(between), {"enrol": "forged", "decision": "accept"})
    stranger.put(join_url(within))
    stranger.post(f"/s/{within.code}/next")
    stranger.get(f"/s/{within.code}/done", follow=True)
    owner = browser()
    consent(owner, within, PROLIFIC_PID="crawl-owner", SESSION_ID="o")
    trial = owner.post(f"/s/{within.code}/instructions", follow=True)
    trial_url = _path(trial)
    owner.post(trial_url, {"choice": "99"})
    owner.post(trial_url, {"choice": "x" * 5000})
    owner.post(trial_url, {"choice": "0", "pad": "x" * 3_000_000})  # over DATA_UPLOAD_MAX_MEMORY_SIZE
    owner.delete(trial_url)
    owner.get(f"/s/{within.code}/t/{uuid.uuid4()}")
    owner.get(f"/s/{within.code}/examples/{uuid.uuid4()}")
    browser().get(trial_url)  # another participant's trial, no cookie
    browser().get(trial_url + "/image")
    csrf_checked = browser(enforce_csrf_checks=True)
    csrf_checked.get(join_url(between))
    csrf_checked.post(join_url(between), {"decision": "accept"})

    def outage(execute, sql, params, many, context):
        raise OperationalError("could not connect to server")

    with connection.execute_wrapper(outage):
        owner.get(trial_url)

    with override_settings(STUDY_JOIN_RATE_PER_MINUTE=1):
        consent(browser(REMOTE_ADDR="192.0.2.50"), between)
        consent(browser(REMOTE_ADDR="192.0.2.50"), between)
    return crawl
