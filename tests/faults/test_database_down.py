"""The database is unreachable, fails mid-answer, or restarts: a friendly 503, no traceback, nothing half-written."""

import json
import random
import subprocess
import sys

import psycopg
import pytest
from django.db import OperationalError, connection
from django.test import Client

from studyapp.models import Assignment, Participant, Response
from tests.factories import make_dataset, make_study
from tests.faults.flow import first_trial, form_token, offered_choices, trial_code
from tests.participant_client import ParticipantBrowser, ParticipantLog, participant_flow
from tests.processes import ROOT, Gunicorn, PgCluster, free_port, server_env
from tests.studyapp.helpers import join_url, start

FRIENDLY = "Back in a moment"


def assert_friendly_503(status: int, body: str, headers) -> None:
    assert status == 503
    assert FRIENDLY in body and "nothing you sent just now was half-saved" in body
    for leak in ("Traceback", "OperationalError", "sqlite", "psycopg", "File \""):
        assert leak not in body
    assert headers["Retry-After"] == "30"
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    assert headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.django_db(transaction=True)
def test_an_unreachable_database_shows_a_friendly_503_page_not_a_traceback():
    study = make_study(dataset=make_dataset(n_classes=2, test_per_class=1))
    client = Client()
    page = start(client, study)
    trial_url = page.request["PATH_INFO"]
    saved = dict(connection.settings_dict)
    # Point the connection at a database that cannot be reached: a missing folder (SQLite) or a
    # closed port (PostgreSQL). The next query opens a new connection and fails like an outage does.
    if connection.vendor == "sqlite":
        connection.settings_dict["NAME"] = "/nonexistent-folder/db.sqlite3"
    else:
        connection.settings_dict["PORT"] = str(free_port())
    connection.close()
    try:
        pages = [client.get(join_url(study)), client.get(trial_url), client.post(trial_url, {"choice": "0"})]
    finally:
        connection.settings_dict.update(saved)
        connection.close()
    for response in pages:
        assert_friendly_503(response.status_code, response.content.decode(), response.headers)
    assert not Response.objects.exists()
    # Back up: the same participant carries on where they were.
    assert client.get(trial_url).status_code == 200


@pytest.mark.django_db
def test_a_database_failure_in_the_middle_of_an_answer_writes_nothing_and_the_retry_is_stored_once():
    study = make_study(dataset=make_dataset(n_classes=2, test_per_class=1))
    client = Client()
    page = start(client, study)
    trial_url = page.request["PATH_INFO"]

    def connection_lost_on_the_response_insert(execute, sql, params, many, context):
        # The trial's status update has already run inside the answer's transaction at this point.
        if sql.startswith('INSERT INTO "studyapp_response"'):
            raise OperationalError("server closed the connection unexpectedly")
        return execute(sql, params, many, context)

    with connection.execute_wrapper(connection_lost_on_the_response_insert):
        failed = client.post(trial_url, {"choice": "1", "rt_client_ms": "900"})
    assert_friendly_503(failed.status_code, failed.content.decode(), failed.headers)
    assignment = Assignment.objects.get(code=trial_url.rsplit("/", 1)[1])
    assert assignment.status == Assignment.Status.RESERVED  # the status update was rolled back with it
    assert not Response.objects.exists()

    retried = client.post(trial_url, {"choice": "1", "rt_client_ms": "900"})
    assert retried.status_code == 302
    assignment.refresh_from_db()
    assert assignment.status == Assignment.Status.ANSWERED
    assert Response.objects.get().choice.index == 1


_CREATE_STUDY = """
import django
django.setup()
from django.core.management import call_command
call_command("migrate", verbosity=0)
call_command("createcachetable", verbosity=0)
from tests.factories import make_dataset, make_study
print(make_study(dataset=make_dataset(n_classes=2, train_per_class=2, test_per_class=2), items_per_participant=2).code)
"""


def _stored(cluster: PgCluster) -> tuple[dict[str, str], int]:
    """(assignment code → stored choice, number of half-written answers), read straight from PostgreSQL."""
    with psycopg.connect(cluster.url) as db:
        rows = db.execute(
            "SELECT a.code::text, CASE WHEN r.is_idk THEN 'idk' ELSE c.index::text END FROM studyapp_response r "
            "JOIN studyapp_assignment a ON a.id = r.assignment_id LEFT JOIN studyapp_classlabel c ON c.id = r.choice_id"
        ).fetchall()
        half = db.execute(
            "SELECT count(*) FROM studyapp_assignment a LEFT JOIN studyapp_response r ON r.assignment_id = a.id "
            "WHERE (a.status = 'answered') <> (r.id IS NOT NULL)"
        ).fetchone()[0]
    return dict(rows), half


@pytest.fixture
def pg_study(tmp_path):
    """A throwaway PostgreSQL cluster with a small study in it: (cluster, server environment, study code)."""
    cluster = PgCluster(fsync=False)
    try:
        env = server_env(var_dir=tmp_path / "var", database_url=cluster.url, MEDIA_ROOT=str(tmp_path / "media"))
        made = subprocess.run([sys.executable, "-c", _CREATE_STUDY], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=120)
        assert made.returncode == 0, made.stderr
        yield cluster, env, made.stdout.split()[-1]
    finally:
        cluster.destroy()


@pytest.mark.services
def test_a_postgresql_restart_mid_study_shows_503_then_the_participant_carries_on_with_nothing_half_written(
    pg_study, tmp_path
):
    cluster, env, study_code = pg_study
    with Gunicorn(env=env, log_dir=tmp_path / "log", workers=2, threads=2, access_log=False) as server:
        server.wait_ready()
        browser = ParticipantBrowser(base_url=server.url)
        log = ParticipantLog(external_id="restart-1")
        page = first_trial(browser, study_code, external_id=log.external_id)
        choice = offered_choices(page)[0]
        posted = browser.post(page.path, {"csrfmiddlewaretoken": form_token(page), "choice": choice})
        assert posted.status == 302
        log.submitted.append((trial_code(page), choice))
        page = browser.follow(posted)

        cluster.stop()
        outage = [browser.get(page.path), browser.post(page.path, {"csrfmiddlewaretoken": form_token(page),
                                                                     "choice": choice})]
        for response in outage:
            assert_friendly_503(response.status, response.html, response.headers)
        cluster.start()

        # After the restart the participant carries on, no retry needed (stale persistent connections
        # are health-checked; see the quiet-restart test below).
        browser.retries = 0
        again = browser.post(page.path, {"csrfmiddlewaretoken": form_token(page), "choice": choice})
        assert again.status == 302
        log.submitted.append((trial_code(page), choice))
        participant_flow(browser, study_code=study_code, rng=random.Random(3), log=log)
        assert (log.outcome, log.error) == ("done", "")
    stored, half_written = _stored(cluster)
    assert half_written == 0
    assert stored == dict(log.submitted), json.dumps([stored, log.submitted])


@pytest.mark.services
def test_after_a_quiet_postgresql_restart_the_first_request_reconnects_instead_of_failing(pg_study, tmp_path):
    # One worker thread holding a persistent connection that died with the server while nobody was
    # asking: without the health check at the start of the request, that request would be a 503.
    cluster, env, study_code = pg_study
    with Gunicorn(env=env, log_dir=tmp_path / "log", workers=1, threads=1, access_log=False) as server:
        server.wait_ready()
        browser = ParticipantBrowser(base_url=server.url)
        page = first_trial(browser, study_code, external_id="quiet-restart")
        cluster.stop()
        cluster.start()
        again = browser.get(page.path)
        assert (again.status, trial_code(again)) == (200, trial_code(page))


@pytest.mark.django_db
def test_the_friendly_page_is_not_shown_for_errors_that_are_not_database_outages():
    # A programming error must stay a 500 (and reach the error log), not be dressed up as a short outage.
    study = make_study(dataset=make_dataset(n_classes=2, test_per_class=1))
    client = Client(raise_request_exception=False)

    def broken(execute, sql, params, many, context):
        raise RuntimeError("a bug, not an outage")

    with connection.execute_wrapper(broken):
        response = client.get(join_url(study))
    assert response.status_code == 500
    assert FRIENDLY not in response.content.decode()
    assert "Something went wrong on our side" in response.content.decode()
    assert not Participant.objects.exists()
