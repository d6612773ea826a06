"""Labels never reach a participant: not in any body, header, cookie or URL of any participant-facing response.

Class names are shown by design in exactly two places: the answers (buttons, or in one-/two-shot parts
cards holding each class's example photos), identical on every trial of a condition, and the feedback of
a practice image (a shot-split image, never a test item). Anywhere else, a class name, an original file
name (it can name the class), a content hash or an item's internal code would be a leak.
"""

import io
import re

import pytest
from PIL import Image

from studyapp.models import Assignment, Item
from tests.security.crawl import BREEDS, crawl_participant_pages

pytestmark = pytest.mark.django_db

_BY_DESIGN = [
    re.compile(r"<!-- answers -->.*?<!-- /answers -->", re.S),  # the answers, with their example photos
    re.compile(r"<!-- practice feedback -->.*?<!-- /practice feedback -->", re.S),  # a practice image's label
]


@pytest.fixture
def crawl():
    return crawl_participant_pages()


def secrets_of(items) -> set[str]:
    out = set()
    for item in items:
        stem = item.original_filename.rsplit("/", 1)[-1].rsplit(".", 1)[0]
        out |= {item.original_filename.lower(), stem.lower(), item.content_hash, item.content_hash[:16], str(item.code),
                item.image.lower()}
    return out


def label_spellings() -> set[str]:
    return {v for name in BREEDS for v in (name.lower(), name.lower().replace(" ", "_"))}


def test_the_crawl_reaches_every_kind_of_participant_page(crawl):
    # Guards the other tests: they are only as good as what was crawled.
    statuses = {hop.status for hop in crawl.hops}
    assert {200, 302, 400, 403, 404, 405, 410, 429, 503} <= statuses
    paths = " ".join(hop.url for hop in crawl.hops)
    for page in ("/join", "/instructions", "/next", "/done", "/full", "/declined", "/image", "/examples/",
                 "/practice/", "/leave", "/left"):
        assert page in paths, page
    answered_shots = set(Assignment.objects.filter(response__isnull=False).values_list("condition__shots", flat=True))
    assert answered_shots == {0, 1, 2}
    html = " ".join(hop.text for hop in crawl.html())
    assert "went to someone else" in html and "Please wait a moment" in html and "Back in a moment" in html
    for identity_page in ("Please use your personal study link", "Continue where you left off", "That code is not right",
                          "You have already taken part", "Ready to go on", "Your resume code",
                          "Practice answers are not recorded", "Stop and leave the study?", "You have left the study",
                          "cannot be done on a phone", "Please return the study on the site"):
        assert identity_page in html, identity_page


def test_no_url_header_or_cookie_names_a_class_a_file_or_a_content_hash(crawl):
    secrets = secrets_of(Item.objects.all()) | label_spellings()
    for hop in crawl.hops:
        outside_body = " ".join([hop.url, *hop.headers.values(), *hop.set_cookies]).lower()
        found = [s for s in secrets if s in outside_body]
        assert not found, f"{hop}: {found}"


def test_class_names_appear_only_in_the_answers_and_practice_feedback(crawl):
    spellings = label_spellings()
    pages_with_names = 0
    for hop in crawl.html():
        pages_with_names += all(s in hop.text.lower() for s in spellings)
        rest = hop.text
        for by_design in _BY_DESIGN:
            rest = by_design.sub("", rest)
        found = [s for s in spellings if s in rest.lower()]
        assert not found, f"{hop}: {found}"
    assert pages_with_names >= 10  # the trial pages do name every class, inside the two blocks


def test_no_body_names_an_original_file_a_content_hash_or_an_item_code(crawl):
    secrets = secrets_of(Item.objects.all())
    for hop in crawl.hops:
        body = hop.body.decode("latin-1").lower()  # images too: metadata would be plain bytes
        found = [s for s in secrets if s in body]
        assert not found, f"{hop}: {found}"


def test_every_image_a_participant_gets_is_a_plain_jpeg_without_metadata(crawl):
    images = crawl.images()
    assert len(images) > 10
    for hop in images:
        assert hop.content_type == "image/jpeg", hop
        decoded = Image.open(io.BytesIO(hop.body))
        assert decoded.format == "JPEG"
        assert not decoded.getexif(), hop
        assert not set(decoded.info) & {"exif", "icc_profile", "xmp", "comment", "photoshop"}, (hop, decoded.info)
        assert not any(name.encode() in hop.body.lower() for name in label_spellings())


def test_a_completion_code_is_shown_only_on_its_own_participants_done_page(crawl):
    assert len(crawl.completion_codes) >= 4
    for participant_code, completion_code in crawl.completion_codes.items():
        shown_on = [hop for hop in crawl.hops if completion_code in hop.text or completion_code in hop.headers.get(
            "Location", "")]
        assert shown_on, participant_code
        assert all(hop.url.endswith("/done") and hop.status == 200 for hop in shown_on), [str(h) for h in shown_on]
