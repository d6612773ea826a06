"""A participant's browser for tests and benchmarks: cookies, the CSRF token, redirects followed by hand (each
request timed under its own kind), an HTTP cache that honours Cache-Control, and the whole participant flow
(join, consent, instructions, every trial with its image and examples, the answer) over real HTTP; plus the
database check afterwards (every submitted answer stored once, nothing above k, no item twice in a condition).

Used by tests/faults, tests/security and benchmarks/load_participants.py. Nothing here touches Django before the
caller has set it up.
"""

from __future__ import annotations

import http.client
import http.cookiejar
import math
import random
import re
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from urllib.parse import urlencode, urlsplit

from studyapp.pages import CHOICE, CSRF, ENROL, EXAMPLE_IMAGE, NEXT_IMAGE, STATIC, TRIAL_IMAGE, TRIAL_PATH

_RETRY_STATUS = {502, 503, 504}


def request_kind(method: str, path: str) -> str:
    """Which latency bucket a request belongs to."""
    path = urlsplit(path).path
    if path.startswith("/static/"):
        return "static"
    if TRIAL_PATH.match(path):
        return "answer" if method == "POST" else "trial"
    for suffix, kind in (("/image", "image"), ("/join", "join"), ("/instructions", "instructions"), ("/next", "next"),
                         ("/done", "done"), ("/full", "full"), ("/declined", "declined")):
        if path.endswith(suffix):
            return ("consent" if kind == "join" else "start" if kind == "instructions" else kind) if method == "POST" \
                else kind
    return "example" if "/examples/" in path else "other"


class Recorder:
    """Latencies (seconds) per request kind, statuses, retries; shared by all participant threads."""

    def __init__(self):
        self._lock = threading.Lock()
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.statuses: dict[int, int] = defaultdict(int)
        self.cache_hits: dict[str, int] = defaultdict(int)  # subresources the browser did not ask for again
        self.retries = 0
        self.connection_errors = 0

    def record(self, kind: str, seconds: float, status: int) -> None:
        with self._lock:
            self.latency[kind].append(seconds)
            self.statuses[status] += 1

    def hit(self, kind: str) -> None:
        with self._lock:
            self.cache_hits[kind] += 1

    def retried(self, *, connection_error: bool) -> None:
        with self._lock:
            self.retries += 1
            self.connection_errors += connection_error


@dataclass
class Page:
    status: int
    path: str
    html: str = ""
    location: str = ""
    headers: dict = field(default_factory=dict)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None  # hand the 3xx back: each hop is timed on its own


class ParticipantBrowser:
    """One participant's browser against a running server: own cookie jar, manual redirects, and a
    retry of the same request after a dropped connection or a 502/503/504 — what a participant does
    by clicking again. Answers are idempotent on the server, so a retried POST is stored once."""

    def __init__(self, *, base_url: str, recorder: Recorder | None = None, retries: int = 0,
                 retry_delay: float = 0.25, timeout: float = 30.0):
        self.base = base_url.rstrip("/")
        self.recorder = recorder or Recorder()
        self.retries = retries
        self.retry_delay = retry_delay
        self.timeout = timeout
        self.jar = http.cookiejar.CookieJar()
        self._opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar), _NoRedirect())
        # The browser's HTTP cache for subresources (fetch()): path -> (fresh until, ETag, Last-Modified).
        self.cache: dict[str, tuple[float, str, str]] = {}

    def _once(self, method: str, path: str, data: dict | None, headers: dict | None = None) -> Page:
        body = urlencode(data).encode() if data is not None else None
        # A same-origin Referer, as a browser sends it (Django's CSRF check wants it on HTTPS).
        request = urllib.request.Request(self.base + path, data=body, method=method,
                                         headers={"Referer": self.base + path, **(headers or {})})
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                status, headers, raw = response.status, response.headers, response.read()
        except urllib.error.HTTPError as exc:
            status, headers, raw = exc.code, exc.headers, exc.read()
        location = urlsplit(headers.get("Location", "")) if headers.get("Location") else None
        return Page(status=status, path=path, html=raw.decode(errors="replace") if _is_text(headers) else "",
                    location=(location.path + (f"?{location.query}" if location.query else "")) if location else "",
                    headers=dict(headers.items()))

    def request(self, method: str, path: str, data: dict | None = None, headers: dict | None = None) -> Page:
        kind = request_kind(method, path)
        for attempt in range(self.retries + 1):
            started = time.perf_counter()
            try:
                page = self._once(method, path, data, headers)
            except (OSError, http.client.HTTPException) as exc:  # reset, refused, timeout, torn response
                if attempt == self.retries:
                    raise ConnectionError(f"{method} {path}: {type(exc).__name__}: {exc}") from exc
                self.recorder.retried(connection_error=True)
                time.sleep(self.retry_delay * (attempt + 1))
                continue
            self.recorder.record(kind, time.perf_counter() - started, page.status)
            if page.status in _RETRY_STATUS and attempt < self.retries:
                self.recorder.retried(connection_error=False)
                time.sleep(self.retry_delay * (attempt + 1))
                continue
            return page
        raise AssertionError("unreachable")

    def get(self, path: str) -> Page:
        return self.request("GET", path)

    def post(self, path: str, data: dict) -> Page:
        return self.request("POST", path, data)

    def fetch(self, path: str) -> int:
        """A subresource (image, stylesheet, script) as a browser loads it: from its cache while the response's
        Cache-Control max-age lasts (no request at all), then revalidated with If-None-Match / If-Modified-Since
        where the server gave a validator (304: fresh again). `no-store` (or no max-age) is never kept.
        Returns the HTTP status, 200 for a cache hit."""
        now = time.monotonic()
        cached = self.cache.get(path)
        if cached is not None and now < cached[0]:
            self.recorder.hit(request_kind("GET", path))
            return 200
        conditional = {}
        if cached is not None:
            conditional = {k: v for k, v in (("If-None-Match", cached[1]), ("If-Modified-Since", cached[2])) if v}
        page = self.request("GET", path, headers=conditional)
        if page.status in (200, 304):
            max_age = _max_age(page.headers.get("Cache-Control", ""))
            if max_age:
                etag = page.headers.get("ETag", cached[1] if cached and page.status == 304 else "")
                modified = page.headers.get("Last-Modified", cached[2] if cached and page.status == 304 else "")
                self.cache[path] = (time.monotonic() + max_age, etag, modified)
            else:
                self.cache.pop(path, None)
        return page.status

    def follow(self, page: Page, *, limit: int = 10) -> Page:
        """GET redirect targets until a page with a body."""
        for _ in range(limit):
            if page.status not in (301, 302, 303) or not page.location:
                return page
            page = self.get(page.location)
        raise RuntimeError(f"too many redirects from {page.path}")


def _max_age(cache_control: str) -> int:
    """Seconds a browser may reuse the response without asking (0: never: no-store, no-cache or no max-age)."""
    directives = {}
    for part in cache_control.split(","):
        name, _, value = part.strip().partition("=")
        directives[name.lower()] = value
    if "no-store" in directives or "no-cache" in directives:
        return 0
    try:
        return max(0, int(directives.get("max-age", "0")))
    except ValueError:
        return 0


def _is_text(headers) -> bool:
    return headers.get("Content-Type", "").startswith(("text/", "application/json"))


# One participant


@dataclass
class ParticipantLog:
    external_id: str
    submitted: list[tuple[str, str]] = field(default_factory=list)  # (assignment code, choice), server said 302
    unconfirmed: list[tuple[str, str]] = field(default_factory=list)  # sent, no answer came back (may be stored)
    outcome: str = ""  # done / full / stopped / error
    error: str = ""


def participant_flow(browser: ParticipantBrowser, *, study_code: str, rng: random.Random, think_ms: float = 0.0,
                     deadline: float = math.inf, examples: bool = True, log: ParticipantLog | None = None,
                     on_answer=None, browser_like: bool = False) -> ParticipantLog:
    """Join, consent, start, answer every trial (a random offered choice), end on done/full.

    think_ms: median of a log-normal pause before each answer (0: none). on_answer(log) is called
    after each confirmed answer (fault tests use it to strike mid-run).

    Each trial page's photo and (examples=True) its examples are fetched. browser_like: everything a page
    loads goes through the browser's cache (fetch(): stylesheet and scripts too, each once while fresh), and
    the next trial's photo is prefetched as trial.js does once the clock runs, so the next page finds it in the
    cache. Without it (the fault tests) every trial's photo is asked for and examples once per run.
    """
    prefix = f"/s/{study_code}/"
    log = log or ParticipantLog(external_id=f"load-{uuid.UUID(int=rng.getrandbits(128), version=4)}")
    join = f"{prefix}join?{urlencode({'pid': log.external_id})}"

    def load(page: Page) -> None:  # what the page itself loads: its stylesheet and scripts
        if browser_like:
            for url in STATIC.findall(page.html):
                _expect_fetched(browser.fetch(url), url)

    try:
        page = browser.get(join)
        if page.status == 200:
            _expect(page, 200, "the consent page", ENROL)
            load(page)
            page = browser.post(join, {"csrfmiddlewaretoken": CSRF.search(page.html)[1],
                                       "enrol": ENROL.search(page.html)[1], "decision": "accept"})
        page = browser.follow(page)  # a participant who is already enrolled is sent on to where they are
        fetched_examples: set[str] = set()
        load(page)
        while True:
            if page.path in (prefix + "instructions", prefix + "next"):
                # Start, or the "continue" page a GET shows when the next step needs a POST.
                _expect(page, 200, "the instructions", CSRF)
                page = browser.follow(browser.post(prefix + "instructions", {"csrfmiddlewaretoken": CSRF.search(page.html)[1]}))
                if page.path in (prefix + "instructions", prefix + "next"):
                    raise RuntimeError(f"stuck on {page.path} after a POST")
            match = TRIAL_PATH.match(page.path)
            if match is None:
                break
            _expect(page, 200, "a trial page", CSRF)
            load(page)
            image = TRIAL_IMAGE.search(page.html)
            if image and browser_like:
                _expect_fetched(browser.fetch(image[1]), "the trial image")  # prefetched while the last one ran
            elif image:
                _expect(browser.get(image[1]), 200, "the trial image")
            if examples:
                for url in EXAMPLE_IMAGE.findall(page.html):
                    if browser_like:
                        _expect_fetched(browser.fetch(url), "a shot example")
                    elif url not in fetched_examples:  # a browser keeps them (Cache-Control: private, max-age)
                        fetched_examples.add(url)
                        _expect(browser.get(url), 200, "a shot example")
            following = NEXT_IMAGE.search(page.html)
            if following and browser_like:
                # trial.js asks for the next trial's photo once this trial's images are decoded and its clock runs.
                _expect_fetched(browser.fetch(following[1]), "the next trial's photo")
            if time.monotonic() >= deadline:
                log.outcome = "stopped"
                return log
            if think_ms:
                time.sleep(min(rng.lognormvariate(math.log(think_ms / 1000), 0.4), 10 * think_ms / 1000))
            choice = rng.choice(CHOICE.findall(page.html))
            answer = (match[1], choice)
            try:
                # The fields trial.js sends with an answer (timings on the page's clock, attention).
                posted = browser.post(page.path, {"csrfmiddlewaretoken": CSRF.search(page.html)[1], "choice": choice,
                                                  "rt_client_ms": str(rng.randint(300, 9000)), "images_ready_ms": "120",
                                                  "clock_start_ms": "136", "blur_count": "0", "hidden_ms": "0"})
            except ConnectionError:
                log.unconfirmed.append(answer)
                raise
            if posted.status != 302:
                log.unconfirmed.append(answer)
                raise RuntimeError(f"answer to {page.path}: HTTP {posted.status}")
            log.submitted.append(answer)
            if on_answer:
                on_answer(log)
            page = browser.follow(posted)
        load(page)
        if page.path == prefix + "done" and page.status == 200:
            log.outcome = "done"
        elif page.path == prefix + "full" and page.status == 200:
            log.outcome = "full"
        else:
            raise RuntimeError(f"ended on {page.path} (HTTP {page.status})")
    except Exception as exc:  # one participant's failure is reported, not fatal to the run
        log.outcome = "error"
        log.error = f"{log.external_id}: {type(exc).__name__}: {exc}"
    return log


def _expect_fetched(status: int, what: str) -> None:
    if status not in (200, 304):
        raise RuntimeError(f"expected {what}, got HTTP {status}")


def _expect(page: Page, status: int, what: str, pattern: re.Pattern | None = None) -> None:
    if page.status != status or (pattern is not None and not pattern.search(page.html)):
        raise RuntimeError(f"expected {what}, got {page.path} (HTTP {page.status})")


# Checks against the database (Django must be set up by the caller)


def verify_answers(*, study, logs: list[ParticipantLog]) -> dict[str, list]:
    """Everything that went wrong, by kind; every list empty means the run kept its promises."""
    from django.db.models import Count, Q

    from studyapp.models import Assignment, Response

    stored = {
        str(code): ("idk" if is_idk else str(index))
        for code, is_idk, index in Response.objects.filter(assignment__condition__study=study).values_list(
            "assignment__code", "is_idk", "choice__index")
    }
    per_assignment = Response.objects.filter(assignment__condition__study=study).values("assignment").annotate(
        n=Count("id")).filter(n__gt=1)
    submitted: dict[str, str] = {}
    problems: dict[str, list] = {"lost": [], "doubled": list(per_assignment), "changed": [], "phantom": [],
                                 "above_k": [], "repeats": [], "half_written": []}
    for log in logs:
        for code, choice in log.submitted:
            if code in submitted:
                problems["doubled"].append(("submitted twice by the client", code))
            submitted[code] = choice
            if code not in stored:
                problems["lost"].append(code)
            elif stored[code] != choice:
                problems["changed"].append((code, choice, stored[code]))
    maybe = {code for log in logs for code, _ in log.unconfirmed}
    problems["phantom"] = sorted(set(stored) - set(submitted) - maybe)
    k = study.k_per_item
    live = Q(is_attention_check=False) & ~Q(status=Assignment.Status.EXPIRED)
    for row in (Assignment.objects.filter(condition__study=study).values("condition", "item")
                .annotate(live=Count("id", filter=live), answered=Count("response")).filter(
                    Q(live__gt=k) | Q(answered__gt=k))):
        problems["above_k"].append(row)
    # An answer is two writes (the trial's status, the response row): both or neither.
    trials = Assignment.objects.filter(condition__study=study)
    problems["half_written"] = [str(code) for code in trials.filter(
        Q(status=Assignment.Status.ANSWERED, response__isnull=True)
        | (~Q(status=Assignment.Status.ANSWERED) & Q(response__isnull=False))).values_list("code", flat=True)]
    problems["repeats"] = list(Assignment.objects.filter(condition__study=study).values("participant", "condition", "item")
                               .annotate(n=Count("id")).filter(n__gt=1))
    return problems


# The benchmark itself
