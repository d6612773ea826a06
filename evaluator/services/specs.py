"""What a run scores with and how it is named: the model choice, the subject name, the prompt templates.

No database writes here; runs.model_run_create calls these before it creates anything.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from evaluator.errors import ScoringSetupError
from studyapp.models import Study


@dataclass(frozen=True)
class ModelSpec:
    """Which weights a run uses. Exactly one source: a pretrained tag, a checkpoint file, or the house model."""

    model_name: str = ""
    pretrained: str = ""
    checkpoint: str = ""
    is_house_model: bool = False


def model_spec_resolve(*, model_name: str = "", pretrained: str = "", checkpoint: str = "") -> ModelSpec:
    """Check a user's model choice and say whether a checkpoint is the house model (it records its name)."""
    import clipmodel

    model_name, pretrained, checkpoint = model_name.strip(), pretrained.strip(), checkpoint.strip()
    if pretrained and checkpoint:
        raise ScoringSetupError("give either a pretrained tag or a checkpoint, not both")
    if checkpoint:
        path = Path(checkpoint).expanduser().resolve()
        if not path.is_file():
            raise ScoringSetupError(f"checkpoint not found: {path}")
        from clipmodel.loading import read_house_checkpoint  # torch is imported only where models run

        try:
            house = read_house_checkpoint(path)
        except clipmodel.ModelUnavailable as exc:  # corrupt or truncated: never "a plain state dict"
            raise ScoringSetupError(str(exc)) from None
        if house is None and not model_name:
            raise ScoringSetupError(f"{path} is a plain state dict: give its open_clip architecture as the model")
        if house is not None:
            return ModelSpec(model_name=str(house.get("model_name", "")), checkpoint=str(path),
                             is_house_model=house.get("model_name") == clipmodel.HOUSE_MODEL_NAME)
        return ModelSpec(model_name=model_name, checkpoint=str(path))
    if not model_name or not pretrained:
        # Random weights differ in every worker process, so their predictions would not be one model's.
        raise ScoringSetupError("give a model with a pretrained tag (e.g. ViT-B-32 + openai) or a checkpoint")
    return ModelSpec(model_name=model_name, pretrained=pretrained)


def _short_sha(path: str) -> str:
    from clipmodel.cache import file_sha256

    return file_sha256(path)[:12]


def model_run_default_name(*, spec: ModelSpec) -> str:
    """A subject name that says what the model is; "CLIP" only for OpenAI's CLIP weights."""
    if spec.is_house_model:
        return f"house model ({spec.model_name}, sha256-{_short_sha(spec.checkpoint)})"
    if spec.checkpoint:
        return f"{spec.model_name} (checkpoint {Path(spec.checkpoint).name}, sha256-{_short_sha(spec.checkpoint)})"
    if spec.pretrained == "openai":
        arch = re.sub(r"^ViT-([A-Za-z])-(\d+)", r"ViT-\1/\2", spec.model_name)
        return f"CLIP {arch}"
    return f"OpenCLIP {spec.model_name} ({spec.pretrained})"


def model_run_check_name(*, name: str, spec: ModelSpec) -> str:
    """The run's name, stripped; refused when it would pass another model off as CLIP or hide the house model."""
    name = name.strip()
    if not name:
        raise ScoringSetupError("the run needs a name")
    if re.search(r"\bCLIP\b", name, flags=re.IGNORECASE) and spec.pretrained != "openai":
        raise ScoringSetupError(f"{name!r}: only OpenAI's CLIP weights (pretrained=openai) may be called CLIP")
    if spec.is_house_model and not name.lower().startswith("house model"):
        raise ScoringSetupError(f"{name!r}: a house-model run's name must start with 'house model'")
    return name


def default_templates(*, study: Study) -> tuple[str, ...]:
    """CLIP's templates when the dataset's classes are a known benchmark's (Oxford-IIIT Pets, EuroSAT,
    CIFAR-10; an official Pets import counts as Pets), else open_clip's 80 ImageNet templates."""
    import clipmodel
    from clipmodel.templates import benchmark_by_key

    names = list(study.dataset.classes.order_by("index").values_list("name", flat=True))
    if study.dataset.source_format == study.dataset.Format.OXFORD_PETS:
        return benchmark_by_key("oxford-pets").templates
    return tuple(clipmodel.prompt_defaults(names)[1])


def study_benchmark(*, study: Study) -> str | None:
    """"oxford-pets", "eurosat" or "cifar10" when the study's classes are that benchmark's (an official Pets
    import counts as Pets, as in default_templates), else None."""
    import clipmodel

    if study.dataset.source_format == study.dataset.Format.OXFORD_PETS:
        return "oxford-pets"
    match = clipmodel.benchmark_match(list(study.dataset.classes.values_list("name", flat=True)))
    return match.benchmark.key if match else None


def read_templates_file(path: str | Path) -> tuple[str, ...]:
    """One template per line with ``{}`` for the class name; blank lines and # comments are skipped."""
    import clipmodel

    lines = Path(path).read_text(encoding="utf-8").splitlines()
    templates = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    try:
        return clipmodel.validate_templates(templates)
    except ValueError as exc:
        raise ScoringSetupError(f"{path}: {exc}") from None
