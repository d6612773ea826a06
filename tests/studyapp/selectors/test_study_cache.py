"""studyapp.selectors.study_cache: an open study's classes as its participants read them."""

import re

import pytest
from django.db import IntegrityError, transaction
from django.test import Client

from evaluator.study_reports import study_trials
from studyapp.models import ClassNameTranslation
from studyapp.services.studies import study_open
from tests.factories import make_dataset, make_study
from tests.studyapp.helpers import answer, start

pytestmark = pytest.mark.django_db


def test_a_korean_study_shows_translated_class_names_and_leaves_prompt_names_alone():
    dataset = make_dataset(n_classes=3, class_names=["Abyssinian", "Bengal", "Siamese"], test_per_class=2)
    study = make_study(dataset=dataset, open_it=False, shots=(1,), language="ko", items_per_participant=2)
    for label, name in zip(dataset.classes.order_by("index"), ["아비시니안", "벵갈", "샴"], strict=True):
        ClassNameTranslation.objects.create(study=study, label=label, name=name)
    study = study_open(study=study)
    client = Client()
    page = start(client, study)
    html = page.content.decode()
    assert page["Content-Language"] == "ko" and '<html lang="ko">' in html
    assert re.findall(r'<span class="card-name">([^<]+)</span>', html) == ["벵갈", "샴", "아비시니안"]
    assert "모르겠음" in html and "I don't know" not in html and "Abyssinian" not in html
    assert sorted(dataset.classes.values_list("prompt_name", flat=True)) == ["abyssinian", "bengal", "siamese"]
    # Frozen with the study, by the database.
    with pytest.raises(IntegrityError), transaction.atomic():
        ClassNameTranslation.objects.filter(study=study).update(name="고양이")
    # The trial table and the report keep the dataset's names.
    answer(client, page)
    assert set(study_trials(study=study)["target"]) <= {"Abyssinian", "Bengal", "Siamese"}
