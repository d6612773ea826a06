import os
import subprocess
import sys
from pathlib import Path

import pytest

from config.env import ImproperlyConfiguredEnv, env_bool, env_int, secret_key

ROOT = Path(__file__).resolve().parents[2]


def run_manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if k not in ("DEBUG", "HTTPS", "SECRET_KEY", "DATABASE_URL")}
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env={**full_env, **env},
                          capture_output=True, text=True, timeout=120)


def test_check_deploy_is_clean_with_production_settings(tmp_path):
    result = run_manage("check", "--deploy", "--fail-level", "WARNING", env={
        "DEBUG": "0", "HTTPS": "1", "SECRET_KEY": "x" * 30 + "production-only-secret-9f8e7d6c5b4a", "VAR_DIR": str(tmp_path),
        "ALLOWED_HOSTS": "study.example.org",
    })
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_a_misspelt_boolean_fails_at_start_up(tmp_path):
    result = run_manage("check", env={"DEBUG": "treu", "VAR_DIR": str(tmp_path)})
    assert result.returncode != 0
    assert "DEBUG='treu' is not a boolean" in result.stderr


def test_booleans_and_integers_parse_strictly(monkeypatch):
    monkeypatch.setenv("FLAG", "Yes")
    assert env_bool("FLAG") is True
    monkeypatch.setenv("N", "-3")
    with pytest.raises(ImproperlyConfiguredEnv, match="N=-3 must be at least 0"):
        env_int("N", 1, minimum=0)


def test_the_secret_key_is_generated_once_into_an_untracked_file(tmp_path, monkeypatch):
    monkeypatch.delenv("SECRET_KEY", raising=False)
    first = secret_key(path=tmp_path / "secret_key")
    assert len(first) >= 50 and secret_key(path=tmp_path / "secret_key") == first
    assert (tmp_path / "secret_key").stat().st_mode & 0o077 == 0


def test_postgres_is_chosen_through_database_url(tmp_path):
    result = run_manage("shell", "-c", "from django.db import connection; print(connection.vendor)",
                        env={"DATABASE_URL": "postgres://u@127.0.0.1:1/db", "VAR_DIR": str(tmp_path)})
    assert result.stdout.strip().splitlines()[-1] == "postgresql", result.stderr
