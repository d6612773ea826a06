"""Redis (the Celery broker for model scoring) dies while participants answer: the participant flow never needs it."""

import random
import shutil
import signal
import socket
import subprocess
import threading

import pytest

from tests.factories import make_dataset, make_study
from tests.participant_client import ParticipantBrowser, ParticipantLog, participant_flow, verify_answers
from tests.processes import LOOPBACK, free_port, wait_for_port

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]


def test_participants_keep_answering_after_redis_dies_mid_study(gunicorn_server, tmp_path):
    port = free_port()
    redis = subprocess.Popen([shutil.which("redis-server"), "--port", str(port), "--bind", LOOPBACK, "--save", "",
                              "--appendonly", "no", "--dir", str(tmp_path)], stdout=subprocess.DEVNULL)
    try:
        wait_for_port(port)
        study = make_study(dataset=make_dataset(n_classes=3, train_per_class=2, test_per_class=2),
                           items_per_participant=2, k_per_item=2)
        # The server is configured with the live Redis, as in production.
        server = gunicorn_server(REDIS_URL=f"redis://{LOOPBACK}:{port}/0")
        lock = threading.Lock()

        def kill_redis_after_the_first_answer(_log) -> None:
            with lock:
                if redis.poll() is None:
                    redis.send_signal(signal.SIGKILL)
                    redis.wait(timeout=10)

        def one(index: int) -> ParticipantLog:
            browser = ParticipantBrowser(base_url=server.url)  # no retries: nothing may fail
            return participant_flow(browser, study_code=str(study.code), rng=random.Random(index),
                                    on_answer=kill_redis_after_the_first_answer)

        logs: list[ParticipantLog] = [None] * 3
        threads = [threading.Thread(target=lambda i=i: logs.__setitem__(i, one(i))) for i in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
    finally:
        if redis.poll() is None:
            redis.kill()
            redis.wait(timeout=10)

    with socket.socket() as probe:
        assert probe.connect_ex((LOOPBACK, port)) != 0  # Redis really was gone
    assert [(log.outcome, log.error) for log in logs] == [("done", "")] * 3
    assert sum(len(log.submitted) for log in logs) == 3 * 2 * 3
    assert not any(verify_answers(study=study, logs=logs).values())
