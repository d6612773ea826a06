import pytest

from studyapp.models import Condition, FrozenStudyError, ShotExample, StudyItem
from studyapp.services.studies import StudySetupError, study_create, study_open
from tests.factories import make_dataset, make_study

pytestmark = pytest.mark.django_db


def test_one_shot_examples_are_a_subset_of_the_two_shot_examples():
    study = make_study(dataset=make_dataset(n_classes=4, train_per_class=3))
    one = set(ShotExample.objects.filter(condition__study=study, condition__shots=1).values_list("label", "item"))
    two = set(ShotExample.objects.filter(condition__study=study, condition__shots=2).values_list("label", "item"))
    assert len(one) == 4 and len(two) == 8
    assert one <= two


def test_shots_come_from_a_split_disjoint_from_the_test_items():
    study = make_study()
    shot_splits = set(ShotExample.objects.filter(condition__study=study).values_list("item__split", flat=True))
    test_splits = set(study.study_items.values_list("item__split", flat=True))
    assert shot_splits == {"train"} and test_splits == {"test"}


def test_the_same_seed_draws_the_same_items_and_shots():
    dataset = make_dataset(n_classes=3, train_per_class=5, test_per_class=6)
    a = study_create(dataset=dataset, title="a", seed=7, test_items_per_class=3)
    b = study_create(dataset=dataset, title="b", seed=7, test_items_per_class=3)
    assert set(a.study_items.values_list("item", flat=True)) == set(b.study_items.values_list("item", flat=True))
    shots = lambda s: set(ShotExample.objects.filter(condition__study=s).values_list("condition__shots", "item"))  # noqa: E731
    assert shots(a) == shots(b)


def test_an_open_study_refuses_changes_to_its_items_and_shots():
    study = make_study()
    with pytest.raises(FrozenStudyError):
        StudyItem.objects.filter(study=study).first().delete()
    with pytest.raises(FrozenStudyError):
        Condition(study=study, shots=0).save()
    with pytest.raises(FrozenStudyError):
        ShotExample.objects.filter(condition__study=study).first().save()


def test_too_few_training_images_for_two_shots_is_a_clear_error():
    dataset = make_dataset(n_classes=2, train_per_class=1)
    with pytest.raises(StudySetupError, match="2 shot example"):
        study_create(dataset=dataset, title="x")


def test_opening_twice_is_harmless():
    study = make_study()
    assert study_open(study=study).status == "open"
