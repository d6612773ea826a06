"""Answers: recorded exactly once, and only as one of the values the trial page offered."""

from dataclasses import dataclass

from django.db import DEFAULT_DB_ALIAS, IntegrityError, connections, transaction
from django.utils import timezone

from studyapp.models import IDK, Assignment, Participant, Response, Study
from studyapp.selectors.study_cache import study_frozen
from studyapp.services.participants.allocation import _reclaim

_MAX_RT_MS = 2**31 - 1  # PositiveIntegerField's portable upper bound


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

    `assignment` needs its condition's study loaded (the trial page's read has it); its shown_at is read once
    and never changes afterwards (set at most once, studyapp.services.participants.flow.assignment_show).
    """
    timings = timings or ClientTimings(rt_client_ms=rt_client_ms)
    try:
        label_id = _parse_choice(study=assignment.condition.study, choice=choice)
    except InvalidChoice:
        # A repeat of an answered trial returns the stored answer whatever it says, garbled or not.
        existing = Response.objects.filter(assignment_id=assignment.pk).first()
        if existing is not None:
            return SubmitOutcome(existing)
        raise
    now = timezone.now()
    rt_server_ms = None
    if assignment.shown_at is not None:
        rt_server_ms = min(_MAX_RT_MS, max(0, int((now - assignment.shown_at).total_seconds() * 1000)))
    response = Response(
        assignment_id=assignment.pk, choice_id=label_id, is_idk=label_id is None,
        rt_client_ms=_clamp(timings.rt_client_ms), rt_server_ms=rt_server_ms,
        images_ready_ms=_clamp(timings.images_ready_ms), clock_start_ms=_clamp(timings.clock_start_ms),
        blur_count=_clamp(timings.blur_count), hidden_ms=_clamp(timings.hidden_ms), created_at=now,
    )
    try:
        with transaction.atomic():
            # Claim the trial with a conditional update: the usual case is one statement. It takes the row's
            # lock, so a concurrent duplicate (double click, retry) waits here until this transaction ends,
            # then finds the trial answered and returns the stored response below.
            if not _claim(assignment_id=assignment.pk):
                refused = _claim_otherwise(assignment=assignment)
                if isinstance(refused, SubmitOutcome):
                    return refused
            _insert(response)
    except IntegrityError:
        # One response per trial is a constraint: whoever lost a race the lock did not order (none is known)
        # finds the stored answer. The whole transaction rolled back, so nothing of this attempt remains.
        return SubmitOutcome(Response.objects.get(assignment_id=assignment.pk))
    return SubmitOutcome(response, created=True)


# The answer's two writes, as SQL written once per database from the models' table and column names, for the
# reason the hot reads are (studyapp/selectors/hot_reads.py): building them with the ORM cost four times more
# than running them (docs/load.md), and on SQLite that time was spent holding the database's write lock.
_sql: dict[tuple[str, str], str] = {}
_RESPONSE_FIELDS = [f for f in Response._meta.concrete_fields if not f.primary_key]


def _claim_sql(connection) -> str:
    q = connection.ops.quote_name
    return f"UPDATE {q(Assignment._meta.db_table)} SET {q('status')} = %s WHERE {q('id')} = %s AND {q('status')} = %s"


def _insert_sql(connection) -> str:
    q = connection.ops.quote_name
    columns = ", ".join(q(f.column) for f in _RESPONSE_FIELDS)
    returning = f" RETURNING {q('id')}" if connection.features.can_return_columns_from_insert else ""
    return (f"INSERT INTO {q(Response._meta.db_table)} ({columns}) "
            f"VALUES ({', '.join(['%s'] * len(_RESPONSE_FIELDS))}){returning}")


_BUILD = {"claim": _claim_sql, "insert": _insert_sql}


def _statement(name: str, connection) -> str:
    key = (name, connection.vendor)
    if key not in _sql:
        _sql[key] = _BUILD[name](connection)
    return _sql[key]


def _claim(*, assignment_id: int) -> bool:
    """Reserved → answered, if it still is reserved."""
    connection = connections[DEFAULT_DB_ALIAS]  # not the django.db.connection proxy: a lookup per attribute read
    with connection.cursor() as cursor:
        cursor.execute(_statement("claim", connection),
                       [Assignment.Status.ANSWERED, assignment_id, Assignment.Status.RESERVED])
        return cursor.rowcount == 1


def _insert(response: Response) -> None:
    """Store a new response (its fields prepared by the model's own fields, as Model.save() would)."""
    connection = connections[DEFAULT_DB_ALIAS]
    values = [f.get_db_prep_save(getattr(response, f.attname), connection) for f in _RESPONSE_FIELDS]
    with connection.cursor() as cursor:
        cursor.execute(_statement("insert", connection), values)
        response.pk = cursor.fetchone()[0] if connection.features.can_return_columns_from_insert else cursor.lastrowid
    response._state.adding, response._state.db = False, connection.alias


def _claim_otherwise(*, assignment: Assignment) -> SubmitOutcome | None:
    """The trial was not reserved any more: answered already (the stored response), expired (taken back as
    answered if its item has a free slot, unless its participant left), or taken back meanwhile. None: the
    trial is now this answer's to record."""
    # The row lock makes concurrent duplicates wait here and then find the first one's response.
    # Only this row (of=self): locking the joined study and condition would block joins and allocation.
    locked = (Assignment.objects.select_for_update(no_key=True, of=("self",)).select_related("condition__study")
              .get(pk=assignment.pk))
    existing = Response.objects.filter(assignment=locked).first()
    if existing is not None:
        return SubmitOutcome(existing)
    if locked.status == Assignment.Status.EXPIRED:
        # Withdrawing expires every reservation: such a trial is not taken back.
        if Participant.objects.filter(pk=locked.participant_id, withdrawn_at__isnull=False).exists():
            return SubmitOutcome(None, refused=True)
        if not _reclaim(assignment=locked, to_status=Assignment.Status.ANSWERED):
            return SubmitOutcome(None, refused=True)
    elif locked.status == Assignment.Status.RESERVED:
        # Taken back (expired, then reserved again by a page view) between our update and this read.
        Assignment.objects.filter(pk=locked.pk).update(status=Assignment.Status.ANSWERED)
    return None


def _clamp(value: int | None) -> int | None:
    return None if value is None else min(_MAX_RT_MS, max(0, value))


def _parse_choice(*, study: Study, choice: str) -> int | None:
    """The ClassLabel id of a choice (None: "I don't know"), from the study's frozen classes."""
    if choice == IDK:
        if not study.allow_idk:
            raise InvalidChoice("this study has no \"I don't know\" option")
        return None
    # Looked up as the page wrote it, str(index): int() would also read "٣", "３", "+3", "03" and " 3" as class 3.
    label_id = study_frozen(study=study).label_ids.get(choice)
    if label_id is None:
        raise InvalidChoice(f"not a class of this study: {choice!r}")
    return label_id
