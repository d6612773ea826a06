"""evaluator.services.queue: tasks go to the scoring queue by name; an unreachable broker is a clear error."""

import pytest

from evaluator.services.queue import QueueUnavailable, chunks_send, queue_size
from tests.evaluator.helpers import broker, flush_redis
from tests.processes import free_port


@pytest.mark.services
def test_chunks_sent_by_task_name_wait_in_the_scoring_queue_and_are_counted(redis_url):
    flush_redis(redis_url)
    with broker(redis_url):
        assert queue_size() == 0  # Redis keeps no key for an empty queue
        chunks_send(chunk_ids=[11, 12, 13])
        assert queue_size() == 3
    flush_redis(redis_url)


def test_an_unreachable_broker_gives_queue_unavailable_naming_it_without_its_password():
    with broker(f"redis://scorer:s3cret@127.0.0.1:{free_port()}/0"):
        with pytest.raises(QueueUnavailable) as failure:
            chunks_send(chunk_ids=[1, 2])
        assert queue_size() is None  # the sweepers then re-send nothing rather than everything

    message = str(failure.value)
    assert message.startswith("could not queue 2 chunk(s) on redis://***@127.0.0.1:") and "s3cret" not in message
    assert "the run stays pending" in message
