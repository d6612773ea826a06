"""A participant's way through the parts: entering a part (which allocates it), showing a trial, completing.

Parts (conditions in shot order: zero → one → two) are entered at most once each, guarded by a
compare-and-set on Participant.phases_entered, so a part's batch is allocated once even when two
tabs ask at once. Only POSTs come here (leaving the instructions, continuing, answering): pages
fetched with GET ask studyapp.selectors.participants.participant_route, which never writes.
"""

from django.db import transaction
from django.utils import timezone

from studyapp.models import Assignment, Condition, Participant, Response
from studyapp.selectors.hot_reads import participant_open_trials
from studyapp.selectors.participants import (
    NextStep,
    Step,
    participant_conditions,
    participant_current_condition_id,
    participant_settled_step,
)
from studyapp.services.participants.allocation import _allocate, _reclaim


def participant_start(*, participant: Participant) -> NextStep:
    """Leave the instructions (or a "continue" page): allocate the next part if due and go to its first trial."""
    return participant_allocate_next_step(participant=participant, start=True)


def participant_allocate_next_step(*, participant: Participant, start: bool = False) -> NextStep:
    """Where the participant goes after a POST: their next trial, or completion once nothing is left.

    May write: enters (allocates) the next part when the current one is finished, takes back a timed-out
    trial whose slot is free again, and marks the participant complete (flagging a failed attention
    check) when every part is. A participant who got no trial at all is sent to the "study full" page
    instead, without a completion code.
    """
    settled = participant_settled_step(participant=participant)
    if settled is not None:
        return settled
    if participant.phases_entered == 0 and not start:
        return NextStep(Step.INSTRUCTIONS)
    assignment = assignment_next(participant=participant)
    if assignment is not None:
        return NextStep(Step.TRIAL, assignment)
    if not participant.assignments.filter(status=Assignment.Status.ANSWERED).exists():
        return NextStep(Step.FULL)
    participant_complete(participant=participant)
    return NextStep(Step.COMPLETE)


def participant_step_after_answer(*, assignment: Assignment, following: Assignment | None) -> NextStep:
    """Where the participant goes after answering `assignment`: what participant_allocate_next_step says, found
    without a query in the usual case.

    `assignment` and `following` are as read before the answer, in one statement
    (studyapp.selectors.hot_reads.participant_trial_following_get): the trial with its participant and study,
    and the participant's first other unanswered trial of its part. Usually the answer was given in the
    participant's current part and that next trial is reserved: it is the next step, as
    participant_allocate_next_step would find it (the part's first unanswered trial, when reserved). Anything
    else (no trial left, i.e. the part's end; a lapsed trial to take back; an answer in an earlier part; a
    participant who finished or left) goes the full way, which may allocate. If another tab answered that next
    trial meanwhile, its page sends the participant on.
    """
    participant = assignment.participant
    if (following is not None and following.status == Assignment.Status.RESERVED
            and participant_settled_step(participant=participant) is None
            and participant_current_condition_id(participant=participant) == assignment.condition_id):
        return NextStep(Step.TRIAL, following)
    return participant_allocate_next_step(participant=participant)


def assignment_next(*, participant: Participant) -> Assignment | None:
    """The next unanswered trial of the current part, entering later parts as needed; None when done."""
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
    for assignment in participant_open_trials(participant=participant, condition=condition):
        if assignment.status == Assignment.Status.RESERVED:
            return assignment
        # Expired: take it back if its item has a slot free again (rare: the full row is read for it).
        expired = Assignment.objects.get(pk=assignment.pk)
        expired.participant, expired.condition = participant, condition
        if _reclaim(assignment=expired, to_status=Assignment.Status.RESERVED):
            return expired
    return None


def _phase_enter(*, participant: Participant, index: int, condition: Condition) -> None:
    with transaction.atomic():
        won = Participant.objects.filter(pk=participant.pk, phases_entered=index).update(phases_entered=index + 1)
        if won:
            _allocate(participant=participant, condition=condition)


def assignment_show(*, assignment: Assignment) -> Assignment | None:
    """Prepare one of the participant's own trials for display: take it back if its reservation expired
    (and its slot is free again), note when it was first shown (for the server-side response time).

    None: the trial cannot be shown (already answered, or its item was given to someone else).
    """
    if assignment.status == Assignment.Status.ANSWERED:
        return None
    if assignment.status == Assignment.Status.EXPIRED and not _reclaim(
        assignment=assignment, to_status=Assignment.Status.RESERVED
    ):
        return None
    if assignment.shown_at is None:
        now = timezone.now()
        if Assignment.objects.filter(pk=assignment.pk, shown_at__isnull=True).update(shown_at=now):
            assignment.shown_at = now
        else:  # another tab showed it a moment ago: that time counts
            assignment.refresh_from_db(fields=["shown_at"])
    return assignment


def participant_withdraw(*, participant: Participant) -> bool:
    """The participant stops and leaves (or the researcher marks them returned): their live reservations are
    freed at once, so the places go to others now rather than when the reservations would lapse; what they
    answered stays. Finished participants are left as they are. True if this call withdrew them."""
    with transaction.atomic():
        won = Participant.objects.filter(
            pk=participant.pk, withdrawn_at__isnull=True, completed_at__isnull=True
        ).update(withdrawn_at=timezone.now())
        if won:
            # Expired frees the slot under assignment_live_slot_unique. An answer racing this waits on the
            # row lock: it either lands first (and is kept) or finds the trial expired and is refused.
            participant.assignments.filter(status=Assignment.Status.RESERVED).update(status=Assignment.Status.EXPIRED)
    participant.refresh_from_db(fields=["withdrawn_at", "completed_at"])
    return bool(won)


def participants_mark_returned(*, study, external_ids: list[str]) -> dict[str, list[str]]:
    """The researcher pastes or uploads ids of people who returned the study on the recruiting site (e.g.
    Prolific's "returned" list): each is withdrawn as if they had pressed "Stop and leave". Returns the ids by
    outcome: withdrawn, already (withdrawn or finished before), unknown (no participant with that id)."""
    outcome: dict[str, list[str]] = {"withdrawn": [], "already": [], "unknown": []}
    wanted = list(dict.fromkeys(i for i in external_ids if i))
    found = {p.external_id: p for p in Participant.objects.filter(study=study, external_id__in=wanted)}
    for external_id in wanted:
        participant = found.get(external_id)
        if participant is None:
            outcome["unknown"].append(external_id)
        elif participant_withdraw(participant=participant):
            outcome["withdrawn"].append(external_id)
        else:
            outcome["already"].append(external_id)
    return outcome


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
