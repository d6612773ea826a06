"""What one participant request costs next to a trivial page, on one server (gunicorn as `./run demo` starts it).

    .venv/bin/python benchmarks/bench_requests.py                             # SQLite, 8 client threads
    .venv/bin/python benchmarks/bench_requests.py --db postgres --json pg.json
    .venv/bin/python benchmarks/bench_requests.py --profile                   # where the time goes (in-process)

One run builds a throwaway world under /tmp (the demo's Pets data from ../shared/data, else a generated
37-class stand-in; a within-subjects study, zero/one/two-shot, 20 trials per part as in the demo), starts
gunicorn with `./run demo`'s options (3 workers x 2 threads, gthread, access log) on a free loopback port,
and measures, one kind at a time with --clients client threads for --seconds each:

- the trivial page (`/`, a template without a query: the yardstick) and a static file (WhiteNoise);
- the trial page of each part (zero-, one-, two-shot; a reload: the page a participant sees, read-only);
- the trial image, an example image (two-shot part);
- the answer (POST → 302 to the next trial) and the answer with its redirect followed (POST + the next
  trial page's first view, which also records when it was shown).

Every kind runs --rounds times, interleaved (round 1: every kind, round 2: every kind, ...), so that a
disturbance from other jobs on a shared machine hits every kind alike; each kind's ratio to the trivial page
is taken within a round. Reported per kind: requests/s and the ratio (median of the rounds, with their
range), client latency p50, gunicorn CPU ms per request (its processes' CPU over the window / requests),
PostgreSQL CPU ms per request, and the database statements per request, counted in-process with Django's
test client on the same database (every statement the ORM sends, savepoints included; on PostgreSQL add the
connection health check's `SELECT 1` of each request that queries, and BEGIN/COMMIT around writes).

--profile runs each kind in-process under cProfile (timing CPU, not the wall clock) instead and splits its
time by where it is spent (database, ORM, templates, URLs, i18n, signing, middleware, file reads; a builtin
counts where it was called from). Absolute times under a profiler are inflated, Python-heavy code more than C; the shares are
what it is for, with the unprofiled in-process CPU ms beside them.

Nothing here is a test: speed goals are checked by reading this script's output (docs/load.md).
To measure another checkout (e.g. before a change) copy this file and load_participants.py into its
benchmarks/ and run it there.
"""

from __future__ import annotations

import argparse
import cProfile
import http.client
import json
import os
import pstats
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import urlencode, urlsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.load_participants import _setup_study, process_cpu_seconds, tree_cpu_seconds, world_close  # noqa: E402
from studyapp.pages import CSRF, ENROL, EXAMPLE_IMAGE, TRIAL_IMAGE, TRIAL_PATH  # noqa: E402
from tests.processes import LOOPBACK, Gunicorn, PgCluster, server_env  # noqa: E402

PER_CONDITION = 20  # the demo's trials per part
PARTS = ("zero-shot", "one-shot", "two-shot")
STATIC_FILE = "/static/studyapp/site.css"


# A small HTTP client: one connection and one cookie jar per simulated browser


class Browser:
    """One participant's browser: a keep-alive connection, or a new connection per request (KEEP_ALIVE).
    Every cookie of the app applies under /s/<study>/ and the benchmark only asks there (or for /), so
    cookies are kept by name."""

    KEEP_ALIVE = True  # set once from --connection, before any request

    def __init__(self, port: int):
        self.port = port
        self.conn = http.client.HTTPConnection(LOOPBACK, port, timeout=30)
        self.cookies: dict[str, str] = {}

    def request(self, method: str, path: str, form: dict | None = None) -> tuple[int, str, bytes]:
        headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())} if self.cookies else {}
        if not self.KEEP_ALIVE:
            headers["Connection"] = "close"
        body = None
        if form is not None:
            body = urlencode(form).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        for attempt in range(2):
            try:
                self.conn.request(method, path, body=body, headers=headers)
                response = self.conn.getresponse()
                data = response.read()
                if not self.KEEP_ALIVE:
                    self.conn.close()  # the next request opens a new connection, as http.client does by itself
                break
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError, http.client.CannotSendRequest):
                # The server closed an idle keep-alive connection (between windows): reconnect once. Answers
                # are idempotent, so a POST that did arrive is stored once anyway.
                self.conn.close()
                if attempt:
                    raise
        for value in response.headers.get_all("Set-Cookie") or []:
            cookie = SimpleCookie()
            cookie.load(value)
            for name, morsel in cookie.items():
                if morsel["max-age"] == "0" or not morsel.value:
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = morsel.value
        location = urlsplit(response.headers.get("Location", "")).path
        return response.status, location, data

    def get(self, path: str) -> tuple[int, str, bytes]:
        return self.request("GET", path)

    def close(self) -> None:
        self.conn.close()


@dataclass
class Participant:
    """A participant joined over HTTP, standing at a trial: its page, token and images."""

    browser: Browser
    trial: str = ""  # path of the current trial
    html: str = ""
    token: str = ""
    answers_left: int = 0

    @property
    def image(self) -> str:
        return TRIAL_IMAGE.search(self.html)[1]

    @property
    def examples(self) -> list[str]:
        return EXAMPLE_IMAGE.findall(self.html)


def join(port: int, study_code: str) -> Participant:
    """Join, consent, leave the instructions: a participant at the first trial of the first part."""
    browser = Browser(port)
    url = f"/s/{study_code}/join?" + urlencode({"pid": f"bench-{uuid.uuid4()}"})
    status, _, body = browser.get(url)
    html = body.decode()
    assert status == 200 and ENROL.search(html), status
    status, location, _ = browser.request("POST", url, {"csrfmiddlewaretoken": CSRF.search(html)[1],
                                                         "enrol": ENROL.search(html)[1], "decision": "accept"})
    assert status == 302, status
    status, _, body = browser.get(location)
    status, location, _ = browser.request("POST", f"/s/{study_code}/instructions",
                                          {"csrfmiddlewaretoken": CSRF.search(body.decode())[1]})
    assert status == 302 and TRIAL_PATH.match(location), (status, location)
    participant = Participant(browser=browser, answers_left=3 * PER_CONDITION)
    participant_show(participant, location)
    return participant


def participant_show(participant: Participant, path: str) -> None:
    status, _, body = participant.browser.get(path)
    assert status == 200, (path, status)
    participant.trial, participant.html = path, body.decode()
    participant.token = CSRF.search(participant.html)[1]


def answer(participant: Participant) -> str:
    """Answer the current trial (the first offered choice); returns where the server sends them next."""
    status, location, _ = participant.browser.request(
        "POST", participant.trial, {"csrfmiddlewaretoken": participant.token, "choice": "0", "rt_client_ms": "900",
                                    "images_ready_ms": "120", "clock_start_ms": "136", "blur_count": "0",
                                    "hidden_ms": "0"})
    if status != 302:
        raise RuntimeError(f"answer to {participant.trial}: HTTP {status}")
    participant.answers_left -= 1
    return location


def advance_to_part(participant: Participant, part: int) -> None:
    """Answer until the participant's trial is in `part` (0, 1, 2)."""
    for _ in range(part * PER_CONDITION):
        location = answer(participant)
        if TRIAL_PATH.match(location):
            participant.trial = location
    participant_show(participant, participant.trial)
    assert f"Part {part + 1} of 3" in participant.html, participant.trial


# The measured kinds: each is a function of a client thread's state, returning True on the expected answer


@dataclass
class ThreadState:
    port: int
    study_code: str
    home: Browser
    at_part: list[Participant]  # one participant in each part (trial pages, images)
    answering: list[Participant] = field(default_factory=list)  # fresh participants to answer with
    example_turn: int = 0


def _ok(status: int, want: int = 200) -> bool:
    return status == want


def kind_home(s: ThreadState) -> bool:
    return _ok(s.home.get("/")[0])


def kind_static(s: ThreadState) -> bool:
    return _ok(s.home.get(STATIC_FILE)[0])


def kind_trial(part: int):
    def run(s: ThreadState) -> bool:
        p = s.at_part[part]
        return _ok(p.browser.get(p.trial)[0])
    return run


def kind_trial_image(s: ThreadState) -> bool:
    p = s.at_part[0]
    return _ok(p.browser.get(p.image)[0])


def kind_example_image(s: ThreadState) -> bool:
    p = s.at_part[2]
    examples = p.examples
    s.example_turn = (s.example_turn + 1) % len(examples)
    return _ok(p.browser.get(examples[s.example_turn])[0])


def _answering(s: ThreadState) -> Participant:
    while s.answering and s.answering[0].answers_left <= 0:
        s.answering.pop(0).browser.close()
    if not s.answering:  # ran out inside a window: rare (the pool is topped up between windows)
        s.answering.append(join(s.port, s.study_code))
    return s.answering[0]


def kind_answer(s: ThreadState) -> bool:
    p = _answering(s)
    location = answer(p)
    if TRIAL_PATH.match(location):
        p.trial = location  # the token stays valid: the next POST goes straight to the next trial
    else:
        p.answers_left = 0
    return True


def kind_answer_and_next(s: ThreadState) -> bool:
    p = _answering(s)
    location = answer(p)
    if not TRIAL_PATH.match(location):
        p.answers_left = 0
        return True
    status, _, body = p.browser.get(location)
    p.trial = location
    return _ok(status)


KINDS = {
    "trivial page (/)": kind_home,
    "static file (site.css)": kind_static,
    "trial page, zero-shot": kind_trial(0),
    "trial page, one-shot": kind_trial(1),
    "trial page, two-shot": kind_trial(2),
    "trial image": kind_trial_image,
    "example image": kind_example_image,
    "answer (POST -> 302)": kind_answer,
    "answer + next trial page": kind_answer_and_next,
}
TRIVIAL = "trivial page (/)"
ANSWER_KINDS = ("answer (POST -> 302)", "answer + next trial page")


# Measurement


def _machine_busy_seconds() -> float:
    ticks = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def measure_window(states: list[ThreadState], run, *, seconds: float, warmup: float, server: Gunicorn,
                   cluster: PgCluster | None) -> dict:
    """Every thread calls `run` in a loop: `warmup` seconds unmeasured, then `seconds` measured."""
    stop_warm, stop = threading.Event(), threading.Event()
    counts, failures, latencies = [0] * len(states), [0] * len(states), [[] for _ in states]
    measuring = threading.Event()

    def loop(i: int) -> None:
        state = states[i]
        while not stop.is_set():
            started = time.perf_counter()
            ok = run(state)
            if measuring.is_set():
                latencies[i].append(time.perf_counter() - started)
                counts[i] += ok
                failures[i] += not ok

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(len(states))]
    for t in threads:
        t.start()
    time.sleep(warmup)
    stop_warm.set()
    cpu0 = (tree_cpu_seconds(server.process.pid), process_cpu_seconds(os.getpid(), with_children=False),
            tree_cpu_seconds(cluster.postmaster_pid()) if cluster else 0.0, _machine_busy_seconds())
    measuring.set()
    started = time.perf_counter()
    time.sleep(seconds)
    measuring.clear()
    elapsed = time.perf_counter() - started
    cpu1 = (tree_cpu_seconds(server.process.pid), process_cpu_seconds(os.getpid(), with_children=False),
            tree_cpu_seconds(cluster.postmaster_pid()) if cluster else 0.0, _machine_busy_seconds())
    stop.set()
    for t in threads:
        t.join()
    n = sum(counts)
    gunicorn_s, client_s, pg_s, busy_s = (b - a for a, b in zip(cpu0, cpu1, strict=True))
    flat = sorted(x for lat in latencies for x in lat)
    return {
        "requests": n, "failures": sum(failures), "seconds": elapsed, "per_s": n / elapsed,
        "p50_ms": 1000 * flat[len(flat) // 2] if flat else float("nan"),
        "gunicorn_cpu_ms": 1000 * gunicorn_s / max(n, 1), "client_cpu_ms": 1000 * client_s / max(n, 1),
        "postgres_cpu_ms": 1000 * pg_s / max(n, 1),
        # Everything else on the machine over the window (other jobs), as a share of all its CPUs.
        "other_share": max(0.0, busy_s - gunicorn_s - client_s - pg_s) / (elapsed * os.cpu_count()),
    }


def _top_up(states: list[ThreadState], *, answers_each: int) -> None:
    """Between windows: every thread gets fresh answering participants for at least `answers_each` answers."""
    def one(state: ThreadState) -> None:
        while sum(max(0, p.answers_left) for p in state.answering) < answers_each:
            state.answering.append(join(state.port, state.study_code))
    threads = [threading.Thread(target=one, args=(s,)) for s in states]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def prepare_states(*, port: int, study_code: str, clients: int) -> list[ThreadState]:
    states: list[ThreadState] = [None] * clients  # type: ignore[list-item]

    def one(i: int) -> None:
        at_part = []
        for part in range(3):
            p = join(port, study_code)
            if part:
                advance_to_part(p, part)
            at_part.append(p)
        p = at_part[2]
        for url in p.examples[:2]:  # the first fetch of an example fills the server's per-process cache
            assert p.browser.get(url)[0] == 200
        states[i] = ThreadState(port=port, study_code=study_code, home=Browser(port), at_part=at_part)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if any(s is None for s in states):
        raise RuntimeError("setting up the participants failed (see above)")
    return states


# Queries per request, in-process (Django's test client on the same database)


def count_queries(*, study_code: str) -> dict[str, int]:
    """Statements per request kind, sent by this process's ORM (after a warm-up request of each kind)."""
    from django.db import connection
    from django.test import Client

    def client_at(part: int) -> tuple[Client, str, str]:
        client = Client(HTTP_HOST=LOOPBACK)
        url = f"/s/{study_code}/join?" + urlencode({"pid": f"q-{uuid.uuid4()}"})
        html = client.get(url).content.decode()
        client.post(url, {"enrol": ENROL.search(html)[1], "decision": "accept"})
        response = client.post(f"/s/{study_code}/instructions")
        trial = response.url
        for _ in range(part * PER_CONDITION):
            trial = client.post(trial, {"choice": "0"}).url
        return client, trial, client.get(trial).content.decode()

    counted: list[str] = []

    def counter(execute, sql, params, many, context):
        counted.append(sql)
        return execute(sql, params, many, context)

    def queries(call) -> int:
        call()  # warm: per-process caches filled, connection open
        counted.clear()
        with connection.execute_wrapper(counter):
            call()
        return len(counted)

    out: dict[str, int] = {}
    home = Client(HTTP_HOST=LOOPBACK)
    out[TRIVIAL] = queries(lambda: home.get("/"))
    out["static file (site.css)"] = 0  # WhiteNoise answers before Django's views
    for part in range(3):
        client, trial, html = client_at(part)
        out[f"trial page, {PARTS[part]}"] = queries(lambda c=client, t=trial: c.get(t))
        if part == 0:
            image = TRIAL_IMAGE.search(html)[1]
            out["trial image"] = queries(lambda c=client, u=image: c.get(u))
        if part == 2:
            example = EXAMPLE_IMAGE.findall(html)[-1]
            out["example image"] = queries(lambda c=client, u=example: c.get(u))
    client, trial, _ = client_at(0)
    counted.clear()
    with connection.execute_wrapper(counter):
        following = client.post(trial, {"choice": "0", "rt_client_ms": "900"}).url
    out["answer (POST -> 302)"] = len(counted)
    counted.clear()
    with connection.execute_wrapper(counter):
        client.get(following)
    out["trial page, first view"] = len(counted)
    out["answer + next trial page"] = out["answer (POST -> 302)"] + out["trial page, first view"]
    return out


# Where the time goes (in-process, cProfile)

# Own time of a function counts for the first rule its file matches; builtins and stdlib helpers count
# where they were called from (their callers' categories, in proportion to the time each caller spent).
_RULES: list[tuple[str, str]] = [
    ("django/test/", "test client (not on a real server)"),
    ("sqlite3.Cursor", "database (driver, round trips)"),
    ("psycopg", "database (driver, round trips)"),
    ("django/db/backends/", "database (driver, round trips)"),
    ("django/db/", "ORM (building queries, rows to objects)"),
    ("templatetags/i18n.py", "i18n (translation, language)"),
    ("django/utils/translation", "i18n (translation, language)"),
    ("gettext.py", "i18n (translation, language)"),
    ("studyapp/middleware.py:", "middleware and request handling"),
    ("django/urls/", "URLs (resolve, reverse)"),
    ("django/template/", "templates"),
    ("django/templatetags/", "templates"),
    ("django/core/signing.py", "signing (cookies, tokens)"),
    ("hmac.py", "signing (cookies, tokens)"),
    ("django/utils/crypto.py", "signing (cookies, tokens)"),
    ("django/middleware/csrf.py", "CSRF"),
    ("pathlib.py", "image bytes (file read)"),
    ("io.open", "image bytes (file read)"),
    ("_io.BufferedReader", "image bytes (file read)"),
    ("django/http/", "middleware and request handling"),
    ("django/core/handlers/", "middleware and request handling"),
    ("django/middleware/", "middleware and request handling"),
    ("django/contrib/", "middleware and request handling"),
    ("django/utils/deprecation.py", "middleware and request handling"),
    ("whitenoise/", "middleware and request handling"),
    ("studyapp/", "app code (views, selectors, services)"),
]


def _label(func: tuple) -> str:
    filename, line, name = func
    return f"{filename}:{line}({name})" if filename != "~" else name


def profile_breakdown(stats: pstats.Stats) -> dict[str, float]:
    raw = stats.stats  # type: ignore[attr-defined]
    memo: dict[tuple, dict[str, float]] = {}

    def category_of(func: tuple, depth: int = 0) -> dict[str, float]:
        """The category shares of a function's own time."""
        if func in memo:
            return memo[func]
        label = _label(func)
        for needle, category in _RULES:
            if needle in label:
                memo[func] = {category: 1.0}
                return memo[func]
        callers = raw[func][4] if func in raw else {}
        total = sum(v[2] for v in callers.values())
        shares: dict[str, float] = defaultdict(float)
        if depth > 30 or not callers or total <= 0:
            shares["other (Python, stdlib)"] = 1.0
        else:
            memo[func] = {"other (Python, stdlib)": 1.0}  # cycles resolve to "other"
            for caller, values in callers.items():
                for category, share in category_of(caller, depth + 1).items():
                    shares[category] += share * values[2] / total
        memo[func] = dict(shares)
        return memo[func]

    out: dict[str, float] = defaultdict(float)
    for func, (_, _, tottime, _, callers) in raw.items():
        if func[0] == "~" and callers:
            # A builtin: split its time by who called it, with the time spent under each caller.
            for caller, values in callers.items():
                for category, share in category_of(caller).items():
                    out[category] += share * values[2]
        else:
            for category, share in category_of(func).items():
                out[category] += share * tottime
    return dict(out)


def profile_kinds(*, study_code: str, repeats: int) -> dict[str, dict]:
    """Each kind in-process: unprofiled CPU ms per request (median of 3 batches, Django's test client included),
    then the profiled split (the test client left out)."""
    from django.test import Client

    def client_at(part: int) -> tuple[Client, str, str]:
        client = Client(HTTP_HOST=LOOPBACK)
        url = f"/s/{study_code}/join?" + urlencode({"pid": f"p-{uuid.uuid4()}"})
        html = client.get(url).content.decode()
        client.post(url, {"enrol": ENROL.search(html)[1], "decision": "accept"})
        trial = client.post(f"/s/{study_code}/instructions").url
        for _ in range(part * PER_CONDITION):
            trial = client.post(trial, {"choice": "0"}).url
        return client, trial, client.get(trial).content.decode()

    home = Client(HTTP_HOST=LOOPBACK)
    at = [client_at(part) for part in range(3)]
    # Participants to answer with, joined before anything is timed: each answers a whole study (3 parts).
    answering = [[client, trial] for client, trial, _ in
                 (client_at(0) for _ in range(2 * (5 * repeats // (3 * PER_CONDITION) + 2)))]

    def answer_one(follow: bool):
        def run():
            state = answering[0]
            response = state[0].post(state[1], {"choice": "0", "rt_client_ms": "900"})
            if TRIAL_PATH.match(response.url):
                state[1] = response.url
                if follow:
                    state[0].get(response.url)
            else:
                answering.pop(0)  # done: the next one takes over
        return run

    examples = EXAMPLE_IMAGE.findall(at[2][2])
    calls = {
        TRIVIAL: lambda: home.get("/"),
        "trial page, zero-shot": lambda: at[0][0].get(at[0][1]),
        "trial page, one-shot": lambda: at[1][0].get(at[1][1]),
        "trial page, two-shot": lambda: at[2][0].get(at[2][1]),
        "trial image": lambda: at[0][0].get(TRIAL_IMAGE.search(at[0][2])[1]),
        "example image": lambda: at[2][0].get(examples[-1]),
        "answer (POST -> 302)": answer_one(False),
        "answer + next trial page": answer_one(True),
    }
    out = {}
    for kind, call in calls.items():
        call()
        batches = []
        for _ in range(3):
            # CPU time of this thread, not the wall clock: other jobs on a shared machine barely move it.
            started = time.thread_time()
            for _ in range(repeats):
                call()
            batches.append(1000 * (time.thread_time() - started) / repeats)
        # CPU time again: waiting (for the disk, or for a CPU another job holds) is not work of the request's.
        profiler = cProfile.Profile(time.thread_time)
        profiler.enable()
        for _ in range(repeats):
            call()
        profiler.disable()
        split = profile_breakdown(pstats.Stats(profiler))
        split.pop("test client (not on a real server)", None)
        total = sum(split.values())
        out[kind] = {"ms": statistics.median(batches), "profiled_ms": 1000 * total / repeats,
                     "split": {c: v / total for c, v in sorted(split.items(), key=lambda kv: -kv[1])}}
    return out


# One run


def build_world(args, var_dir: Path):
    cluster = PgCluster(fsync=False) if args.db == "postgres" else None
    database_url = cluster.url if cluster else f"sqlite:///{var_dir / 'db.sqlite3'}"
    env = server_env(var_dir=var_dir, database_url=database_url)
    os.environ.update({k: env[k] for k in ("VAR_DIR", "DATABASE_URL", "SECRET_KEY", "STUDY_JOIN_RATE_PER_MINUTE",
                                            "REDIS_URL", "LOG_LEVEL", "DJANGO_SETTINGS_MODULE")})
    import django

    django.setup()
    # k far above what the run needs: the benchmark measures requests, not a study filling up.
    study = _setup_study(participants=1, per_condition=PER_CONDITION, k=1000)
    return cluster, env, study


def run(args) -> dict:
    Browser.KEEP_ALIVE = args.connection == "keep-alive"
    var_dir = Path(tempfile.mkdtemp(prefix=f"humanclip-bench-{args.db}-", dir="/tmp"))
    cluster = None
    try:
        cluster, env, study = build_world(args, var_dir)
        code = str(study.code)
        from django.db import connections

        if args.profile:
            result = {"db": args.db, "profile": profile_kinds(study_code=code, repeats=args.profile_repeats)}
            connections.close_all()
            return result
        queries = count_queries(study_code=code)
        connections.close_all()
        with Gunicorn(env=env, log_dir=var_dir / "log", workers=args.workers, threads=args.threads) as server:
            server.wait_ready()
            states = prepare_states(port=server.port, study_code=code, clients=args.clients)
            rounds: list[dict[str, dict]] = []
            guess = 400.0  # answers/s, before the first answer window says better
            load = []
            for _ in range(args.rounds):
                this: dict[str, dict] = {}
                for kind, call in KINDS.items():
                    if args.only and kind != TRIVIAL and not any(w in kind for w in args.only.split(",")):
                        continue
                    if kind in ANSWER_KINDS:
                        rate = max(guess, 1.5 * max((r[kind]["per_s"] for r in rounds), default=guess))
                        _top_up(states, answers_each=int(rate * (args.seconds + args.warmup) / args.clients) + 5)
                    load.append(os.getloadavg()[0])
                    this[kind] = measure_window(states, call, seconds=args.seconds, warmup=args.warmup, server=server,
                                                cluster=cluster)
                rounds.append(this)
        summary = summarise(rounds, queries)
        return {"db": args.db, "connection": args.connection, "clients": args.clients, "workers": args.workers, "threads": args.threads,
                "seconds": args.seconds, "rounds": args.rounds, "loadavg_1min": [min(load), max(load)],
                "summary": summary, "raw": rounds, "queries": queries}
    finally:
        world_close(cluster=cluster, var_dir=var_dir, keep=args.keep)


def summarise(rounds: list[dict[str, dict]], queries: dict[str, int]) -> dict[str, dict]:
    out = {}
    for kind in rounds[0]:
        per_s = [r[kind]["per_s"] for r in rounds]
        ratio = [r[kind]["per_s"] / r[TRIVIAL]["per_s"] for r in rounds]
        out[kind] = {
            "per_s": statistics.median(per_s), "per_s_range": [min(per_s), max(per_s)],
            "ratio": statistics.median(ratio), "ratio_range": [min(ratio), max(ratio)],
            "p50_ms": statistics.median(r[kind]["p50_ms"] for r in rounds),
            "gunicorn_cpu_ms": statistics.median(r[kind]["gunicorn_cpu_ms"] for r in rounds),
            "client_cpu_ms": statistics.median(r[kind]["client_cpu_ms"] for r in rounds),
            "postgres_cpu_ms": statistics.median(r[kind]["postgres_cpu_ms"] for r in rounds),
            "other_share": statistics.median(r[kind]["other_share"] for r in rounds),
            "failures": sum(r[kind]["failures"] for r in rounds),
            "queries": queries.get(kind),
        }
    return out


def format_result(r: dict) -> str:
    if "profile" in r:
        lines = [f"== where the time goes, in-process ({r['db']}): CPU ms per request (Django's test client "
                 "included), then shares of the profiled time (test client left out)"]
        for kind, p in r["profile"].items():
            top = ", ".join(f"{c} {share:.0%}" for c, share in p["split"].items() if share >= 0.02)
            lines.append(f"{kind}: {p['ms']:.2f} ms CPU ({p['profiled_ms']:.2f} ms profiled): {top}")
        return "\n".join(lines)
    lines = [f"== {r['db']}: gunicorn {r['workers']}x{r['threads']}, {r['clients']} client threads, "
             f"connection: {r.get('connection', 'keep-alive')}, "
             f"{r['rounds']} rounds x {r['seconds']:.0f} s per kind; 1-min load average {r['loadavg_1min'][0]:.1f}"
             f"-{r['loadavg_1min'][1]:.1f}",
             f"{'request':<26}{'req/s':>8}{'(range)':>14}{'ratio':>7}{'(range)':>13}{'p50 ms':>8}"
             f"{'server CPU ms':>15}{'pg CPU ms':>11}{'client ms':>11}{'queries':>9}{'other':>7}{'fail':>6}"]
    for kind, s in r["summary"].items():
        q = "" if s["queries"] is None else str(s["queries"])
        per_s = "{:.0f}-{:.0f}".format(*s["per_s_range"])
        ratio = "{:.2f}-{:.2f}".format(*s["ratio_range"])
        lines.append(
            f"{kind:<26}{s['per_s']:>8.0f}{per_s:>14}{s['ratio']:>7.2f}{ratio:>13}{s['p50_ms']:>8.1f}"
            f"{s['gunicorn_cpu_ms']:>15.2f}{s['postgres_cpu_ms']:>11.2f}{s['client_cpu_ms']:>11.2f}{q:>9}"
            f"{s['other_share']:>7.0%}{s['failures']:>6}")
    lines.append(f"(trial page, first view: {r['queries'].get('trial page, first view')} queries; 'other': CPU share "
                 "of everything else on the machine during the window)")
    return "\n".join(lines)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--clients", type=int, default=8, help="client threads (simulated browsers at once)")
    parser.add_argument("--connection", choices=("new", "keep-alive"), default="new",
                        help="a new TCP connection per request (what a participant's browser opens after a pause "
                             "longer than gunicorn's 2 s keep-alive; the issue's measurement) or one kept per client")
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per kind and round")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds before each window")
    parser.add_argument("--rounds", type=int, default=3, help="every kind this many times, interleaved")
    parser.add_argument("--workers", type=int, default=3, help="gunicorn workers (./run demo: 3)")
    parser.add_argument("--threads", type=int, default=2, help="threads per worker (./run demo: 2)")
    parser.add_argument("--only", default="", help="measure only the kinds whose name contains one of these "
                                                   "comma-separated words (the trivial page always runs)")
    parser.add_argument("--profile", action="store_true", help="profile in-process instead (no gunicorn)")
    parser.add_argument("--profile-repeats", type=int, default=200)
    parser.add_argument("--keep", action="store_true", help="keep the /tmp folder (logs, database)")
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args(argv)
    if not 1 <= args.clients <= 64 or not 1 <= args.rounds <= 20 or not 0.5 <= args.seconds <= 120:
        parser.error("--clients 1..64, --rounds 1..20, --seconds 0.5..120")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    result = run(args)
    print(format_result(result), flush=True)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    failed = any(s["failures"] for s in result.get("summary", {}).values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
