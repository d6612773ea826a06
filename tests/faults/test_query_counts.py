"""The pages a participant hits hundreds of times cost a fixed, small number of queries, whatever the study's size.

Load grows with participants, not with classes or shot examples: an N+1 on the trial page would turn
a 37-class study into 37 extra queries per trial under load (benchmarks/load_participants.py measures
the effect; docs/load.md has the numbers). Counted with CaptureQueriesContext, not timed.
"""


import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from studyapp.pages import EXAMPLE_IMAGE
from tests.factories import make_dataset, make_study
from tests.studyapp.test_participants_flow import start, trial_code

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


def test_the_hottest_requests_stay_within_their_query_budget():
    costs = costs_in_the_two_shot_phase(4)
    # Images: where each example belongs (its study and part) is cached per process once its study is open,
    # so an example costs one query (who is asking, and which part they are in now) after its first fetch
    # (three). Who is asking is no longer cached: it changes as a participant moves from part to part (an
    # example is served only in the part that shows it), and the old cache was never invalidated.
    budget = {"trial (reload)": 7, "trial (first view)": 9, "trial image": 1, "example image (first)": 3,
              "example image (again)": 1, "answer": 14, "next": 4}
    over = {page: (costs[page], limit) for page, limit in budget.items() if costs[page] > limit}
    assert not over, over
