"""What a model was trained on: the house model's exclusions and checkpoint, and the check that refuses to
score a study with a model that was trained on its test items or shots.

Images are compared by the sha256 of their source file's bytes: each Item records it at import
(``source_sha256``, before re-encoding) and our trainer records the same digest of every image it trained on
(``trained_sha256`` in the checkpoint), so the comparison holds whatever name or folder a study imported from.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from django.conf import settings
from django.db.models import Q

from evaluator.errors import ScoringSetupError, TrainedOnStudyItems
from studyapp.models import Item, ShotExample, Study, StudyItem

HOW_TO_EXCLUDE = (
    "build a house model that leaves out the test items and shots of every study in the database with "
    "`manage.py house_model` (9-30 min on a CPU) and score with it (`manage.py score_study STUDY` without "
    "--checkpoint uses it)"
)
CLIP_PAPER_OVERLAP = "see the CLIP paper §5 on data overlap"


def data_root() -> Path:
    return Path(settings.DEMO_DATA) if settings.DEMO_DATA else settings.BASE_DIR.parent / "shared" / "data"


def house_exclusions() -> set[str]:
    """sha256 digests (of the source files) of every study's test items and shot examples in the database,
    and of every image of the demo studies' datasets, whether or not they are imported yet."""
    from clipmodel.house import demo_exclusions  # torch is imported only where models run

    used = Q(pk__in=StudyItem.objects.values("item_id")) | Q(pk__in=ShotExample.objects.values("item_id"))
    digests = set(Item.objects.filter(used).exclude(source_sha256="").values_list("source_sha256", flat=True))
    root = data_root()
    return digests | (demo_exclusions(data_root=root) if root.is_dir() else set())


class HouseModelNotTrained(ScoringSetupError):
    """The house model for the studies now in the database is not in the cache yet (its training data is)."""


def house_checkpoint(*, train: bool, progress: bool = False, on_output: Callable[[str], None] | None = None) -> Path:
    """The house model that leaves out ``house_exclusions()``, under HUMANCLIP_CACHE; trains it first (minutes
    on CPU; the trainer's output line by line to ``on_output`` if given) when ``train``, else raises
    HouseModelNotTrained when it is not trained yet. ScoringSetupError when its training data is missing."""
    import clipmodel
    from clipmodel.house import house_model_path

    try:
        if train:
            return clipmodel.ensure_house_model(data_root=data_root(), cache_dir=settings.HUMANCLIP_CACHE,
                                                progress=progress, exclude_sha256=house_exclusions(),
                                                on_output=on_output)
        path = house_model_path(data_root=data_root(), cache_dir=settings.HUMANCLIP_CACHE,
                                exclude_sha256=house_exclusions())
    except OSError as exc:  # its cache key covers the training data's manifests
        raise ScoringSetupError(f"the house model is not trained yet and its training data is missing ({exc})") from None
    if not path.is_file():
        raise HouseModelNotTrained(
            "the house model is not trained yet (or not for the studies now in the database): run "
            "`manage.py house_model` (or `manage.py score_study STUDY`, which has a worker train it), or choose a "
            "checkpoint"
        )
    return path


@dataclass(frozen=True)
class TrainingCheck:
    """A model's training data against one study's test items and shot examples."""

    known: bool  # the checkpoint records the images it was trained on
    source: str  # what the weights are, in words
    trained_images: int = 0
    base: str = ""  # weights a recorded training started from (their data unknown), if any
    test_items: int = 0  # of the study's, trained on
    shots: int = 0
    unchecked: int = 0  # study images without a recorded source digest (imported before it existed)
    n_test_items: int = 0
    n_shots: int = 0

    @property
    def clean(self) -> bool:
        return self.known and not (self.test_items or self.shots or self.unchecked)

    def as_json(self) -> dict:
        return asdict(self)


def training_check(*, study: Study, model_name: str, pretrained: str, checkpoint: str) -> TrainingCheck:
    """Compare the model's recorded training images with the study's test items and shots."""
    if not checkpoint:
        return TrainingCheck(known=False, source=f"{pretrained} weights" if pretrained else "random weights")
    from clipmodel.errors import ModelUnavailable
    from clipmodel.loading import training_record

    try:
        record = training_record(checkpoint)
    except ModelUnavailable as exc:
        raise ScoringSetupError(str(exc)) from None
    if record is None:
        return TrainingCheck(known=False, source=f"a checkpoint that records no training data ({Path(checkpoint).name})")
    test = dict(Item.objects.filter(pk__in=StudyItem.objects.filter(study=study).values("item_id"))
                .values_list("pk", "source_sha256"))
    shots = dict(Item.objects.filter(pk__in=ShotExample.objects.filter(condition__study=study).values("item_id"))
                 .values_list("pk", "source_sha256"))
    trained = record["sha256"]
    return TrainingCheck(
        known=True, source=f"{model_name or 'model'} checkpoint {Path(checkpoint).name}",
        trained_images=len(trained), base=record["base"] or "",
        test_items=sum(1 for d in test.values() if d and d in trained),
        shots=sum(1 for d in shots.values() if d and d in trained),
        unchecked=sum(1 for d in (*test.values(), *shots.values()) if not d),
        n_test_items=len(test), n_shots=len(shots),
    )


def training_check_enforce(*, check: TrainingCheck, run_name: str, allow_trained_items: bool) -> None:
    """Refuse, before anything is queued, a model that was trained on the study's items (or that cannot be
    checked against some of them), unless the user allows it; such a run is then marked in every report."""
    if not check.known or check.clean or allow_trained_items:
        return
    found = []
    if check.test_items or check.shots:
        found.append(f"{run_name!r} was trained on {check.test_items} of this study's {check.n_test_items} test items "
                     f"and {check.shots} of its {check.n_shots} shot images")
    if check.unchecked:
        found.append(f"{check.unchecked} of the study's images have no recorded source digest (imported before it "
                     "existed), so they cannot be checked against the model's training images; re-import the dataset")
    raise TrainedOnStudyItems(
        "; ".join(found) + f". A model must not be scored on images it trained on: {HOW_TO_EXCLUDE}; or pass "
        "--allow-trained-items (admin: 'Allow trained items') to score anyway, and every report marks the run."
    )


def training_note(*, run_name: str, check: dict, allowed: bool) -> str:
    """One line for the report's model notes (meta["model_notes"])."""
    if not check or not check.get("known"):
        source = check.get("source", "unknown weights") if check else "unknown weights"
        return f"{run_name}: training data unknown ({source}): {CLIP_PAPER_OVERLAP}"
    base = (f"; it started from {check['base']}, whose training data is unknown: {CLIP_PAPER_OVERLAP}"
            if check.get("base") else "")
    if check.get("test_items") or check.get("shots") or check.get("unchecked"):
        mark = " (scored with --allow-trained-items: not a fair test)" if allowed else ""
        return (f"{run_name}: TRAINED ON STUDY ITEMS{mark}: {check['test_items']} of {check['n_test_items']} "
                f"test items and {check['shots']} of {check['n_shots']} shot images were among its "
                f"{check['trained_images']:,} training images; {check.get('unchecked', 0)} could not be checked{base}")
    return (f"{run_name}: none of this study's {check['n_test_items']} test items and {check['n_shots']} shot images "
            f"is among the {check['trained_images']:,} images it was trained on{base}")
