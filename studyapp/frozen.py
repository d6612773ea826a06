"""What an open study freezes, enforced by the database itself.

Once a study leaves draft, what its participants and models see must not change, whatever writes to
the database: instance saves, queryset updates and deletes, bulk_create, raw SQL, the admin. Python
guards only cover the paths someone remembered, so the rules below become triggers, on PostgreSQL and
SQLite alike, created by migrations (`freeze()`). This module is the one place that lists the frozen
columns; docs/testing.md says why each column is frozen or not.

A study goes draft → open → closed, never back: returning to draft would unfreeze it. While it is open
or closed, the database refuses:
- any change to its row's design columns (STUDY_FROZEN_COLUMNS), and deleting it;
- any insert, update or delete of its test items (StudyItem), conditions and shot examples;
- any insert, delete or change of a class (ClassLabel) of its dataset (class names are the answer
  buttons and the model's prompts, shared by every study of the dataset);
- any insert, delete or change of an item it shows: a test item, a shot example, or an attention-check
  item (the dataset's shot split, when the study has attention checks).
Its protocol (StudyProtocol, written in the transaction that opens it) is refused any change or deletion,
ever, and a protocol for a draft study is refused.

Migrations: `freeze()` (re)creates every trigger, `unfreeze()` drops them. SQLite rebuilds a table for
most schema changes, and its rename step fails while a trigger elsewhere names the table, so a
migration that alters one of FROZEN_TABLES reads `[frozen.unfreeze(), ..., frozen.freeze()]`;
tests/studyapp/test_frozen.py checks that every migration does. Adding a Study column to the list is
two lines: the name in STUDY_FROZEN_COLUMNS and a migration `operations = [frozen.unfreeze(),
frozen.freeze()]` (or the freeze() that ends the migration adding the column).
"""

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from django.db import IntegrityError, migrations

from studyapp.models import FrozenStudyError

# The Study columns that decide what participants or models see, or who counts in the results.
STUDY_FROZEN_COLUMNS: tuple[str, ...] = (
    "code",  # the join link and every export name the study by it
    "dataset_id",  # classes and images
    "design",  # between or within subjects
    "k_per_item",  # answers per item and condition
    "items_per_participant",  # trials per person and condition
    "allow_idk",  # whether "I don't know" is a button
    "seed",  # draws the test items, the shots and each participant's order
    "test_split",
    "shot_split",
    "test_items_per_class",
    "attention_check_rate",  # the share of trials that are known-answer checks
    "attention_threshold",  # who is flagged attention-failed, and so left out of reports
    "instructions",  # what participants are told
    "consent_text",  # what participants agreed to
    "participant_id_required",  # who may join, and how one person is kept to one participant
    "repeat_items_across_parts",  # whether a person may see a test image again in a later part
    "language",  # the language of every participant page
    "min_window_width",  # who may take part (smaller windows are turned away before consent)
    "min_window_height",
    "allow_phones",
    "practice_trials",  # what participants do before the first part, and which images they were taught on
)
# The others may change while a study runs; why, per column, is in docs/testing.md.
STUDY_MUTABLE_COLUMNS: tuple[str, ...] = (
    "id", "title", "status", "reservation_minutes", "completion_url", "return_url", "created_at", "opened_at",
)
CLASS_LABEL_FROZEN_COLUMNS: tuple[str, ...] = ("dataset_id", "index", "name", "prompt_name")
# Everything but the admin-only note of where the file came from and the source file's digest (a record
# about the file, filled in later for items imported before it existed; it changes nothing anyone sees).
ITEM_FROZEN_COLUMNS: tuple[str, ...] = (
    "dataset_id", "code", "content_hash", "image", "split", "label_id", "width", "height",
)

STUDY, STUDY_ITEM, CONDITION, SHOT, CLASS_LABEL, ITEM = (
    "studyapp_study", "studyapp_studyitem", "studyapp_condition", "studyapp_shotexample", "studyapp_classlabel",
    "studyapp_item",
)
FROZEN_TABLES: tuple[str, ...] = (STUDY, STUDY_ITEM, CONDITION, SHOT, CLASS_LABEL, ITEM)
# A study's own translations of the class names (the answer cards): frozen like its conditions. Created by a later
# migration than the others, so its rule is made only where the table exists (see `tables` below).
CLASS_NAME = "studyapp_classnametranslation"
# The protocol registered when a study opens: never changed, never deleted. Created by a later migration than
# the others, so its rule is made only where the table exists (see `tables` below).
PROTOCOL = "studyapp_studyprotocol"
# The prefix of every refusal: services and the admin recognise the error by it.
MARK = "frozen study: "
_PG_TRUNCATE = "studyapp_frozen_truncate"  # one statement-level trigger (and function) for all six tables
_PG_ERRCODE = "23000"  # integrity_constraint_violation: Django raises IntegrityError, as SQLite's RAISE(ABORT) does


@dataclass(frozen=True)
class _Rule:
    """One refusal: on `table`, the event (INSERT/UPDATE/DELETE) is refused when its condition holds."""

    name: str
    table: str
    when: dict[str, str]
    message: str


def _study_frozen(study_id: str) -> str:
    return f"EXISTS (SELECT 1 FROM {STUDY} s WHERE s.id = {study_id} AND s.status <> 'draft')"


def _condition_frozen(condition_id: str) -> str:
    return (f"EXISTS (SELECT 1 FROM {CONDITION} c JOIN {STUDY} s ON s.id = c.study_id "
            f"WHERE c.id = {condition_id} AND s.status <> 'draft')")


def _dataset_frozen(dataset_id: str) -> str:
    return f"EXISTS (SELECT 1 FROM {STUDY} s WHERE s.dataset_id = {dataset_id} AND s.status <> 'draft')"


def _item_shown(item_id: str) -> str:
    return (f"(EXISTS (SELECT 1 FROM {STUDY_ITEM} si JOIN {STUDY} s ON s.id = si.study_id "
            f"WHERE si.item_id = {item_id} AND s.status <> 'draft') "
            f"OR EXISTS (SELECT 1 FROM {SHOT} se JOIN {CONDITION} c ON c.id = se.condition_id "
            f"JOIN {STUDY} s ON s.id = c.study_id WHERE se.item_id = {item_id} AND s.status <> 'draft'))")


def _check_pool(row: str, practice: bool) -> str:
    # Attention checks (and practice images) are drawn, while the study runs, from its dataset's shot split.
    drawn = "(s.attention_check_rate > 0 OR s.practice_trials > 0)" if practice else "s.attention_check_rate > 0"
    return (f"EXISTS (SELECT 1 FROM {STUDY} s WHERE s.dataset_id = {row}.dataset_id AND s.shot_split = {row}.split "
            f"AND {drawn} AND s.status <> 'draft')")


def _changed(columns: Iterable[str], vendor: str) -> str:
    differ = "IS DISTINCT FROM" if vendor == "postgresql" else "IS NOT"
    if not columns:
        return "(1 = 0)"
    return "(" + " OR ".join(f'OLD."{c}" {differ} NEW."{c}"' for c in columns) + ")"


def _on_children(name: str, table: str, parent_frozen, parent_column: str, what: str) -> _Rule:
    return _Rule(name, table, {
        "INSERT": parent_frozen(f"NEW.{parent_column}"),
        "UPDATE": f"({parent_frozen(f'OLD.{parent_column}')} OR {parent_frozen(f'NEW.{parent_column}')})",
        "DELETE": parent_frozen(f"OLD.{parent_column}"),
    }, f"{MARK}{what} of an open or closed study cannot change")


def _rules(vendor: str, *, study_columns: Sequence[str], class_columns: Sequence[str],
           item_columns: Sequence[str], tables: Iterable[str] | None = None) -> list[_Rule]:
    """Every rule; with `tables` (those that exist), only the rules whose tables exist."""
    practice = "practice_trials" in study_columns

    def _pool(row: str) -> str:
        return _check_pool(row, practice)

    rules = [
        _Rule("studyapp_frozen_study_born_draft", STUDY, {"INSERT": "NEW.status <> 'draft'"},
              f"{MARK}a study is created as a draft and opened by study_open"),
        _Rule("studyapp_frozen_study_status", STUDY, {
            "UPDATE": "((OLD.status <> 'draft' AND NEW.status = 'draft') OR (OLD.status = 'closed' AND NEW.status <> 'closed'))",
        }, f"{MARK}a study goes draft, open, closed and never back (back to draft would unfreeze it)"),
        _Rule("studyapp_frozen_study_delete", STUDY, {"DELETE": "OLD.status <> 'draft'"},
              f"{MARK}an open or closed study cannot be deleted; its answers are the study's record"),
        _on_children("studyapp_frozen_studyitem", STUDY_ITEM, _study_frozen, "study_id", "the test items"),
        _on_children("studyapp_frozen_condition", CONDITION, _study_frozen, "study_id", "the conditions"),
        _on_children("studyapp_frozen_shotexample", SHOT, _condition_frozen, "condition_id", "the shot examples"),
        _Rule("studyapp_frozen_classlabel", CLASS_LABEL, {
            "INSERT": _dataset_frozen("NEW.dataset_id"),
            "UPDATE": f"({_dataset_frozen('OLD.dataset_id')} OR {_dataset_frozen('NEW.dataset_id')}) "
                      f"AND {_changed(class_columns, vendor)}",
            "DELETE": _dataset_frozen("OLD.dataset_id"),
        }, f"{MARK}the classes ({', '.join(class_columns)}) of a dataset used by an open or closed study cannot change"),
        _Rule("studyapp_frozen_item", ITEM, {
            "INSERT": _pool("NEW"),
            "UPDATE": f"({_item_shown('OLD.id')} OR {_pool('OLD')} OR {_pool('NEW')}) "
                      f"AND {_changed(item_columns, vendor)}",
            "DELETE": f"({_item_shown('OLD.id')} OR {_pool('OLD')})",
        }, f"{MARK}an item that an open or closed study shows (test item, shot example, attention check or practice "
           f"image) cannot change ({', '.join(item_columns)})"),
        _on_children("studyapp_frozen_classname", CLASS_NAME, _study_frozen, "study_id",
                     "the class-name translations"),
        # Written once, by study_open, in the transaction that moves the study out of draft.
        _Rule("studyapp_frozen_protocol", PROTOCOL, {
            "INSERT": f"NOT {_study_frozen('NEW.study_id')}", "UPDATE": "1 = 1", "DELETE": "1 = 1",
        }, f"{MARK}a study's protocol is written when it opens and never changes"),
    ]
    if tables is not None:
        present = set(tables)
        rules = [rule for rule in rules if rule.table in present]
    if study_columns:
        rules.insert(1, _Rule("studyapp_frozen_study_design", STUDY, {
            "UPDATE": f"OLD.status <> 'draft' AND {_changed(study_columns, vendor)}",
        }, f"{MARK}an open or closed study's design cannot change ({', '.join(study_columns)})"))
    return rules


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _sqlite_trigger_names() -> list[tuple[str, str]]:
    """(trigger, table) for every trigger create_sql can make on SQLite, whatever the columns."""
    rules = _rules("sqlite", study_columns=("seed", "practice_trials"), class_columns=("name",),
                   item_columns=("label_id",))
    return [(f"{rule.name}_{event.lower()}", rule.table) for rule in rules for event in rule.when]


def create_sql(vendor: str, *, study_columns: Sequence[str] = STUDY_FROZEN_COLUMNS,
               class_columns: Sequence[str] = CLASS_LABEL_FROZEN_COLUMNS,
               item_columns: Sequence[str] = ITEM_FROZEN_COLUMNS, tables: Iterable[str] | None = None) -> list[str]:
    """The statements that create every frozen-study trigger on this vendor ("postgresql" or "sqlite"); with
    `tables`, only those on tables that exist (a migration before a table's own)."""
    rules = _rules(vendor, study_columns=study_columns, class_columns=class_columns, item_columns=item_columns,
                   tables=tables)
    if vendor == "sqlite":
        return [
            f"CREATE TRIGGER {rule.name}_{event.lower()} BEFORE {event} ON {rule.table} FOR EACH ROW "
            f"WHEN {condition} BEGIN SELECT RAISE(ABORT, {_quote(rule.message)}); END"
            for rule in rules for event, condition in rule.when.items()
        ]
    if vendor != "postgresql":
        raise NotImplementedError(f"frozen-study triggers exist for PostgreSQL and SQLite, not {vendor}")
    out = []
    for rule in rules:
        # Nested IFs: PL/pgSQL does not promise to short-circuit, and NEW is null on DELETE (OLD on INSERT).
        branches = "\n  ".join(
            f"{'IF' if i == 0 else 'ELSIF'} TG_OP = '{event}' THEN\n    IF {condition} THEN\n"
            f"      RAISE EXCEPTION USING ERRCODE = '{_PG_ERRCODE}', MESSAGE = {_quote(rule.message)};\n    END IF;"
            for i, (event, condition) in enumerate(rule.when.items())
        )
        out.append(
            f"CREATE FUNCTION {rule.name}() RETURNS trigger LANGUAGE plpgsql AS $$\nBEGIN\n  {branches}\n  END IF;\n"
            f"  IF TG_OP = 'DELETE' THEN RETURN OLD; END IF;\n  RETURN NEW;\nEND $$"
        )
        out.append(f"CREATE TRIGGER {rule.name} BEFORE {' OR '.join(rule.when)} ON {rule.table} "
                   f"FOR EACH ROW EXECUTE FUNCTION {rule.name}()")
    # TRUNCATE skips row triggers; refuse it outright while any study is open or closed.
    out.append(
        f"CREATE FUNCTION {_PG_TRUNCATE}() RETURNS trigger LANGUAGE plpgsql AS $$\nBEGIN\n"
        f"  IF EXISTS (SELECT 1 FROM {STUDY} WHERE status <> 'draft') THEN\n"
        f"    RAISE EXCEPTION USING ERRCODE = '{_PG_ERRCODE}', MESSAGE = "
        f"{_quote(MARK + 'TRUNCATE would empty open or closed studies')};\n  END IF;\n  RETURN NULL;\nEND $$"
    )
    out += [f"CREATE TRIGGER {_PG_TRUNCATE} BEFORE TRUNCATE ON {table} "
            f"FOR EACH STATEMENT EXECUTE FUNCTION {_PG_TRUNCATE}()" for table in _truncate_tables(tables)]
    return out


def _truncate_tables(tables: Iterable[str] | None) -> list[str]:
    all_tables = [*FROZEN_TABLES, CLASS_NAME, PROTOCOL]
    return all_tables if tables is None else [t for t in all_tables if t in set(tables)]


def drop_sql(vendor: str, *, tables: Iterable[str] | None = None) -> list[str]:
    """The statements that drop every frozen-study trigger (those that exist) on this vendor; with `tables`, only
    on tables that exist (PostgreSQL names the table in DROP TRIGGER)."""
    if vendor == "sqlite":
        return [f"DROP TRIGGER IF EXISTS {name}" for name, _ in _sqlite_trigger_names()]
    rules = _rules(vendor, study_columns=("seed", "practice_trials"), class_columns=("name",),
                   item_columns=("label_id",), tables=tables)
    out = []
    for rule in rules:
        out += [f"DROP TRIGGER IF EXISTS {rule.name} ON {rule.table}", f"DROP FUNCTION IF EXISTS {rule.name}()"]
    out += [f"DROP TRIGGER IF EXISTS {_PG_TRUNCATE} ON {table}" for table in _truncate_tables(tables)]
    return out + [f"DROP FUNCTION IF EXISTS {_PG_TRUNCATE}()"]


def present_columns(columns: Sequence[str], existing: Iterable[str]) -> list[str]:
    """The frozen columns that this schema has: a migration that runs before a column exists skips it,
    and the migration that adds the column ends with freeze(), which includes it."""
    existing = set(existing)
    return [c for c in columns if c in existing]


def _columns_in_state(apps, model_name: str) -> list[str]:
    return [field.column for field in apps.get_model("studyapp", model_name)._meta.concrete_fields]


def _tables_in_state(apps) -> list[str]:
    return [model._meta.db_table for model in apps.get_app_config("studyapp").get_models()]


def _create(apps, schema_editor) -> None:
    vendor = schema_editor.connection.vendor
    tables = _tables_in_state(apps)
    for statement in drop_sql(vendor, tables=tables) + create_sql(
        vendor,
        study_columns=present_columns(STUDY_FROZEN_COLUMNS, _columns_in_state(apps, "Study")),
        class_columns=present_columns(CLASS_LABEL_FROZEN_COLUMNS, _columns_in_state(apps, "ClassLabel")),
        item_columns=present_columns(ITEM_FROZEN_COLUMNS, _columns_in_state(apps, "Item")),
        tables=tables,
    ):
        schema_editor.execute(statement, params=None)


def _drop(apps, schema_editor) -> None:
    for statement in drop_sql(schema_editor.connection.vendor, tables=_tables_in_state(apps)):
        schema_editor.execute(statement, params=None)


def freeze() -> migrations.RunPython:
    """Migration operation: (re)create every trigger with this module's column lists; reversed, drop them."""
    return migrations.RunPython(_create, _drop, elidable=False)


def unfreeze() -> migrations.RunPython:
    """Migration operation: drop every trigger (before altering a frozen table); reversed, create them."""
    return migrations.RunPython(_drop, _create, elidable=False)


def _live_columns(connection, table: str) -> list[str]:
    with connection.cursor() as cursor:
        return [column.name for column in connection.introspection.get_table_description(cursor, table)]


def triggers_present(connection) -> list[str]:
    """Names of the frozen-study triggers in this database."""
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute("SELECT name FROM sqlite_master WHERE type = 'trigger' AND name LIKE 'studyapp_frozen_%'")
        else:
            cursor.execute("SELECT tgname FROM pg_trigger WHERE tgname LIKE 'studyapp_frozen_%' AND NOT tgisinternal")
        return sorted(row[0] for row in cursor.fetchall())


@contextmanager
def triggers_lifted(connection) -> Iterator[None]:
    """Drop the triggers for the block and put them back after it, as they were, with the columns the
    tables have. For `manage.py flush` only (tests flush after each transactional test): emptying the
    whole database changes no study, it removes them all. Call it inside a transaction."""
    had = bool(triggers_present(connection))
    tables = connection.introspection.table_names()
    with connection.cursor() as cursor:
        for statement in drop_sql(connection.vendor, tables=tables):
            cursor.execute(statement)
    yield
    if had:
        with connection.cursor() as cursor:
            for statement in create_sql(
                connection.vendor,
                study_columns=present_columns(STUDY_FROZEN_COLUMNS, _live_columns(connection, STUDY)),
                class_columns=present_columns(CLASS_LABEL_FROZEN_COLUMNS, _live_columns(connection, CLASS_LABEL)),
                item_columns=present_columns(ITEM_FROZEN_COLUMNS, _live_columns(connection, ITEM)),
                tables=tables,
            ):
                cursor.execute(statement)


def frozen_message(exc: BaseException) -> str | None:
    """The refusal's text if `exc` is one of these triggers' errors, else None."""
    text = str(exc)
    start = text.find(MARK)
    if not isinstance(exc, IntegrityError) or start < 0:
        return None
    return text[start:].splitlines()[0].strip()


@contextmanager
def readable_frozen_errors() -> Iterator[None]:
    """Turn the database's refusal into FrozenStudyError with its message; other errors pass unchanged."""
    try:
        yield
    except IntegrityError as exc:
        message = frozen_message(exc)
        if message is None:
            raise
        raise FrozenStudyError(message[0].upper() + message[1:]) from exc
