"""Imported files are decoded and re-encoded, never executed, unpacked or served with an attacker-chosen type.

What a researcher imports may come from anywhere (a scraped dataset, a colleague's zip): a file that
is not a raster image is refused at import, and what is accepted is re-encoded to a fresh JPEG, so no
byte of the source (scripts, markup, metadata) reaches a participant, who gets it as image/jpeg under nosniff.
"""

import io
from pathlib import Path

import pytest
from django.test import Client
from PIL import Image, PngImagePlugin

from studyapp.models import Dataset, Item, Study
from studyapp.services.datasets import DatasetImportError, dataset_import
from studyapp.services.studies import study_create, study_open
from tests.factories import image_bytes, write_image
from tests.studyapp.helpers import start

pytestmark = pytest.mark.django_db

SCRIPT = b"<script>alert(document.cookie)</script>"
SVG = (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="64" height="64" onload="alert(1)">'
       b"<script>alert(1)</script><rect width='64' height='64'/></svg>")
HTML = b"<!doctype html><html><body>" + SCRIPT + b"</body></html>"


@pytest.fixture
def folder(tmp_path) -> Path:
    for name, color in (("cats", (200, 0, 0)), ("dogs", (0, 0, 200))):
        for i in range(2):
            write_image(tmp_path / "src" / name / f"{name}_{i}.jpg", color=color, seed=10 * i + len(name))
    return tmp_path / "src"


def stored_files(settings) -> list[Path]:
    root = Path(settings.MEDIA_ROOT)
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


@pytest.mark.parametrize(("filename", "content"), [
    ("vector.svg", SVG),
    ("vector.jpg", SVG),  # the suffix lies; the content decides
    ("page.html", HTML),
    ("page.jpg", HTML),
    ("script.js", b"alert(1)"),
], ids=["svg", "svg-named-jpg", "html", "html-named-jpg", "javascript"])
def test_markup_and_scripts_are_refused_at_import_and_nothing_is_stored(folder, settings, filename, content):
    (folder / "cats" / filename).write_bytes(content)
    with pytest.raises(DatasetImportError, match=rf"cats/{filename}: not an image file"):
        dataset_import(name="x", path=folder, fmt="folder")
    assert not Dataset.objects.exists() and not Item.objects.exists()
    assert stored_files(settings) == []


def polyglot_jpeg() -> bytes:
    # A valid JPEG with markup after the end-of-image marker and in a comment segment: browsers that
    # sniff could take it for HTML; decoders show the picture.
    image = Image.open(io.BytesIO(image_bytes(seed=3, size=(64, 48))))
    out = io.BytesIO()
    image.save(out, format="JPEG", comment=SCRIPT)
    return out.getvalue() + HTML


def png_with_text_chunks() -> bytes:
    info = PngImagePlugin.PngInfo()
    info.add_text("Description", SCRIPT.decode())
    info.add_text("Title", "cats_0 secret label")
    out = io.BytesIO()
    Image.open(io.BytesIO(image_bytes(seed=4, size=(64, 48)))).save(out, format="PNG", pnginfo=info)
    return out.getvalue()


def gif_with_comment() -> bytes:
    out = io.BytesIO()
    Image.open(io.BytesIO(image_bytes(seed=5, size=(64, 48)))).convert("P").save(out, format="GIF", comment=SCRIPT)
    return out.getvalue()


@pytest.mark.parametrize("make", [polyglot_jpeg, png_with_text_chunks, gif_with_comment],
                         ids=["jpeg-html-polyglot", "png-text-chunks", "gif-comment"])
def test_a_real_image_carrying_markup_is_re_encoded_so_no_source_byte_survives(folder, settings, make):
    raw = make()
    assert SCRIPT in raw
    (folder / "cats" / "carrier.img").write_bytes(raw)
    dataset_import(name="x", path=folder, fmt="folder", test_fraction=0)
    item = Item.objects.get(original_filename="cats/carrier.img")
    stored = (Path(settings.MEDIA_ROOT) / item.image).read_bytes()
    assert stored[:3] == b"\xff\xd8\xff" and stored.rstrip(b"\x00")[-2:] == b"\xff\xd9"  # JPEG from start to end
    assert b"<script" not in stored.lower() and b"secret label" not in stored
    decoded = Image.open(io.BytesIO(stored))
    assert decoded.format == "JPEG" and not set(decoded.info) & {"comment", "exif", "icc_profile", "xmp"}


def test_the_re_encoded_image_reaches_the_participant_as_jpeg_under_nosniff(folder, settings):
    (folder / "cats" / "carrier.jpg").write_bytes(polyglot_jpeg())
    for other in (folder / "cats").glob("cats_*.jpg"):
        other.unlink()  # the carrier is the only cat: it is a test item of the study for sure
    dataset = dataset_import(name="x", path=folder, fmt="folder", test_fraction=1).dataset
    study = study_open(study=study_create(dataset=dataset, title="t", shots=(0,), shot_split=None,
                                          items_per_participant=3, design=Study.Design.BETWEEN))
    client = Client()
    page = start(client, study)
    carrier = Item.objects.get(original_filename="cats/carrier.jpg")
    served = []
    while "/t/" in page.request["PATH_INFO"]:
        image = client.get(page.request["PATH_INFO"] + "/image")
        served.append(image)
        page = client.post(page.request["PATH_INFO"], {"choice": "idk"}, follow=True)
    stored = (Path(settings.MEDIA_ROOT) / carrier.image).read_bytes()
    assert [r.content for r in served].count(stored) == 1  # the carrier was shown, as its re-encoded self
    for response in served:
        assert response["Content-Type"] == "image/jpeg" and response["X-Content-Type-Options"] == "nosniff"
        assert b"<script" not in response.content.lower()
