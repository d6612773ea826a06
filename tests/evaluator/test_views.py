"""evaluator.views: a run's progress page and JSON, for staff only."""

import json

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from evaluator.services.chunks import model_run_score_chunk
from tests.evaluator.helpers import create_run
from tests.factories import make_study

pytestmark = pytest.mark.django_db


def test_run_progress_json_is_for_staff_only(client, tiny_checkpoint):
    run = create_run(make_study(), tiny_checkpoint)
    url = reverse("evaluator:run_progress_json", args=[run.code])
    assert client.get(url).status_code == 403
    user = get_user_model().objects.create_user("participant-ish", password="pw-for-tests-only")
    client.force_login(user)
    assert client.get(url).status_code == 403


def test_run_progress_json_and_page_show_the_progress_to_staff(staff_client, tiny_checkpoint):
    run = create_run(make_study(), tiny_checkpoint, chunk_size=4)
    model_run_score_chunk(chunk_id=run.chunks.order_by("index").first().pk)

    data = json.loads(staff_client.get(reverse("evaluator:run_progress_json", args=[run.code])).content)

    assert (data["status"], data["items_done"], data["items_total"]) == ("running", 4 * 5, 12 * 5)
    assert {"rate_items_per_s", "eta_s", "items_failed", "percent"} <= set(data)
    page = staff_client.get(reverse("evaluator:run_progress", args=[run.code]))
    assert page.status_code == 200 and run.name in page.content.decode()

