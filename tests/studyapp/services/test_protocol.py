"""The frozen protocol: written when a study opens, one canonical JSON document and its sha256, never changed;
every report cites it and says whether the data match it. Run on SQLite and again on PostgreSQL."""

import hashlib
import json

import pytest
from django.db import IntegrityError, connection, transaction
from django.urls import reverse

from evaluator.report import ReportOptions
from evaluator.study_reports import study_report_compute, study_report_meta, study_trials
from studyapp import frozen
from studyapp.frozen import MARK
from studyapp.models import ClassNameTranslation, FrozenStudyError, Item, ShotExample, Study, StudyProtocol
from studyapp.selectors.protocol import protocol_check
from studyapp.services import protocol as protocol_service
from studyapp.services.protocol import protocol_canonical, study_protocol_write
from studyapp.services.studies import study_close, study_open
from tests.evaluator.test_study_reports import scored_study  # noqa: F401 (a fixture)
from tests.factories import make_dataset, make_study

pytestmark = pytest.mark.django_db


def an_open_study(**fields) -> Study:
    return make_study(dataset=make_dataset(n_classes=3, train_per_class=4, test_per_class=3), **fields)


def test_opening_a_study_registers_its_protocol_with_the_sha256_of_the_document_as_served():
    study = an_open_study(k_per_item=4, items_per_participant=6, seed=1234, attention_check_rate=0.1,
                          attention_threshold=0.6, instructions="Pick the breed.")
    protocol = StudyProtocol.objects.get(study=study)
    assert protocol.sha256 == hashlib.sha256(protocol.document.encode("utf-8")).hexdigest()
    document = json.loads(protocol.document)
    assert protocol_canonical(document) == protocol.document  # canonical: parsing and writing again changes nothing
    assert document["format"] == protocol.format == "humanclip-protocol/1"
    design = document["design"]
    assert (design["k_per_item"], design["items_per_participant"], design["seed"]) == (4, 6, 1234)
    assert design["conditions"] == ["zero-shot", "one-shot", "two-shot"]
    assert design["capacity_per_condition"] == 9 * 4 // 6
    assert document["participant_texts"]["instructions"] == "Pick the breed."
    assert [c["name"] for c in document["classes"]] == ["Class A", "Class B", "Class C"]
    items = {row["item"]: row for row in document["items"]["list"]}
    assert document["items"]["count"] == len(items) == 9
    for study_item in study.study_items.select_related("item__label"):
        row = items[str(study_item.item.code)]
        assert (row["content_hash"], row["class"]) == (study_item.item.content_hash, study_item.item.label.name)
    for condition in study.conditions.exclude(shots=0):
        shots = ShotExample.objects.filter(condition=condition).select_related("item", "label")
        assert sorted((s["item"], s["content_hash"], s["class"], s["rank"]) for s in document["shots"][condition.name]) \
            == sorted((str(s.item.code), s.item.content_hash, s.label.name, s.rank) for s in shots)
    assert len(document["shots"]["two-shot"]) == 6 and "zero-shot" not in document["shots"]
    checks = document["attention_checks"]
    assert (checks["rate"], checks["threshold"], checks["pool"]["split"]) == (0.1, 0.6, "train")
    assert checks["pool"]["count"] == 3 * 4 - 3 * 2  # the shot split minus the two-shot examples
    assert "below 0.6" in document["exclusions"]["attention_failed"]
    assert document["report"]["options"]["bootstrap"] == 1000 and document["report"]["options"]["resample"] == "two-way"


def test_the_protocol_is_written_once_and_reopening_or_closing_keeps_it():
    study = an_open_study()
    first = StudyProtocol.objects.get(study=study)
    study_open(study=study)
    study_close(study=study)
    assert list(StudyProtocol.objects.filter(study=study)) == [first]
    assert study_protocol_write(study=study) == first


def test_a_draft_has_no_protocol_and_the_database_refuses_one():
    study = make_study(dataset=make_dataset(n_classes=2), open_it=False)
    assert not StudyProtocol.objects.exists()
    with pytest.raises(FrozenStudyError, match="not for a draft"):
        study_protocol_write(study=study)
    with pytest.raises(IntegrityError, match=MARK), transaction.atomic():
        StudyProtocol.objects.create(study=study, format="x", document="{}\n", sha256="0" * 64)


def test_when_the_protocol_cannot_be_written_the_study_does_not_open(monkeypatch):
    study = make_study(dataset=make_dataset(n_classes=2), open_it=False)

    def broken(*, study):
        raise RuntimeError("disk full")

    monkeypatch.setattr(protocol_service, "study_protocol_document", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        study_open(study=study)
    assert Study.objects.get(pk=study.pk).status == Study.Status.DRAFT and not StudyProtocol.objects.exists()


def change_the_document(protocol):
    StudyProtocol.objects.filter(pk=protocol.pk).update(document=protocol.document.replace('"seed"', '"seeds"'))


def change_the_hash(protocol):
    StudyProtocol.objects.filter(pk=protocol.pk).update(sha256="f" * 64)


def delete_it(protocol):
    StudyProtocol.objects.filter(pk=protocol.pk).delete()


def raw_update(protocol):
    connection.ensure_connection()
    connection.connection.cursor().execute(f"UPDATE studyapp_studyprotocol SET document = '{{}}' WHERE id = {protocol.pk}")


def raw_delete(protocol):
    connection.ensure_connection()
    connection.connection.cursor().execute("DELETE FROM studyapp_studyprotocol")


@pytest.mark.parametrize("status", ["open", "closed"])
@pytest.mark.parametrize("write", [change_the_document, change_the_hash, delete_it, raw_update, raw_delete],
                         ids=lambda w: w.__name__)
def test_the_database_refuses_any_change_to_a_protocol(write, status):
    study = an_open_study()
    if status == "closed":
        study_close(study=study)
    protocol = StudyProtocol.objects.get(study=study)
    # Exception: the raw writes go through the driver's own cursor, whose IntegrityError is not Django's.
    with pytest.raises(Exception, match="protocol is written when it opens and never changes"), transaction.atomic():
        write(protocol)
    assert StudyProtocol.objects.get(pk=protocol.pk).document == protocol.document
    assert StudyProtocol.objects.get(pk=protocol.pk).sha256 == protocol.sha256


def test_save_and_delete_say_so_before_the_database_does():
    protocol = StudyProtocol.objects.get(study=an_open_study())
    protocol.document = "{}\n"
    with pytest.raises(FrozenStudyError, match="never changes"):
        protocol.save()
    with pytest.raises(FrozenStudyError, match="never changes"):
        protocol.delete()


@pytest.mark.skipif(connection.vendor != "postgresql", reason="TRUNCATE is PostgreSQL's")
def test_truncating_the_protocols_is_refused():
    an_open_study()
    with pytest.raises(IntegrityError, match="TRUNCATE"), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # TRUNCATE refuses to run with foreign-key checks pending
        cursor.execute("TRUNCATE studyapp_studyprotocol")
    assert StudyProtocol.objects.count() == 1


def test_a_study_opened_before_protocols_existed_gets_a_retrospective_one():
    study = make_study(dataset=make_dataset(n_classes=2), open_it=False)
    Study.objects.filter(pk=study.pk).update(status=Study.Status.OPEN)  # as an older version of the app opened it
    assert "no protocol recorded" in study_report_meta(study=study)["protocol"]["status"]
    protocol = study_protocol_write(study=study, retrospective=True)
    assert protocol.retrospective
    assert protocol_check(study=study, protocol=protocol).matches


# --------------------------------------------------------------------------------------------- checks


def test_every_report_cites_the_protocol_hash_and_says_the_data_match_it(scored_study):  # noqa: F811
    trials = study_trials(study=scored_study)
    options = ReportOptions(bootstrap=20, static=False)
    meta = study_report_meta(study=scored_study, trials=trials, options=options)
    protocol = meta["protocol"]
    assert protocol["sha256"] == scored_study.protocol.sha256 and protocol["data_match"] is True
    assert "the trial table's 4 items" in protocol["checked"]
    assert protocol["models"][0].startswith("house model (test): fingerprint house-vit-64@abc; prompts sha256 ")
    assert protocol["options_differ"] == ["bootstrap = 20 (protocol: 1000)"]
    html = study_report_compute(study=scored_study, options=options).html
    assert f"sha256:{scored_study.protocol.sha256}" in html and "the data match it" in html
    assert "do not match the registered protocol" not in html


def test_a_report_on_data_that_do_not_match_says_so_in_a_banner(scored_study):  # noqa: F811
    item = scored_study.study_items.select_related("item").first().item
    with transaction.atomic(), frozen.triggers_lifted(connection):
        Item.objects.filter(pk=item.pk).update(content_hash="1" * 64)
    html = study_report_compute(study=scored_study, options=ReportOptions(bootstrap=0, static=False)).html
    assert "The data do not match the registered protocol:" in html and "THE DATA DO NOT MATCH IT" in html


def test_the_report_folder_holds_the_protocol_byte_for_byte(scored_study, tmp_path):  # noqa: F811
    from evaluator.study_reports import study_report_write

    study_report_write(study=scored_study, out_dir=tmp_path / "r", options=ReportOptions(bootstrap=0, static=False))
    written = (tmp_path / "r" / "protocol.json").read_bytes()
    assert hashlib.sha256(written).hexdigest() == scored_study.protocol.sha256


def test_staff_download_the_protocol_as_registered_and_nobody_else_can(scored_study, client, admin_user):  # noqa: F811
    url = reverse("evaluator:study_protocol", args=[scored_study.code])
    assert client.get(url).status_code in (302, 403)
    client.force_login(admin_user)
    response = client.get(url)
    assert response.status_code == 200 and response["Content-Type"].startswith("application/json")
    assert hashlib.sha256(b"".join(response)).hexdigest() == scored_study.protocol.sha256
    assert f'protocol-{scored_study.code}-{scored_study.protocol.sha256[:12]}.json' in response["Content-Disposition"]


def test_the_protocol_records_the_class_names_participants_read_where_the_study_translates_them():
    study = make_study(dataset=make_dataset(n_classes=3, train_per_class=4, test_per_class=3), open_it=False)
    label = study.dataset.classes.get(index=1)
    ClassNameTranslation.objects.create(study=study, label=label, name="클래스 B")
    document = json.loads(study_open(study=study).protocol.document)
    assert [c.get("shown_as") for c in document["classes"]] == [None, "클래스 B", None]
