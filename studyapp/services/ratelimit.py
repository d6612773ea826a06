"""Fixed-window counters in the "ratelimit" database cache: shared by every web worker, no Redis needed."""

from django.core.cache import caches


def rate_count(*, key: str, window_s: int) -> int:
    """Count one event under `key`; the number of events in the current window, this one included.

    add() opens a window of `window_s` seconds, incr() keeps that window's expiry. incr() is a read
    then a write: callers that need an exact count under concurrency serialise around it.
    """
    cache = caches["ratelimit"]
    if cache.add(key, 1, timeout=window_s):
        return 1
    try:
        return cache.incr(key)
    except ValueError:  # the window expired between add() and incr(): this event opens the next
        cache.add(key, 1, timeout=window_s)
        return 1


def rate_peek(*, key: str) -> int:
    """The events counted under `key` in the current window, counting nothing."""
    return caches["ratelimit"].get(key, 0)
