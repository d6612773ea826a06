"""The reads behind nearly every participant request, each one hand-written SQL statement.

Why not the ORM here: building the SQL of a query with joins costs Django about 0.3-0.5 ms of Python per
request, running it on SQLite or PostgreSQL 0.03-0.1 ms (profiled: docs/load.md), and an image request does
little else. Each statement is written once from the models' own table and column names, takes its
parameters prepared by the model fields as the ORM would, and its rows come back as ordinary model
instances (Model.from_db with the backend's converters, as the ORM does). Every statement runs in the test
suite on SQLite and on PostgreSQL.

The owner check is in the statement: a trial or image is found only through the participant named by the
signed cookie, in the study named by the URL. Anything else is None, whoever owns it: it must look like
nothing at all.
"""

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

from django.db import DEFAULT_DB_ALIAS, connections, models

from studyapp.models import Assignment, Condition, Item, Participant, Study


class _Table:
    """One model's concrete columns in a SELECT under an alias, and the instances built back from them."""

    def __init__(self, model: type[models.Model], alias: str, only: tuple[str, ...] = ()):
        self.model = model
        self.alias = alias
        # `only`: these fields (in the model's order); the others load on first use, one query each.
        self.fields = [f for f in model._meta.concrete_fields if not only or f.attname in only]
        self.attnames = [f.attname for f in self.fields]
        self._converters: dict[str, list] = {}

    @property
    def table(self) -> str:
        return self.model._meta.db_table

    def columns(self, connection) -> str:
        quote = connection.ops.quote_name
        return ", ".join(f"{self.alias}.{quote(f.column)}" for f in self.fields)

    def build(self, values, connection) -> models.Model:
        converters = self._converters.get(connection.vendor)
        if converters is None:
            converters = []
            for f in self.fields:
                column = f.get_col(self.alias)
                converters.append((connection.ops.get_db_converters(column) + column.get_db_converters(connection),
                                   column))
            self._converters[connection.vendor] = converters
        row = []
        for value, (convs, column) in zip(values, converters, strict=True):
            for convert in convs:
                value = convert(value, column, connection)
            row.append(value)
        return self.model.from_db(connection.alias, self.attnames, row)

    def __len__(self) -> int:
        return len(self.fields)


def _uuid(model: type[models.Model], name: str, value: uuid.UUID, connection):
    """A UUID as the column stores it (native on PostgreSQL, 32 hex digits on SQLite)."""
    return model._meta.get_field(name).get_db_prep_value(value, connection, prepared=False)


def _partial(model: type[models.Model], connection, **values) -> models.Model:
    """An instance holding only these fields (attnames); the others load on first use. from_db takes the
    values in the model's field order."""
    names = [f.attname for f in model._meta.concrete_fields if f.attname in values]
    return model.from_db(connection.alias, names, [values[name] for name in names])


def as_uuid(value) -> uuid.UUID | None:
    try:
        return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))
    except (ValueError, TypeError, AttributeError):
        return None


# The trial page needs of its item only the photo's size: its file name, content hash and label stay in the database.
_A, _P, _S, _C, _I = (_Table(Assignment, "a"), _Table(Participant, "p"), _Table(Study, "s"), _Table(Condition, "c"),
                      _Table(Item, "i", only=("id", "width", "height")))
_sql: dict[tuple[str, str], str] = {}  # (statement, vendor) -> SQL


def _statement(name: str, connection) -> str:
    key = (name, connection.vendor)
    if key not in _sql:
        q = connection.ops.quote_name
        owner = (f"FROM {q(_A.table)} a JOIN {q(_P.table)} p ON p.{q('id')} = a.{q('participant_id')} "
                 f"JOIN {q(_S.table)} s ON s.{q('id')} = p.{q('study_id')} ")
        where_owner = f"WHERE a.{q('code')} = %s AND p.{q('code')} = %s AND s.{q('code')} = %s"
        trial_columns = (f"{_A.columns(connection)}, {_P.columns(connection)}, {_S.columns(connection)}, "
                         f"{_C.columns(connection)}, {_I.columns(connection)}")
        trial_from = (owner + f"JOIN {q(_C.table)} c ON c.{q('id')} = a.{q('condition_id')} "
                      f"JOIN {q(_I.table)} i ON i.{q('id')} = a.{q('item_id')} ")
        # The participant's first other unanswered trial of the same part (by position: an index scan of
        # assignment_position_unique), if there is one.
        following = (f"LEFT JOIN {q(_A.table)} n ON n.{q('id')} = (SELECT o.{q('id')} FROM {q(_A.table)} o "
                     f"WHERE o.{q('participant_id')} = a.{q('participant_id')} AND o.{q('condition_id')} = "
                     f"a.{q('condition_id')} AND o.{q('status')} <> %s AND o.{q('id')} <> a.{q('id')} "
                     f"ORDER BY o.{q('position')} LIMIT 1) ")
        _sql[key] = {
            "trial": f"SELECT {trial_columns} {trial_from}{where_owner}",
            "trial_following": (f"SELECT {trial_columns}, n.{q('id')}, n.{q('code')}, n.{q('status')}, "
                                f"n.{q('position')} {trial_from}{following}{where_owner}"),
            "trial_image": (f"SELECT i.{q('image')} " + owner + f"JOIN {q(_I.table)} i ON i.{q('id')} = a.{q('item_id')} "
                            + where_owner + f" AND p.{q('withdrawn_at')} IS NULL"),
            "trials": (f"SELECT {q('condition_id')}, {q('status')}, {q('position')}, {q('code')} FROM {q(_A.table)} "
                       f"WHERE {q('participant_id')} = %s AND {q('status')} <> %s"),
            "open_trials": (f"SELECT {q('id')}, {q('code')}, {q('status')}, {q('position')} FROM {q(_A.table)} "
                            f"WHERE {q('participant_id')} = %s AND {q('condition_id')} = %s AND {q('status')} <> %s "
                            f"ORDER BY {q('position')}"),
            "viewer": (f"SELECT p.{q('study_id')}, p.{q('consent')}, s.{q('design')}, p.{q('condition_id')}, "
                       f"p.{q('phases_entered')} FROM {q(_P.table)} p JOIN {q(_S.table)} s ON s.{q('id')} = "
                       f"p.{q('study_id')} WHERE p.{q('code')} = %s AND s.{q('code')} = %s AND "
                       f"p.{q('withdrawn_at')} IS NULL"),
        }[name]
    return _sql[key]


def _connection(connection):
    """The calling thread's connection itself rather than django.db.connection: that proxy looks the connection
    up in thread-local storage on every attribute read, and one of these reads makes dozens (measured: a fifth of
    the trial read's time)."""
    return connection if connection is not None else connections[DEFAULT_DB_ALIAS]


def _owner_params(*, study_code, participant_code, code, connection) -> list | None:
    study_code, participant_code, code = as_uuid(study_code), as_uuid(participant_code), as_uuid(code)
    if study_code is None or participant_code is None or code is None:
        return None
    return [_uuid(Assignment, "code", code, connection), _uuid(Participant, "code", participant_code, connection),
            _uuid(Study, "code", study_code, connection)]


def _run(name: str, params: list, connection, *, one: bool):
    """Run a statement of _statement's; its first row (None when there is none), or all of them."""
    with connection.cursor() as cursor:
        cursor.execute(_statement(name, connection), params)
        return cursor.fetchone() if one else cursor.fetchall()


def participant_trial_get(*, study_code, participant_code, code, connection=None) -> Assignment | None:
    """The asker's own trial with its participant, study, condition and item (one statement), else None.
    Withdrawn participants are found too: the page sends them to the "you left" page."""
    connection = _connection(connection)
    params = _owner_params(study_code=study_code, participant_code=participant_code, code=code, connection=connection)
    if params is None:
        return None
    row = _run("trial", params, connection, one=True)
    return None if row is None else _trial_build(row, connection)


def participant_trial_following_get(*, study_code, participant_code, code,
                                    connection=None) -> tuple[Assignment, Assignment | None] | None:
    """participant_trial_get's trial (the same owner check), and, read in the same statement, the participant's
    first other unanswered trial of its part in the order shown, or None: where an answer to it sends them next,
    usually (studyapp.services.participants.flow.participant_step_after_answer). The second holds only id, code,
    status and position, like participant_open_trials' trials."""
    connection = _connection(connection)
    params = _owner_params(study_code=study_code, participant_code=participant_code, code=code, connection=connection)
    if params is None:
        return None
    row = _run("trial_following", [Assignment.Status.ANSWERED, *params], connection, one=True)
    if row is None:
        return None
    trial = _trial_build(row[:-4], connection)
    pk, following_code, status, position = row[-4:]
    if pk is None:
        return trial, None
    following = _partial(Assignment, connection, id=pk, participant_id=trial.participant_id,
                         condition_id=trial.condition_id, code=as_uuid(following_code), status=status, position=position)
    following.participant, following.condition = trial.participant, trial.condition
    return trial, following


def _trial_build(row, connection) -> Assignment:
    cut = [0]
    for table in (_A, _P, _S, _C):
        cut.append(cut[-1] + len(table))
    assignment = _A.build(row[:cut[1]], connection)
    participant = _P.build(row[cut[1]:cut[2]], connection)
    study = _S.build(row[cut[2]:cut[3]], connection)
    condition = _C.build(row[cut[3]:cut[4]], connection)
    item = _I.build(row[cut[4]:], connection)
    participant.study = condition.study = study
    assignment.participant, assignment.condition, assignment.item = participant, condition, item
    return assignment


def trial_image_path(*, study_code, participant_code, code, connection=None) -> str | None:
    """The stored image of the asker's own trial; None for anyone else's (it must look like no trial at all),
    and for a participant who left."""
    connection = _connection(connection)
    params = _owner_params(study_code=study_code, participant_code=participant_code, code=code, connection=connection)
    if params is None:
        return None
    row = _run("trial_image", params, connection, one=True)
    return row[0] if row else None


@dataclass(frozen=True)
class ImageViewer:
    """Who is asking for an example image, as they are now (read for every image: a participant moves on)."""

    study_id: int
    consent_given: bool
    between: bool
    condition_id: int | None
    phases_entered: int


def image_viewer_get(*, study_code, code, connection=None) -> ImageViewer | None:
    """The participant with that code in the study with that public code, as they are now; None for a stranger
    or someone who left (no more images)."""
    connection = _connection(connection)
    study_code, participant_code = as_uuid(study_code), as_uuid(code)
    if study_code is None or participant_code is None:
        return None
    row = _run("viewer", [_uuid(Participant, "code", participant_code, connection),
                          _uuid(Study, "code", study_code, connection)], connection, one=True)
    if row is None:
        return None
    study_id, consent, design, condition_id, phases_entered = row
    return ImageViewer(study_id=study_id, consent_given=consent == Participant.Consent.GIVEN,
                       between=design == Study.Design.BETWEEN, condition_id=condition_id,
                       phases_entered=phases_entered)


def participant_trials_brief(*, participant_id: int, connection=None) -> list[tuple]:
    """(condition id, status, position, code) of each of the participant's trials that did not expire unclaimed:
    the trial page's progress and the next trial, whose photo it prefetches. The code as the database returns
    it (a UUID, or its hex on SQLite): as_uuid() the one you need."""
    connection = _connection(connection)
    return _run("trials", [participant_id, Assignment.Status.EXPIRED], connection, one=False)


def participant_open_trials(*, participant: Participant, condition: Condition,
                            connection=None) -> Iterator[Assignment]:
    """The participant's unanswered trials of a part in the order shown, as instances holding only id, code,
    status and position (the rest loads on first use, one query): the next trial's redirect needs its code."""
    connection = _connection(connection)
    rows = _run("open_trials", [participant.pk, condition.pk, Assignment.Status.ANSWERED], connection, one=False)
    for pk, code, status, position in rows:  # built as the caller goes: it usually stops at the first
        trial = _partial(Assignment, connection, id=pk, participant_id=participant.pk, condition_id=condition.pk,
                         code=as_uuid(code), status=status, position=position)
        trial.participant, trial.condition = participant, condition
        yield trial
