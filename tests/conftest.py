import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _media_root(settings, tmp_path):
    """Each test writes images to its own media root, never to var/."""
    settings.MEDIA_ROOT = tmp_path / "media"


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix):
    """Under mutation testing (./run mutants), each mutant's tests run in a child forked from one process, which
    read the settings, and so the name of the test database. Children sharing one database were wrong both ways: side
    by side on SQLite a "database is locked" in one read as a killed mutant, and one after the other on PostgreSQL
    (a kept database) a child found what the previous one left and failed, which read as a kill too. Each child gets
    a test database of its own, named after its own process, created and dropped by it."""
    from django.conf import settings

    db = settings.DATABASES["default"]
    if os.environ.get("MUTANT_UNDER_TEST"):
        if db["ENGINE"] == "django.db.backends.sqlite3":
            db["TEST"]["NAME"] = str(settings.VAR_DIR / f"test_db_{os.getpid()}.sqlite3")
        else:
            db.setdefault("TEST", {})["NAME"] = f"test_{db['NAME']}_{os.getpid()}"
