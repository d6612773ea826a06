"""Reads for the participant pages. Nothing here may hand a test item's label to a template."""

import uuid
from dataclasses import dataclass

from django.db.models.functions import Lower

from studyapp.models import Assignment, ClassLabel, Condition, Participant, ShotExample, Study


def participant_get(*, study: Study, code: str | uuid.UUID | None) -> Participant | None:
    if not code:
        return None
    try:
        return Participant.objects.select_related("study").get(study=study, code=uuid.UUID(str(code)))
    except (ValueError, Participant.DoesNotExist):
        return None


@dataclass(frozen=True)
class ImageViewer:
    """Who is asking for an image: only what is fixed once a participant has joined (consent, condition)."""

    participant_id: int
    study_id: int
    consent_given: bool
    between: bool
    condition_id: int | None


# Process-local caches of facts that never change, for the image views: a trial page pulls up to 74
# example images, so per-image queries were a third of all queries under load (docs/load.md). Keys are
# random public codes; values hold no label. Cleared when full, so memory stays bounded.
_CACHE_LIMIT = 20_000
_viewers: dict[tuple[uuid.UUID, uuid.UUID], ImageViewer] = {}
_examples: dict[uuid.UUID, tuple[int, int, str]] = {}


def _remember(cache: dict, key, value) -> None:
    if len(cache) >= _CACHE_LIMIT:
        cache.clear()
    cache[key] = value


def image_viewer_get(*, study_code: uuid.UUID, code: str | uuid.UUID | None) -> ImageViewer | None:
    """The participant with that code in the study with that public code; cached once found (a
    participant's consent and condition are set when they join and never change)."""
    try:
        key = (study_code, uuid.UUID(str(code)))
    except ValueError:
        return None
    viewer = _viewers.get(key)
    if viewer is None:
        row = (Participant.objects.filter(study__code=study_code, code=key[1])
               .values_list("pk", "study_id", "consent", "study__design", "condition_id").first())
        if row is None:
            return None  # not cached: nothing to remember about a stranger
        pk, study_id, consent, design, condition_id = row
        viewer = ImageViewer(participant_id=pk, study_id=study_id, consent_given=consent == Participant.Consent.GIVEN,
                             between=design == Study.Design.BETWEEN, condition_id=condition_id)
        _remember(_viewers, key, viewer)
    return viewer


def trial_image_path(*, viewer: ImageViewer, code: uuid.UUID) -> str | None:
    """The stored image of the viewer's own trial; None for anyone else's (it must look like no trial at all)."""
    return Assignment.objects.filter(participant_id=viewer.participant_id, code=code).values_list(
        "item__image", flat=True).first()


def example_image_path(*, viewer: ImageViewer, code: uuid.UUID) -> str | None:
    """The stored image of a shot example of one of the viewer's conditions (participant_conditions()
    as a check), else None. Examples are frozen once their study is open, so they are cached then."""
    target = _examples.get(code)
    if target is None:
        row = ShotExample.objects.filter(code=code).values_list(
            "condition_id", "condition__study_id", "item__image", "condition__study__status").first()
        if row is None:
            return None
        target = row[:3]
        if row[3] != Study.Status.DRAFT:
            _remember(_examples, code, target)
    condition_id, study_id, image = target
    if not viewer.consent_given or study_id != viewer.study_id:
        return None
    if viewer.between and condition_id != viewer.condition_id:
        return None
    return image


def participant_get_by_external_id(*, study: Study, external_id: str) -> Participant | None:
    return Participant.objects.select_related("study").filter(study=study, external_id=external_id).first()


def participant_conditions(*, participant: Participant) -> list[Condition]:
    """The participant's phases in order: one condition between subjects, all in shot order within."""
    if participant.consent != Participant.Consent.GIVEN:
        return []
    if participant.study.design == Study.Design.BETWEEN:
        return [participant.condition] if participant.condition_id else []
    return list(Condition.objects.filter(study_id=participant.study_id).select_related("study").order_by("shots"))


def assignment_get_for_participant(*, participant: Participant, code: uuid.UUID) -> Assignment:
    """Raises Assignment.DoesNotExist for another participant's trial: it must look like no trial at all."""
    assignment = Assignment.objects.select_related("condition__study", "item").get(participant=participant, code=code)
    assignment.participant = participant  # known already: the trial page's progress needs no second fetch
    return assignment


@dataclass(frozen=True)
class Choice:
    value: str
    name: str


@dataclass(frozen=True)
class GalleryClass:
    name: str
    example_codes: list[uuid.UUID]


@dataclass(frozen=True)
class Progress:
    phase_number: int
    phase_count: int
    trial_number: int
    trial_count: int
    answered: int
    planned: int

    @property
    def percent(self) -> int:
        return round(100 * self.answered / self.planned) if self.planned else 0


@dataclass(frozen=True)
class TrialPage:
    shots: int
    choices: list[Choice]
    allow_idk: bool
    gallery: list[GalleryClass]
    progress: Progress


def trial_page(*, assignment: Assignment) -> TrialPage:
    condition = assignment.condition
    study = condition.study
    choices = [
        Choice(value=str(index), name=name)
        for index, name in ClassLabel.objects.filter(dataset_id=study.dataset_id)
        .order_by(Lower("name"), "index")
        .values_list("index", "name")
    ]
    gallery: dict[str, GalleryClass] = {}
    examples = ShotExample.objects.filter(condition=condition).order_by(Lower("label__name"), "rank")
    for name, code in examples.values_list("label__name", "code"):
        gallery.setdefault(name, GalleryClass(name=name, example_codes=[])).example_codes.append(code)
    return TrialPage(
        shots=condition.shots,
        choices=choices,
        allow_idk=study.allow_idk,
        gallery=list(gallery.values()),
        progress=participant_progress(participant=assignment.participant, condition=condition),
    )


def participant_progress(*, participant: Participant, condition: Condition) -> Progress:
    """Exact within the current phase; phases not yet entered are counted as full-length."""
    conditions = participant_conditions(participant=participant)
    study = participant.study
    trials = participant.assignments.exclude(
        status=Assignment.Status.EXPIRED
    )  # an expired trial that was never re-claimed is not part of the participant's work
    counts: dict[int, list[int]] = {}
    for condition_id, status in trials.values_list("condition_id", "status"):
        total_answered = counts.setdefault(condition_id, [0, 0])
        total_answered[0] += 1
        total_answered[1] += status == Assignment.Status.ANSWERED
    per_phase_estimate = round(study.items_per_participant / (1 - study.attention_check_rate))
    not_entered = max(0, len(conditions) - participant.phases_entered)
    total, answered = counts.get(condition.pk, [0, 0])
    return Progress(
        phase_number=next((i + 1 for i, c in enumerate(conditions) if c.pk == condition.pk), 1),
        phase_count=len(conditions),
        trial_number=answered + 1,
        trial_count=total,
        answered=sum(a for _, a in counts.values()),
        planned=sum(t for t, _ in counts.values()) + not_entered * per_phase_estimate,
    )
