"""`manage.py migrate` alone, on an empty database, gives a site that works: the way a lab deploying
on its own server sets it up (docs/deploy.md), with nothing from `./run`."""

import os
import subprocess
import sys
import uuid
from pathlib import Path

import dj_database_url
import psycopg

ROOT = Path(__file__).resolve().parents[2]

CHECK = """
from django.core.cache import caches
from django.db import connection
from studyapp.frozen import triggers_present
caches["ratelimit"].set("probe", 1)
print("ratelimit cache:", caches["ratelimit"].get("probe"))
print("frozen-study triggers:", len(triggers_present(connection)))
"""


def manage(*args: str, database_url: str, var_dir: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "DATABASE_URL": database_url, "VAR_DIR": str(var_dir)}
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)


def fresh_database(tmp_path: Path) -> tuple[str, callable]:
    """An empty database of the kind this run tests (DATABASE_URL: PostgreSQL, else SQLite), and how to drop it."""
    server = os.environ.get("DATABASE_URL", "")
    if not server.startswith("postgres"):
        return f"sqlite:///{tmp_path / 'fresh.sqlite3'}", lambda: None
    name = f"fresh_{uuid.uuid4().hex[:12]}"
    params = dj_database_url.parse(server)

    def admin(sql: str) -> None:
        with psycopg.connect(dbname=params["NAME"], user=params["USER"], password=params["PASSWORD"] or None,
                             host=params["HOST"], port=params["PORT"] or None, autocommit=True) as conn:
            conn.execute(sql)

    admin(f"CREATE DATABASE {name}")
    return server.rsplit("/", 1)[0] + f"/{name}", lambda: admin(f"DROP DATABASE {name}")


def test_migrate_alone_creates_the_rate_limit_table_and_the_frozen_study_triggers(tmp_path):
    url, drop = fresh_database(tmp_path)
    try:
        migrated = manage("migrate", "--noinput", database_url=url, var_dir=tmp_path)
        assert migrated.returncode == 0, migrated.stderr
        checked = manage("shell", "-c", CHECK, database_url=url, var_dir=tmp_path)
        assert checked.returncode == 0, checked.stderr  # before: "no such table: ratelimit_cache"
        assert "ratelimit cache: 1" in checked.stdout
        assert "frozen-study triggers: 0" not in checked.stdout
    finally:
        drop()
