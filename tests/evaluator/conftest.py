"""Fixtures for the evaluator: a tiny model checkpoint, a private feature cache, and for @pytest.mark.services
tests a real Redis and real Celery worker processes that share the test database."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.evaluator.tinymodel import write_tiny_checkpoint
from tests.processes import free_port, subprocess_database_url

ROOT = Path(__file__).resolve().parents[2]
CELERY = Path(sys.executable).with_name("celery")
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    return write_tiny_checkpoint(tmp_path_factory.mktemp("models") / "tiny.pt")


@pytest.fixture(scope="session")
def tiny_house_checkpoint(tmp_path_factory) -> Path:
    """A tiny model saved under the house model's name, as clipmodel.train would record it."""
    import clipmodel

    return write_tiny_checkpoint(tmp_path_factory.mktemp("house") / "house.pt", model_name=clipmodel.HOUSE_MODEL_NAME)


@pytest.fixture
def eager_celery():
    """Tasks run in this process when sent (still through Celery's task machinery and failure callback)."""
    from evaluator.celery_app import app

    old = app.conf.task_always_eager
    app.conf.task_always_eager = True
    yield app
    app.conf.task_always_eager = old


@pytest.fixture(autouse=True)
def _feature_cache(settings, tmp_path):
    """Each test its own feature cache and a fresh process cache, so encode counts start from zero."""
    from evaluator import scoring  # imported here: torch only for the tests that use it

    settings.HUMANCLIP_CACHE = tmp_path / "humanclip-cache"
    scoring.clear_caches()
    yield
    scoring.clear_caches()


# ----------------------------------------------------------------------------------------------- Redis


def redis_reachable(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    except Exception:
        return False


class RedisServer:
    """A private redis-server; stop() and start() again on the same port simulate a Redis restart."""

    def __init__(self, directory: Path, port: int | None = None):
        self.directory = directory
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None

    def start(self) -> RedisServer:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.directory)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_for(lambda: redis_reachable(self.url), timeout=15, what=f"redis-server on port {self.port}")
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()  # like a crash: no save, every queued message is gone
            self.proc.wait(10)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    """REDIS_URL when it points at a reachable server (./run test starts one), else a private redis-server."""
    url = os.environ.get("REDIS_URL", "")
    if url and redis_reachable(url):
        yield url
        return
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server.url
    server.stop()


@contextmanager
def broker(url: str):
    """Point this process's Celery app (which queues the chunks) at ``url``."""
    from evaluator.celery_app import app

    old = (app.conf.broker_url, app.conf.result_backend, app.conf.task_always_eager)
    app.conf.update(broker_url=url, result_backend=url, task_always_eager=False)
    _reset_pool(app)
    try:
        yield app
    finally:
        app.conf.update(broker_url=old[0], result_backend=old[1], task_always_eager=old[2])
        _reset_pool(app)


def _reset_pool(app) -> None:
    # Drop the cached pools (kombu keeps one per broker URL globally, so closing them would break later use).
    app._pool = None
    if "amqp" in app.__dict__:
        app.amqp._producer_pool = None
    app.__dict__.pop("backend", None)


def flush_redis(url: str) -> None:
    import redis

    redis.Redis.from_url(url).flushdb()


# ----------------------------------------------------------------------------------------------- workers


def wait_for(predicate, *, timeout: float, what: str, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


class Worker:
    def __init__(self, name: str, proc: subprocess.Popen, log: Path):
        self.name, self.proc, self.log = name, proc, log

    def kill(self) -> None:
        """kill -9: no warm shutdown, no ack, no cleanup."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@pytest.fixture
def start_worker(transactional_db, settings, tmp_path):
    """start_worker(name, redis_url, **env) -> Worker: a real `celery worker` on the scoring queue (solo pool)
    that sees this test's database, media root and feature cache. Workers are stopped before the database
    is flushed (this fixture depends on transactional_db, so it is torn down first)."""
    workers: list[Worker] = []

    def start(name: str, url: str, **env) -> Worker:
        log = tmp_path / f"worker-{name}-{len(workers)}.log"
        environment = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "REDIS_URL": url,
            "DATABASE_URL": subprocess_database_url(),
            "MEDIA_ROOT": str(settings.MEDIA_ROOT),
            "HUMANCLIP_CACHE": str(settings.HUMANCLIP_CACHE),
            "HF_HUB_OFFLINE": "1",
            "DB_CONN_MAX_AGE": "0",
            "PYTHONUNBUFFERED": "1",
            **{k: str(v) for k, v in env.items()},
        }
        proc = subprocess.Popen(
            [str(CELERY), "-A", "config", "worker", "-Q", "scoring", "-c", "1", "--pool", "solo",
             "-n", f"{name}@%h", "--without-gossip", "--without-mingle", "-l", "info"],
            cwd=ROOT, env=environment, stdout=log.open("w"), stderr=subprocess.STDOUT,
        )
        worker = Worker(name, proc, log)
        workers.append(worker)
        wait_for(lambda: "ready." in worker.output() or proc.poll() is not None, timeout=90, what=f"worker {name}")
        assert proc.poll() is None, f"worker {name} exited:\n{worker.output()[-3000:]}"
        return worker

    yield start
    for worker in workers:
        worker.stop()
