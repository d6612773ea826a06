"""studyapp.services.ratelimit: fixed windows that start with their first event and end window_s later."""

import time

import pytest

from studyapp.services import ratelimit
from studyapp.services.ratelimit import rate_count, rate_peek

pytestmark = pytest.mark.django_db


class Clock:
    """time.time(), moved by hand from the real time on (the database cache's own expiry reads the real clock, so
    its entries outlive this one and only the counters' windows decide)."""

    def __init__(self, monkeypatch):
        self.now = time.time()
        monkeypatch.setattr(ratelimit.time, "time", lambda: self.now)


def test_events_count_in_the_window_the_first_one_opened_and_later_events_do_not_move_its_end(monkeypatch):
    clock = Clock(monkeypatch)
    assert rate_count(key="k", window_s=60) == 1
    clock.now += 59
    assert rate_count(key="k", window_s=60) == 2
    assert rate_peek(key="k") == 2
    clock.now += 1  # 60 s after the first event: its window has ended, whatever came in between
    assert rate_peek(key="k") == 0
    assert rate_count(key="k", window_s=60) == 1


def test_a_long_window_outlives_the_caches_default_timeout(monkeypatch):
    # The cache's default timeout is 300 s; a 15-minute lock-out must not end after five.
    clock = Clock(monkeypatch)
    for expected in range(1, 4):
        assert rate_count(key="k", window_s=900) == expected
    clock.now += 600
    assert rate_peek(key="k") == 3
    assert rate_count(key="k", window_s=900) == 4
    clock.now += 299.5
    assert rate_peek(key="k") == 4
    clock.now += 0.5
    assert rate_peek(key="k") == 0


def test_keys_count_apart_and_peeking_counts_nothing():
    assert rate_peek(key="a") == 0
    assert [rate_count(key="a", window_s=60) for _ in range(3)] == [1, 2, 3]
    assert rate_count(key="b", window_s=60) == 1
    assert (rate_peek(key="a"), rate_peek(key="a"), rate_peek(key="b")) == (3, 3, 1)
