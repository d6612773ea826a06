"""The `run` script's own logic, driven through bash: `source ./run` defines its functions and runs
nothing, so each test calls the real functions, with the slow steps (set-up, PostgreSQL, pytest
itself) replaced by stand-ins that print what they were asked to do."""

import contextlib
import os
import shlex
import socket
import subprocess
import time
from pathlib import Path

import redis

from tests.processes import free_port

ROOT = Path(__file__).resolve().parents[1]


def bash(script: str, *, var_dir: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", "-c", f"source {shlex.quote(str(ROOT / 'run'))}\n{script}"],
        env={**os.environ, "VAR_DIR": str(var_dir), **(env or {})},
        capture_output=True, text=True, timeout=60, check=False,
    )


def answers(port: int) -> bool:
    try:
        return redis.Redis(port=port, socket_connect_timeout=1).ping()
    except redis.ConnectionError:
        return False


def stops_answering(port: int, *, within_s: float = 10) -> bool:
    deadline = time.monotonic() + within_s
    while answers(port):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_sourcing_the_script_defines_its_functions_and_runs_nothing(tmp_path):
    result = bash("declare -F cmd_test stop_all start_redis", var_dir=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["cmd_test", "stop_all", "start_redis"] and not (tmp_path / "run").exists()


def test_stopping_the_test_services_leaves_a_demo_redis_of_the_same_checkout_running(tmp_path):
    demo_port, test_port = free_port(), free_port()
    demo = bash(f'start_redis {demo_port} "$VAR/redis"', var_dir=tmp_path)  # as `./run demo` starts it
    assert demo.returncode == 0, demo.stderr
    try:
        test = bash(f'start_redis {test_port} "$VAR/redis-test"; stop_all', var_dir=tmp_path)  # as `./run test` ends
        assert test.returncode == 0, test.stderr
        assert not (tmp_path / "run" / f"redis-{test_port}.pid").exists()
        assert stops_answering(test_port)  # stop_all sends SIGTERM; Redis saves and exits
        assert answers(demo_port), "the test run stopped the demo's Redis"
    finally:
        pid = int((tmp_path / "run" / f"redis-{demo_port}.pid").read_text())
        with contextlib.suppress(ProcessLookupError):  # gone already if stop_all took it
            os.kill(pid, 15)  # the demo Redis this test started


def run_test_passes(tmp_path: Path, args: str, env: dict | None = None) -> list[str]:
    """What `./run test ARGS` runs, one line per pytest pass: its database and its arguments."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "python").write_text('#!/bin/sh\necho "db=${DATABASE_URL:-sqlite} redis=$REDIS_URL args=$*"\n')
    (fake / "ruff").write_text("#!/bin/sh\n")
    for f in fake.iterdir():
        f.chmod(0o755)
    result = bash(
        f"setup() {{ :; }}; start_redis() {{ :; }}; pg_start() {{ :; }}; stop_all() {{ :; }}\n"
        f'PY={fake}/python; VENV={tmp_path}; say() {{ :; }}\ncmd_test {args}',
        var_dir=tmp_path, env=env,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def test_with_arguments_both_test_passes_run_exactly_those(tmp_path):
    sqlite, postgres = run_test_passes(tmp_path, "tests/studyapp/test_frozen.py -k 'eight writes'")
    assert sqlite.startswith("db=sqlite ") and postgres.startswith("db=postgres://")
    for line in (sqlite, postgres):
        assert line.endswith(" args=-m pytest tests/studyapp/test_frozen.py -k eight writes"), line


def test_without_arguments_sqlite_runs_everything_and_postgresql_the_database_tests(tmp_path):
    sqlite, postgres = run_test_passes(tmp_path, "")
    assert sqlite.endswith(" args=-m pytest")
    assert postgres.endswith(" args=-m pytest -m not browser tests/studyapp tests/evaluator tests/security tests/faults "
                             "tests/badinput --ignore=tests/evaluator/report")


def test_the_test_redis_takes_the_next_free_port_when_its_own_is_taken(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        sqlite, _ = run_test_passes(tmp_path, "", env={"TEST_REDIS_PORT": str(port)})
    used = int(sqlite.split("redis=redis://127.0.0.1:")[1].split("/")[0])
    assert used > port
