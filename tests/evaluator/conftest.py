"""Fixtures for the evaluator: a tiny model checkpoint, a private feature cache, and for @pytest.mark.services
tests a real Redis and real Celery worker processes that share the test database."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model

from tests.evaluator.tinymodel import write_tiny_checkpoint
from tests.processes import RedisServer, redis_reachable, subprocess_database_url, wait_for

ROOT = Path(__file__).resolve().parents[2]
CELERY = Path(sys.executable).with_name("celery")


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


# ----------------------------------------------------------------------------------------------- workers


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
    """start_worker(name, redis_url, chunk_delay_s=0, **env) -> Worker: a real `celery worker` on the scoring
    queue (solo pool) that sees this test's database, media root and feature cache. With ``chunk_delay_s`` every
    chunk takes that much longer (tests/evaluator/slow_worker.py), so a fault can land mid-run. Workers are
    stopped before the database is flushed (this fixture depends on transactional_db, so it is torn down first)."""
    workers: list[Worker] = []

    def start(name: str, url: str, *, chunk_delay_s: float = 0, **env) -> Worker:
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
        app = "config"
        if chunk_delay_s:
            app, environment["TEST_CHUNK_DELAY_S"] = "tests.evaluator.slow_worker", str(chunk_delay_s)
        proc = subprocess.Popen(
            [str(CELERY), "-A", app, "worker", "-Q", "scoring", "-c", "1", "--pool", "solo",
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


@pytest.fixture
def staff_client(client):
    user = get_user_model().objects.create_user("staff", password="pw-for-tests-only", is_staff=True,
                                                is_superuser=True)
    client.force_login(user)
    return client
