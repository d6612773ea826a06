from pathlib import Path

import pytest
from django.urls import reverse

from studyapp.models import ClassLabel, Dataset, Item, ShotExample, Study
from tests.factories import make_dataset, make_study, write_image

pytestmark = pytest.mark.django_db

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


def test_the_study_page_shows_conditions_shot_thumbnails_and_live_counts(admin_client):
    study = make_study(dataset=make_dataset(n_classes=3, train_per_class=2))
    response = admin_client.get(reverse("admin:studyapp_study_change", args=[study.pk]))
    html = response.content.decode()
    assert response.status_code == 200
    for shot in ShotExample.objects.filter(condition__study=study, condition__shots=2).select_related("item"):
        assert reverse("admin:studyapp_item_image", args=[shot.item.code]) in html
    assert "no examples (zero-shot)" in html
    assert "items with 5 answers" in html and "live reservations" in html


def test_item_images_in_the_admin_are_for_staff_only(client, admin_client):
    item = make_dataset(n_classes=1, train_per_class=1, test_per_class=1).items.first()
    url = reverse("admin:studyapp_item_image", args=[item.code])
    assert client.get(url).status_code == 302
    response = admin_client.get(url)
    assert response.status_code == 200 and response["Content-Type"] == "image/jpeg"


def test_the_admin_imports_a_dataset_from_a_server_folder(admin_client, tmp_path):
    two_class_folder(tmp_path)
    response = admin_client.post(reverse("admin:studyapp_dataset_import"),
                                 {"name": "insects", "path": str(tmp_path), "format": "folder"})
    assert response.status_code == 302
    assert Dataset.objects.get(name="insects").items.count() == 4


def test_the_admin_import_shows_the_problems_and_writes_nothing(admin_client, tmp_path):
    (tmp_path / "ants").mkdir()
    (tmp_path / "ants" / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    response = admin_client.post(reverse("admin:studyapp_dataset_import"),
                                 {"name": "insects", "path": str(tmp_path), "format": "folder"}, follow=True)
    assert "ants/broken.jpg" in response.content.decode()
    assert not Dataset.objects.exists()


def two_class_folder(root: Path) -> Path:
    for c in ("ants", "bees"):
        for i in range(2):
            write_image(root / c / f"{i}.jpg", seed=hash((c, i)) % 997, color=(10, 200, 30) if c == "ants" else (9, 9, 200))
    return root


def test_with_import_roots_set_the_admin_refuses_a_folder_outside_them_and_writes_nothing(admin_client, tmp_path, settings):
    settings.ADMIN_IMPORT_ROOTS = [str(tmp_path / "datasets")]
    outside = two_class_folder(tmp_path / "elsewhere")
    (tmp_path / "datasets").mkdir()
    (tmp_path / "datasets" / "link").symlink_to(outside)  # a link inside the root does not lead out
    for path in (outside, tmp_path / "datasets" / "link", tmp_path / "datasets" / ".." / "elsewhere", Path("/etc")):
        response = admin_client.post(reverse("admin:studyapp_dataset_import"),
                                     {"name": "insects", "path": str(path), "format": "folder"})
        assert response.status_code == 200, path  # the form again, with the reason
        assert "limited to" in response.content.decode() and "ADMIN_IMPORT_ROOTS" in response.content.decode()
    assert not Dataset.objects.exists()


def test_with_import_roots_set_the_admin_imports_from_inside_them(admin_client, tmp_path, settings):
    settings.ADMIN_IMPORT_ROOTS = [str(tmp_path / "other"), str(tmp_path / "datasets")]
    inside = two_class_folder(tmp_path / "datasets" / "insects")
    response = admin_client.post(reverse("admin:studyapp_dataset_import"),
                                 {"name": "insects", "path": str(inside), "format": "folder"})
    assert response.status_code == 302
    assert Dataset.objects.get(name="insects").items.count() == 4


def test_the_admin_opens_and_closes_studies(admin_client):
    study = make_study(open_it=False)
    changelist = reverse("admin:studyapp_study_changelist")
    admin_client.post(changelist, {"action": "open_studies", "_selected_action": [study.pk]})
    study.refresh_from_db()
    assert study.status == Study.Status.OPEN and study.opened_at is not None
    admin_client.post(changelist, {"action": "close_studies", "_selected_action": [study.pk]})
    study.refresh_from_db()
    assert study.status == Study.Status.CLOSED


def test_an_open_studys_design_is_read_only_in_the_admin_and_a_post_changes_only_what_may_change(admin_client):
    study = make_study(instructions="Label each photo.")
    url = reverse("admin:studyapp_study_change", args=[study.pk])
    html = admin_client.get(url).content.decode()
    for name in ("k_per_item", "seed", "design", "instructions", "consent_text", "attention_check_rate"):
        assert f'name="{name}"' not in html, name
    conditions = list(study.conditions.order_by("shots"))
    response = admin_client.post(url, {
        "title": "Renamed", "k_per_item": 1, "seed": 1, "instructions": "Changed.", "reservation_minutes": 45,
        "conditions-TOTAL_FORMS": len(conditions), "conditions-INITIAL_FORMS": len(conditions),
        **{f"conditions-{i}-id": c.pk for i, c in enumerate(conditions)},
        **{f"conditions-{i}-study": study.pk for i, c in enumerate(conditions)},
        "class_names-TOTAL_FORMS": 0, "class_names-INITIAL_FORMS": 0,
    })
    assert response.status_code == 302, response.content.decode()[:3000]
    after = Study.objects.get(pk=study.pk)
    assert (after.title, after.reservation_minutes) == ("Renamed", 45)
    assert (after.k_per_item, after.seed, after.instructions) == (study.k_per_item, study.seed, "Label each photo.")


def test_the_admin_refuses_to_delete_an_open_study(admin_client):
    study = make_study()
    assert admin_client.get(reverse("admin:studyapp_study_delete", args=[study.pk])).status_code == 403
    changelist = reverse("admin:studyapp_study_changelist")
    response = admin_client.post(changelist, {"action": "delete_selected", "_selected_action": [study.pk]})
    assert "Cannot delete study" in response.content.decode()
    response = admin_client.post(changelist, {"action": "delete_selected", "_selected_action": [study.pk], "post": "yes"})
    assert response.status_code == 403
    assert Study.objects.filter(pk=study.pk).exists()


def test_an_item_relabelled_in_the_admin_while_a_study_shows_it_is_refused_with_the_reason(admin_client):
    study = make_study()
    item = study.study_items.select_related("item").first().item
    other = ClassLabel.objects.filter(dataset=study.dataset).exclude(pk=item.label_id).first()
    url = reverse("admin:studyapp_item_change", args=[item.pk])
    response = admin_client.post(url, {"dataset": item.dataset_id, "split": item.split, "label": other.pk}, follow=True)
    assert "Frozen study: an item that an open or closed study shows" in response.content.decode()
    assert Item.objects.get(pk=item.pk).label_id == item.label_id


def test_deleting_attention_check_images_with_the_admin_action_is_refused_with_the_reason(admin_client):
    study = make_study(dataset=make_dataset(n_classes=2, train_per_class=3), attention_check_rate=0.2)
    shots = ShotExample.objects.filter(condition__study=study).values("item_id")
    spare = Item.objects.filter(dataset=study.dataset, split="train").exclude(id__in=shots).first()
    response = admin_client.post(reverse("admin:studyapp_item_changelist"),
                                 {"action": "delete_selected", "_selected_action": [spare.pk], "post": "yes"}, follow=True)
    assert "(test item, shot example, attention check or practice image) cannot change" in response.content.decode()
    assert Item.objects.filter(pk=spare.pk).exists()


def test_the_classes_of_a_dataset_that_an_open_study_uses_are_read_only_in_the_admin(admin_client):
    study = make_study()
    html = admin_client.get(reverse("admin:studyapp_dataset_change", args=[study.dataset_id])).content.decode()
    assert 'name="classes-0-name"' not in html and "Class A" in html
    draft = make_study(open_it=False)
    html = admin_client.get(reverse("admin:studyapp_dataset_change", args=[draft.dataset_id])).content.decode()
    assert 'name="classes-0-name"' in html


# The participant-session settings (issue 15) as the add form posts them by default.
SESSION_DEFAULTS = {"language": "en", "min_window_width": 0, "min_window_height": 0, "allow_phones": "on",
                    "practice_trials": 0}


def test_a_study_created_in_the_admin_gets_items_conditions_and_shots(admin_client):
    dataset = make_dataset(n_classes=2, train_per_class=2, test_per_class=3)
    response = admin_client.post(reverse("admin:studyapp_study_add"), {
        "title": "From the admin", "dataset": dataset.pk, "design": "within", "k_per_item": 5,
        "items_per_participant": 10, "allow_idk": "on", "test_split": "test", "shot_split": "train", "seed": 11,
        "reservation_minutes": 30, "attention_check_rate": 0, "attention_threshold": 0.5,
        "conditions-TOTAL_FORMS": 0, "conditions-INITIAL_FORMS": 0, **SESSION_DEFAULTS,
    })
    assert response.status_code == 302, response.content.decode()[:2000]
    study = Study.objects.get(title="From the admin")
    assert study.study_items.count() == 6
    assert sorted(study.conditions.values_list("shots", flat=True)) == [0, 1, 2]


def test_the_admin_refuses_a_study_whose_shots_cannot_be_drawn(admin_client):
    dataset = make_dataset(n_classes=2, train_per_class=1, test_per_class=3)
    response = admin_client.post(reverse("admin:studyapp_study_add"), {
        "title": "Too few", "dataset": dataset.pk, "design": "within", "k_per_item": 5, "items_per_participant": 10,
        "test_split": "test", "shot_split": "train", "seed": 1, "reservation_minutes": 30,
        "attention_check_rate": 0, "attention_threshold": 0.5,
        "conditions-TOTAL_FORMS": 0, "conditions-INITIAL_FORMS": 0, **SESSION_DEFAULTS,
    })
    assert response.status_code == 200
    assert "2 shot example(s) per class are needed" in response.content.decode()
    assert not Study.objects.filter(title="Too few").exists()
