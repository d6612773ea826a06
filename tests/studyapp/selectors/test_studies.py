from datetime import timedelta

import pytest
from django.utils import timezone

from studyapp.models import Assignment, Participant
from studyapp.selectors.studies import study_progress
from tests.factories import make_study

pytestmark = pytest.mark.django_db


def reserve(study, condition, item_id, *, position, expires_in_minutes):
    participant = Participant.objects.create(study=study, consent=Participant.Consent.GIVEN)
    return Assignment.objects.create(
        participant=participant, condition=condition, item_id=item_id, position=position, slot=0,
        expires_at=timezone.now() + timedelta(minutes=expires_in_minutes),
    )


def test_live_reservations_leave_out_those_that_lapsed_before_any_sweep_marked_them():
    study = make_study(shots=(0,))
    condition = study.conditions.get()
    first, second = study.study_items.values_list("item_id", flat=True)[:2]
    reserve(study, condition, first, position=0, expires_in_minutes=30)
    lapsed = reserve(study, condition, second, position=0, expires_in_minutes=-1)
    assert lapsed.status == Assignment.Status.RESERVED  # nobody has swept it yet
    (row,) = study_progress(study=study)
    assert row["live_reservations"] == 1
