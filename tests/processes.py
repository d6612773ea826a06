"""The harness for tests and benchmarks that start other processes: free ports, a private Redis, a throwaway
PostgreSQL cluster, gunicorn as `./run demo` starts it, waiting on a condition, and the test database's URL and
environment for worker and server processes.

Nothing here needs Django set up except subprocess_database_url(); benchmarks import the rest before they do.
"""

from __future__ import annotations

import http.client
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import quote

LOOPBACK = "127.0.0.1"
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # gunicorn is installed beside the venv's python
ACCESS_LOG_FORMAT = '%(m)s %(U)s %(s)s %(D)s'


def free_port() -> int:
    """A loopback TCP port nothing listens on right now (the kernel's choice)."""
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def wait_for(predicate, *, timeout: float, what: str, interval: float = 0.1):
    """Poll ``predicate`` until it returns something truthy (returned), or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def subprocess_database_url() -> str:
    """The URL of the database this test runs against, for worker processes (pytest-django's test DB)."""
    from django.db import connection

    params = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{params['NAME']}"
    if connection.vendor == "postgresql":
        user = quote(params.get("USER") or "")
        password = quote(params.get("PASSWORD") or "")
        auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
        host = params.get("HOST") or "localhost"
        port = f":{params['PORT']}" if params.get("PORT") else ""
        return f"postgres://{auth}{host}{port}/{params['NAME']}"
    raise RuntimeError(f"no worker database URL for {connection.vendor}")


# ----------------------------------------------------------------------------------------------- Redis


def redis_reachable(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    except Exception:
        return False


class RedisServer:
    """A private redis-server without persistence; stop() and start() again on the same port simulate a crash
    and a restart (every queued message is gone)."""

    def __init__(self, directory: Path, port: int | None = None):
        self.directory = directory
        self.port = port or free_port()
        self.url = f"redis://{LOOPBACK}:{self.port}/0"
        self.proc: subprocess.Popen | None = None

    def start(self) -> RedisServer:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", LOOPBACK, "--save", "", "--appendonly", "no",
             "--dir", str(self.directory)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_for(lambda: redis_reachable(self.url), timeout=15, what=f"redis-server on port {self.port}")
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()  # like a crash: no save, every queued message is gone
            self.proc.wait(10)


# ----------------------------------------------------------------------------------------------- PostgreSQL


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
