"""Malformed data at the import entry point: a clear error naming the problem, and the stored data unchanged.

tests/studyapp/services/test_datasets.py already covers 0-byte files, non-images, a 300-byte truncation, tiny
images, a PNG just over the pixel limit, latin-1 and wrong-column CSVs, path traversal and
duplicates. This corpus covers the rest. Every case runs next to an existing dataset and compares
row counts and media files before and after: a refused import must leave no trace.
"""

import io
import struct
import tarfile
import zipfile
import zlib
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.test import Client
from PIL import Image

from studyapp.models import ClassLabel, Dataset, Item
from studyapp.services.datasets import DatasetImportError, dataset_import
from tests.factories import image_bytes, make_dataset, write_image

pytestmark = pytest.mark.django_db


@pytest.fixture
def existing(settings):
    """A dataset already in place, and a snapshot function: (row counts, media files)."""
    make_dataset(n_classes=2, train_per_class=1, test_per_class=1, name="already here")

    def snapshot():
        media = Path(settings.MEDIA_ROOT)
        files = sorted(str(p.relative_to(media)) for p in media.rglob("*") if p.is_file())
        return (Dataset.objects.count(), ClassLabel.objects.count(), Item.objects.count()), files

    return snapshot


@pytest.fixture
def folder(tmp_path) -> Path:
    for name, color in (("cats", (200, 0, 0)), ("dogs", (0, 0, 200))):
        for i in range(2):
            write_image(tmp_path / "src" / name / f"{name}_{i}.jpg", color=color, seed=20 * i + len(name))
    return tmp_path / "src"


def refused(existing, match: str, **kwargs) -> DatasetImportError:
    before = existing()
    with pytest.raises(DatasetImportError, match=match) as caught:
        dataset_import(name="incoming", **kwargs)
    assert existing() == before
    return caught.value


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims width × height pixels in a few dozen bytes (the bomb is in the header)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def zip_bomb() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("inner.jpg", b"\x00" * 20_000_000)  # 20 MB of zeros in ~20 KB
    return out.getvalue()


def tar_gz() -> bytes:
    out = io.BytesIO()
    payload = image_bytes(seed=99)
    with tarfile.open(fileobj=out, mode="w:gz") as tf:
        info = tarfile.TarInfo("inner.jpg")
        info.size = len(payload)
        tf.addfile(info, io.BytesIO(payload))
    return out.getvalue()


def png_with_broken_crc() -> bytes:
    raw = bytearray(image_bytes(seed=7, fmt="PNG", size=(48, 40)))
    raw[29:33] = b"\x00\x00\x00\x00"  # IHDR's CRC
    return bytes(raw)


@pytest.mark.parametrize(("filename", "content", "message"), [
    ("cut.jpg", lambda: image_bytes(seed=8, size=(400, 300))[:-2000], "corrupt or truncated"),
    ("crc.png", png_with_broken_crc, "not an image file"),
    ("bomb.png", lambda: png_header_only(50_000, 50_000), "image too large"),
    ("archive.zip", zip_bomb, "not an image file"),
    ("archive.jpg", zip_bomb, "not an image file"),
    ("bundle.tar.gz", tar_gz, "not an image file"),
], ids=["jpeg-cut-mid-scan", "png-broken-header-crc", "pixel-bomb-in-header", "zip-bomb", "zip-named-jpg", "tar-gz"])
def test_a_bad_file_in_a_class_folder_is_named_and_nothing_is_imported(existing, folder, filename, content, message):
    (folder / "cats" / filename).write_bytes(content())
    error = refused(existing, message, path=folder, fmt="folder")
    assert f"cats/{filename}" in str(error)
    # An archive is looked at as an image, never unpacked: nothing new appeared beside it.
    assert sorted(p.name for p in (folder / "cats").iterdir()) == sorted(["cats_0.jpg", "cats_1.jpg", filename])


def test_a_huge_but_allowed_photo_is_stored_downscaled(existing, folder, settings):
    big = Image.new("RGB", (6000, 4000), (90, 120, 30))
    big.putpixel((10, 10), (0, 0, 0))
    big.save(folder / "cats" / "huge.jpg", format="JPEG", quality=50)
    dataset_import(name="incoming", path=folder, fmt="folder")
    item = Item.objects.get(original_filename="cats/huge.jpg")
    assert (item.width, item.height) == (512, 341)
    assert Image.open(Path(settings.MEDIA_ROOT) / item.image).size == (512, 341)


def test_unusual_but_valid_image_modes_become_plain_rgb_jpegs(existing, folder, settings):
    base = Image.open(io.BytesIO(image_bytes(seed=31, size=(64, 48))))
    variants = {
        "cmyk.jpg": ("JPEG", base.convert("CMYK")),
        "gray16.png": ("PNG", base.convert("I;16")),
        "alpha.png": ("PNG", base.convert("RGBA")),
        "bilevel.bmp": ("BMP", base.convert("1")),
        "palette.gif": ("GIF", base.convert("P")),
    }
    for name, (fmt, image) in variants.items():
        image.save(folder / "dogs" / name, format=fmt)
    dataset_import(name="incoming", path=folder, fmt="folder")
    for name in variants:
        stored = Image.open(Path(settings.MEDIA_ROOT) / Item.objects.get(original_filename=f"dogs/{name}").image)
        assert (stored.format, stored.mode) == ("JPEG", "RGB"), name


def test_a_symlink_in_a_class_folder_that_leaves_the_dataset_root_is_refused(existing, folder, tmp_path):
    # The CSV importer never reads outside its root; a folder import must not either (a downloaded
    # archive can carry links to other files on the server).
    write_image(tmp_path / "private" / "elsewhere.jpg", seed=77)
    (folder / "cats" / "link.jpg").symlink_to(tmp_path / "private" / "elsewhere.jpg")
    refused(existing, r"cats/link.jpg: a link that leaves the dataset root; refused", path=folder, fmt="folder")


def write_csv(path: Path, text: str | bytes) -> Path:
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


@pytest.mark.parametrize(("manifest", "message"), [
    ("filename,label_name\n".encode("utf-16"), "not UTF-8 text"),
    (b"", r"missing column\(s\) filename, label_name"),
    (b"filename;label_name\na.jpg;cat\n", r"missing column\(s\) filename, label_name"),
    (b"filename,label_name,split\n", "no images found"),
    (b"filename,label_name\na.jpg\n", "line 2: a.jpg: empty label_name"),
    (b"filename,label_name\nmissing.jpg,cat\n", r"missing.jpg: unreadable \(No such file or directory\)"),
    (b"filename,label_name\nsub,cat\n", r"sub: unreadable \(Is a directory\)"),
    (b"filename,label_name\n" + b"a" * 200_000 + b".jpg,cat\n", "line 2: not a valid CSV row"),
    (b"filename,label_name\na\x00.jpg,cat\n", "line 2: the file name contains control characters; refused"),
    (b'filename,label_name\n"a.jpg,cat\n', "line 2: a.jpg,cat: empty label_name"),
], ids=["utf-16", "zero-bytes", "semicolons", "header-only", "ragged-row", "missing-file", "a-directory",
        "field-over-128kb", "nul-in-name", "unclosed-quote"])
def test_a_malformed_csv_manifest_is_a_clear_error_and_nothing_is_imported(existing, tmp_path, manifest, message):
    (tmp_path / "sub").mkdir()
    write_image(tmp_path / "a.jpg", seed=41)
    csv_path = write_csv(tmp_path / "m.csv", manifest)
    refused(existing, message, path=csv_path, fmt="csv")


def test_a_classes_file_in_the_wrong_encoding_is_a_clear_error(existing, tmp_path):
    write_image(tmp_path / "a.jpg", seed=42)
    csv_path = write_csv(tmp_path / "m.csv", "filename,label_name\na.jpg,Bär\n")
    classes = write_csv(tmp_path / "classes.txt", "Bär,a bear\n".encode("latin-1"))
    refused(existing, "classes.txt: not UTF-8 text", path=csv_path, fmt="csv", classes_file=classes)


@pytest.mark.parametrize("line", ["Abyssinian_1", "Abyssinian_1 one 1 1", "Abyssinian_1 \u00b2 1 1", ""],
                         ids=["no-class-id", "class-id-not-a-number", "class-id-a-superscript-digit",
                              "blank-is-fine-but-ids-wrong"])
def test_a_malformed_oxford_pets_annotation_line_is_named(existing, tmp_path, line):
    root = tmp_path / "pets"
    (root / "annotations").mkdir(parents=True)
    write_image(root / "images" / "Abyssinian_1.jpg", seed=50)
    listed = line or "Abyssinian_1 2 1 1"  # a blank line is skipped; class ids that do not start at 1 are not
    (root / "annotations" / "list.txt").write_text(f"#Image CLASS-ID SPECIES BREED ID\n{listed}\n")
    (root / "annotations" / "trainval.txt").write_text(f"{listed}\n")
    (root / "annotations" / "test.txt").write_text("")
    message = "class ids are not 1..N" if not line else r"annotations/list.txt line 2: expected `IMAGE CLASS-ID"
    refused(existing, message, path=root, fmt="oxford-pets")


def test_the_import_command_reports_a_broken_manifest_without_a_traceback(existing, tmp_path):
    csv_path = write_csv(tmp_path / "m.csv", b"filename,label_name\n" + b"x" * 200_000 + b",cat\n")
    before = existing()
    with pytest.raises(CommandError, match="not a valid CSV row"):
        call_command("import_dataset", str(csv_path), "--format", "csv", "--name", "incoming")
    assert existing() == before


def test_a_file_or_class_name_with_markup_is_kept_as_text_and_escaped_everywhere(existing, folder):
    weird = folder / "<b onmouseover=alert(1)>cats"
    (folder / "cats").rename(weird)
    (weird / "cats_0.jpg").rename(weird / "<img src=x onerror=alert(2)>.jpg")
    dataset = dataset_import(name="incoming", path=folder, fmt="folder").dataset
    assert dataset.classes.filter(name="<b Onmouseover=alert(1)>cats").exists()
    User.objects.create_superuser("boss", password="a long admin password 2")
    admin = Client()
    admin.login(username="boss", password="a long admin password 2")
    pages = [admin.get("/admin/studyapp/item/").content.decode(),
             admin.get(f"/admin/studyapp/dataset/{dataset.pk}/change/").content.decode()]
    for html in pages:
        assert "<img src=x onerror" not in html and "<b onmouseover" not in html.lower()
    assert "&lt;img src=x onerror=alert(2)&gt;" in pages[0]
