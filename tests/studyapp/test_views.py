"""studyapp.views: what the participant pages serve, and nothing that could reveal a trial's label."""

import io
import re

import pytest
from django.test import Client
from PIL import Image

from studyapp.models import Assignment, Response, Study
from tests.factories import make_dataset, make_study
from tests.studyapp.helpers import answer, path, small_study, start, trial_code

pytestmark = pytest.mark.django_db


def test_another_participants_trial_and_image_are_not_found():
    study = small_study()
    owner, other = Client(), Client()
    page = start(owner, study)
    start(other, study)
    url = path(page)
    assert other.get(url).status_code == 404
    assert other.get(url + "/image").status_code == 404
    assert other.post(url, {"choice": "0"}).status_code == 404
    assert Client().get(url + "/image").status_code == 404  # no cookie at all
    assert not Response.objects.exists()


def test_trial_images_are_jpeg_without_exif_and_name_no_file():
    study = small_study()
    client = Client()
    page = start(client, study)
    image = client.get(path(page) + "/image")
    assert image.status_code == 200 and image["Content-Type"] == "image/jpeg"
    assert "Content-Disposition" not in image
    # The participant's own browser may keep it (the page prefetches the next photo); no shared cache may.
    assert image["Cache-Control"] == "private, max-age=3600"
    decoded = Image.open(io.BytesIO(image.content))
    assert decoded.format == "JPEG" and not decoded.getexif() and "exif" not in decoded.info


def test_trial_pages_of_different_classes_differ_only_in_opaque_codes_and_progress():
    dataset = make_dataset(n_classes=3, train_per_class=2, test_per_class=1)
    study = make_study(dataset=dataset, shots=(1,), items_per_participant=3)
    client = Client()
    page = start(client, study)
    pages = {}
    while trial_code(page):
        assignment = Assignment.objects.get(code=trial_code(page))
        html = page.content.decode()
        html = html.replace(str(assignment.code), "CODE")
        html = re.sub(r'name="csrfmiddlewaretoken" value="[^"]+"', "CSRF", html)
        html = re.sub(r' data-next-image="[^"]+"', '', html)  # the next trial's opaque code, if there is one
        # Progress differs by design, and the first trial of a part carries a notice.
        html = re.sub(r"Image \d of \d|\d+% done|value=\"\d+\" aria-label|>\d+%<|<p class=\"notice\">.*?</p>", "", html,
                      flags=re.S)
        html = re.sub(r"\s+", " ", html)
        pages[assignment.item.label.name] = html
        page = answer(client, page)
    assert len(pages) == 3
    assert len(set(pages.values())) == 1


def test_nothing_served_names_an_original_filename_or_a_stored_path():
    study = small_study(design=Study.Design.WITHIN)
    client = Client()
    page = start(client, study)
    items = list(study.dataset.items.all())
    while True:
        html = page.content.decode()
        for item in items:
            assert item.original_filename not in html
            assert item.content_hash not in html and str(item.code) not in html
        if not trial_code(page):
            break
        page = answer(client, page)


def test_the_home_page_still_renders():
    assert Client().get("/").status_code == 200
