"""An open or closed study is frozen by the database itself (studyapp/frozen.py), whatever the path.

Run on SQLite and again on PostgreSQL (`./run test` does both). Every refused write is checked to
change nothing; every rule is also checked to let the same write through on a draft study, so a
trigger that refused everything would fail here too.
"""

import re
import uuid
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import IntegrityError, connection, models, transaction
from django.db.migrations.loader import MigrationLoader
from django.db.models import F
from django.utils import timezone

from studyapp import frozen
from studyapp.frozen import MARK
from studyapp.models import ClassLabel, Condition, FrozenStudyError, Item, ShotExample, Study, StudyItem
from studyapp.services.studies import study_close, study_create, study_open
from tests.factories import DatasetFactory, make_dataset, make_study

pytestmark = pytest.mark.django_db


def a_study(status: str = "open", **fields) -> Study:
    """Three classes, two of four test items per class drawn (so spare ones exist), all three conditions."""
    dataset = make_dataset(n_classes=3, train_per_class=3, test_per_class=4)
    study = make_study(dataset=dataset, open_it=status != "draft", test_items_per_class=2, **fields)
    return study_close(study=study) if status == "closed" else study


def shown(study: Study) -> dict:
    """Everything the study shows participants and models, as plain values."""
    dataset = study.dataset
    return {
        "study": Study.objects.filter(pk=study.pk).values().get(),
        "test items": sorted(study.study_items.values_list("item_id", flat=True)),
        "conditions": sorted(Condition.objects.filter(study=study).values_list("id", "code", "shots")),
        "shots": sorted(ShotExample.objects.filter(condition__study=study).values_list(
            "condition_id", "label_id", "item_id", "rank")),
        "classes": sorted(ClassLabel.objects.filter(dataset=dataset).values_list(*_fields(ClassLabel))),
        "items": sorted(Item.objects.filter(dataset=dataset).values_list(*_fields(Item))),
    }


def _fields(model) -> list[str]:
    return [f.attname for f in model._meta.concrete_fields]


def assert_refused(study: Study, write, match: str = MARK) -> None:
    before = shown(study)
    with pytest.raises(IntegrityError, match=match), transaction.atomic():
        write(study)
    assert shown(study) == before


def first_test_item(study: Study) -> Item:
    return study.study_items.select_related("item__label").order_by("item_id").first().item


def spare_test_item(study: Study) -> Item:
    return (Item.objects.filter(dataset=study.dataset, split=study.test_split)
            .exclude(id__in=study.study_items.values("item_id")).order_by("id").first())


# ------------------------------------------------------------------------- the eight writes


def delete_a_study_item_through_a_queryset(study):
    StudyItem.objects.filter(pk=study.study_items.order_by("id").first().pk).delete()


def bulk_create_a_new_study_item(study):
    StudyItem.objects.bulk_create([StudyItem(study=study, item=spare_test_item(study))])


def move_a_shot_example_onto_a_test_item_with_update(study):
    shot = ShotExample.objects.filter(condition__study=study, condition__shots=1).order_by("id").first()
    ShotExample.objects.filter(pk=shot.pk).update(item=first_test_item(study))


def rename_a_class_with_update(study):
    ClassLabel.objects.filter(dataset=study.dataset, index=0).update(name="Renamed")


def change_an_items_label_with_save(study):
    item = first_test_item(study)
    item.label = ClassLabel.objects.filter(dataset=study.dataset).exclude(pk=item.label_id).first()
    item.save()


def change_k_with_save(study):
    study = Study.objects.get(pk=study.pk)
    study.k_per_item = 3
    study.save()


def change_the_seed_with_update(study):
    Study.objects.filter(pk=study.pk).update(seed=F("seed") + 1)


def delete_a_condition_through_a_queryset(study):
    Condition.objects.filter(study=study, shots=0).delete()


EIGHT_WRITES = [
    delete_a_study_item_through_a_queryset, bulk_create_a_new_study_item, move_a_shot_example_onto_a_test_item_with_update,
    rename_a_class_with_update, change_an_items_label_with_save, change_k_with_save, change_the_seed_with_update,
    delete_a_condition_through_a_queryset,
]


@pytest.mark.parametrize("status", ["open", "closed"])
@pytest.mark.parametrize("write", EIGHT_WRITES, ids=lambda w: w.__name__)
def test_each_of_the_eight_writes_is_refused_by_the_database_on_an_open_or_closed_study(write, status):
    assert_refused(a_study(status), write)


@pytest.mark.parametrize("write", EIGHT_WRITES, ids=lambda w: w.__name__)
def test_the_same_writes_go_through_on_a_draft_study(write):
    study = a_study("draft")
    before = shown(study)
    write(study)
    assert shown(study) != before


# --------------------------------------------------------------------------------------- raw SQL


RAW_SQL = {
    "delete a test item": "DELETE FROM studyapp_studyitem WHERE study_id = {study}",
    "delete every test item of every study": "DELETE FROM studyapp_studyitem",
    "insert a test item": "INSERT INTO studyapp_studyitem (study_id, item_id) VALUES ({study}, {spare})",
    "repoint a test item": "UPDATE studyapp_studyitem SET item_id = {spare} WHERE study_id = {study} AND item_id = {test_item}",
    "update a condition": "UPDATE studyapp_condition SET code = '{uuid}' WHERE study_id = {study} AND shots = 0",
    "delete a condition": "DELETE FROM studyapp_condition WHERE study_id = {study} AND shots = 0",
    "insert a shot example": "INSERT INTO studyapp_shotexample (condition_id, label_id, item_id, rank, code) "
                             "VALUES ({zero_shot}, {label}, {spare}, 0, '{uuid}')",
    "delete a shot example": "DELETE FROM studyapp_shotexample WHERE condition_id = {one_shot}",
    "rename a prompt": "UPDATE studyapp_classlabel SET prompt_name = 'a dog' WHERE dataset_id = {dataset}",
    "add a class": "INSERT INTO studyapp_classlabel (dataset_id, \"index\", name, prompt_name) "
                   "VALUES ({dataset}, 9, 'New', 'new')",
    "swap an image": "UPDATE studyapp_item SET image = 'elsewhere.jpg' WHERE id = {test_item}",
    "relabel a shot image": "UPDATE studyapp_item SET label_id = {label} WHERE id = {shot_item} AND label_id <> {label}",
    "back to draft": "UPDATE studyapp_study SET status = 'draft' WHERE id = {study}",
    "change the design": "UPDATE studyapp_study SET design = 'between' WHERE id = {study}",
    "delete the study": "DELETE FROM studyapp_study WHERE id = {study}",
}


def raw_values(study: Study) -> dict:
    shot = ShotExample.objects.filter(condition__study=study, condition__shots=1).order_by("id").first()
    return {
        "study": study.pk, "dataset": study.dataset_id, "spare": spare_test_item(study).pk, "uuid": uuid.uuid4().hex,
        "zero_shot": study.conditions.get(shots=0).pk, "one_shot": study.conditions.get(shots=1).pk,
        "label": ClassLabel.objects.filter(dataset=study.dataset).exclude(pk=shot.label_id).first().pk,
        "test_item": first_test_item(study).pk, "shot_item": shot.item_id,
    }


@pytest.mark.parametrize("status", ["open", "closed"])
@pytest.mark.parametrize("name", RAW_SQL)
def test_raw_sql_through_the_bare_database_connection_is_refused(name, status):
    study = a_study(status)
    sql = RAW_SQL[name].format(**raw_values(study))
    before = shown(study)
    connection.ensure_connection()
    with pytest.raises(Exception, match=MARK), transaction.atomic():
        connection.connection.cursor().execute(sql)  # the driver's own cursor: nothing of Django in the way
    assert shown(study) == before


# Not "delete the study": without its test items and conditions (Django deletes those first) it would
# leave dangling rows. test_a_draft_study_can_be_deleted covers it.
@pytest.mark.parametrize("name", [n for n in RAW_SQL if n not in ("back to draft", "delete the study")])
def test_the_same_raw_sql_goes_through_on_a_draft_study(name):
    study = a_study("draft")
    before = shown(study)
    with connection.cursor() as cursor:
        cursor.execute(RAW_SQL[name].format(**raw_values(study)))
        assert cursor.rowcount > 0
    assert shown(study) != before


@pytest.mark.skipif(connection.vendor != "postgresql", reason="TRUNCATE is PostgreSQL's (SQLite's DELETE FROM is above)")
@pytest.mark.parametrize("table", frozen.FROZEN_TABLES)
def test_truncate_is_refused_while_any_study_is_open(table):
    study = a_study("open")
    before = shown(study)
    with pytest.raises(IntegrityError, match="TRUNCATE would empty open or closed studies"), transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # TRUNCATE refuses to run with foreign-key checks pending
            cursor.execute(f"TRUNCATE {table} CASCADE")
    assert shown(study) == before


# ------------------------------------------------------------------------- status and study rows


def test_a_study_goes_draft_open_closed():
    study = a_study("draft")
    study_open(study=study)
    assert study_close(study=study).status == "closed"


@pytest.mark.parametrize(("start", "target"), [("open", "draft"), ("closed", "draft"), ("closed", "open")])
def test_a_study_never_goes_back(start, target):
    study = a_study(start)
    with pytest.raises(IntegrityError, match="never back"), transaction.atomic():
        Study.objects.filter(pk=study.pk).update(status=target)
    reloaded = Study.objects.get(pk=study.pk)
    reloaded.status = target
    with pytest.raises(IntegrityError, match="never back"), transaction.atomic():
        reloaded.save()
    assert Study.objects.get(pk=study.pk).status == start


def test_a_study_is_created_as_a_draft():
    dataset = make_dataset(n_classes=2)
    with pytest.raises(IntegrityError, match="created as a draft"), transaction.atomic():
        Study.objects.create(dataset=dataset, title="born open", status=Study.Status.OPEN)
    assert not Study.objects.exists()


@pytest.mark.parametrize("status", ["open", "closed"])
def test_an_open_or_closed_study_cannot_be_deleted_with_everything_it_holds(status):
    study = a_study(status)
    with pytest.raises(IntegrityError, match=MARK), transaction.atomic():
        Study.objects.filter(pk=study.pk).delete()  # Django deletes the shots, conditions and items first
    assert Study.objects.filter(pk=study.pk).exists() and shown(study)["shots"]


def test_a_draft_study_can_be_deleted():
    study = a_study("draft")
    Study.objects.filter(pk=study.pk).delete()
    assert not Study.objects.exists() and not StudyItem.objects.exists() and not Condition.objects.exists()


def another_value(study: Study, field: models.Field):
    """A different valid value for one Study column."""
    value = getattr(study, field.attname)
    if field.is_relation:
        return make_dataset(n_classes=1).pk
    if field.choices:
        return next(choice for choice, _ in field.choices if choice != value)
    if isinstance(field, models.BooleanField):
        return not value
    if isinstance(field, models.UUIDField):
        return uuid.uuid4()
    if isinstance(field, models.FloatField):
        return round((value + 0.3) % 1, 2)  # within the rate's [0, 1) and the threshold's [0, 1]
    if isinstance(field, models.IntegerField):
        return (value or 0) + 1
    if isinstance(field, models.DateTimeField):
        return (value or timezone.now()) + timedelta(days=1)
    return (value or "") + "x"


def study_field(column: str) -> models.Field:
    return next(f for f in Study._meta.concrete_fields if f.column == column)


@pytest.mark.parametrize("column", frozen.STUDY_FROZEN_COLUMNS)
def test_every_frozen_study_column_is_refused_on_an_open_study(column):
    study = a_study("open")
    field = study_field(column)
    before = Study.objects.filter(pk=study.pk).values().get()
    with pytest.raises(IntegrityError, match="design cannot change"), transaction.atomic():
        Study.objects.filter(pk=study.pk).update(**{field.attname: another_value(study, field)})
    assert Study.objects.filter(pk=study.pk).values().get() == before


@pytest.mark.parametrize("column", [c for c in frozen.STUDY_MUTABLE_COLUMNS if c not in ("id", "status")])
def test_the_other_study_columns_may_change_while_it_runs(column):
    study = a_study("open")
    field = study_field(column)
    new = another_value(study, field)
    Study.objects.filter(pk=study.pk).update(**{field.attname: new})
    assert getattr(Study.objects.get(pk=study.pk), field.attname) == new


def test_every_study_column_is_either_frozen_or_declared_mutable():
    columns = [f.column for f in Study._meta.concrete_fields]
    assert sorted(columns) == sorted(frozen.STUDY_FROZEN_COLUMNS + frozen.STUDY_MUTABLE_COLUMNS), (
        "a new Study column: add it to STUDY_FROZEN_COLUMNS (then a migration, see studyapp/frozen.py) "
        "or to STUDY_MUTABLE_COLUMNS, and say why in docs/testing.md")


@pytest.mark.parametrize(("model", "columns"), [(ClassLabel, frozen.CLASS_LABEL_FROZEN_COLUMNS),
                                                (Item, frozen.ITEM_FROZEN_COLUMNS)])
def test_every_frozen_column_name_is_a_column_of_its_table(model, columns):
    assert set(columns) <= {f.column for f in model._meta.concrete_fields}


# ------------------------------------------------------------------------------ classes and items


@pytest.mark.parametrize("column", frozen.CLASS_LABEL_FROZEN_COLUMNS)
def test_every_frozen_class_column_is_refused_while_a_study_of_the_dataset_runs(column):
    study = a_study("open")
    new = {"dataset_id": DatasetFactory().pk, "index": 99, "name": "Renamed", "prompt_name": "renamed"}[column]
    assert_refused(study, lambda s: ClassLabel.objects.filter(dataset=s.dataset, index=1).update(**{column: new}),
                   match="the classes")


def test_a_class_shared_with_a_draft_study_is_frozen_by_the_other_open_one():
    study = a_study("open")
    draft = study_create(dataset=study.dataset, title="a draft on the same images")
    assert draft.status == "draft"
    assert_refused(study, rename_a_class_with_update, match="the classes")
    assert_refused(study, lambda s: ClassLabel.objects.create(dataset=s.dataset, index=9, name="New", prompt_name="new"),
                   match="the classes")


def test_classes_of_a_dataset_whose_studies_are_all_drafts_may_change():
    study = a_study("draft")
    study_create(dataset=study.dataset, title="another draft")
    ClassLabel.objects.filter(dataset=study.dataset, index=0).update(name="Renamed", prompt_name="renamed")
    assert ClassLabel.objects.get(dataset=study.dataset, index=0).name == "Renamed"


def another_item_value(item: Item, column: str):
    return {
        "dataset_id": DatasetFactory().pk, "code": uuid.uuid4(), "content_hash": "0" * 64, "image": "elsewhere.jpg",
        "split": "elsewhere", "width": item.width + 1, "height": item.height + 1,
        "label_id": ClassLabel.objects.filter(dataset_id=item.dataset_id).exclude(pk=item.label_id).first().pk,
    }[column]


@pytest.mark.parametrize("role", ["test item", "shot example"])
@pytest.mark.parametrize("column", frozen.ITEM_FROZEN_COLUMNS)
def test_every_frozen_column_of_an_item_the_study_shows_is_refused(column, role):
    study = a_study("open")
    item = first_test_item(study) if role == "test item" else (
        ShotExample.objects.filter(condition__study=study).order_by("id").first().item)
    assert_refused(study, lambda s: Item.objects.filter(pk=item.pk).update(**{column: another_item_value(item, column)}),
                   match="an item that an open or closed study shows")


def test_an_item_the_study_does_not_show_may_change_and_the_filename_note_of_one_it_shows_may_too():
    study = a_study("open")
    spare = spare_test_item(study)
    Item.objects.filter(pk=spare.pk).update(label_id=another_item_value(spare, "label_id"))
    assert Item.objects.get(pk=spare.pk).label_id != spare.label_id
    Item.objects.filter(pk=first_test_item(study).pk).update(original_filename="renamed.jpg")
    assert Item.objects.get(pk=first_test_item(study).pk).original_filename == "renamed.jpg"


def check_pool_item(study: Study) -> Item:
    """An image of the shot split that is no shot example: a future attention check."""
    shots = ShotExample.objects.filter(condition__study=study).values("item_id")
    return Item.objects.filter(dataset=study.dataset, split=study.shot_split).exclude(id__in=shots).order_by("id").first()


def test_with_attention_checks_the_items_they_draw_from_are_frozen_too():
    study = a_study("open", attention_check_rate=0.2)
    pool_item = check_pool_item(study)
    relabel = lambda s: Item.objects.filter(pk=pool_item.pk).update(label_id=another_item_value(pool_item, "label_id"))  # noqa: E731
    assert_refused(study, relabel, match="attention check")
    assert_refused(study, lambda s: Item.objects.filter(pk=pool_item.pk).delete(), match="attention check")
    assert_refused(study, lambda s: Item.objects.create(
        dataset=s.dataset, content_hash="f" * 64, image="x.jpg", split=s.shot_split, label=pool_item.label, width=8,
        height=8, original_filename="x.jpg"), match="attention check")


def test_without_attention_checks_the_rest_of_the_shot_split_may_change():
    study = a_study("open")
    pool_item = check_pool_item(study)
    Item.objects.filter(pk=pool_item.pk).update(label_id=another_item_value(pool_item, "label_id"))
    assert Item.objects.get(pk=pool_item.pk).label_id != pool_item.label_id


# ------------------------------------------------------------------------ readable errors, flushes


def test_the_refusal_becomes_a_readable_frozen_study_error():
    study = a_study("open")
    with pytest.raises(FrozenStudyError) as caught, frozen.readable_frozen_errors(), transaction.atomic():
        change_k_with_save(study)
    assert caught.value.message.startswith("Frozen study: an open or closed study's design cannot change (")
    assert "\n" not in caught.value.message  # PostgreSQL's CONTEXT lines are left out


def test_other_integrity_errors_pass_through_unchanged():
    study = a_study("draft")
    with pytest.raises(IntegrityError) as caught, frozen.readable_frozen_errors(), transaction.atomic():
        ClassLabel.objects.create(dataset=study.dataset, index=0, name="Duplicate index", prompt_name="x")
    assert not isinstance(caught.value, FrozenStudyError) and frozen.frozen_message(caught.value) is None


@pytest.mark.django_db(transaction=True)
def test_flush_empties_a_database_with_open_studies_and_the_triggers_come_back():
    before = frozen.triggers_present(connection)
    a_study("open")
    call_command("flush", interactive=False, verbosity=0)
    assert not Study.objects.exists() and not Item.objects.exists()
    assert frozen.triggers_present(connection) == before
    assert_refused(a_study("open"), change_the_seed_with_update)


def test_every_trigger_is_in_the_migrated_database():
    expected = [re.match(r"CREATE TRIGGER (\w+)", sql).group(1) for sql in frozen.create_sql(connection.vendor)
                if sql.startswith("CREATE TRIGGER")]
    assert frozen.triggers_present(connection) == sorted(expected)


def test_every_migration_that_alters_a_frozen_table_drops_the_triggers_first_and_recreates_them_after():
    """SQLite rebuilds a table for most schema changes, and its rename step fails while a trigger on
    another table names it; on PostgreSQL a trigger naming a renamed or dropped column fails later."""
    frozen_models = {table.removeprefix("studyapp_") for table in frozen.FROZEN_TABLES}
    loader = MigrationLoader(None, ignore_no_migrations=True)
    plan = loader.graph.forwards_plan(("studyapp", max(k[1] for k in loader.graph.leaf_nodes() if k[0] == "studyapp")))
    seen_freeze = False
    for app, name in plan:
        operations = loader.graph.nodes[(app, name)].operations
        codes = [getattr(op, "code", None) for op in operations]
        touches = any(getattr(op, "model_name", getattr(op, "name", "")).lower() in frozen_models
                      for op in operations if not hasattr(op, "code"))
        if seen_freeze and touches:
            assert codes[0] is frozen.unfreeze().code and codes[-1] is frozen.freeze().code, (
                f"{app}.{name} alters a frozen table: make its operations [frozen.unfreeze(), ..., frozen.freeze()]")
        seen_freeze = seen_freeze or frozen.freeze().code in codes
    assert seen_freeze
