"""The evaluator's tunables: a Django setting when present, else the environment, else a default.

SCORING_QUEUE and SCORING_VISIBILITY_TIMEOUT_S are not here: evaluator.celery_app reads them from the
environment (one source for the worker and for everything that asks about the queue).

The environment fallback lets worker processes be tuned per machine (and tests tune the workers they
start) without a settings change; a setting of the same name always wins.
"""

import os

from django.conf import settings

DEFAULTS: dict[str, float] = {
    # Seconds without a heartbeat before a RUNNING chunk counts as orphaned (its worker died) and is requeued.
    # Heartbeats come at every phase and every encoded batch, so this only needs to exceed one batch's time.
    "SCORING_STALE_S": 300,
    # How often each worker's sweeper looks for orphaned chunks, lost messages and finished runs.
    "SCORING_SWEEP_S": 30,
    # A pending chunk whose message is not in the (empty) queue this long after it was sent is re-sent.
    "SCORING_REQUEUE_GRACE_S": 60,
    # Per-chunk time limits (prefork pool only; the solo pool cannot interrupt a task).
    "SCORING_SOFT_TIME_LIMIT_S": 900,
    "SCORING_TIME_LIMIT_S": 960,
    # Test-only: sleep this long inside every chunk so fault tests can interrupt a run mid-way.
    "SCORING_TEST_DELAY_S": 0,
    # Images per forward pass inside a chunk.
    "SCORING_BATCH_SIZE": 128,
}


def setting(name: str) -> float:
    if hasattr(settings, name):
        return float(getattr(settings, name))
    raw = os.environ.get(name, "").strip()
    if raw:
        try:
            return float(raw)
        except ValueError:
            raise ValueError(f"{name}={raw!r} is not a number") from None
    return float(DEFAULTS[name])

