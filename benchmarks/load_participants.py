"""Load test: N simulated participants through the real HTTP flow against gunicorn, on SQLite and PostgreSQL.

    .venv/bin/python benchmarks/load_participants.py                      # both databases, 100 participants
    .venv/bin/python benchmarks/load_participants.py --db postgres --pg-socket --workers 2 --threads 2
    .venv/bin/python benchmarks/load_participants.py --db sqlite -n 200 --think-ms 1000 --json out.json
    .venv/bin/python benchmarks/load_participants.py --nice -10 --wait-quiet 600    # on a shared machine

For each database it builds a throwaway world under /tmp (VAR_DIR with its own SQLite file or a
PostgreSQL 15 cluster, media, secret key), imports the demo data (../shared/data via the demo set-up,
else a generated 37-class dataset), creates a within-subjects study (zero/one/two-shot) whose k is
just big enough for every participant, starts gunicorn the way `./run demo` does (several workers,
gthread) on a free 127.0.0.1 port, and runs the participants from a thread pool. Each participant
behaves like a browser: join → consent → instructions → for every trial the page, its image and,
once per condition, the shot examples; a think time (log-normal, median --think-ms) before each
answer; participants arrive spread over --ramp-seconds. Redirects are followed by hand so that every
request is timed under its own kind: client-observed latency (what a participant waits, queueing
for a free worker included) next to the server-side time of the same kind from gunicorn's access log
(%(D)s), and the CPU share of client, gunicorn, PostgreSQL and everything else on the machine.

Afterwards everything is stopped and the database is checked: every answer a participant submitted
is stored exactly once with the submitted choice, nothing is stored that nobody submitted, no
(condition, item) has more than k live assignments or answers, no participant sees an item twice
in a condition. The script prints one table per database; exit status 1 if any check failed.

Bounded: at most --participants participants, a hard --max-seconds per database (participants stop
starting new trials at the deadline), 30 s per request. Loopback only.

The module doubles as the harness of tests/faults (Gunicorn, PgCluster, ParticipantBrowser,
participant_flow, verify_answers): nothing here touches Django before main() or a caller has set it up.
"""

from __future__ import annotations

import argparse
import http.client
import http.cookiejar
import json
import math
import os
import random
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlencode, urlsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from studyapp.pages import CHOICE, CSRF, ENROL, EXAMPLE_IMAGE, NEXT_IMAGE, STATIC, TRIAL_IMAGE, TRIAL_PATH  # noqa: E402

BIN = Path(sys.executable).parent  # gunicorn is installed beside the venv's python
SHARED_DATA = ROOT.parent / "shared" / "data"
LOOPBACK = "127.0.0.1"

_RETRY_STATUS = {502, 503, 504}
ACCESS_LOG_FORMAT = '%(m)s %(U)s %(s)s %(D)s'


# Processes: free ports, gunicorn, a throwaway PostgreSQL cluster


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def wait_for_port(port: int, *, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex((LOOPBACK, port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {LOOPBACK}:{port} after {timeout:.0f} s")


class Gunicorn:
    """The web server as `./run demo` starts it (config.wsgi, gthread workers), on a free loopback port."""

    def __init__(self, *, env: dict[str, str], log_dir: Path, workers: int = 3, threads: int = 2, port: int = 0,
                 access_log: bool = True):
        self.port = port or free_port()
        self.url = f"http://{LOOPBACK}:{self.port}"
        log_dir.mkdir(parents=True, exist_ok=True)
        self.error_log = log_dir / "web.log"
        command = [str(BIN / "gunicorn"), "config.wsgi:application", "--bind", f"{LOOPBACK}:{self.port}",
                   "--workers", str(workers), "--threads", str(threads), "--timeout", "60",
                   "--graceful-timeout", "5", "--error-logfile", str(self.error_log)]
        self.access_log = log_dir / "access.log" if access_log else None
        if access_log:
            # %(D)s: microseconds the worker spent on the request, the server's side of the latency.
            command += ["--access-logfile", str(self.access_log), "--access-logformat", ACCESS_LOG_FORMAT]
        self.process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                        start_new_session=True)
        self.workers = workers

    def wait_ready(self, *, timeout: float = 60.0) -> None:
        """Until every worker answers: the home page needs no database, so this measures boot only."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.process.returncode}; see {self.error_log}")
            if len(self.worker_pids()) >= self.workers:
                try:
                    with urllib.request.urlopen(self.url + "/", timeout=5) as response:
                        if response.status == 200:
                            return
                except (OSError, http.client.HTTPException):
                    pass
            time.sleep(0.1)
        raise TimeoutError(f"gunicorn did not come up in {timeout:.0f} s; see {self.error_log}")

    def worker_pids(self) -> list[int]:
        try:
            children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text().split()
        except OSError:
            return []
        return [int(pid) for pid in children]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5)

    def __enter__(self) -> Gunicorn:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def process_cpu_seconds(pid: int, *, with_children: bool = True) -> float:
    """utime+stime of a live process (and of its reaped children), from /proc; 0 when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = int(fields[11]) + int(fields[12]) + (int(fields[13]) + int(fields[14]) if with_children else 0)
    return ticks / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(root: int) -> float:
    """CPU of a process, its live descendants and the children it already reaped."""
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        total += process_cpu_seconds(pid)
        try:
            todo += [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
        except OSError:
            pass
    return total


def _pg_bin() -> Path:
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
    if not candidates:
        raise RuntimeError("PostgreSQL binaries not found under /usr/lib/postgresql/*/bin")
    return candidates[-1].parent


class PgCluster:
    """A throwaway PostgreSQL cluster under /tmp on a loopback port, run as `postgres` when we are root."""

    def __init__(self, *, port: int = 0, fsync: bool = True, max_connections: int = 200):
        self.port = port or free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="humanclip-pg-", dir="/tmp"))
        self.options = (f"-p {self.port} -k {self.dir} -c listen_addresses={LOOPBACK} "
                        f"-c max_connections={max_connections}" + ("" if fsync else " -c fsync=off"))
        os.chmod(self.dir, 0o700)
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres")
        self._as_owner(f"{_pg_bin()}/initdb -D {self.dir} -U humanclip --auth=trust -E UTF8 --no-sync")
        self.start()

    @property
    def url(self) -> str:
        return f"postgres://humanclip@{LOOPBACK}:{self.port}/postgres"

    @property
    def socket_url(self) -> str:
        """The same database over its Unix socket (no TCP stack per query), as a DATABASE_URL."""
        return f"postgres://humanclip@{quote(str(self.dir), safe='')}:{self.port}/postgres"

    def _as_owner(self, command: str) -> None:
        argv = ["su", "postgres", "-s", "/bin/sh", "-c", command] if os.geteuid() == 0 else ["sh", "-c", command]
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60)

    def start(self) -> None:
        self._as_owner(f"{_pg_bin()}/pg_ctl -D {self.dir} -l {self.dir}/log -w -o '{self.options}' start")

    def stop(self) -> None:
        self._as_owner(f"{_pg_bin()}/pg_ctl -D {self.dir} -m fast -w stop")

    def postmaster_pid(self) -> int:
        return int((self.dir / "postmaster.pid").read_text().split()[0])

    def destroy(self) -> None:
        try:
            self.stop()
        except subprocess.CalledProcessError:
            pass  # already stopped
        shutil.rmtree(self.dir, ignore_errors=True)


# A browser: cookies, CSRF, redirects followed by hand and timed per request kind, retries


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


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def server_env(*, var_dir: Path, database_url: str, **extra: str) -> dict[str, str]:
    """The environment of a server process (gunicorn, manage.py) of a throwaway world; `extra` wins."""
    env = {k: v for k, v in os.environ.items() if k not in ("DEBUG", "HTTPS", "DATABASE_URL", "MEDIA_ROOT")}
    env.update({
        "VAR_DIR": str(var_dir), "DATABASE_URL": database_url, "SECRET_KEY": secrets.token_urlsafe(50), "DEBUG": "0",
        # Every participant comes from 127.0.0.1: lift the per-address join limit.
        "STUDY_JOIN_RATE_PER_MINUTE": "1000000",
        # A closed port: the participant flow must not need Redis, and any use of it fails loudly.
        "REDIS_URL": f"redis://{LOOPBACK}:{free_port()}/0",
        "LOG_LEVEL": "WARNING", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT),
        "DJANGO_SETTINGS_MODULE": "config.settings",
    })
    env.update(extra)
    return env


def _setup_study(*, participants: int, per_condition: int, k: int | None):
    """Import the demo data (or a generated stand-in) and create the load study; returns it."""
    from django.core.management import call_command

    from studyapp.models import ClassLabel, Dataset, Item, Study
    from studyapp.services.studies import study_create, study_open

    call_command("migrate", verbosity=0)
    call_command("createcachetable", verbosity=0)
    call_command("collectstatic", "--noinput", verbosity=0)  # WhiteNoise serves the pages' stylesheet and scripts
    if (SHARED_DATA / "oxford_pets").is_dir():
        from studyapp.services.demo import demo_setup

        dataset = demo_setup(data_root=SHARED_DATA).pets.dataset
    else:  # a stand-in of the same shape: 37 classes, 5 test + 4 train images each
        import io

        from PIL import Image

        from studyapp.services.images import image_normalise, image_store

        dataset = Dataset.objects.create(name="generated", source_format=Dataset.Format.FOLDER)
        rng = random.Random(0)
        for index in range(37):
            label = ClassLabel.objects.create(dataset=dataset, index=index, name=f"Breed {index:02d}",
                                              prompt_name=f"breed {index:02d}")
            for n in range(9):
                image = Image.new("RGB", (320, 240), tuple(rng.randrange(256) for _ in range(3)))
                for _ in range(200):
                    image.putpixel((rng.randrange(320), rng.randrange(240)), tuple(rng.randrange(256) for _ in range(3)))
                out = io.BytesIO()
                image.save(out, format="JPEG")
                normalised = image_normalise(raw=out.getvalue())
                image_store(image=normalised)
                Item.objects.create(dataset=dataset, content_hash=normalised.content_hash, image=normalised.relative_path,
                                    split="test" if n < 5 else "train", label=label, width=normalised.width,
                                    height=normalised.height, original_filename=f"gen_{index}_{n}.jpg")
    n_items = dataset.items.filter(split="test").count()
    # Just enough room for everyone: items fill up evenly, so slots are contended near the end.
    k = k or math.ceil(participants * per_condition / n_items)
    study = study_create(dataset=dataset, title="Load test", k_per_item=k, items_per_participant=per_condition,
                         design=Study.Design.WITHIN, seed=1, shots=(0, 1, 2))
    return study_open(study=study)


def run_one(args) -> dict:
    """One database: set up, serve, load, stop, verify. Runs in a child process (its own Django settings)."""
    var_dir = Path(tempfile.mkdtemp(prefix=f"humanclip-load-{args.db}-", dir="/tmp"))
    cluster = PgCluster(fsync=not args.pg_no_fsync) if args.db == "postgres" else None
    database_url = (cluster.socket_url if args.pg_socket else cluster.url) if cluster else f"sqlite:///{var_dir / 'db.sqlite3'}"
    env = server_env(var_dir=var_dir, database_url=database_url)
    os.environ.update({k: env[k] for k in ("VAR_DIR", "DATABASE_URL", "SECRET_KEY", "STUDY_JOIN_RATE_PER_MINUTE",
                                            "REDIS_URL", "LOG_LEVEL")})
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from django.db import connections

    try:
        started = time.perf_counter()
        study = _setup_study(participants=args.participants, per_condition=args.per_condition, k=args.k)
        setup_seconds = time.perf_counter() - started
        connections.close_all()
        recorder = Recorder()
        logs: list[ParticipantLog] = []
        with Gunicorn(env=env, log_dir=var_dir / "log", workers=args.workers, threads=args.threads) as server:
            server.wait_ready()
            deadline = time.monotonic() + args.max_seconds

            def one(index: int) -> ParticipantLog:
                rng = random.Random(f"{args.seed}:{index}")
                time.sleep(rng.uniform(0, args.ramp_seconds))  # participants arrive spread out, not in one instant
                browser = ParticipantBrowser(base_url=server.url, recorder=recorder, retries=args.retries)
                return participant_flow(browser, study_code=str(study.code), rng=rng, think_ms=args.think_ms,
                                        deadline=deadline, examples=not args.no_examples, browser_like=True)

            cpu_before = _cpu_snapshot(server, cluster)
            load_started = time.perf_counter()
            with ThreadPoolExecutor(max_workers=args.concurrency or args.participants) as pool:
                logs = list(pool.map(one, range(args.participants)))
            seconds = time.perf_counter() - load_started
            # Clamped: "other" is a difference of counters sampled a moment apart and can dip below zero.
            cpu = {name: max(0.0, after - cpu_before[name]) for name, after in _cpu_snapshot(server, cluster).items()}
        server_side = _access_log_latencies(server.access_log)
        problems = verify_answers(study=study, logs=logs)
        answers = sum(len(log.submitted) for log in logs)
        kinds = {kind: {"n": len(v), "p50_ms": 1000 * _percentile(v, 50), "p95_ms": 1000 * _percentile(v, 95),
                        "p99_ms": 1000 * _percentile(v, 99), "mean_ms": 1000 * statistics.fmean(v)}
                 for kind, v in sorted(recorder.latency.items())}
        return {
            "db": args.db, "participants": args.participants, "workers": args.workers, "threads": args.threads,
            "think_ms": args.think_ms, "per_condition": args.per_condition, "k": study.k_per_item,
            "ramp_s": args.ramp_seconds, "nice": args.nice, "examples": not args.no_examples,
            "database": "sqlite" if not cluster else "postgres (unix socket)" if args.pg_socket else "postgres (tcp)",
            "setup_s": setup_seconds, "seconds": seconds, "answers": answers, "answers_per_s": answers / seconds,
            "requests_per_s": sum(k["n"] for k in kinds.values()) / seconds,
            "outcomes": {o: sum(1 for log in logs if log.outcome == o) for o in ("done", "full", "stopped", "error")},
            "errors": [log.error for log in logs if log.error][:20],
            "http_errors": {s: n for s, n in recorder.statuses.items() if s >= 400},
            "retries": recorder.retries, "kinds": kinds, "server_kinds": server_side,
            "cache_hits": dict(recorder.cache_hits),
            "cpu_s": cpu, "cpu_share": {name: v / (seconds * os.cpu_count()) for name, v in cpu.items()},
            "checks": {name: len(found) for name, found in problems.items()},
            "check_examples": {name: [str(x) for x in found[:5]] for name, found in problems.items() if found},
        }
    finally:
        connections.close_all()
        if cluster:
            cluster.destroy()
        if not args.keep:
            shutil.rmtree(var_dir, ignore_errors=True)


def _cpu_snapshot(server: Gunicorn, cluster: PgCluster | None) -> dict[str, float]:
    """CPU seconds so far of the load generator (this process), gunicorn and PostgreSQL."""
    out = {"client": process_cpu_seconds(os.getpid(), with_children=False), "gunicorn": tree_cpu_seconds(server.process.pid)}
    if cluster:
        out["postgres"] = tree_cpu_seconds(cluster.postmaster_pid())
    # Whatever else keeps the machine busy (other jobs skew the latencies; the table says so).
    busy = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    out["other"] = (sum(busy) - busy[3] - busy[4]) / os.sysconf("SC_CLK_TCK") - sum(out.values())
    return out


def _access_log_latencies(path: Path | None) -> dict[str, dict]:
    """Per request kind, the time gunicorn's worker spent on the request (excludes the client and the
    accept queue): what the server costs, next to what a participant waits."""
    if path is None or not path.exists():
        return {}
    per_kind: dict[str, list[float]] = defaultdict(list)
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[3].isdigit():
            per_kind[request_kind(parts[0], parts[1])].append(int(parts[3]) / 1e6)
    return {kind: {"n": len(v), "p50_ms": 1000 * _percentile(v, 50), "p95_ms": 1000 * _percentile(v, 95),
                   "p99_ms": 1000 * _percentile(v, 99)} for kind, v in sorted(per_kind.items()) if kind != "other"}


def format_result(r: dict) -> str:
    lines = [f"== {r.get('database', r['db'])}: {r['participants']} participants arriving within {r.get('ramp_s', 0):.0f} s, gunicorn "
             f"{r['workers']}x{r['threads']}, think {r['think_ms']:.0f} ms, {r['per_condition']} trials x 3 conditions, "
             f"k={r['k']}, nice {r.get('nice', 0)}",
             f"answers: {r['answers']} in {r['seconds']:.1f} s = {r['answers_per_s']:.1f} answers/s "
             f"({r['requests_per_s']:.0f} requests/s); outcomes {r['outcomes']}; retries {r['retries']}; "
             f"HTTP errors {r['http_errors'] or 0}",
             "CPU share of the machine: " + ", ".join(f"{n} {v:.0%}" for n, v in r["cpu_share"].items()),
             "served from the browser's cache (not asked for): "
             + (", ".join(f"{kind} {n}" for kind, n in sorted(r.get("cache_hits", {}).items())) or "nothing"),
             f"{'':<13}{'':>7}{'client-observed':^27}{'server-side (gunicorn)':^27}",
             f"{'request':<13}{'n':>7}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}"]
    for kind, k in r["kinds"].items():
        s = r["server_kinds"].get(kind, {"p50_ms": math.nan, "p95_ms": math.nan, "p99_ms": math.nan})
        lines.append(f"{kind:<13}{k['n']:>7}{k['p50_ms']:>9.1f}{k['p95_ms']:>9.1f}{k['p99_ms']:>9.1f}"
                     f"{s['p50_ms']:>9.1f}{s['p95_ms']:>9.1f}{s['p99_ms']:>9.1f}")
    checks = ", ".join(f"{name} {n}" for name, n in r["checks"].items())
    lines.append(f"database checks: {checks} -> {'OK' if not any(r['checks'].values()) else 'FAILED'}")
    lines += [f"  {name}: {examples}" for name, examples in r.get("check_examples", {}).items()]
    lines += [f"  error: {e}" for e in r["errors"][:10]]
    return "\n".join(lines)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("-n", "--participants", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=0, help="participants at once (default: all of them)")
    parser.add_argument("--per-condition", type=int, default=20, help="trials per condition and participant (demo: 20)")
    parser.add_argument("--k", type=int, default=0, help="answers per item (default: just enough for everyone)")
    parser.add_argument("--think-ms", type=float, default=2000, help="median pause before each answer (0: none)")
    parser.add_argument("--ramp-seconds", type=float, default=30.0, help="participants arrive within this window")
    parser.add_argument("--workers", type=int, default=3, help="gunicorn workers (./run demo: 3)")
    parser.add_argument("--threads", type=int, default=2, help="threads per worker (./run demo: 2)")
    parser.add_argument("--retries", type=int, default=0, help="client retries after a dropped connection or 5xx")
    parser.add_argument("--no-examples", action="store_true", help="do not fetch the shot example images")
    parser.add_argument("--max-seconds", type=float, default=300, help="hard cap per database")
    parser.add_argument("--pg-no-fsync", action="store_true", help="PostgreSQL with fsync=off (as ./run test)")
    parser.add_argument("--pg-socket", action="store_true", help="connect to PostgreSQL over its Unix socket, not TCP")
    parser.add_argument("--wait-quiet", type=float, default=0, metavar="SECONDS",
                        help="first wait (at most this long) until other jobs leave the machine idle")
    parser.add_argument("--nice", type=int, default=0, help="scheduling priority of everything under test "
                                                                "(e.g. -10 on a shared machine; negative needs root)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", action="store_true", help="keep the /tmp folder (logs, database)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not 1 <= args.participants <= 2000:
        parser.error("--participants must be within 1..2000")
    if not 1 <= args.max_seconds <= 1800:
        parser.error("--max-seconds must be within 1..1800")
    return args


def machine_busy_share(seconds: float = 2.0) -> float:
    """Share of all CPUs busy over the next `seconds` (everything on the machine)."""
    def sample() -> tuple[int, int]:
        ticks = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
        return sum(ticks) - ticks[3] - ticks[4], sum(ticks)
    busy0, total0 = sample()
    time.sleep(seconds)
    busy1, total1 = sample()
    return (busy1 - busy0) / max(1, total1 - total0)


def wait_until_quiet(*, limit_seconds: float, threshold: float = 0.2) -> float:
    """On a shared machine, other jobs skew latencies: wait (bounded) until it has been quiet for ~6 s."""
    started, quiet = time.monotonic(), 0
    while time.monotonic() - started < limit_seconds and quiet < 3:
        quiet = quiet + 1 if machine_busy_share() < threshold else 0
    return time.monotonic() - started


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child:
        if args.nice:
            # Inherited by gunicorn, PostgreSQL and the client threads: on a machine shared with other
            # jobs, this keeps them from queueing ahead of the server under test (their share is reported).
            os.setpriority(os.PRIO_PROCESS, 0, args.nice)
        print(json.dumps(run_one(args)))
        return 0
    results = []
    for db in (("sqlite", "postgres") if args.db == "both" else (args.db,)):
        if args.wait_quiet:
            waited = wait_until_quiet(limit_seconds=args.wait_quiet)
            print(f"(waited {waited:.0f} s for the machine to be quiet)", flush=True)
        # A child per database: Django's settings (DATABASE_URL, VAR_DIR) are fixed once per process.
        given = list(argv if argv is not None else sys.argv[1:])
        child_argv = [a for i, a in enumerate(given) if not a.startswith("--db") and (i == 0 or given[i - 1] != "--db")]
        done = subprocess.run([sys.executable, __file__, *child_argv, "--db", db, "--child"], cwd=ROOT,
                              capture_output=True, text=True, timeout=args.max_seconds + 300)
        if done.returncode != 0:
            print(done.stderr[-4000:], file=sys.stderr)
            return 2
        result = json.loads(done.stdout.strip().splitlines()[-1])
        results.append(result)
        print(format_result(result), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    failed = any(any(r["checks"].values()) or r["outcomes"]["error"] for r in results)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
