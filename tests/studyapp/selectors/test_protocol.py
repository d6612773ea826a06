"""studyapp.selectors.protocol: whether a study's data match its registered protocol."""

import pytest
from django.db import connection, transaction

from studyapp import frozen
from studyapp.models import Item, Study
from studyapp.selectors.protocol import protocol_check
from tests.factories import make_dataset, make_study

pytestmark = pytest.mark.django_db


def an_open_study(**fields) -> Study:
    return make_study(dataset=make_dataset(n_classes=3, train_per_class=4, test_per_class=3), **fields)


def test_the_data_of_an_untouched_study_match_its_protocol():
    study = an_open_study()
    check = protocol_check(study=study, protocol=study.protocol, items=[str(si.item.code) for si in
                                                                        study.study_items.select_related("item")],
                           conditions=["zero-shot", "two-shot"])
    assert check.matches and check.intact and check.problems == []
    assert "9 test items with their content hashes" in check.checked


def test_an_image_swapped_behind_the_triggers_back_is_a_mismatch_named_in_the_check():
    study = an_open_study()
    item = study.study_items.select_related("item").first().item
    with transaction.atomic(), frozen.triggers_lifted(connection):  # what only direct database access can do
        Item.objects.filter(pk=item.pk).update(content_hash="0" * 64)
    check = protocol_check(study=study, protocol=study.protocol)
    assert not check.matches
    assert check.problems == ["items differ from the protocol: 0 missing, 0 added, 1 changed (content hash or class)"]


def test_trial_items_or_conditions_the_protocol_does_not_list_are_a_mismatch():
    study = an_open_study(shots=(0, 1))
    check = protocol_check(study=study, protocol=study.protocol, items=["not-an-item"], conditions=["two-shot"])
    assert check.problems == ["1 item(s) of the trial table are not in the protocol (e.g. not-an-item)",
                              "condition(s) two-shot of the trial table are not in the protocol"]
