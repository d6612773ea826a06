"""A gunicorn worker is SIGKILLed while answers are in flight: participants click again, nothing is lost or doubled.

Answers are idempotent on the server (one response per trial, a repeat returns the first), and every
answer is one transaction, so a worker dying before, during or after its commit leaves either no
trace or the whole answer, and the participant's retry lands exactly once.
"""

import os
import random
import signal
import socket
import threading
import time
from pathlib import Path
from urllib.parse import urlencode

import pytest

from studyapp.models import Assignment, Response
from tests.factories import make_dataset, make_study
from tests.faults.flow import first_trial, form_token, offered_choices, trial_code
from tests.participant_client import ParticipantBrowser, ParticipantLog, participant_flow, verify_answers
from tests.processes import LOOPBACK

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]


def _hex(port: int) -> str:
    return f"0100007F:{port:04X}"  # 127.0.0.1 as /proc/net/tcp writes it


def connection_owner(server, client_port: int, *, timeout: float = 10.0) -> int:
    """The worker pid whose file descriptors hold the server side of our TCP connection."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        inodes = {
            fields[9]
            for fields in (line.split() for line in Path("/proc/net/tcp").read_text().splitlines()[1:])
            if fields[1] == _hex(server.port) and fields[2] == _hex(client_port)
        }
        for pid in server.worker_pids():
            try:
                fds = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
            except OSError:
                continue
            if any(fd == f"socket:[{inode}]" for fd in fds for inode in inodes):
                return pid
        time.sleep(0.05)
    raise TimeoutError("no worker picked up the connection")


def test_an_answer_cut_off_by_a_killed_worker_is_stored_once_when_the_participant_clicks_again(gunicorn_server):
    study = make_study(dataset=make_dataset(n_classes=3, train_per_class=2, test_per_class=2), items_per_participant=2)
    server = gunicorn_server(workers=2, threads=2)
    browser = ParticipantBrowser(base_url=server.url, retries=20, retry_delay=0.2)
    page = first_trial(browser, str(study.code), external_id="cut-off")
    data = {"csrfmiddlewaretoken": form_token(page), "choice": offered_choices(page)[0], "rt_client_ms": "1500"}
    body = urlencode(data).encode()
    cookies = "; ".join(f"{c.name}={c.value}" for c in browser.jar)
    head = (f"POST {page.path} HTTP/1.1\r\nHost: {LOOPBACK}:{server.port}\r\n"
            f"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {len(body)}\r\n"
            f"Cookie: {cookies}\r\nReferer: {server.url}{page.path}\r\nConnection: close\r\n\r\n").encode()

    with socket.create_connection((LOOPBACK, server.port), timeout=10) as raw:
        # Half the body: the worker is now inside this request, waiting for the rest of the answer.
        raw.sendall(head + body[: len(body) // 2])
        owner = connection_owner(server, raw.getsockname()[1])
        os.kill(owner, signal.SIGKILL)
        try:
            reply = raw.recv(4096)
        except ConnectionResetError:
            reply = b""
    assert reply == b""  # the participant saw the connection drop, no answer page
    assert not Response.objects.exists()

    # The participant clicks the same answer again (the retry lands on another or a respawned worker).
    again = browser.post(page.path, data)
    assert again.status == 302
    assignment = Assignment.objects.get(code=trial_code(page))
    assert Response.objects.filter(assignment=assignment).count() == 1
    assert assignment.status == Assignment.Status.ANSWERED
    log = ParticipantLog(external_id="cut-off", submitted=[(str(assignment.code), data["choice"])])
    participant_flow(browser, study_code=str(study.code), rng=random.Random(1), log=log)
    assert (log.outcome, log.error) == ("done", "")
    assert not any(verify_answers(study=study, logs=[log]).values())
    deadline = time.monotonic() + 20
    while (owner in server.worker_pids() or len(server.worker_pids()) != 2) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert owner not in server.worker_pids() and len(server.worker_pids()) == 2  # the master replaced it


def test_participants_answering_through_repeated_worker_kills_lose_and_double_nothing(gunicorn_server):
    # 12 items x k=2 per condition; 6 participants x 4 per condition fill it exactly (items may repeat across
    # parts, else the last places can be ones a person already saw): slots are contended.
    study = make_study(dataset=make_dataset(n_classes=3, train_per_class=2, test_per_class=4),
                       items_per_participant=4, k_per_item=2, repeat_items_across_parts=True)
    server = gunicorn_server(workers=2, threads=2)
    n_participants, total_answers = 6, 6 * 4 * 3
    lock, answered, kills = threading.Lock(), [0], []

    def strike(_log) -> None:
        # Kill a worker at a quarter, half and three quarters of the answers: other participants have
        # requests in that worker at that moment (no think time, more participants than threads).
        with lock:
            answered[0] += 1
            if answered[0] in (total_answers // 4, total_answers // 2, 3 * total_answers // 4):
                pids = server.worker_pids()
                victim = random.Random(answered[0]).choice(pids)
                os.kill(victim, signal.SIGKILL)
                kills.append(victim)

    def one(index: int) -> ParticipantLog:
        browser = ParticipantBrowser(base_url=server.url, retries=40, retry_delay=0.2)
        return participant_flow(browser, study_code=str(study.code), rng=random.Random(index), on_answer=strike)

    logs: list[ParticipantLog] = [None] * n_participants
    threads = [threading.Thread(target=lambda i=i: logs.__setitem__(i, one(i))) for i in range(n_participants)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)

    assert len(kills) == 3
    assert [log.error for log in logs if log.error] == []
    assert sum(len(log.submitted) for log in logs) == total_answers
    problems = verify_answers(study=study, logs=logs)
    assert {name: found for name, found in problems.items() if found} == {}
    assert Response.objects.filter(assignment__condition__study=study).count() == total_answers
