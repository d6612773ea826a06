"""Study set-up: test items, conditions and shot examples drawn with the study seed, then frozen."""

import random
from collections import defaultdict

from django.db import transaction
from django.utils import timezone

from studyapp.frozen import readable_frozen_errors
from studyapp.models import Condition, Dataset, FrozenStudyError, Item, ShotExample, Study, StudyItem
from studyapp.services.protocol import study_protocol_write


class StudySetupError(ValueError):
    pass


def study_create(
    *,
    dataset: Dataset,
    title: str,
    shots: tuple[int, ...] = (0, 1, 2),
    test_split: str = "test",
    shot_split: str | None = None,
    test_items_per_class: int | None = None,
    seed: int | None = None,
    **fields,
) -> Study:
    """Create a draft study with its test items, conditions and shot examples."""
    splits = set(dataset.items.values_list("split", flat=True).distinct())
    if test_split not in splits:
        raise StudySetupError(f"dataset {dataset.name!r} has no split {test_split!r} (it has: {', '.join(sorted(splits))})")
    if shot_split is None:
        others = sorted(splits - {test_split})
        if not others and any(shots):
            raise StudySetupError(f"dataset {dataset.name!r} has no split besides {test_split!r} to draw shots from")
        shot_split = "trainval" if "trainval" in others else "train" if "train" in others else (others or ["-"])[0]
    if shot_split == test_split:
        raise StudySetupError("shot examples must come from a split disjoint from the test items")
    with transaction.atomic():
        study = Study.objects.create(
            dataset=dataset, title=title, test_split=test_split, shot_split=shot_split,
            test_items_per_class=test_items_per_class, **({"seed": seed} if seed is not None else {}), **fields,
        )
        rng = random.Random(study.seed)
        _draw_test_items(study=study, rng=rng)
        study_set_conditions(study=study, shots=shots)
    return study


def _draw_test_items(*, study: Study, rng: random.Random) -> None:
    by_class = defaultdict(list)
    for item_id, label_id in (
        Item.objects.filter(dataset=study.dataset, split=study.test_split).order_by("id").values_list("id", "label_id")
    ):
        by_class[label_id].append(item_id)
    chosen = []
    for label_id in sorted(by_class):
        ids = by_class[label_id]
        n = len(ids) if study.test_items_per_class is None else min(study.test_items_per_class, len(ids))
        chosen.extend(rng.sample(ids, n))
    StudyItem.objects.bulk_create([StudyItem(study=study, item_id=i) for i in chosen])


def study_set_conditions(*, study: Study, shots: tuple[int, ...]) -> None:
    """(Re)create the conditions and draw the shots: two per class, the one-shot set being the first."""
    with readable_frozen_errors(), transaction.atomic():
        _require_draft(study)
        if not shots or any(s not in (0, 1, 2) for s in shots) or len(set(shots)) != len(shots):
            raise StudySetupError(f"conditions must be distinct shot counts among 0, 1, 2; got {shots}")
        ShotExample.objects.filter(condition__study=study).delete()
        study.conditions.all().delete()
        needed = max(shots)
        drawn = _draw_shots(study=study, per_class=needed) if needed else {}
        for n in sorted(shots):
            condition = Condition.objects.create(study=study, shots=n)
            ShotExample.objects.bulk_create(
                ShotExample(condition=condition, label_id=label_id, item_id=item_id, rank=rank)
                for label_id, item_ids in drawn.items()
                for rank, item_id in enumerate(item_ids[:n])
            )


def _draw_shots(*, study: Study, per_class: int) -> dict[int, list[int]]:
    rng = random.Random(f"shots:{study.seed}")
    by_class = defaultdict(list)
    for item_id, label_id in (
        Item.objects.filter(dataset=study.dataset, split=study.shot_split).order_by("id").values_list("id", "label_id")
    ):
        by_class[label_id].append(item_id)
    missing = [
        label.name for label in study.dataset.classes.all() if len(by_class.get(label.id, [])) < per_class
    ]
    if missing:
        raise StudySetupError(
            f"{per_class} shot example(s) per class are needed from split {study.shot_split!r}; "
            f"too few for: {', '.join(missing)}"
        )
    return {label_id: rng.sample(ids, per_class) for label_id, ids in sorted(by_class.items())}


def study_open(*, study: Study) -> Study:
    """Freeze and open: from now on items, classes and shots cannot change."""
    with transaction.atomic():
        study = Study.objects.select_for_update().get(pk=study.pk)
        if study.status == Study.Status.OPEN:
            return study
        if study.status == Study.Status.CLOSED:
            raise StudySetupError("a closed study cannot be reopened; copy it instead")
        if not study.study_items.exists():
            raise StudySetupError("the study has no test items")
        if not study.conditions.exists():
            raise StudySetupError("the study has no conditions")
        n_classes = study.dataset.classes.count()
        for condition in study.conditions.all():
            if condition.shot_examples.count() != n_classes * condition.shots:
                raise StudySetupError(f"{condition.name}: shot examples incomplete")
        study.status = Study.Status.OPEN
        study.opened_at = timezone.now()
        study.save(update_fields=["status", "opened_at"])
        study_protocol_write(study=study)  # registered with the opening: both happen, or neither
    return study


def study_close(*, study: Study) -> Study:
    Study.objects.filter(pk=study.pk).exclude(status=Study.Status.CLOSED).update(status=Study.Status.CLOSED)
    study.refresh_from_db()
    return study


def _require_draft(study: Study) -> None:
    """Call inside the transaction that changes the study's set-up."""
    # The lock lasts until that transaction ends. study_open takes it too, so an open that comes
    # meanwhile waits and then checks the new set, and a change never lands on a study opened after
    # the check. (SQLite: every write transaction already runs alone, so the lock is a no-op there.)
    locked = Study.objects.select_for_update().get(pk=study.pk)
    if locked.is_frozen:
        raise FrozenStudyError(f"study {locked.title!r} is {locked.status}: its items, classes and shots are frozen")
