"""For tests that start other processes (workers, servers) against the test database."""

from urllib.parse import quote

from django.db import connection

from benchmarks.load_participants import free_port  # noqa: F401  (one way to find a free port)


def subprocess_database_url() -> str:
    """The URL of the database this test runs against, for worker processes (pytest-django's test DB)."""
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
