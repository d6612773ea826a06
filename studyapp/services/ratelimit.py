"""Fixed-window counters in the "ratelimit" database cache: shared by every web worker, no Redis needed."""

import math
import time

from django.core.cache import caches


def rate_count(*, key: str, window_s: int) -> int:
    """Count one event under `key`; the number of events in the current window, this one included.

    The first event opens a window of `window_s` seconds; events count towards it until it ends, and the
    next event after that opens a new one. The entry holds the count and the window's end, and expires with
    the window. (Not cache.incr(): Django's incr() writes the entry back with the cache's default timeout,
    300 s, so every event would have moved the window's end.) A read then a write: callers that need an
    exact count under concurrency serialise around it.
    """
    cache = caches["ratelimit"]
    now = time.time()
    count, ends = cache.get(key, (0, 0.0))
    if ends <= now:
        count, ends = 0, now + window_s
    count += 1
    cache.set(key, (count, ends), timeout=math.ceil(ends - now))
    return count


def rate_peek(*, key: str) -> int:
    """The events counted under `key` in the current window, counting nothing."""
    count, ends = caches["ratelimit"].get(key, (0, 0.0))
    return count if ends > time.time() else 0
