"""Test data: small generated images, datasets and studies."""

import hashlib
import io
import random

import factory
from PIL import Image

from studyapp.models import ClassLabel, Dataset, Item, Study
from studyapp.services.images import image_normalise, image_store
from studyapp.services.studies import study_create

# The 37 Oxford-IIIT Pet breeds, as the demo names them.
PET_BREEDS = [
    "Abyssinian", "American Bulldog", "American Pit Bull Terrier", "Basset Hound", "Beagle", "Bengal", "Birman",
    "Bombay", "Boxer", "British Shorthair", "Chihuahua", "Egyptian Mau", "English Cocker Spaniel", "English Setter",
    "German Shorthaired", "Great Pyrenees", "Havanese", "Japanese Chin", "Keeshond", "Leonberger", "Maine Coon",
    "Miniature Pinscher", "Newfoundland", "Persian", "Pomeranian", "Pug", "Ragdoll", "Russian Blue", "Saint Bernard",
    "Samoyed", "Scottish Terrier", "Shiba Inu", "Siamese", "Sphynx", "Staffordshire Bull Terrier", "Wheaten Terrier",
    "Yorkshire Terrier",
]

PALETTE = [(220, 40, 40), (40, 160, 60), (40, 80, 220), (230, 200, 30), (150, 60, 200), (30, 200, 200)]


def image_bytes(*, color=(200, 30, 30), size=(48, 40), fmt="JPEG", seed: int = 0, exif: bytes | None = None) -> bytes:
    """A small image with a little seeded noise, so no two generated images share content."""
    rng = random.Random(seed)
    image = Image.new("RGB", size, color)
    for _ in range(20):
        image.putpixel((rng.randrange(size[0]), rng.randrange(size[1])), (rng.randrange(256),) * 3)
    out = io.BytesIO()
    kwargs = {"exif": exif} if exif else {}
    image.save(out, format=fmt, **kwargs)
    return out.getvalue()


def write_image(path, **kwargs) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(image_bytes(**kwargs))


class DatasetFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Dataset

    name = factory.Sequence(lambda n: f"dataset-{n}")
    source_format = Dataset.Format.FOLDER


def make_dataset(*, n_classes: int = 3, train_per_class: int = 2, test_per_class: int = 4, name: str | None = None,
                 class_names: list[str] | None = None) -> Dataset:
    """A dataset of generated images: each class its own colour, plus noise."""
    dataset = DatasetFactory(**({"name": name} if name else {}))
    names = class_names or [f"Class {chr(65 + i)}" for i in range(n_classes)]
    seed = 0
    for index, class_name in enumerate(names):
        label = ClassLabel.objects.create(dataset=dataset, index=index, name=class_name, prompt_name=class_name.lower())
        for split, count in (("train", train_per_class), ("test", test_per_class)):
            for _ in range(count):
                seed += 1
                raw = image_bytes(color=PALETTE[index % len(PALETTE)], seed=seed + 1000 * dataset.pk)
                normalised = image_normalise(raw=raw)
                image_store(image=normalised)
                Item.objects.create(
                    dataset=dataset, content_hash=normalised.content_hash, image=normalised.relative_path, split=split,
                    label=label, width=normalised.width, height=normalised.height,
                    original_filename=f"{class_name.replace(' ', '_')}_{seed}.jpg",
                    source_sha256=hashlib.sha256(raw).hexdigest(),
                )
    return dataset


def make_study(*, dataset: Dataset | None = None, open_it: bool = True, shots=(0, 1, 2), **fields) -> Study:
    from studyapp.services.studies import study_open

    dataset = dataset or make_dataset()
    study = study_create(dataset=dataset, title=fields.pop("title", "Test study"), shots=shots, **fields)
    return study_open(study=study) if open_it else study
