"""Prompt templates (CLIP prompt ensembling) and the known benchmarks' prompt names: the one source of both.

Templates are ``str.format`` strings with exactly one ``{}`` for the class name. When a dataset's classes are
those of a benchmark the CLIP paper evaluated (Oxford-IIIT Pets, EuroSAT, CIFAR-10), its prompt names and
templates are CLIP's own, from openai/CLIP ``data/prompts.md``: the trainer, ``clipmodel.evaluate``, the
dataset import (which stores them as each class's prompt name) and scoring all take them from here.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from open_clip import OPENAI_IMAGENET_TEMPLATES

# open_clip stores its templates as lambdas; calling one with "{}" turns it back into a format string.
IMAGENET_TEMPLATES: tuple[str, ...] = tuple(t("{}") for t in OPENAI_IMAGENET_TEMPLATES)

PETS_TEMPLATES: tuple[str, ...] = ("a photo of a {}, a type of pet.",)
EUROSAT_TEMPLATES: tuple[str, ...] = (
    "a centered satellite photo of {}.",
    "a centered satellite photo of a {}.",
    "a centered satellite photo of the {}.",
)
CIFAR10_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "a blurry photo of a {}.",
    "a black and white photo of a {}.",
    "a low contrast photo of a {}.",
    "a high contrast photo of a {}.",
    "a bad photo of a {}.",
    "a good photo of a {}.",
    "a photo of a small {}.",
    "a photo of a big {}.",
    "a photo of the {}.",
    "a blurry photo of the {}.",
    "a black and white photo of the {}.",
    "a low contrast photo of the {}.",
    "a high contrast photo of the {}.",
    "a bad photo of the {}.",
    "a good photo of the {}.",
    "a photo of the small {}.",
    "a photo of the big {}.",
)


@dataclass(frozen=True)
class Benchmark:
    """A dataset the CLIP paper evaluated: CLIP's prompt name for each class and CLIP's templates.

    ``classes`` maps each of CLIP's prompt names to the other names a dataset may give that class (folder
    names, the shared manifests' label names); names are compared without case, spaces or punctuation.
    """

    key: str
    title: str
    classes: dict[str, tuple[str, ...]]
    templates: tuple[str, ...]


BENCHMARKS: tuple[Benchmark, ...] = (
    Benchmark(
        key="oxford-pets",
        title="Oxford-IIIT Pets",
        classes={name: () for name in (
            "Abyssinian", "Bengal", "Birman", "Bombay", "British Shorthair", "Egyptian Mau", "Maine Coon", "Persian",
            "Ragdoll", "Russian Blue", "Siamese", "Sphynx", "american bulldog", "american pit bull terrier",
            "basset hound", "beagle", "boxer", "chihuahua", "english cocker spaniel", "english setter",
            "german shorthaired", "great pyrenees", "havanese", "japanese chin", "keeshond", "leonberger",
            "miniature pinscher", "newfoundland", "pomeranian", "pug", "saint bernard", "samoyed", "scottish terrier",
            "shiba inu", "staffordshire bull terrier", "wheaten terrier", "yorkshire terrier",
        )},
        templates=PETS_TEMPLATES,
    ),
    Benchmark(
        key="eurosat",
        title="EuroSAT",
        classes={
            "annual crop land": ("AnnualCrop",),
            "forest": (),
            "brushland or shrubland": ("HerbaceousVegetation",),
            "highway or road": ("Highway",),
            "industrial buildings or commercial buildings": ("Industrial", "Industrial Area"),
            "pasture land": ("Pasture",),
            "permanent crop land": ("PermanentCrop",),
            "residential buildings or homes or apartments": ("Residential", "Residential Area"),
            "river": (),
            "lake or sea": ("SeaLake",),
        },
        templates=EUROSAT_TEMPLATES,
    ),
    Benchmark(
        key="cifar10",
        title="CIFAR-10",
        classes={name: () for name in (
            "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
        )},
        templates=CIFAR10_TEMPLATES,
    ),
)

# CLIP's EuroSAT prompt names in the shared manifest's label order 0..9 (AnnualCrop ... SeaLake).
EUROSAT_CLIP_CLASSNAMES: tuple[str, ...] = tuple(BENCHMARKS[1].classes)

# Shared-data folder names (and a few spellings of them) -> benchmark; only used to pick templates by name.
_DATASET_KEYS = {"oxford_pets": "oxford-pets", "oxford-pets": "oxford-pets", "pets": "oxford-pets",
                 "eurosat": "eurosat", "cifar10": "cifar10", "cifar-10": "cifar10"}


def _normalise(name: str) -> str:
    return re.sub(r"[^0-9a-z]", "", name.lower())


@dataclass(frozen=True)
class BenchmarkMatch:
    benchmark: Benchmark
    prompt_names: list[str]  # CLIP's prompt name of each given class, in the given order


def benchmark_match(class_names: Sequence[str]) -> BenchmarkMatch | None:
    """The benchmark whose classes are exactly ``class_names`` (any order, any of the known spellings), with
    CLIP's prompt name for each; None when the classes are not exactly one benchmark's."""
    for benchmark in BENCHMARKS:
        lookup = {
            _normalise(spelling): prompt
            for prompt, aliases in benchmark.classes.items()
            for spelling in (prompt, *aliases)
        }
        prompts = [lookup.get(_normalise(name)) for name in class_names]
        if None not in prompts and sorted(prompts) == sorted(benchmark.classes):
            return BenchmarkMatch(benchmark=benchmark, prompt_names=prompts)
    return None


def benchmark_by_key(key: str) -> Benchmark:
    return next(b for b in BENCHMARKS if b.key == key)


def templates_for(dataset: str | None) -> tuple[str, ...]:
    """Default templates for a shared-data name (``oxford_pets``, ``eurosat``, ``cifar10``); unknown names get
    open_clip's 80 ImageNet templates."""
    key = _DATASET_KEYS.get((dataset or "").strip().lower().replace(" ", "_"))
    return benchmark_by_key(key).templates if key else IMAGENET_TEMPLATES


def prompt_defaults(class_names: Sequence[str]) -> tuple[list[str], tuple[str, ...]]:
    """(prompt names, templates) for classes in this order: CLIP's own for a known benchmark, else each
    class's name in lower case and open_clip's 80 ImageNet templates."""
    match = benchmark_match(class_names)
    if match is None:
        return [name.lower() for name in class_names], IMAGENET_TEMPLATES
    return match.prompt_names, match.benchmark.templates


def class_prompts(*, classnames: Sequence[str], templates: Sequence[str]) -> list[list[str]]:
    """The exact prompt strings, one list per class in class order: ``template.format(name)``."""
    templates = validate_templates(templates)
    return [[template.format(name) for template in templates] for name in classnames]


def validate_templates(templates: Sequence[str]) -> tuple[str, ...]:
    """Return ``templates`` as a tuple, or raise ValueError unless each is a string with exactly one ``{}``."""
    if isinstance(templates, str) or not isinstance(templates, Sequence) or len(templates) == 0:
        raise ValueError("templates must be a non-empty list of strings, each containing '{}' once")
    for template in templates:
        if not isinstance(template, str):
            raise ValueError(f"template {template!r} is not a string")
        # Exactly one positional slot; any other braces would make str.format fail or drop the class name.
        if template.count("{}") != 1 or template.replace("{}", "").count("{") or template.replace("{}", "").count("}"):
            raise ValueError(f"template {template!r} must contain exactly one '{{}}' and no other braces")
    return tuple(templates)
