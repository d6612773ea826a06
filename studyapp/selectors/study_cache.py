"""Per-process copies of what an open study froze: its conditions, its test items, its classes as its
participants see them, its shot examples, and where each example belongs.

Once a study leaves draft the database refuses any change to these (studyapp/frozen.py: triggers on every
table involved, class-name translations included), so a copy can never go stale and there is nothing to
invalidate: the cache is correct by construction, not by a timeout. Every participant request read them
before (three queries, about a millisecond of ORM work; docs/load.md); now the first request of each
process does. A draft study is never cached (it may still change; nobody takes part in it).

Keys are random public codes (a study's, an example's), never integer ids, which SQLite reuses after a
rollback. Values are immutable and hold no model instances, so threads share them safely. Each map is
cleared when full, which keeps memory bounded (a 37-class study takes a few kilobytes).

Nothing about participants is cached here: their state changes with every answer.
"""

import uuid
from dataclasses import dataclass, field

from django.db.models import OuterRef, Subquery

from studyapp.models import ClassLabel, ClassNameTranslation, Condition, ShotExample, Study, StudyItem

_LIMIT = 2_000
_EXAMPLE_LIMIT = 20_000


@dataclass(frozen=True)
class Choice:
    value: str
    name: str  # as this study shows it (translated where the study says so)
    example_codes: tuple[uuid.UUID, ...] = ()  # shot conditions: the card's example photos


@dataclass(frozen=True)
class FrozenStudy:
    conditions: tuple[tuple[int, int], ...]  # (condition id, shots), in shot order
    choices: tuple[Choice, ...]  # every class, sorted by the name participants see, without examples
    label_ids: dict[str, int] = field(default_factory=dict)  # a choice's value (the class index) -> ClassLabel id
    examples: dict[int, tuple[Choice, ...]] = field(default_factory=dict)  # condition id -> choices with examples
    item_ids: tuple[int, ...] = ()  # the test items (StudyItem), ascending: the candidates of every allocation

    def choices_for(self, condition_id: int) -> tuple[Choice, ...]:
        return self.examples.get(condition_id, self.choices)


_studies: dict[uuid.UUID, FrozenStudy] = {}


def study_frozen(*, study: Study) -> FrozenStudy:
    """The study's frozen data (four queries the first time per process, none after, once it is open)."""
    cached = _studies.get(study.code)
    if cached is not None:
        return cached
    frozen = _load(study=study)
    if study.status != Study.Status.DRAFT:
        if len(_studies) >= _LIMIT:
            _studies.clear()
        _studies[study.code] = frozen
    return frozen


def _load(*, study: Study) -> FrozenStudy:
    conditions = tuple(Condition.objects.filter(study_id=study.pk).order_by("shots").values_list("id", "shots"))
    translated = ClassNameTranslation.objects.filter(study_id=study.pk, label=OuterRef("pk")).values("name")[:1]
    rows = list(ClassLabel.objects.filter(dataset_id=study.dataset_id).annotate(shown=Subquery(translated))
                .order_by().values_list("id", "index", "name", "shown"))
    choices = sorted((Choice(value=str(index), name=shown or name) for _, index, name, shown in rows),
                     key=lambda c: (c.name.casefold(), int(c.value)))
    codes: dict[int, dict[str, list[uuid.UUID]]] = {}
    for condition_id, index, code in (ShotExample.objects.filter(condition__study_id=study.pk)
                                      .order_by("condition_id", "label__index", "rank")
                                      .values_list("condition_id", "label__index", "code")):
        codes.setdefault(condition_id, {}).setdefault(str(index), []).append(code)
    examples = {
        condition_id: tuple(Choice(value=c.value, name=c.name, example_codes=tuple(by_value.get(c.value, ())))
                            for c in choices)
        for condition_id, by_value in codes.items()
    }
    return FrozenStudy(conditions=conditions, choices=tuple(choices),
                       label_ids={str(index): pk for pk, index, _, _ in rows}, examples=examples,
                       item_ids=tuple(StudyItem.objects.filter(study_id=study.pk).order_by("item_id")
                                      .values_list("item_id", flat=True)))


@dataclass(frozen=True)
class ExampleTarget:
    """Where a shot example belongs: its condition, study, part (1-based, within subjects) and stored image."""

    condition_id: int
    study_id: int
    image: str
    part: int


_examples: dict[uuid.UUID, ExampleTarget] = {}


def example_target(*, code: uuid.UUID) -> ExampleTarget | None:
    """Where the example with that public code belongs (a query the first time per process); None if unknown."""
    target = _examples.get(code)
    if target is not None:
        return target
    row = ShotExample.objects.filter(code=code).values_list(
        "condition_id", "condition__study_id", "item__image", "condition__shots", "condition__study__status"
    ).first()
    if row is None:
        return None
    condition_id, study_id, image, shots, status = row
    # Parts run in shot order: the example's part is 1 + the number of the study's conditions before it.
    part = 1 + Condition.objects.filter(study_id=study_id, shots__lt=shots).count()
    target = ExampleTarget(condition_id=condition_id, study_id=study_id, image=image, part=part)
    if status != Study.Status.DRAFT:
        if len(_examples) >= _EXAMPLE_LIMIT:
            _examples.clear()
        _examples[code] = target
    return target
