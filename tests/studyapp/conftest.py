import pytest

from studyapp.selectors import hot_reads
from studyapp.services.participants import answers


@pytest.fixture(autouse=True)
def _cold_sql_caches():
    """The hand-written statements are built once per process and kept; each test starts without them, so every
    test also runs the code that builds them. Mutation testing needs it: its workers fork from a process that has
    already run the tests, and with warm caches a mutant in a statement's text would never be built."""
    hot_reads._sql.clear()
    answers._sql.clear()
