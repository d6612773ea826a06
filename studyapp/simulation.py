"""Simulated participants driving the real HTTP flow: join → consent (POST) → instructions → trials → completion.

Used by `manage.py simulate_participants`, the concurrency tests and load benchmarks. Without a
base URL each participant runs through Django's test Client in this process; with one, through
urllib against a running server. Either way every participant keeps its own cookies and passes
the CSRF check like a browser does.

The answer model needs each trial's true label, which the page never reveals: the simulator reads
it from the database by the trial's code. That is fine for a test tool running next to the server
(with --base-url, it must be configured with the server's database).
"""

import http.cookiejar
import random
import re
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from urllib.parse import urlencode, urlsplit

from django.conf import settings
from django.db import connections
from django.test import Client

from studyapp.models import IDK, Assignment, Participant, Study
from studyapp.pages import CHOICE, CSRF, ENROL

_MAX_RATE_LIMIT_WAITS = 5


@dataclass(frozen=True)
class AnswerModel:
    """With probability idk_rate "I don't know" (if offered), else right with probability accuracy,
    else a uniformly random wrong class."""

    accuracy: float
    idk_rate: float

    def answer(self, *, target: str, offered: Sequence[str], rng: random.Random) -> str:
        if IDK in offered and rng.random() < self.idk_rate:
            return IDK
        wrong = [v for v in offered if v not in (IDK, target)]
        if rng.random() < self.accuracy or not wrong:
            return target
        return rng.choice(wrong)


@dataclass
class SimulationResult:
    participants: int = 0
    completed: int = 0
    turned_away: int = 0  # the study was full for them
    answers: int = 0
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)
    external_ids: list[str] = field(default_factory=list)

    @property
    def answers_per_second(self) -> float:
        return self.answers / self.seconds if self.seconds else 0.0

    def summary(self) -> str:
        return (
            f"participants: {self.participants} "
            f"({self.completed} completed, {self.turned_away} turned away: study full)\n"
            f"answers: {self.answers} in {self.seconds:.1f} s ({self.answers_per_second:.1f} answers/s)\n"
            f"errors: {len(self.errors)}" + "".join(f"\n  - {e}" for e in self.errors[:20])
        )


@dataclass
class _Page:
    status: int
    path: str  # after redirects, with the query
    html: str
    retry_after: float = 0.0


class _InProcessBrowser:
    def __init__(self, *, client_address: str):
        self._secure = bool(settings.SECURE_SSL_REDIRECT)
        host = next((h.lstrip(".") for h in settings.ALLOWED_HOSTS if h.lstrip(".") not in ("", "*")), "localhost")
        self._origin = f"{'https' if self._secure else 'http'}://{host}"
        # A distinct address per participant: each simulated person counts once towards the join rate limit.
        self._client = Client(enforce_csrf_checks=True, SERVER_NAME=host, REMOTE_ADDR=client_address)

    def _page(self, response) -> _Page:
        query = response.request.get("QUERY_STRING", "")
        return _Page(
            status=response.status_code,
            path=response.request["PATH_INFO"] + (f"?{query}" if query else ""),
            html=response.content.decode(),
            retry_after=float(response.headers.get("Retry-After", 0) or 0),
        )

    def get(self, path: str) -> _Page:
        return self._page(self._client.get(path, follow=True, secure=self._secure))

    def post(self, path: str, data: dict) -> _Page:
        return self._page(
            self._client.post(path, data, follow=True, secure=self._secure, HTTP_REFERER=self._origin + path)
        )


class _HttpBrowser:
    def __init__(self, *, base_url: str):
        self._base = base_url.rstrip("/")
        self._opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))

    def _open(self, request: urllib.request.Request) -> _Page:
        try:
            with self._opener.open(request, timeout=60) as response:
                status, url, body, headers = response.status, response.geturl(), response.read(), response.headers
        except urllib.error.HTTPError as exc:
            status, url, body, headers = exc.code, exc.geturl() or request.full_url, exc.read(), exc.headers
        parts = urlsplit(url)
        return _Page(
            status=status,
            path=parts.path + (f"?{parts.query}" if parts.query else ""),
            html=body.decode(errors="replace"),
            retry_after=float(headers.get("Retry-After", 0) or 0),
        )

    def get(self, path: str) -> _Page:
        return self._open(urllib.request.Request(self._base + path))

    def post(self, path: str, data: dict) -> _Page:
        # Django's CSRF check wants a same-origin Referer on HTTPS; urllib sends none by itself.
        headers = {"Referer": self._base + path}
        return self._open(urllib.request.Request(self._base + path, data=urlencode(data).encode(), headers=headers))


def answer_models(*, study: Study, accuracy: Sequence[float], idk_rate: Sequence[float]) -> dict[int, AnswerModel]:
    """Per condition (by shots): one value for all conditions, or one per condition in shot order."""
    shots = sorted(study.conditions.values_list("shots", flat=True))

    def spread(values: Sequence[float], what: str) -> list[float]:
        values = list(values)
        if len(values) == 1:
            values = values * len(shots)
        if len(values) != len(shots):
            raise ValueError(f"{what}: give one value or one per condition ({len(shots)}: shots {shots})")
        if any(not 0 <= v <= 1 for v in values):
            raise ValueError(f"{what}: values must lie in [0, 1]")
        return values

    return {
        s: AnswerModel(accuracy=a, idk_rate=i)
        for s, a, i in zip(shots, spread(accuracy, "accuracy"), spread(idk_rate, "idk rate"), strict=True)
    }


def simulation_run(
    *,
    study: Study,
    n: int,
    accuracy: Sequence[float] = (0.75,),
    idk_rate: Sequence[float] = (0.05,),
    concurrency: int = 1,
    seed: int = 0,
    base_url: str | None = None,
) -> SimulationResult:
    """Run n simulated participants, `concurrency` at a time; they are marked simulated in the database."""
    models = answer_models(study=study, accuracy=accuracy, idk_rate=idk_rate)
    result = SimulationResult()
    lock = threading.Lock()

    def one(index: int) -> None:
        try:
            browser = (
                _HttpBrowser(base_url=base_url)
                if base_url
                else _InProcessBrowser(client_address=f"10.{index >> 16 & 255}.{index >> 8 & 255}.{index & 255}")
            )
            outcome = _participant_run(
                browser=browser, study=study, models=models, rng=random.Random(f"{seed}:{index}")
            )
        except Exception as exc:  # one participant's failure is reported, not fatal to the run
            outcome = _Outcome(error=f"participant {index}: {type(exc).__name__}: {exc}")
        finally:
            connections.close_all()  # this thread's connections only
        with lock:
            result.participants += 1
            result.answers += outcome.answers
            result.completed += outcome.completed
            result.turned_away += outcome.turned_away
            if outcome.external_id:
                result.external_ids.append(outcome.external_id)
            if outcome.error:
                result.errors.append(outcome.error)

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        list(pool.map(one, range(n)))
    result.seconds = time.perf_counter() - started
    return result


@dataclass
class _Outcome:
    external_id: str = ""
    answers: int = 0
    completed: bool = False
    turned_away: bool = False
    error: str = ""


def _participant_run(*, browser, study: Study, models: dict[int, AnswerModel], rng: random.Random) -> _Outcome:
    prefix = f"{settings.PARTICIPANT_URL_PREFIX}{study.code}/"
    out = _Outcome(external_id=f"sim-{uuid.UUID(int=rng.getrandbits(128), version=4)}")
    join = f"{prefix}join?{urlencode({'pid': out.external_id})}"
    page = browser.get(join)
    for _ in range(_MAX_RATE_LIMIT_WAITS + 1):
        _expect(page, "consent", enrol=True)
        page = browser.post(join, {"csrfmiddlewaretoken": _token(page), "enrol": ENROL.search(page.html)[1],
                                   "decision": "accept"})
        if page.status != 429:
            break
        time.sleep(page.retry_after or 60)
        page = browser.get(join)
    # Marked right away, so that an interrupted run leaves no unmarked simulated participant.
    Participant.objects.filter(study=study, external_id=out.external_id).update(simulated=True)
    trial = re.compile(re.escape(prefix) + r"t/([0-9a-f-]{36})$")
    stalled = 0
    while True:
        if page.path in (prefix + "instructions", prefix + "next") and stalled < 3:
            # The instructions' Start, or the "continue" page a GET shows when the next step needs a POST.
            _expect(page, "instructions")
            page = browser.post(prefix + "instructions", {"csrfmiddlewaretoken": _token(page)})
            stalled += 1
            continue
        match = trial.match(page.path)
        if match is None:
            break
        stalled = 0
        _expect(page, "trial")
        trial_row = Assignment.objects.filter(code=match[1]).values_list("condition__shots", "item__label__index")
        shots, target = trial_row.get()
        choice = models[shots].answer(target=str(target), offered=CHOICE.findall(page.html), rng=rng)
        rt = round(rng.lognormvariate(7.6, 0.45))  # ~2 s, right-skewed like human response times
        # What trial.js sends: images decoded, the clock started one frame later, an attentive participant.
        ready = rng.randint(40, 400)
        page = browser.post(page.path, {"csrfmiddlewaretoken": _token(page), "choice": choice, "rt_client_ms": rt,
                                        "images_ready_ms": ready, "clock_start_ms": ready + 16, "blur_count": 0,
                                        "hidden_ms": 0})
        out.answers += 1
    if page.path == prefix + "done" and page.status == 200:
        out.completed = True
    elif page.path == prefix + "full" and page.status == 200:
        out.turned_away = True
    else:
        out.error = f"{out.external_id}: ended on {page.path} (HTTP {page.status}) after {out.answers} answers"
    return out


def _token(page: _Page) -> str:
    return CSRF.search(page.html)[1]


def _expect(page: _Page, what: str, *, enrol: bool = False) -> None:
    if page.status != 200 or not CSRF.search(page.html) or (enrol and not ENROL.search(page.html)):
        raise RuntimeError(f"expected the {what} page, got {page.path} (HTTP {page.status})")
