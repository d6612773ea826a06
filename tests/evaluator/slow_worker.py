"""`celery -A tests.evaluator.slow_worker worker …`: the real worker (config's Celery app, the real tasks), with
every chunk made TEST_CHUNK_DELAY_S seconds slower after it is scored and before it is written, heartbeats going
on meanwhile, so that a fault test can kill a worker or Redis mid-run. The delay is injected here, from the tests:
production code has no test hook.
"""

import os
import time

from celery.signals import worker_init

from evaluator.celery_app import app

__all__ = ["app"]


@worker_init.connect
def _slow_down_every_chunk(**kwargs) -> None:
    delay = float(os.environ.get("TEST_CHUNK_DELAY_S") or 0)
    if not delay:
        return
    from evaluator.services import chunks

    score_items = chunks._score_items

    def score_items_then_wait(*, heartbeat, **kw):
        rows = score_items(heartbeat=heartbeat, **kw)
        end = time.monotonic() + delay
        while time.monotonic() < end:
            time.sleep(min(0.1, end - time.monotonic()))
            heartbeat()
        return rows

    chunks._score_items = score_items_then_wait
