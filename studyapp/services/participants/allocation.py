"""The assignment engine: which items a participant gets, slots, reservations, and conditions for newcomers.

A participant's trials for a condition (a "part") are allocated as one batch when they enter that part:
up to Study.items_per_participant test items, chosen by items_choose() (a pure function, below), plus
attention checks.

Every test trial holds a slot number in [0, k) for its (condition, item); the partial unique
constraint assignment_live_slot_unique is what guarantees that no item ever has more than k live
assignments, whatever the concurrency. Allocators of one condition additionally queue on the
condition row (SELECT ... FOR UPDATE on PostgreSQL; SQLite's IMMEDIATE transactions serialise all
writers anyway): without that, two batches claiming the same slots in different orders could
deadlock on each other's uncommitted keys. A claim that still collides (a re-claim racing us)
rolls back to its savepoint and tries the next slot or item.

Live and lapsed. A reservation lapses at its expires_at. A lapsed reservation is a free place at once,
everywhere, without waiting for a sweep: counting places (condition choice) ignores it, and whoever
wants its slot (an allocation, a late answer taking its trial back) first marks the lapsed reservations
of that condition or item expired, which is what frees the slot under the constraint. A late answer to
an expired trial is still taken if the item has a free slot again, else politely refused.
"""

import itertools
import logging
import random
from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import IntegrityError, transaction
from django.db.models import Count, Model, OuterRef, Q, Subquery
from django.db.models.functions import Coalesce
from django.utils import timezone

from studyapp.models import Assignment, Condition, Item, Participant, ShotExample, Study
from studyapp.selectors.participants import practice_item_ids
from studyapp.selectors.study_cache import study_frozen

logger = logging.getLogger(__name__)

# Prolific: a study longer than about five minutes that uses attention checks needs at least two of them (one
# failed check is no ground for anything). A trial is estimated at this many seconds, the slow end of a 37-way
# choice (the demo's simulated participants take ~2 s, people looking at examples far longer).
SECONDS_PER_TRIAL_ESTIMATE = 6
LONG_STUDY_SECONDS = 5 * 60
MIN_CHECKS_IN_A_LONG_STUDY = 2


@dataclass(frozen=True)
class ItemChoice:
    chosen: list[int]  # the items of the batch, in the order they will be shown
    spares: list[int]  # the other eligible items, best first: replacements for a chosen item whose slots ran out


def items_choose(*, candidates: Sequence[int], fill: Mapping[int, int], seen: Set[int], k: int, n: int,
                 rng: random.Random) -> ItemChoice:
    """Which test items a person gets in one part, and in which order. Pure: no database, no clock.

    candidates: the study's test items (ids) in a fixed order (ascending id);
    fill: per item, the places taken in this condition (answers plus reservations that have not lapsed);
    seen: items this person must not get: those they already have in this part and, unless the study
          lets items repeat across parts, those they had in earlier parts;
    k: answers wanted per item and condition; n: items wanted per person and part.

    Eligible are the candidates with fill < k that are not in `seen`. The n least-filled are chosen,
    equal fill broken at random, and shuffled for display; the remaining eligible items, in the same
    ranking, are the spares.

    What a seed reproduces: the draws, in this order — one rng.random() per candidate, in the order
    given, eligible or not; then the shuffle of the chosen items. So the same rng state, candidates,
    fill and seen give the same items in the same order, and the draws a caller makes afterwards
    (attention checks) depend only on how many items were chosen. Fill depends on other people's timing,
    so a seed reproduces a participant's batch given the state of the study, not the state itself.
    """
    tiebreak = {item: rng.random() for item in candidates}
    eligible = sorted((i for i in candidates if fill.get(i, 0) < k and i not in seen),
                      key=lambda i: (fill.get(i, 0), tiebreak[i]))
    chosen = eligible[:n]
    rng.shuffle(chosen)
    return ItemChoice(chosen=chosen, spares=eligible[n:])


def row_lock(*, model: type[Model], pk: int) -> None:
    """Lock one row until the transaction ends, so that callers doing a read-then-write on what it stands for take
    turns (a study's row for joins, a condition's for allocation, a participant's for resume codes). FOR NO KEY
    UPDATE on PostgreSQL: inserts that reference the row (a new participant of the study, a trial of the
    condition) need not wait for it. SQLite ignores it; its IMMEDIATE transactions let one writer in at a time."""
    list(model.objects.select_for_update(no_key=True).filter(pk=pk).values_list("pk"))


def _allocate(*, participant: Participant, condition: Condition) -> None:
    """Allocate the participant's batch for one part: attention checks and up to n test items.

    The participant's random draws (rng seeded with "<participant seed>:<shots>") come in this order:
    items_choose() (one per study item, then the shuffle of the chosen), the rounding of the number of
    attention checks, the sample of check items, the shuffle of checks among test items.
    """
    study = condition.study
    now = timezone.now()
    # Queue behind other allocators of this condition (see the module docstring).
    row_lock(model=Condition, pk=condition.pk)
    _expire_lapsed(condition_id=condition.pk, now=now)
    if study.status != Study.Status.OPEN:
        return
    k = study.k_per_item
    live = Assignment.objects.filter(condition=condition, is_attention_check=False).exclude(
        status=Assignment.Status.EXPIRED).order_by()
    # Places taken per item, counted by the database: a live test trial holds one slot of its item (a constraint),
    # so this is each item's number of used slots, read as one row per item rather than one per trial.
    fill = dict(live.values("item_id").annotate(n=Count("id")).values_list("item_id", "n"))
    rng = random.Random(f"{participant.seed}:{condition.shots}")
    choice = items_choose(
        candidates=study_frozen(study=study).item_ids,  # frozen once open: cached per process
        fill=fill,
        seen=_items_seen(participant=participant, condition=condition), k=k, n=study.items_per_participant, rng=rng,
    )
    # Which slots are used, only for the items chosen: the batch takes its slots there (spares are claimed slot by
    # slot if ever needed; a collision moves a claim on to the next slot).
    used_slots: dict[int, set[int]] = {}
    for item_id, slot in live.filter(item_id__in=choice.chosen).values_list("item_id", "slot"):
        used_slots.setdefault(item_id, set()).add(slot)
    n_test = len(choice.chosen)
    minimum = checks_minimum_per_part(study=study)
    check_items = _attention_check_items(participant=participant, n=_check_count(n_test, study, rng, minimum=minimum),
                                         rng=rng)
    kinds = [True] * len(check_items) + [False] * n_test
    rng.shuffle(kinds)
    expires_at = now + timedelta(minutes=study.reservation_minutes)
    # Usually no slot we counted as free is taken meanwhile (allocators of the condition queue on its row), so
    # the whole batch goes in as one insert. If one was (a late answer took its expired trial back), nothing of
    # the insert remains and the batch is claimed item by item below, each claim trying the next slot.
    batch = _batch_plan(kinds=kinds, check_items=check_items, tests=choice.chosen, used_slots=used_slots, k=k)
    try:
        with transaction.atomic():
            Assignment.objects.bulk_create([
                Assignment(participant=participant, condition=condition, item_id=item_id, position=position, slot=slot,
                           is_attention_check=slot is None, expires_at=expires_at)
                for position, (item_id, slot) in enumerate(batch)
            ])
        return
    except IntegrityError:
        pass
    checks, tests, spares = iter(check_items), iter(choice.chosen), iter(choice.spares)
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
            if _claim_slot(participant=participant, condition=condition, item_id=item_id, position=position,
                           used=used_slots.setdefault(item_id, set()), k=k, expires_at=expires_at):
                position += 1
                break


def _batch_plan(*, kinds: list[bool], check_items: list[int], tests: list[int], used_slots: dict[int, set[int]],
                k: int) -> list[tuple[int, int | None]]:
    """(item, slot) per position, as the item-by-item claims would make them if nobody else claimed meanwhile:
    a check holds no slot; a test item takes its first free slot. There is one: items_choose() chose items with
    fewer than k live trials, and each live trial holds one slot."""
    checks, chosen = iter(check_items), iter(tests)
    plan: list[tuple[int, int | None]] = []
    for is_check in kinds:
        if is_check:
            plan.append((next(checks), None))
        else:
            item_id = next(chosen)
            used = used_slots.get(item_id, set())
            plan.append((item_id, next(s for s in range(k) if s not in used)))
    return plan


def _items_seen(*, participant: Participant, condition: Condition) -> set[int]:
    """Items the participant must not get in this part: those of their earlier parts, unless the study lets items
    repeat across parts. (The part itself has none yet: it is allocated once, when entered.) Every status counts:
    a trial that expired may well have been looked at."""
    if condition.study.repeat_items_across_parts:
        return set()
    return set(participant.assignments.filter(is_attention_check=False).values_list("item_id", flat=True))


def _expire_lapsed(*, condition_id: int, now: datetime, item_id: int | None = None) -> None:
    """Mark the condition's (or one item's) lapsed reservations expired: their slots become free."""
    lapsed = Assignment.objects.filter(
        condition_id=condition_id, is_attention_check=False, status=Assignment.Status.RESERVED, expires_at__lt=now
    )
    if item_id is not None:
        lapsed = lapsed.filter(item_id=item_id)
    lapsed.update(status=Assignment.Status.EXPIRED)


def _claim_slot(
    *, participant: Participant, condition: Condition, item_id: int, position: int, used: set[int], k: int, expires_at
) -> bool:
    """Reserve the first free slot of the item for the participant; False when all k are taken."""
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


def _check_count(n_test: int, study: Study, rng: random.Random, *, minimum: int) -> int:
    """Checks such that they make up attention_check_rate of the phase's trials, rounded at random
    so that the expected share is exact even for short phases; at least `minimum` (a long study)."""
    rate = study.attention_check_rate
    if n_test == 0 or rate <= 0:
        return 0
    wanted = n_test * rate / (1 - rate)
    # The random draw is made whatever the minimum, so that a participant's later draws do not depend on it.
    drawn = int(wanted) + (rng.random() < wanted - int(wanted))
    return max(drawn, minimum)


def study_parts(*, study: Study) -> int:
    """How many parts each participant takes: one between subjects, every condition within."""
    return 1 if study.design == Study.Design.BETWEEN else len(study_frozen(study=study).conditions)


def checks_minimum_per_part(*, study: Study) -> int:
    """A study with attention checks whose trials take longer than LONG_STUDY_SECONDS (estimated) gives every
    participant at least MIN_CHECKS_IN_A_LONG_STUDY checks, spread over the parts; 0 otherwise."""
    if study.attention_check_rate <= 0:
        return 0
    parts = study_parts(study=study)
    per_part = study.items_per_participant / (1 - study.attention_check_rate)
    if parts * per_part * SECONDS_PER_TRIAL_ESTIMATE <= LONG_STUDY_SECONDS:
        return 0
    return -(-MIN_CHECKS_IN_A_LONG_STUDY // max(parts, 1))


def _attention_check_items(*, participant: Participant, n: int, rng: random.Random) -> list[int]:
    """Known-answer items: from the study's shot split, never a shot example nor a practice image (whose labels
    the participant may have been shown), never twice per participant."""
    if n == 0:
        return []
    study = participant.study
    pool = list(
        Item.objects.filter(dataset_id=study.dataset_id, split=study.shot_split)
        .exclude(id__in=ShotExample.objects.filter(condition__study=study).values("item_id"))
        .exclude(id__in=practice_item_ids(study=study))
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


def _reclaim(*, assignment: Assignment, to_status: str) -> bool:
    """Take an expired trial back, as `to_status` (reserved again, or answered), if its item has a free slot
    again (its old one preferred); lapsed reservations of the item are freed first."""
    if assignment.is_attention_check:
        # Checks hold no slot and never expire; nothing to take back.
        return assignment.status != Assignment.Status.EXPIRED
    study = assignment.condition.study
    now = timezone.now()
    _expire_lapsed(condition_id=assignment.condition_id, item_id=assignment.item_id, now=now)
    used = set(
        Assignment.objects.filter(condition_id=assignment.condition_id, item_id=assignment.item_id, slot__isnull=False)
        .exclude(status=Assignment.Status.EXPIRED)
        .values_list("slot", flat=True)
    )
    free = [s for s in range(study.k_per_item) if s not in used]
    free.sort(key=lambda s: s != assignment.slot)
    expires_at = now + timedelta(minutes=study.reservation_minutes)
    for slot in free:
        try:
            with transaction.atomic():
                won = Assignment.objects.filter(pk=assignment.pk, status=Assignment.Status.EXPIRED).update(
                    status=to_status, slot=slot, expires_at=expires_at
                )
        except IntegrityError:
            continue
        assignment.refresh_from_db(fields=["status", "slot", "expires_at"])
        # won == 0: another request of this participant re-claimed it first.
        return won == 1 or assignment.status != Assignment.Status.EXPIRED
    return False


def condition_for_new_participant(*, study: Study) -> Condition | None:
    """Between subjects: the condition with the least demand among those with a free place.

    Places taken = answers + live reservations (lapsed ones are free). A condition is full when its places
    taken reach items × k. Demand = places taken + items_per_participant for each fresh joiner of the
    condition: someone who joined within reservation_minutes and has not started yet holds a batch to be,
    and, like a reservation, that claim lapses. People who walked away count for nothing. Equal demand
    goes by an order seeded with the study's seed.
    """
    if study.design != Study.Design.BETWEEN:
        return None
    # Lock the study row so that concurrent joins see each other's choice and stay balanced.
    row_lock(model=Study, pk=study.pk)
    now = timezone.now()
    # Places taken and fresh joiners in ONE statement: one snapshot. As two queries (each its own snapshot under
    # READ COMMITTED), a participant whose first part was allocated between them counted in neither (no longer
    # fresh, reservations not yet seen), and joins arriving together drifted out of balance.
    taken = Subquery(
        Assignment.objects.filter(condition=OuterRef("pk"), is_attention_check=False)
        .filter(Q(status=Assignment.Status.ANSWERED) | Q(status=Assignment.Status.RESERVED, expires_at__gte=now))
        .order_by().values("condition").annotate(n=Count("id")).values("n")
    )
    fresh = Subquery(
        Participant.objects.filter(
            condition=OuterRef("pk"), consent=Participant.Consent.GIVEN, phases_entered=0,
            created_at__gte=now - timedelta(minutes=study.reservation_minutes),
        ).order_by().values("condition").annotate(n=Count("id")).values("n")
    )
    conditions = list(study.conditions.order_by("shots").annotate(taken=Coalesce(taken, 0), fresh=Coalesce(fresh, 0)))
    tie_order = random.Random(f"conditions:{study.seed}").sample(conditions, len(conditions))
    capacity = study.study_items.count() * study.k_per_item

    def rank(condition: Condition) -> tuple[bool, int]:
        return condition.taken >= capacity, condition.taken + study.items_per_participant * condition.fresh

    # min() keeps the first of equals, so ties go by the seeded order.
    return min(tie_order, key=rank)
