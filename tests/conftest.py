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
    read the settings, and so the name of the SQLite test database (config/settings.py: test_db_<pid>). Children
    side by side would share that file, and a "database is locked" in one would read as a killed mutant: each child
    gets a test database of its own, named after its own process."""
    from django.conf import settings

    db = settings.DATABASES["default"]
    if os.environ.get("MUTANT_UNDER_TEST") and db["ENGINE"] == "django.db.backends.sqlite3":
        db["TEST"]["NAME"] = str(settings.VAR_DIR / f"test_db_{os.getpid()}.sqlite3")
