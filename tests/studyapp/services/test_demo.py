"""studyapp.services.demo: the demo studies from the shared Pets and EuroSAT copies."""

import io
from pathlib import Path

import pytest
from django.core.management import call_command

from studyapp.models import ShotExample, Study
from studyapp.services.demo import PETS_DATASET

pytestmark = pytest.mark.django_db

SHARED_DATA = Path(__file__).resolve().parents[4] / "shared" / "data"


@pytest.mark.skipif(not (SHARED_DATA / "oxford_pets").is_dir(), reason="../shared/data is not beside this checkout")
def test_setup_demo_creates_both_studies_once_and_prints_pets_first():
    out = io.StringIO()
    call_command("setup_demo", "--data", str(SHARED_DATA), stdout=out)
    codes = out.getvalue().split()
    again = io.StringIO()
    call_command("setup_demo", "--data", str(SHARED_DATA), stdout=again)
    assert again.getvalue().split() == codes
    pets = Study.objects.get(code=codes[0])
    assert pets.dataset.name == PETS_DATASET and pets.dataset.classes.count() == 37
    assert pets.status == Study.Status.OPEN
    assert {c.shots: c.shot_examples.count() for c in pets.conditions.all()} == {0: 0, 1: 37, 2: 74}
    # Every breed has test items, and none of them is a shot.
    assert pets.study_items.values("item__label").distinct().count() == 37
    shots = set(ShotExample.objects.filter(condition__study=pets).values_list("item", flat=True))
    assert not shots & set(pets.study_items.values_list("item", flat=True))
    assert Study.objects.get(code=codes[1]).dataset.classes.count() == 10
