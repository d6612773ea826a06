import hashlib
import io
import shutil
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from PIL import Image

from studyapp.models import ClassLabel, Dataset, Item
from studyapp.services.datasets import DatasetImportError, dataset_import, pets_download, readable_class_name
from tests.factories import image_bytes, write_image

pytestmark = pytest.mark.django_db

SHARED_PETS = Path(__file__).resolve().parents[4] / "shared" / "data" / "oxford_pets"


def nothing_written() -> bool:
    return not Dataset.objects.exists() and not ClassLabel.objects.exists() and not Item.objects.exists()


def media_files(settings) -> list[Path]:
    root = Path(settings.MEDIA_ROOT)
    return sorted(root.rglob("*.jpg")) if root.exists() else []


@pytest.fixture
def folder(tmp_path):
    for c, color in (("cats", (200, 0, 0)), ("dogs", (0, 0, 200))):
        for i in range(4):
            write_image(tmp_path / "src" / c / f"{c}_{i}.jpg", color=color, seed=hash((c, i)) % 1000)
    return tmp_path / "src"


def write_csv(path: Path, text: str, encoding="utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


def test_a_folder_per_class_imports_with_a_deterministic_split(folder):
    report = dataset_import(name="pets", path=folder, fmt="folder", test_fraction=0.5)
    assert report.imported == 8
    assert list(report.dataset.classes.values_list("name", flat=True)) == ["Cats", "Dogs"]
    assert sorted(report.dataset.items.values_list("split", flat=True)) == ["test"] * 4 + ["train"] * 4


def test_an_unsplit_source_puts_the_last_fifth_of_each_class_in_sha1_order_in_test(tmp_path):
    # The shared EuroSAT copy's 80/20 rule: a folder import of it puts in test exactly the images the house
    # model never trains on.
    names = {c: [f"{c}/{c}_{i}.jpg" for i in range(10)] for c in ("AnnualCrop", "Forest")}
    for seed, name in enumerate(n for members in names.values() for n in members):
        write_image(tmp_path / "src" / name, seed=seed)
    dataset = dataset_import(name="unsplit", path=tmp_path / "src", fmt="folder").dataset
    for members in names.values():
        by_sha1 = sorted(members, key=lambda n: hashlib.sha1(n.encode()).hexdigest())
        test = set(dataset.items.filter(split="test").values_list("original_filename", flat=True))
        assert test & set(members) == set(by_sha1[-2:])


def test_every_import_records_each_source_files_sha256_before_re_encoding(folder, tmp_path):
    dataset = dataset_import(name="from folder", path=folder, fmt="folder").dataset
    for item in dataset.items.all():
        assert item.source_sha256 == hashlib.sha256((folder / item.original_filename).read_bytes()).hexdigest()
        assert item.source_sha256 != item.content_hash  # the stored image is re-encoded
    csv_path = write_csv(folder / "m.csv", "filename,label_name\ncats/cats_0.jpg,cat\ndogs/dogs_1.jpg,dog\n")
    from_csv = dataset_import(name="from csv", path=csv_path, fmt="csv", images_root=folder).dataset
    assert sorted(from_csv.items.values_list("source_sha256", flat=True)) == sorted(
        hashlib.sha256((folder / n).read_bytes()).hexdigest() for n in ("cats/cats_0.jpg", "dogs/dogs_1.jpg"))


EUROSAT_FOLDERS = ["AnnualCrop", "Forest", "HerbaceousVegetation", "Highway", "Industrial", "Pasture",
                   "PermanentCrop", "Residential", "River", "SeaLake"]


def test_a_benchmarks_classes_get_clips_prompt_names_and_other_classes_their_own_names(tmp_path, folder):
    for seed, name in enumerate(EUROSAT_FOLDERS):
        for i in range(2):
            write_image(tmp_path / "eurosat" / name / f"{name}_{i}.jpg", seed=100 + 2 * seed + i)
    dataset = dataset_import(name="EuroSAT", path=tmp_path / "eurosat", fmt="folder").dataset
    prompts = dict(dataset.classes.values_list("name", "prompt_name"))
    assert prompts["SeaLake"] == "lake or sea" and prompts["HerbaceousVegetation"] == "brushland or shrubland"
    assert prompts["Residential"] == "residential buildings or homes or apartments"
    other = dataset_import(name="other", path=folder, fmt="folder").dataset
    assert list(other.classes.values_list("prompt_name", flat=True)) == ["cats", "dogs"]


def test_stored_images_are_named_by_content_hash_and_carry_no_exif(tmp_path, settings):
    exif = Image.Exif()
    exif[0x010E] = "Abyssinian_12 secret label"  # ImageDescription
    write_image(tmp_path / "src" / "a" / "Abyssinian_12.jpg", exif=exif.tobytes(), seed=1)
    write_image(tmp_path / "src" / "b" / "b.jpg", seed=2, color=(0, 200, 0))
    dataset_import(name="d", path=tmp_path / "src", fmt="folder", test_fraction=0)
    item = Item.objects.get(original_filename="a/Abyssinian_12.jpg")
    stored = Path(settings.MEDIA_ROOT) / item.image
    assert stored.name == f"{item.content_hash}.jpg" and "Abyssinian" not in item.image
    raw = stored.read_bytes()
    assert b"secret label" not in raw
    assert not Image.open(io.BytesIO(raw)).getexif()


def test_a_csv_with_dot_dot_paths_is_refused_and_nothing_is_written(tmp_path, settings):
    write_image(tmp_path / "outside.jpg", seed=3)
    (tmp_path / "ds").mkdir()
    write_image(tmp_path / "ds" / "ok.jpg", seed=4)
    csv_path = write_csv(tmp_path / "ds" / "m.csv", "filename,label_name,split\nok.jpg,a,test\n../outside.jpg,a,train\n")
    with pytest.raises(DatasetImportError, match=r"'../outside.jpg' is an absolute path or leaves the dataset root"):
        dataset_import(name="x", path=csv_path, fmt="csv")
    assert nothing_written() and media_files(settings) == []


def test_a_csv_with_an_absolute_path_is_refused(tmp_path):
    write_image(tmp_path / "a.jpg", seed=5)
    csv_path = write_csv(tmp_path / "m.csv", f"filename,label_name\n{tmp_path / 'a.jpg'},a\n")
    with pytest.raises(DatasetImportError, match="absolute path"):
        dataset_import(name="x", path=csv_path, fmt="csv")
    assert nothing_written()


def test_a_symlink_out_of_the_root_is_refused(tmp_path):
    write_image(tmp_path / "secret.jpg", seed=6)
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "link.jpg").symlink_to(tmp_path / "secret.jpg")
    csv_path = write_csv(tmp_path / "ds" / "m.csv", "filename,label_name\nlink.jpg,a\n")
    with pytest.raises(DatasetImportError, match="leaves the dataset root"):
        dataset_import(name="x", path=csv_path, fmt="csv")
    assert nothing_written()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty file"),
        (b"this is not an image at all", "not an image file"),
        (image_bytes(seed=9)[:300], "corrupt or truncated"),
        (image_bytes(seed=9, size=(10, 10)), "image too small"),
    ],
    ids=["empty", "not-an-image", "truncated", "too-small"],
)
def test_bad_image_files_are_reported_and_nothing_is_written(folder, settings, content, message):
    (folder / "cats" / "bad.jpg").write_bytes(content)
    with pytest.raises(DatasetImportError, match=message) as exc:
        dataset_import(name="x", path=folder, fmt="folder")
    assert "cats/bad.jpg" in str(exc.value)
    assert nothing_written() and media_files(settings) == []


def test_skip_bad_imports_the_rest_and_lists_what_was_skipped(folder):
    (folder / "cats" / "bad.jpg").write_bytes(b"garbage")
    report = dataset_import(name="x", path=folder, fmt="folder", skip_bad=True)
    assert report.imported == 8
    assert report.skipped == ["cats/bad.jpg: not an image file (unrecognised format)"]


def test_duplicate_content_is_reported(folder):
    shutil.copy(folder / "cats" / "cats_0.jpg", folder / "dogs" / "copy.jpg")
    with pytest.raises(DatasetImportError, match=r"dogs/copy.jpg: duplicate content of cats/cats_0.jpg"):
        dataset_import(name="x", path=folder, fmt="folder")
    assert nothing_written()


def test_an_empty_class_folder_is_reported(folder):
    (folder / "birds").mkdir()
    with pytest.raises(DatasetImportError, match="birds/: empty class folder"):
        dataset_import(name="x", path=folder, fmt="folder")
    assert nothing_written()


def test_unknown_labels_against_a_classes_file_are_reported(tmp_path):
    write_image(tmp_path / "a.jpg", seed=10)
    write_image(tmp_path / "b.jpg", seed=11)
    csv_path = write_csv(tmp_path / "m.csv", "filename,label_name,split\na.jpg,cat,test\nb.jpg,zebra,train\n")
    classes = write_csv(tmp_path / "classes.txt", "cat,a cat\n")
    with pytest.raises(DatasetImportError, match="b.jpg: unknown label 'zebra'"):
        dataset_import(name="x", path=csv_path, fmt="csv", classes_file=classes)
    assert nothing_written()


def test_a_class_named_idk_is_refused(tmp_path):
    write_image(tmp_path / "a.jpg", seed=12)
    csv_path = write_csv(tmp_path / "m.csv", "filename,label_name\na.jpg,IDK\n")
    with pytest.raises(DatasetImportError, match="reserved for \"I don't know\""):
        dataset_import(name="x", path=csv_path, fmt="csv")
    assert nothing_written()


def test_a_csv_in_the_wrong_encoding_is_a_clear_error(tmp_path):
    csv_path = write_csv(tmp_path / "m.csv", "filename,label_name\nä.jpg,Bär\n", encoding="latin-1")
    with pytest.raises(DatasetImportError, match="not UTF-8 text"):
        dataset_import(name="x", path=csv_path, fmt="csv")
    assert nothing_written()


def test_a_csv_with_wrong_columns_names_what_is_missing(tmp_path):
    csv_path = write_csv(tmp_path / "m.csv", "file,class\na.jpg,cat\n")
    with pytest.raises(DatasetImportError, match="missing column.*filename, label_name"):
        dataset_import(name="x", path=csv_path, fmt="csv")
    assert nothing_written()


def test_a_decompression_bomb_is_refused(tmp_path, settings):
    settings.STUDY_IMAGE_MAX_PIXELS = 100_000
    write_image(tmp_path / "a" / "ok.jpg", seed=13)
    bomb = io.BytesIO()
    Image.new("L", (2000, 2000)).save(bomb, format="PNG")
    (tmp_path / "a" / "bomb.png").write_bytes(bomb.getvalue())
    with pytest.raises(DatasetImportError, match="image too large"):
        dataset_import(name="x", path=tmp_path, fmt="folder", test_fraction=0)
    assert nothing_written()


def test_a_csv_import_keeps_the_manifest_class_order(tmp_path):
    for name in ("x.jpg", "y.jpg"):
        write_image(tmp_path / name, seed=hash(name) % 100)
    csv_path = write_csv(tmp_path / "m.csv", "filename,label,label_name,split\nx.jpg,1,Zebra,test\ny.jpg,0,Yak,train\n")
    dataset = dataset_import(name="x", path=csv_path, fmt="csv").dataset
    assert list(dataset.classes.values_list("index", "name")) == [(0, "Yak"), (1, "Zebra")]


def test_import_dataset_command_reports_errors_without_a_traceback(folder):
    (folder / "dogs" / "bad.jpg").write_bytes(b"")
    with pytest.raises(CommandError, match="dogs/bad.jpg: empty file"):
        call_command("import_dataset", str(folder), "--format", "folder", "--name", "x")
    assert nothing_written()
    out = io.StringIO()
    call_command("import_dataset", str(folder), "--format", "folder", "--name", "x", "--skip-bad", stdout=out)
    assert "Imported 8 images in 2 classes" in out.getvalue() and "dogs/bad.jpg: empty file" in out.getvalue()


def test_a_second_import_under_the_same_name_is_refused(folder):
    dataset_import(name="x", path=folder, fmt="folder")
    with pytest.raises(DatasetImportError, match="already exists"):
        dataset_import(name="x", path=folder, fmt="folder")
    assert Dataset.objects.count() == 1


def test_pet_breed_names_are_made_readable():
    assert readable_class_name("american_pit_bull_terrier") == "American Pit Bull Terrier"
    assert readable_class_name("Bengal") == "Bengal"


def test_the_pets_downloader_fails_fast_and_clearly_when_the_site_is_unreachable(tmp_path, monkeypatch):
    import studyapp.services.datasets as datasets

    # The real client against a local port nothing listens on: the same failure path as being
    # offline, wherever the suite runs.
    monkeypatch.setattr(datasets, "PETS_URLS", ("http://127.0.0.1:9/images.tar.gz",))
    with pytest.raises(DatasetImportError, match="Offline\\? Copy the official images/ and annotations/"):
        pets_download(dest=tmp_path, timeout=2)


def write_pets_layout(root: Path) -> None:
    (root / "annotations").mkdir(parents=True)
    header = "#Image CLASS-ID SPECIES BREED ID\n"
    listed = ["Abyssinian_1 1 1 1", "Abyssinian_2 1 1 1", "american_bulldog_1 2 2 1", "american_bulldog_2 2 2 1",
              "american_bulldog_3 2 2 1"]
    (root / "annotations" / "list.txt").write_text(header + "\n".join(listed) + "\n")
    (root / "annotations" / "trainval.txt").write_text("Abyssinian_1 1 1 1\namerican_bulldog_1 2 2 1\n")
    (root / "annotations" / "test.txt").write_text(
        "Abyssinian_2 1 1 1\namerican_bulldog_2 2 2 1\namerican_bulldog_3 2 2 1\n"
    )
    for i, stem in enumerate(["Abyssinian_1", "Abyssinian_2", "american_bulldog_1", "american_bulldog_2"]):
        write_image(root / "images" / f"{stem}.jpg", seed=100 + i)


def test_the_oxford_pets_layout_imports_with_official_order_and_counts_absent_files(tmp_path):
    write_pets_layout(tmp_path / "pets")
    report = dataset_import(name="pets", path=tmp_path / "pets", fmt="oxford-pets")
    assert report.imported == 4
    assert list(report.dataset.classes.values_list("name", flat=True)) == ["Abyssinian", "American Bulldog"]
    assert report.notes == ["1 image(s) named in the official lists are absent from images/ (a partial copy)"]
    assert set(report.dataset.items.values_list("split", flat=True)) == {"trainval", "test"}


@pytest.mark.skipif(not SHARED_PETS.is_dir(), reason="the shared Oxford-IIIT Pet copy is not beside this checkout")
def test_the_shared_oxford_pets_copy_imports_with_all_37_breeds():
    report = dataset_import(name="pets", path=SHARED_PETS, fmt="oxford-pets")
    dataset = report.dataset
    assert dataset.classes.count() == 37
    assert dataset.classes.get(index=0).name == "Abyssinian"
    assert dataset.classes.get(index=36).name == "Yorkshire Terrier"
    assert report.imported == 938  # 940 minus the 2 images the official lists leave out
    assert "absent from images/" in report.notes[0]
