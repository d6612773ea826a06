"""Completion codes (what a recruiter pays on) cannot be guessed, derived or obtained without finishing."""

import re
from collections import Counter

import pytest
from django.test import Client

from studyapp.models import Participant
from tests.factories import make_dataset, make_study
from tests.studyapp.helpers import consent, finish, participant_of, start

pytestmark = pytest.mark.django_db


def test_completion_codes_are_80_random_bits_unique_and_unrelated_to_anything_else():
    study = make_study(dataset=make_dataset(n_classes=2, test_per_class=1))
    Participant.objects.bulk_create(Participant(study=study) for _ in range(3000))
    rows = list(Participant.objects.values_list("completion_code", "code", "id"))
    codes = [code for code, _, _ in rows]
    assert all(re.fullmatch(r"[0-9A-F]{20}", code) for code in codes)  # 20 hex digits = 80 bits
    assert len(set(codes)) == len(codes)
    # Not derived from the participant's public code or from creation order.
    assert not any(code.lower() in participant.hex or participant.hex[:20].upper() == code for code, participant, _ in rows)
    in_order = [int(code, 16) for code, _, _ in sorted(rows, key=lambda r: r[2])]
    assert sorted(in_order) != in_order and len({b - a for a, b in zip(in_order, in_order[1:], strict=False)}) > 2900
    # Every hex digit about equally likely at every position: chi-square over 60,000 digits, 15 degrees
    # of freedom; 80 is beyond the 1-in-a-billion tail of a fair source, so this only fails for a biased one.
    digits = Counter("".join(codes))
    expected = len(codes) * 20 / 16
    assert sum((digits[d] - expected) ** 2 / expected for d in "0123456789ABCDEF") < 80


def test_the_code_is_shown_only_after_the_last_answer_and_never_to_those_who_did_not_finish():
    study = make_study(dataset=make_dataset(n_classes=2, train_per_class=2, test_per_class=1), shots=(0,),
                       items_per_participant=2, k_per_item=1)
    worker = Client()
    page = start(worker, study)
    participant = participant_of(worker, study)
    assert worker.get(f"/s/{study.code}/done").status_code == 302  # not yet
    assert participant.completion_code not in page.content.decode()
    late = Client()
    full = start(late, study)  # every slot is reserved: this one is turned away
    assert full.request["PATH_INFO"].endswith("/full")
    done = finish(worker, page)
    assert participant.completion_code in done.content.decode()
    for page_of_others in (full, late.get(f"/s/{study.code}/done", follow=True),
                           consent(Client(), study, decision="decline"), Client().get(f"/s/{study.code}/done",
                                                                                      follow=True)):
        html = page_of_others.content.decode()
        assert not re.search(r"[0-9A-F]{20}", html)
        assert participant.completion_code not in html
