"""Reads for the participant pages. Nothing here may hand a test item's label to a template."""

import random
import re
import uuid
from dataclasses import dataclass
from enum import Enum

from studyapp.models import Assignment, Condition, Item, Participant, ShotExample, Study
from studyapp.selectors.hot_reads import ImageViewer, as_uuid, participant_trials_brief
from studyapp.selectors.study_cache import Choice, example_target, study_frozen


def participant_get(*, study: Study, code: str | uuid.UUID | None) -> Participant | None:
    if not code:
        return None
    try:
        return Participant.objects.select_related("study").get(study=study, code=uuid.UUID(str(code)))
    except (ValueError, Participant.DoesNotExist):
        return None


class Step(Enum):
    TRIAL = "trial"
    INSTRUCTIONS = "instructions"
    CONTINUE = "continue"  # what comes next needs a write (enter a part, take back a trial, complete): a POST
    DECLINED = "declined"
    COMPLETE = "complete"
    FULL = "full"
    WITHDRAWN = "withdrawn"  # stopped and left (or marked returned by the researcher)


@dataclass(frozen=True)
class NextStep:
    step: Step
    assignment: Assignment | None = None


def participant_settled_step(*, participant: Participant) -> NextStep | None:
    """Declined, complete or left: where such a participant goes whatever they ask for; None for anyone else."""
    if participant.consent == Participant.Consent.DECLINED:
        return NextStep(Step.DECLINED)
    if participant.completed_at is not None:
        return NextStep(Step.COMPLETE)
    if participant.withdrawn_at is not None:
        return NextStep(Step.WITHDRAWN)
    return None


def participant_route(*, participant: Participant) -> NextStep:
    """Where the participant is now, for pages fetched with GET: reads only, never allocates, takes back
    or completes (a browser, a prefetcher or a link preview may repeat a GET). The POSTs that move a
    participant on go through studyapp.services.participants.participant_allocate_next_step."""
    settled = participant_settled_step(participant=participant)
    if settled is not None:
        return settled
    if participant.phases_entered == 0:
        return NextStep(Step.INSTRUCTIONS)
    conditions = participant_conditions(participant=participant)
    if conditions:
        current = conditions[min(participant.phases_entered, len(conditions)) - 1]
        trial = (participant.assignments.filter(condition=current).exclude(status=Assignment.Status.ANSWERED)
                 .select_related("condition__study", "item").order_by("position").first())
        if trial is not None and trial.status == Assignment.Status.RESERVED:
            return NextStep(Step.TRIAL, trial)
        if trial is None and participant.phases_entered >= len(conditions) and not participant.assignments.exists():
            return NextStep(Step.FULL)
    return NextStep(Step.CONTINUE)


def example_image_path(*, viewer: ImageViewer, code: uuid.UUID) -> str | None:
    """The stored image of a shot example of the part the viewer is in now, else None: examples of a
    later part (or of another condition) are not theirs to see yet, and an earlier part's are done with."""
    target = example_target(code=code)
    if target is None or not viewer.consent_given or target.study_id != viewer.study_id:
        return None
    if viewer.between:
        current = viewer.phases_entered >= 1 and target.condition_id == viewer.condition_id
    else:
        current = target.part == viewer.phases_entered
    return target.image if current else None


def _condition_rows(*, participant: Participant) -> tuple[tuple[int, int], ...]:
    """(condition id, shots) of the participant's phases in order, from the study's frozen data."""
    if participant.consent != Participant.Consent.GIVEN:
        return ()
    conditions = study_frozen(study=participant.study).conditions
    if participant.study.design == Study.Design.BETWEEN:
        conditions = tuple(c for c in conditions if c[0] == participant.condition_id)
    return conditions


def participant_conditions(*, participant: Participant) -> list[Condition]:
    """The participant's phases in order: one condition between subjects, all in shot order within.

    From the study's frozen data (no query once cached); fresh instances each time, tied to the
    participant's own study object, so nothing shared between threads is ever changed."""
    out = []
    for condition_id, shots in _condition_rows(participant=participant):
        # `code` stays deferred: nothing on these paths reads it (it would cost a query, not a wrong value).
        condition = Condition.from_db(None, ["id", "study_id", "shots"], [condition_id, participant.study_id, shots])
        condition.study = participant.study
        out.append(condition)
    return out


def participant_current_condition_id(*, participant: Participant) -> int | None:
    """The id of the part the participant is in now (participant_conditions()[phases_entered - 1]) without
    building a condition; None before the first part or without consent."""
    rows = _condition_rows(participant=participant)
    return rows[participant.phases_entered - 1][0] if 0 < participant.phases_entered <= len(rows) else None


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
    choices: tuple[Choice, ...]
    allow_idk: bool
    progress: Progress
    next_trial_code: uuid.UUID | None = None  # the next trial of this part, whose photo the page prefetches


def study_choices(*, study: Study) -> tuple[Choice, ...]:
    """Every class as the study's participants see it, sorted by the name they see (frozen data: cached)."""
    return study_frozen(study=study).choices


def trial_page(*, assignment: Assignment) -> TrialPage:
    """What the trial page shows besides the photo: the answers (the same for everyone in the part, from
    the study's frozen data) and the participant's progress (one query)."""
    condition = assignment.condition
    study = condition.study
    choices = study_frozen(study=study).choices_for(condition.pk) if condition.shots else study_choices(study=study)
    progress, next_code = _progress_and_next(participant=assignment.participant, condition=condition,
                                             assignment=assignment)
    return TrialPage(shots=condition.shots, choices=choices, allow_idk=study.allow_idk, progress=progress,
                     next_trial_code=next_code)


def participant_progress(*, participant: Participant, condition: Condition) -> Progress:
    return _progress_and_next(participant=participant, condition=condition)[0]


def _progress_and_next(*, participant: Participant, condition: Condition,
                       assignment: Assignment | None = None) -> tuple[Progress, uuid.UUID | None]:
    """Progress: exact within the current phase; phases not yet entered are counted as full-length. And the
    code of the reserved trial that follows `assignment` in its part (same query)."""
    conditions = participant_conditions(participant=participant)
    study = participant.study
    counts: dict[int, list[int]] = {}
    following: list[tuple] = []
    # An expired trial that was never re-claimed is not part of the participant's work.
    for condition_id, status, position, code in participant_trials_brief(participant_id=participant.pk):
        total_answered = counts.setdefault(condition_id, [0, 0])
        total_answered[0] += 1
        total_answered[1] += status == Assignment.Status.ANSWERED
        if (assignment is not None and condition_id == assignment.condition_id and position > assignment.position
                and status == Assignment.Status.RESERVED):
            following.append((position, code))
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
    ), (as_uuid(min(following)[1]) if following else None)


# Practice: images of the shot split that are not shot examples, drawn with the study's seed, shown with feedback
# before the first part and never stored. Attention checks are drawn from the same split without them.


def practice_item_ids(*, study: Study) -> list[int]:
    """The study's practice images (ids, in the order shown): the same for every participant."""
    if not study.practice_trials:
        return []
    pool = list(
        Item.objects.filter(dataset_id=study.dataset_id, split=study.shot_split)
        .exclude(id__in=ShotExample.objects.filter(condition__study=study).values("item_id"))
        .order_by("id").values_list("id", flat=True)
    )
    return random.Random(f"practice:{study.seed}").sample(pool, min(study.practice_trials, len(pool)))


@dataclass(frozen=True)
class PracticeTrial:
    number: int  # 1-based
    count: int
    item: Item


def practice_trial(*, study: Study, number: int) -> PracticeTrial | None:
    ids = practice_item_ids(study=study)
    if not 1 <= number <= len(ids):
        return None
    return PracticeTrial(number=number, count=len(ids), item=Item.objects.select_related("label").get(pk=ids[number - 1]))


# Screen gate: what the study asks of a participant's screen, checked before consent.
_PHONE_AGENT = re.compile(r"iPhone|iPod|Android.+Mobile|Mobile.+Firefox|Windows Phone|\bMobi\b")


def user_agent_is_phone(user_agent: str) -> bool:
    return bool(_PHONE_AGENT.search(user_agent or ""))


def screen_fits(*, study: Study, width: int | None, height: int | None, phone: bool) -> bool:
    """Whether a window of that size (None: not known) on that kind of device may take part in the study."""
    if phone and not study.allow_phones:
        return False
    if width is not None and width < study.min_window_width:
        return False
    return height is None or height >= study.min_window_height

