"""Prompt templates (CLIP prompt ensembling) and per-dataset prompt class names.

Templates are ``str.format`` strings with exactly one ``{}`` for the class name.
"""

from collections.abc import Sequence

from open_clip import OPENAI_IMAGENET_TEMPLATES

# open_clip stores its templates as lambdas; calling one with "{}" turns it back into a format string.
IMAGENET_TEMPLATES: tuple[str, ...] = tuple(t("{}") for t in OPENAI_IMAGENET_TEMPLATES)

# From the CLIP paper's prompt engineering (openai/CLIP data/prompts.md).
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

# CLIP's EuroSAT prompt names, in the manifest's label order 0..9 (AnnualCrop ... SeaLake): CLIP scores
# much better with these than with the folder names.
EUROSAT_CLIP_CLASSNAMES: tuple[str, ...] = (
    "annual crop land",
    "forest",
    "brushland or shrubland",
    "highway or road",
    "industrial buildings or commercial buildings",
    "pasture land",
    "permanent crop land",
    "residential buildings or homes or apartments",
    "river",
    "lake or sea",
)

_TEMPLATES = {
    "oxford_pets": PETS_TEMPLATES,
    "pets": PETS_TEMPLATES,
    "eurosat": EUROSAT_TEMPLATES,
    "cifar10": CIFAR10_TEMPLATES,
    "cifar-10": CIFAR10_TEMPLATES,
    "imagenet": IMAGENET_TEMPLATES,
}


def _key(dataset: str) -> str:
    return dataset.strip().lower().replace(" ", "_")


def templates_for(dataset: str | None) -> tuple[str, ...]:
    """Default templates for a dataset name; unknown names get open_clip's 80 ImageNet templates."""
    return _TEMPLATES.get(_key(dataset or ""), IMAGENET_TEMPLATES)


def classnames_for(dataset: str | None, label_names: Sequence[str]) -> list[str]:
    """Prompt class names for ``label_names`` (label order kept): CLIP's names for EuroSAT, else unchanged."""
    if _key(dataset or "") == "eurosat" and len(label_names) == len(EUROSAT_CLIP_CLASSNAMES):
        return list(EUROSAT_CLIP_CLASSNAMES)
    return list(label_names)


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
