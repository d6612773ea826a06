"""Participants: joining, trial allocation, answers and completion.

Allocation. A participant's trials for a condition are allocated as one batch (up to
Study.items_per_participant test items, plus attention checks) when they enter that condition's
phase; phases run in shot order (zero → one → two) and are entered at most once each, guarded by
a compare-and-set on Participant.phases_entered. A batch takes the least-filled items first
(answers plus live reservations), ties broken by the participant's seed, and shows them in an
order shuffled with that seed.

Every test trial holds a slot number in [0, k) for its (condition, item); the partial unique
constraint assignment_live_slot_unique is what guarantees that no item ever has more than k live
assignments, whatever the concurrency. Allocators of one condition additionally queue on the
condition row (SELECT ... FOR UPDATE on PostgreSQL; SQLite's IMMEDIATE transactions serialise all
writers anyway): without that, two batches claiming the same slots in different orders could
deadlock on each other's uncommitted keys. A claim that still collides (a re-claim racing us)
rolls back to its savepoint and tries the next slot or item.

Reservations expire lazily: each allocation first marks its condition's reservations that are past
expires_at as expired, which returns their slots to the pool. A late answer to an expired trial is
still taken if the item has a free slot again (re-claim), else politely refused.
"""

import itertools
import logging
import random
import uuid
from dataclasses import dataclass
from datetime import timedelta
from enum import Enum

from django.db import IntegrityError, transaction
from django.db.models import Count
from django.utils import timezone

from studyapp.models import IDK, Assignment, ClassLabel, Condition, Item, Participant, Response, ShotExample, Study
from studyapp.selectors.participants import participant_conditions
from studyapp.services.ratelimit import rate_count

logger = logging.getLogger(__name__)

_MAX_RT_MS = 2**31 - 1  # PositiveIntegerField's portable upper bound


class StudyNotOpen(Exception):
    pass


class InvalidChoice(ValueError):
    pass


def join_rate_allow(*, study: Study, client: str, per_minute: int) -> bool:
    """Count one new enrolment from `client`; False once it has made `per_minute` in the current minute.

    Keeps a script from filling a study with junk participants. The counter lives in the database
    cache ("ratelimit"), so the limit holds across web workers and needs no Redis.
    """
    key = f"studyapp:join-rate:{study.code}:{client}"
    # rate_count() is a read then a write: concurrent joins could both read n and both write n + 1,
    # slipping past the limit. Queue the check behind a lock on the study row (no_key: it does not
    # block inserts that reference the study); the cache table is in the same database, so its read
    # and write run inside this transaction. SQLite's IMMEDIATE transactions serialise anyway.
    with transaction.atomic():
        list(Study.objects.select_for_update(no_key=True).filter(pk=study.pk).values_list("pk", flat=True))
        return rate_count(key=key, window_s=60) <= per_minute


def participant_join(
    *,
    study: Study,
    code: uuid.UUID,
    consent: bool,
    external_id: str | None = None,
    external_study_id: str = "",
    external_session_id: str = "",
) -> Participant:
    """Enrol a participant with their consent decision, or return the one already enrolled.

    `code` comes from the consent form, so a double-clicked "I agree" enrols one participant, not
    two; an external id (e.g. Prolific's) that is already enrolled returns that participant. Both
    are decided by unique constraints, so concurrent requests cannot enrol twice either.
    A participant who declines is recorded with nothing but the refusal.
    """
    existing = _participant_existing(study=study, code=code, external_id=external_id)
    if existing is not None:
        return existing
    if study.status != Study.Status.OPEN:
        raise StudyNotOpen(f"study {study.code} is {study.status}")
    try:
        with transaction.atomic():
            participant = Participant.objects.create(
                study=study,
                code=code,
                external_id=external_id or None,
                external_study_id=external_study_id if consent else "",
                external_session_id=external_session_id if consent else "",
                consent=Participant.Consent.GIVEN if consent else Participant.Consent.DECLINED,
                condition=_condition_for_new_participant(study=study) if consent else None,
            )
    except IntegrityError:
        existing = _participant_existing(study=study, code=code, external_id=external_id)
        if existing is None:
            raise
        return existing
    return participant


def _participant_existing(*, study: Study, code: uuid.UUID, external_id: str | None) -> Participant | None:
    if external_id:
        found = Participant.objects.filter(study=study, external_id=external_id).first()
        if found is not None:
            return found
    return Participant.objects.filter(study=study, code=code).first()


def _condition_for_new_participant(*, study: Study) -> Condition | None:
    """Between subjects: the condition with fewest consenting participants among those with room left."""
    if study.design != Study.Design.BETWEEN:
        return None
    # Lock the study row so that concurrent joins see each other's choice and stay balanced.
    # no_key: foreign-key checks of concurrent inserts (they share-lock the key) need not wait for it.
    list(Study.objects.select_for_update(no_key=True).filter(pk=study.pk).values_list("pk", flat=True))
    conditions = list(study.conditions.order_by("shots"))
    tie_order = random.Random(f"conditions:{study.seed}").sample(conditions, len(conditions))
    counts = dict(
        Participant.objects.filter(study=study, consent=Participant.Consent.GIVEN, condition__isnull=False)
        .values("condition")
        .annotate(n=Count("id"))
        .values_list("condition", "n")
    )
    capacity = study.study_items.count() * study.k_per_item
    live = dict(
        Assignment.objects.filter(condition__study=study, is_attention_check=False)
        .exclude(status=Assignment.Status.EXPIRED)
        .values("condition")
        .annotate(n=Count("id"))
        .values_list("condition", "n")
    )
    # min() keeps the first of equals, so ties go by the seeded order.
    return min(tie_order, key=lambda c: (live.get(c.pk, 0) >= capacity, counts.get(c.pk, 0)))


class Step(Enum):
    TRIAL = "trial"
    INSTRUCTIONS = "instructions"
    DECLINED = "declined"
    COMPLETE = "complete"
    FULL = "full"


@dataclass(frozen=True)
class NextStep:
    step: Step
    assignment: Assignment | None = None


def participant_start(*, participant: Participant) -> NextStep:
    """Leave the instructions: allocate the first phase and go to its first trial."""
    return participant_next_step(participant=participant, start=True)


def participant_next_step(*, participant: Participant, start: bool = False) -> NextStep:
    """Where the participant goes now: their next trial, or completion once nothing is left to answer.

    Allocates the next phase when the current one is finished; marks the participant complete (and
    flags a failed attention check) when every phase is. A participant who got no trial at all
    is sent to the "study full" page instead, without a completion code.
    """
    if participant.consent == Participant.Consent.DECLINED:
        return NextStep(Step.DECLINED)
    if participant.completed_at is not None:
        return NextStep(Step.COMPLETE)
    if participant.phases_entered == 0 and not start:
        return NextStep(Step.INSTRUCTIONS)
    assignment = assignment_next(participant=participant)
    if assignment is not None:
        return NextStep(Step.TRIAL, assignment)
    if not participant.assignments.filter(status=Assignment.Status.ANSWERED).exists():
        return NextStep(Step.FULL)
    participant_complete(participant=participant)
    return NextStep(Step.COMPLETE)


def assignment_next(*, participant: Participant) -> Assignment | None:
    """The next unanswered trial of the current phase, entering later phases as needed; None when done."""
    conditions = participant_conditions(participant=participant)
    while True:
        if participant.phases_entered:
            trial = _phase_next_trial(participant=participant, condition=conditions[participant.phases_entered - 1])
            if trial is not None:
                return trial
        if participant.phases_entered >= len(conditions):
            return None
        index = participant.phases_entered
        _phase_enter(participant=participant, index=index, condition=conditions[index])
        participant.refresh_from_db(fields=["phases_entered"])


def _phase_next_trial(*, participant: Participant, condition: Condition) -> Assignment | None:
    open_trials = (
        participant.assignments.filter(condition=condition)
        .exclude(status=Assignment.Status.ANSWERED)
        .select_related("condition__study", "item")
        .order_by("position")
    )
    for assignment in open_trials:
        if assignment.status == Assignment.Status.RESERVED or _reclaim(
            assignment=assignment, status=Assignment.Status.RESERVED
        ):
            return assignment
    return None


def _phase_enter(*, participant: Participant, index: int, condition: Condition) -> None:
    with transaction.atomic():
        won = Participant.objects.filter(pk=participant.pk, phases_entered=index).update(phases_entered=index + 1)
        if won:
            _allocate(participant=participant, condition=condition)


def _allocate(*, participant: Participant, condition: Condition) -> None:
    study = condition.study
    now = timezone.now()
    # Queue behind other allocators of this condition (see the module docstring).
    list(Condition.objects.select_for_update(no_key=True).filter(pk=condition.pk).values_list("pk", flat=True))
    Assignment.objects.filter(
        condition=condition, is_attention_check=False, status=Assignment.Status.RESERVED, expires_at__lt=now
    ).update(status=Assignment.Status.EXPIRED)
    if study.status != Study.Status.OPEN:
        return
    k = study.k_per_item
    used_slots: dict[int, set[int]] = {}
    for item_id, slot in (
        Assignment.objects.filter(condition=condition, is_attention_check=False)
        .exclude(status=Assignment.Status.EXPIRED)
        .values_list("item_id", "slot")
    ):
        used_slots.setdefault(item_id, set()).add(slot)
    seen = set(participant.assignments.filter(condition=condition).values_list("item_id", flat=True))
    rng = random.Random(f"{participant.seed}:{condition.shots}")
    item_ids = sorted(study.study_items.values_list("item_id", flat=True))
    tiebreak = {item_id: rng.random() for item_id in item_ids}
    candidates = sorted(
        (i for i in item_ids if len(used_slots.get(i, ())) < k and i not in seen),
        key=lambda i: (len(used_slots.get(i, ())), tiebreak[i]),
    )
    n_test = min(study.items_per_participant, len(candidates))
    chosen = candidates[:n_test]
    rng.shuffle(chosen)
    # Replacements, least-filled first, for a chosen item whose slots were taken meanwhile.
    spares = iter(candidates[n_test:])
    check_items = _attention_check_items(participant=participant, n=_check_count(n_test, study, rng), rng=rng)
    kinds = [True] * len(check_items) + [False] * n_test
    rng.shuffle(kinds)
    checks, tests = iter(check_items), iter(chosen)
    expires_at = now + timedelta(minutes=study.reservation_minutes)
    position = 0
    for is_check in kinds:
        if is_check:
            Assignment.objects.create(
                participant=participant, condition=condition, item_id=next(checks), position=position,
                slot=None, is_attention_check=True, expires_at=expires_at,
            )
            position += 1
            continue
        for item_id in itertools.chain([next(tests)], spares):
            if _claim(participant=participant, condition=condition, item_id=item_id, position=position,
                      used=used_slots.setdefault(item_id, set()), k=k, expires_at=expires_at):
                position += 1
                break


def _claim(
    *, participant: Participant, condition: Condition, item_id: int, position: int, used: set[int], k: int, expires_at
) -> bool:
    for slot in range(k):
        if slot in used:
            continue
        used.add(slot)
        try:
            with transaction.atomic():
                Assignment.objects.create(
                    participant=participant, condition=condition, item_id=item_id, position=position, slot=slot,
                    expires_at=expires_at,
                )
            return True
        except IntegrityError:
            continue  # someone took this slot since we looked: try the next one
    return False


def _check_count(n_test: int, study: Study, rng: random.Random) -> int:
    """Checks such that they make up attention_check_rate of the phase's trials, rounded at random
    so that the expected share is exact even for short phases."""
    rate = study.attention_check_rate
    if n_test == 0 or rate <= 0:
        return 0
    wanted = n_test * rate / (1 - rate)
    return int(wanted) + (rng.random() < wanted - int(wanted))


def _attention_check_items(*, participant: Participant, n: int, rng: random.Random) -> list[int]:
    """Known-answer items: from the study's shot split, never a shot example, never twice per participant."""
    if n == 0:
        return []
    study = participant.study
    pool = list(
        Item.objects.filter(dataset_id=study.dataset_id, split=study.shot_split)
        .exclude(id__in=ShotExample.objects.filter(condition__study=study).values("item_id"))
        .exclude(id__in=participant.assignments.filter(is_attention_check=True).values("item_id"))
        .order_by("id")
        .values_list("id", flat=True)
    )
    if len(pool) < n:
        logger.warning(
            "study %s: %d attention check(s) wanted, only %d unused known-answer item(s) in split %r",
            study.code, n, len(pool), study.shot_split,
        )
    return rng.sample(pool, min(n, len(pool)))


def _reclaim(*, assignment: Assignment, status: str) -> bool:
    """Take an expired trial back if its item has a free slot again (its old one preferred)."""
    if assignment.is_attention_check:
        # Checks hold no slot and never expire; nothing to take back.
        return assignment.status != Assignment.Status.EXPIRED
    study = assignment.condition.study
    used = set(
        Assignment.objects.filter(condition_id=assignment.condition_id, item_id=assignment.item_id, slot__isnull=False)
        .exclude(status=Assignment.Status.EXPIRED)
        .values_list("slot", flat=True)
    )
    free = [s for s in range(study.k_per_item) if s not in used]
    free.sort(key=lambda s: s != assignment.slot)
    expires_at = timezone.now() + timedelta(minutes=study.reservation_minutes)
    for slot in free:
        try:
            with transaction.atomic():
                won = Assignment.objects.filter(pk=assignment.pk, status=Assignment.Status.EXPIRED).update(
                    status=status, slot=slot, expires_at=expires_at
                )
        except IntegrityError:
            continue
        assignment.refresh_from_db(fields=["status", "slot", "expires_at"])
        # won == 0: another request of this participant re-claimed it first.
        return won == 1 or assignment.status != Assignment.Status.EXPIRED
    return False


def assignment_show(*, assignment: Assignment) -> Assignment | None:
    """Prepare a trial for display: re-claim it if its reservation expired, note when it was first shown.

    None: the trial cannot be shown (already answered, or its item was given to someone else).
    """
    if assignment.status == Assignment.Status.ANSWERED:
        return None
    if assignment.status == Assignment.Status.EXPIRED and not _reclaim(
        assignment=assignment, status=Assignment.Status.RESERVED
    ):
        return None
    if assignment.shown_at is None:
        Assignment.objects.filter(pk=assignment.pk, shown_at__isnull=True).update(shown_at=timezone.now())
        assignment.refresh_from_db(fields=["shown_at"])
    return assignment


@dataclass(frozen=True)
class SubmitOutcome:
    response: Response | None
    created: bool = False
    refused: bool = False  # the reservation expired and its item has no free slot any more


def response_submit(*, assignment: Assignment, choice: str, rt_client_ms: int | None = None) -> SubmitOutcome:
    """Record the answer to a trial, exactly once.

    Idempotent: a repeated submission (double click, reload, retry) returns the stored response
    unchanged, whatever it says. `choice` is a class index of the study's dataset or "idk".
    """
    now = timezone.now()
    with transaction.atomic():
        # The row lock makes concurrent duplicates wait here and then find the first one's response.
        # Only this row (of=self): locking the joined study and condition would block joins and allocation.
        locked = (
            Assignment.objects.select_for_update(no_key=True, of=("self",))
            .select_related("condition__study")
            .get(pk=assignment.pk)
        )
        existing = Response.objects.filter(assignment=locked).first()
        if existing is not None:
            return SubmitOutcome(existing)
        label = _parse_choice(study=locked.condition.study, choice=choice)
        if locked.status == Assignment.Status.EXPIRED:
            if not _reclaim(assignment=locked, status=Assignment.Status.ANSWERED):
                return SubmitOutcome(None, refused=True)
        else:
            Assignment.objects.filter(pk=locked.pk).update(status=Assignment.Status.ANSWERED)
        rt_server_ms = None
        if locked.shown_at is not None:
            rt_server_ms = min(_MAX_RT_MS, max(0, int((now - locked.shown_at).total_seconds() * 1000)))
        try:
            with transaction.atomic():
                response = Response.objects.create(
                    assignment=locked, choice=label, is_idk=label is None,
                    rt_client_ms=None if rt_client_ms is None else min(_MAX_RT_MS, max(0, rt_client_ms)),
                    rt_server_ms=rt_server_ms,
                )
        except IntegrityError:
            return SubmitOutcome(Response.objects.get(assignment=locked))
    return SubmitOutcome(response, created=True)


def _parse_choice(*, study: Study, choice: str) -> ClassLabel | None:
    if choice == IDK:
        if not study.allow_idk:
            raise InvalidChoice("this study has no \"I don't know\" option")
        return None
    try:
        return ClassLabel.objects.get(dataset_id=study.dataset_id, index=int(choice))
    except (ValueError, ClassLabel.DoesNotExist):
        raise InvalidChoice(f"not a class of this study: {choice!r}") from None


def participant_complete(*, participant: Participant) -> Participant:
    """Mark the participant complete and flag them if their attention-check accuracy is under the threshold."""
    checks = list(
        Response.objects.filter(assignment__participant=participant, assignment__is_attention_check=True).values_list(
            "choice_id", "assignment__item__label_id"
        )
    )
    correct = sum(1 for choice, label in checks if choice == label)
    failed = bool(checks) and correct / len(checks) < participant.study.attention_threshold
    Participant.objects.filter(pk=participant.pk, completed_at__isnull=True).update(
        completed_at=timezone.now(), attention_failed=failed
    )
    participant.refresh_from_db(fields=["completed_at", "attention_failed"])
    return participant
