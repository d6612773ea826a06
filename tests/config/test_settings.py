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


def _env_names_read_by_settings() -> set[str]:
    import ast

    tree = ast.parse((ROOT / "config" / "settings.py").read_text())
    return {node.args[0].value for node in ast.walk(tree)
            if isinstance(node, ast.Call) and getattr(node.func, "id", "").startswith("env_")
            and node.args and isinstance(node.args[0], ast.Constant)}


def test_env_example_lists_every_setting_read_from_the_environment_and_no_other():
    import re

    listed = set(re.findall(r"^#? ?([A-Z][A-Z0-9_]+)=", (ROOT / ".env.example").read_text(), flags=re.MULTILINE))
    read = _env_names_read_by_settings() | {"SECRET_KEY"}  # secret_key() reads it (or var/secret_key)
    # Read elsewhere on purpose: ./run's ports, clipmodel's hub probe and the report's Chromium (no Django there).
    elsewhere = {"WEB_PORT", "REDIS_PORT", "PG_PORT", "HF_HUB_OFFLINE", "BROWSER_PATH"}
    assert read - listed == set()
    assert listed - read == elsewhere


def test_scoring_settings_are_parsed_strictly_and_reach_the_celery_app(tmp_path):
    bad = run_manage("check", env={"SCORING_STALE_S": "5 min", "VAR_DIR": str(tmp_path)})
    assert bad.returncode != 0 and "SCORING_STALE_S='5 min' is not a number" in bad.stderr
    good = run_manage("shell", "-c", "from evaluator.celery_app import app; "
                      "print(app.conf.broker_transport_options['visibility_timeout'], "
                      "app.amqp.router.route({}, 'evaluator.score_chunk')['queue'].name)",
                      env={"SCORING_QUEUE": "gpu", "SCORING_VISIBILITY_TIMEOUT_S": "7200", "VAR_DIR": str(tmp_path)})
    assert good.stdout.strip().splitlines()[-1] == "7200 gpu", good.stderr
