"""The broker side of scoring: sending chunks to the scoring queue and asking how many messages wait there.

Tasks are sent by name through the Celery app's registry (evaluator.apps imports evaluator.tasks at start-up),
so no service imports evaluator.tasks, which imports the services.
"""

from __future__ import annotations

import logging
import re

from django.conf import settings

from evaluator.celery_app import SCORE_CHUNK_TASK, app

logger = logging.getLogger(__name__)


class QueueUnavailable(RuntimeError):
    """The broker (Redis) could not take the run's tasks; the run stays pending and is re-sent later."""


def task_send(*, name: str, ids: list[int], what: str, then: str) -> None:
    """Send task ``name`` once per id; QueueUnavailable (saying ``then``) when the broker cannot take them."""
    task = app.tasks[name]
    try:
        for pk in ids:
            task.apply_async(args=[pk])
    except Exception as exc:  # kombu raises OperationalError, redis ConnectionError, …
        raise QueueUnavailable(
            f"could not queue {len(ids)} {what} on {_broker_label()} ({type(exc).__name__}: {exc}); {then}"
        ) from exc


def chunks_send(*, chunk_ids: list[int]) -> None:
    task_send(name=SCORE_CHUNK_TASK, ids=chunk_ids, what="chunk(s)",
              then="the run stays pending and a worker re-sends its chunks once Redis is reachable")


def _broker_label() -> str:
    return re.sub(r"//[^@/]*@", "//***@", str(app.conf.broker_url))


def queue_size() -> int | None:
    """Messages waiting in the scoring queue; None when the broker cannot tell (then nothing is re-sent)."""
    from kombu.exceptions import ChannelError

    try:
        with app.connection_for_read() as conn:
            conn.ensure_connection(max_retries=1)
            return conn.default_channel.queue_declare(queue=settings.SCORING_QUEUE, passive=True).message_count
    except ChannelError:
        return 0  # Redis deletes an empty list: no key, no messages
    except Exception as exc:
        logger.warning("cannot read the size of queue %r: %s", settings.SCORING_QUEUE, exc)
        return None
