"""Answers: recorded exactly once, and only as one of the values the trial page offered."""

import re
from dataclasses import dataclass

from django.db import IntegrityError, transaction
from django.utils import timezone

from studyapp.models import IDK, Assignment, ClassLabel, Participant, Response, Study
from studyapp.services.participants.allocation import _reclaim

_MAX_RT_MS = 2**31 - 1  # PositiveIntegerField's portable upper bound
# The trial page offers str(index) for each class: ASCII digits, no sign, no leading zero, no spaces.
# int() alone would also read "٣", "３", "+3", "03" and " 3" as class 3.
_CLASS_VALUE = re.compile(r"0|[1-9][0-9]{0,8}")


class InvalidChoice(ValueError):
    pass


@dataclass(frozen=True)
class SubmitOutcome:
    response: Response | None
    created: bool = False
    refused: bool = False  # the reservation expired and its item has no free slot any more


@dataclass(frozen=True)
class ClientTimings:
    """What the trial page measured (milliseconds; None where the browser sent nothing usable): see Response."""

    rt_client_ms: int | None = None
    images_ready_ms: int | None = None
    clock_start_ms: int | None = None
    blur_count: int | None = None
    hidden_ms: int | None = None


def response_submit(*, assignment: Assignment, choice: str, rt_client_ms: int | None = None,
                    timings: ClientTimings | None = None) -> SubmitOutcome:
    """Record the answer to a trial, exactly once.

    Idempotent: a repeated submission (double click, reload, retry) returns the stored response
    unchanged, whatever it says. `choice` is exactly what the page offered: a class index of the study's
    dataset written as the page writes it, or "idk". A participant who has left (withdrawn) answers nothing.
    """
    timings = timings or ClientTimings(rt_client_ms=rt_client_ms)
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
            # Withdrawing expires every reservation: such a trial is not taken back (checked only here, so an
            # ordinary answer costs no query more).
            if Participant.objects.filter(pk=locked.participant_id, withdrawn_at__isnull=False).exists():
                return SubmitOutcome(None, refused=True)
            if not _reclaim(assignment=locked, to_status=Assignment.Status.ANSWERED):
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
                    rt_client_ms=_clamp(timings.rt_client_ms), rt_server_ms=rt_server_ms,
                    images_ready_ms=_clamp(timings.images_ready_ms), clock_start_ms=_clamp(timings.clock_start_ms),
                    blur_count=_clamp(timings.blur_count), hidden_ms=_clamp(timings.hidden_ms),
                )
        except IntegrityError:
            return SubmitOutcome(Response.objects.get(assignment=locked))
    return SubmitOutcome(response, created=True)


def _clamp(value: int | None) -> int | None:
    return None if value is None else min(_MAX_RT_MS, max(0, value))


def _parse_choice(*, study: Study, choice: str) -> ClassLabel | None:
    if choice == IDK:
        if not study.allow_idk:
            raise InvalidChoice("this study has no \"I don't know\" option")
        return None
    if not _CLASS_VALUE.fullmatch(choice):
        raise InvalidChoice(f"not a class of this study: {choice!r}")
    try:
        return ClassLabel.objects.get(dataset_id=study.dataset_id, index=int(choice))
    except ClassLabel.DoesNotExist:
        raise InvalidChoice(f"not a class of this study: {choice!r}") from None
