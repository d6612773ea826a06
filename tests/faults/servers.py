"""Real servers for the fault and security tests: gunicorn (as `./run demo` starts it) on the test database.

The test process and the gunicorn workers share the test database (a SQLite file, or the PostgreSQL
test database), so tests using these fixtures need django_db(transaction=True): data must be committed
for the workers to see it, and the fixture stops the server before the database is flushed.
"""


import pytest
from django.conf import settings
from django.db import connections

from tests.processes import Gunicorn, server_env, subprocess_database_url


def env_on_test_db(tmp_path, **extra: str) -> dict[str, str]:
    """A server on the test database, media and secret key (both sides agree on signed cookies and tokens)."""
    return server_env(var_dir=tmp_path / "var", database_url=subprocess_database_url(),
                      **{"MEDIA_ROOT": str(settings.MEDIA_ROOT), "SECRET_KEY": settings.SECRET_KEY, **extra})


@pytest.fixture
def gunicorn_server(transactional_db, tmp_path):
    """start(workers=, threads=, **env) → a running Gunicorn on a free loopback port; stopped afterwards."""
    started: list[Gunicorn] = []

    def start(*, workers: int = 2, threads: int = 2, **env: str) -> Gunicorn:
        # The workers open their own connections: commit what the test wrote and let go of the file.
        connections.close_all()
        server = Gunicorn(env=env_on_test_db(tmp_path, **env), log_dir=tmp_path / "log", workers=workers, threads=threads,
                          access_log=False)
        started.append(server)
        server.wait_ready()
        return server

    yield start
    for server in started:
        server.stop()
