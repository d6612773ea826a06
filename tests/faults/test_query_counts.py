"""The pages a participant hits hundreds of times cost a fixed, small number of queries, whatever the study's size.

Load grows with participants, not with classes or shot examples: an N+1 on the trial page would turn
a 37-class study into 37 extra queries per trial under load (benchmarks/load_participants.py and
benchmarks/bench_requests.py measure the effect; docs/load.md has the numbers). Counted with
CaptureQueriesContext, not timed. On PostgreSQL each request that queries also sends the connection health
check's SELECT 1 (not counted here), and a write transaction its BEGIN and COMMIT.
"""


import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from studyapp.pages import EXAMPLE_IMAGE
from tests.factories import make_dataset, make_study
from tests.studyapp.helpers import start, trial_code

pytestmark = pytest.mark.django_db



def queries(call) -> tuple[int, object]:
    with CaptureQueriesContext(connection) as captured:
        response = call()
    return len(captured), response


def costs_in_the_two_shot_phase(n_classes: int) -> dict[str, int]:
    # Two test items per class: enough for three parts of two trials without showing a person an image twice.
    study = make_study(dataset=make_dataset(n_classes=n_classes, train_per_class=2, test_per_class=2),
                       items_per_participant=2)
    client = Client()
    page = start(client, study)
    while not EXAMPLE_IMAGE.findall(page.content.decode()) or "Part 3 of 3" not in page.content.decode():
        assert trial_code(page), page.request["PATH_INFO"]
        page = client.post(page.request["PATH_INFO"], {"choice": "0"}, follow=True)
    url = page.request["PATH_INFO"]
    examples = EXAMPLE_IMAGE.findall(page.content.decode())
    assert len(examples) == 2 * n_classes
    costs = {}
    costs["trial (reload)"], _ = queries(lambda: client.get(url))
    costs["trial image"], _ = queries(lambda: client.get(url + "/image"))
    costs["example image (first)"], _ = queries(lambda: client.get(examples[-1]))
    costs["example image (again)"], _ = queries(lambda: client.get(examples[-1]))
    # The answer's redirect names the next trial itself (no hop through /next).
    costs["answer"], answered = queries(lambda: client.post(url, {"choice": "1", "rt_client_ms": "900"}))
    costs["next"], following = queries(lambda: client.get(f"/s/{study.code}/next"))
    assert following.url == answered.url
    costs["trial (first view)"], shown = queries(lambda: client.get(answered.url))
    assert trial_code(shown) and shown.status_code == 200
    return costs


def test_participant_pages_cost_the_same_queries_for_3_classes_as_for_12():
    small, large = costs_in_the_two_shot_phase(3), costs_in_the_two_shot_phase(12)
    assert small == large


def test_the_hottest_requests_cost_exactly_their_pinned_number_of_queries():
    costs = costs_in_the_two_shot_phase(4)
    # Pinned, not budgets: a query more is a change to measure (benchmarks/bench_requests.py), a query less too.
    # - trial page: the trial with its participant, study, condition and item (one hand-written statement that is
    #   also the owner check), then the participant's trials for the progress and the next photo; the first view
    #   records when it was shown. Classes, examples and the answers' HTML come from the per-process cache of the
    #   study's frozen data (studyapp/selectors/study_cache.py, studyapp/fragments.py).
    # - images: one statement each (who asks, and which part they are in now: read fresh every time). An
    #   example's place (its study and part) is cached per process once its study is open: its first fetch in a
    #   process reads it (two queries).
    # - answer: the trial (owner check) with, in the same statement, the trial that follows it in its part, then
    #   in one transaction the conditional update that claims it and the response (the test's outer transaction
    #   adds a savepoint and its release). The redirect goes to that following trial (no query) unless the part
    #   ended, which costs the next part's allocation once per part.
    # - /next (read-only): the study, the participant, their current part's first open trial.
    pinned = {"trial (reload)": 2, "trial (first view)": 3, "trial image": 1, "example image (first)": 3,
              "example image (again)": 1, "answer": 5, "next": 3}
    assert costs == pinned
