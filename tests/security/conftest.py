from tests.faults.servers import gunicorn_server  # noqa: F401  (fixture)
