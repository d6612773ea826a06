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

The participant's browser and the database check are tests/participant_client.py's; gunicorn, PgCluster and
free_port are tests/processes.py's (the tests use them too): this script runs them at scale and reports.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from tests.participant_client import (  # noqa: E402
    ParticipantBrowser,
    ParticipantLog,
    Recorder,
    participant_flow,
    request_kind,
    verify_answers,
)
from tests.processes import Gunicorn, PgCluster, server_env  # noqa: E402

SHARED_DATA = ROOT.parent / "shared" / "data"


# Processes: gunicorn (free ports and the PostgreSQL cluster come from tests/processes.py)


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


# A browser: cookies, CSRF, redirects followed by hand and timed per request kind, retries


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


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
        world_close(cluster=cluster, var_dir=var_dir, keep=args.keep)


def world_close(*, cluster: PgCluster | None, var_dir: Path, keep: bool) -> None:
    """Close the throwaway world: the database connections, the PostgreSQL cluster, and the folder unless kept."""
    from django.db import connections

    connections.close_all()
    if cluster:
        cluster.destroy()
    if not keep:
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
