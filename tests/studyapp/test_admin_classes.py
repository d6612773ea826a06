"""Class names and prompt names in the admin: editable while every study of the dataset is a draft."""

import pytest
from django.urls import reverse

from studyapp.models import ClassLabel, ClassNameTranslation
from studyapp.services.studies import study_open
from tests.factories import make_dataset, make_study

pytestmark = pytest.mark.django_db


def _inline_form(dataset, changes: dict[int, str]):
    labels = list(dataset.classes.order_by("index"))
    data = {"name": dataset.name, "classes-TOTAL_FORMS": len(labels), "classes-INITIAL_FORMS": len(labels),
            "classes-MIN_NUM_FORMS": 0, "classes-MAX_NUM_FORMS": 1000}
    for i, label in enumerate(labels):
        data |= {f"classes-{i}-id": label.pk, f"classes-{i}-dataset": dataset.pk, f"classes-{i}-name": label.name,
                 f"classes-{i}-prompt_name": changes.get(label.index, label.prompt_name)}
    return data


def test_prompt_names_are_editable_while_every_study_of_the_dataset_is_a_draft(admin_client):
    dataset = make_dataset()
    make_study(dataset=dataset, open_it=False)
    url = reverse("admin:studyapp_dataset_change", args=[dataset.pk])
    assert 'name="classes-0-prompt_name"' in admin_client.get(url).content.decode()

    response = admin_client.post(url, _inline_form(dataset, {0: "a red square"}))

    assert response.status_code == 302, response.content.decode()[:3000]
    assert ClassLabel.objects.get(dataset=dataset, index=0).prompt_name == "a red square"


def test_once_a_study_of_the_dataset_is_open_its_classes_are_read_only_in_the_admin(admin_client):
    dataset = make_dataset()
    make_study(dataset=dataset)  # open
    url = reverse("admin:studyapp_dataset_change", args=[dataset.pk])
    page = admin_client.get(url).content.decode()
    assert 'name="classes-0-prompt_name"' not in page and "class a" in page

    admin_client.post(url, _inline_form(dataset, {0: "a red square"}))

    assert ClassLabel.objects.get(dataset=dataset, index=0).prompt_name == "class a"


def test_the_admin_edits_class_name_translations_of_a_draft_study_and_shows_them_read_only_once_open(admin_client):
    dataset = make_dataset(n_classes=2)
    draft = make_study(dataset=dataset, open_it=False, language="ko")
    url = reverse("admin:studyapp_study_change", args=[draft.pk])
    assert 'name="class_names-TOTAL_FORMS"' in admin_client.get(url).content.decode()
    label = dataset.classes.get(index=0)
    ClassNameTranslation.objects.create(study=draft, label=label, name="고양이")
    opened = study_open(study=draft)
    html = admin_client.get(reverse("admin:studyapp_study_change", args=[opened.pk])).content.decode()
    assert "고양이" in html and 'name="class_names-0-name"' not in html  # read-only, like the study's design
