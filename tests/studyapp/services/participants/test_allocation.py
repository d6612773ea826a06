import random
import uuid
from collections import Counter
from datetime import timedelta

import pytest
from django.db import IntegrityError, connection, transaction
from django.db.models import Count, QuerySet
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from studyapp.models import Assignment, Item, Participant, Response, ShotExample, Study
from studyapp.selectors.participants import Step, practice_item_ids
from studyapp.services.participants import (
    allocation,
    assignment_next,
    assignment_show,
    items_choose,
    participant_allocate_next_step,
    participant_enrol,
    participant_start,
    participant_withdraw,
    response_submit,
)
from studyapp.services.participants.allocation import _claim_slot, checks_minimum_per_part
from studyapp.services.studies import study_close, study_create, study_open
from studyapp.simulation import simulation_run
from tests.factories import make_dataset, make_study
from tests.studyapp.helpers import attention_study, finish, participant_of, start


def enrol(study: Study, **fields) -> Participant:
    participant = participant_enrol(study=study, enrolment=uuid.uuid4(), consent=True)
    if fields:
        Participant.objects.filter(pk=participant.pk).update(**fields)
        participant.refresh_from_db()
    return participant


def answer_all(participant: Participant, *, choice: str = "0") -> int:
    """Answer every trial the participant gets, phase after phase; returns the number of answers."""
    step = participant_start(participant=participant)
    n = 0
    while step.step == Step.TRIAL:
        response_submit(assignment=step.assignment, choice=choice)
        n += 1
        step = participant_allocate_next_step(participant=participant)
    return n


def answers_per_item(study: Study) -> Counter:
    return Counter(
        Assignment.objects.filter(condition__study=study, is_attention_check=False, status="answered").values_list(
            "condition__shots", "item_id"
        )
    )


class TestItemsChoose:
    """The pure choice of a part's items (no database)."""

    def test_the_least_filled_eligible_items_are_chosen_and_the_rest_are_spares_in_the_same_ranking(self):
        fill = {1: 2, 2: 0, 3: 1, 4: 0, 5: 3, 6: 1}
        choice = items_choose(candidates=[1, 2, 3, 4, 5, 6, 7], fill=fill, seen={4}, k=3, n=3, rng=random.Random(0))
        # 5 is full (3 of k=3), 4 was seen; 2 and 7 are empty, then 3 and 6 hold one answer, then 1.
        assert set(choice.chosen) <= {2, 7, 3, 6} and {2, 7} <= set(choice.chosen)
        assert set(choice.chosen) | set(choice.spares) == {1, 2, 3, 6, 7}
        assert choice.spares[-1] == 1

    def test_fewer_eligible_items_than_wanted_gives_them_all_and_no_spares(self):
        choice = items_choose(candidates=[1, 2, 3], fill={1: 1}, seen={2}, k=1, n=5, rng=random.Random(1))
        assert (choice.chosen, choice.spares) == ([3], [])

    def test_a_seed_reproduces_the_items_and_their_order(self):
        args = {"candidates": list(range(40)), "fill": {i: i % 3 for i in range(40)}, "seen": {5, 6}, "k": 3, "n": 8}
        first = items_choose(**args, rng=random.Random("1234:0"))
        assert items_choose(**args, rng=random.Random("1234:0")) == first
        assert items_choose(**args, rng=random.Random("1235:0")) != first
        assert first.chosen != sorted(first.chosen)  # shown in a shuffled order

    def test_the_draws_after_the_choice_depend_only_on_how_many_items_were_chosen(self):
        # What the docstring promises: one draw per candidate, then the shuffle of the chosen.
        states = []
        for fill, seen in (({}, set()), ({1: 1, 2: 5}, {3, 4}), ({i: 4 for i in range(10)}, {12})):
            rng = random.Random(99)
            choice = items_choose(candidates=list(range(20)), fill=fill, seen=seen, k=5, n=6, rng=rng)
            assert len(choice.chosen) == 6
            states.append(rng.random())
        assert len(set(states)) == 1


@pytest.mark.django_db
class TestAllocation:
    def test_a_participant_gets_a_batch_of_distinct_items_in_a_seeded_random_order(self):
        study = make_study(dataset=make_dataset(n_classes=4, test_per_class=5), shots=(0,), items_per_participant=8)
        participant = enrol(study)
        participant_start(participant=participant)
        batch = list(participant.assignments.order_by("position"))
        assert [a.position for a in batch] == list(range(8))
        assert len({a.item_id for a in batch}) == 8
        assert all(a.slot == 0 and a.status == "reserved" for a in batch)
        assert [a.item_id for a in batch] != sorted(a.item_id for a in batch)

    def test_the_same_seeds_give_the_same_items_in_the_same_order(self):
        dataset = make_dataset(n_classes=4, test_per_class=5)
        orders = []
        for title in ("a", "b"):
            study = study_open(study=study_create(dataset=dataset, title=title, seed=11, shots=(0,),
                                                  items_per_participant=6))
            participant = enrol(study, seed=1234)
            participant_start(participant=participant)
            orders.append(list(participant.assignments.order_by("position").values_list("item_id", flat=True)))
        assert orders[0] == orders[1]

    def test_least_filled_items_are_allocated_first(self):
        study = make_study(dataset=make_dataset(n_classes=2, test_per_class=3), shots=(0,), items_per_participant=3,
                           k_per_item=3)
        first = enrol(study)
        answer_all(first)
        second = enrol(study)
        participant_start(participant=second)
        first_items = set(first.assignments.values_list("item_id", flat=True))
        second_items = set(second.assignments.values_list("item_id", flat=True))
        assert first_items.isdisjoint(second_items)  # the three untouched items come first

    def test_every_item_gets_exactly_k_answers_and_latecomers_find_the_study_full(self):
        study = make_study(dataset=make_dataset(n_classes=3, test_per_class=2), items_per_participant=4, k_per_item=3,
                           repeat_items_across_parts=True)
        # 6 items x k=3 = 18 answers per condition, 4 per participant: the fifth participant gets the last two.
        answered = [answer_all(enrol(study)) for _ in range(5)]
        assert answered == [12, 12, 12, 12, 6]
        counts = answers_per_item(study)
        assert len(counts) == 18 and set(counts.values()) == {3}
        late = enrol(study)
        assert participant_start(participant=late).step == Step.FULL
        assert late.completed_at is None and not late.assignments.exists()

    def test_a_phase_that_runs_out_of_items_ends_early_and_the_next_one_follows(self):
        study = make_study(dataset=make_dataset(n_classes=2, test_per_class=1), items_per_participant=2, k_per_item=1)
        participant_start(participant=enrol(study))  # holds both zero-shot items
        second = enrol(study)
        step = participant_start(participant=second)
        assert step.assignment.condition.shots == 1
        assert not second.assignments.filter(condition__shots=0).exists()

    def test_a_participant_never_gets_the_same_item_twice_in_a_condition(self):
        study = make_study(dataset=make_dataset(n_classes=2, test_per_class=2), shots=(0,), items_per_participant=4)
        participant = enrol(study)
        step = participant_start(participant=participant)
        with pytest.raises(IntegrityError), transaction.atomic():
            Assignment.objects.create(participant=participant, condition=step.assignment.condition,
                                      item=step.assignment.item, position=99, slot=4, expires_at=timezone.now())

    def test_the_slot_constraint_refuses_more_than_one_live_assignment_per_slot(self):
        study = make_study(dataset=make_dataset(n_classes=2, test_per_class=1), shots=(0,), items_per_participant=1)
        a, b = enrol(study), enrol(study)
        first = participant_start(participant=a).assignment
        with pytest.raises(IntegrityError), transaction.atomic():
            Assignment.objects.create(participant=b, condition=first.condition, item=first.item, position=0,
                                      slot=first.slot, expires_at=timezone.now())

    def test_a_claim_that_collides_with_a_slot_taken_meanwhile_moves_on_to_the_next_slot(self):
        study = make_study(dataset=make_dataset(n_classes=2, test_per_class=1), shots=(0,), items_per_participant=1)
        first = participant_start(participant=enrol(study)).assignment
        late = enrol(study)
        # `used` as seen before the first participant's reservation: slot 0 looks free but is not.
        with transaction.atomic():
            assert _claim_slot(participant=late, condition=first.condition, item_id=first.item_id, position=0, used=set(),
                          k=2, expires_at=timezone.now())
        assert late.assignments.get().slot == 1
        assert not _claim_slot(participant=enrol(study), condition=first.condition, item_id=first.item_id, position=0,
                          used=set(), k=2, expires_at=timezone.now())

    def test_a_batch_whose_free_slot_was_taken_between_counting_and_inserting_is_claimed_item_by_item(self,
                                                                                                    monkeypatch):
        study = make_study(dataset=make_dataset(n_classes=2, test_per_class=1), shots=(0,), items_per_participant=2,
                           k_per_item=2)
        condition = study.conditions.get()
        plan, collided = allocation._batch_plan, []

        def taken_meanwhile(**kwargs):
            batch = plan(**kwargs)
            # Someone takes the slot the batch counted as free for its first item (a late answer taking back its
            # trial does this): the one insert of the whole batch fails, and nothing of it remains.
            item_id, slot = batch[0]
            Assignment.objects.create(participant=enrol(study), condition=condition, item_id=item_id, position=0,
                                      slot=slot, expires_at=timezone.now() + timedelta(minutes=5))
            collided.append((item_id, slot))
            return batch

        monkeypatch.setattr(allocation, "_batch_plan", taken_meanwhile)
        participant = enrol(study)
        assert participant_start(participant=participant).step == Step.TRIAL
        (item_id, slot), = collided
        assert participant.assignments.count() == 2
        assert participant.assignments.get(item_id=item_id).slot == 1 - slot  # the claim moved on to the next slot
        assert_never_above_k(study)

    def test_a_phase_is_allocated_once_even_when_asked_twice(self):
        study = make_study(dataset=make_dataset(n_classes=2, test_per_class=3), shots=(0,), items_per_participant=3)
        participant = enrol(study)
        first = participant_start(participant=participant).assignment
        again = Participant.objects.get(pk=participant.pk)
        assert assignment_next(participant=again) == first
        assert participant_start(participant=again).assignment == first
        assert participant.assignments.count() == 3
        assert Participant.objects.get(pk=participant.pk).phases_entered == 1

    def test_a_closed_study_lets_participants_finish_allocated_trials_but_opens_no_new_phase(self):
        study = make_study(items_per_participant=2)
        participant = enrol(study)
        step = participant_start(participant=participant)
        study_close(study=study)
        while step.step == Step.TRIAL:
            response_submit(assignment=step.assignment, choice="1")
            step = participant_allocate_next_step(participant=participant)
        assert step.step == Step.COMPLETE
        assert set(participant.assignments.values_list("condition__shots", flat=True)) == {0}


@pytest.mark.django_db
class TestReservations:
    def study(self, **fields):
        fields.setdefault("k_per_item", 1)
        return make_study(dataset=make_dataset(n_classes=1, test_per_class=1, train_per_class=2), shots=(0,),
                          items_per_participant=1, **fields)

    def test_an_expired_reservation_returns_to_the_pool_when_someone_else_is_allocated(self):
        study = self.study()
        slow, fast = enrol(study), enrol(study)
        held = participant_start(participant=slow).assignment
        assert participant_start(participant=fast).step == Step.FULL  # the only slot is held
        Assignment.objects.filter(pk=held.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
        other = enrol(study)
        taken = participant_start(participant=other).assignment
        held.refresh_from_db()
        assert held.status == "expired" and (taken.item_id, taken.slot) == (held.item_id, held.slot)

    def test_a_late_answer_is_refused_politely_when_the_slot_went_to_someone_else(self):
        study = self.study()
        slow = enrol(study)
        held = participant_start(participant=slow).assignment
        Assignment.objects.filter(pk=held.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
        response_submit(assignment=participant_start(participant=enrol(study)).assignment, choice="0")
        outcome = response_submit(assignment=held, choice="0")
        assert outcome.refused and outcome.response is None
        assert Response.objects.count() == 1
        assert participant_allocate_next_step(participant=slow).step == Step.FULL

    def test_a_late_answer_is_accepted_while_the_item_still_has_a_free_slot(self):
        study = self.study(k_per_item=2)
        slow = enrol(study)
        held = participant_start(participant=slow).assignment
        Assignment.objects.filter(pk=held.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
        participant_start(participant=enrol(study))  # expires `held` and takes its slot 0
        held.refresh_from_db()
        assert held.status == "expired"
        outcome = response_submit(assignment=held, choice="0")
        assert outcome.created
        held.refresh_from_db()
        assert (held.status, held.slot) == ("answered", 1)

    def test_an_expired_trial_still_free_is_taken_back_when_the_participant_returns(self):
        study = self.study()
        participant = enrol(study)
        held = participant_start(participant=participant).assignment
        Assignment.objects.filter(pk=held.pk).update(status="expired")
        assert participant_allocate_next_step(participant=participant).assignment == held
        held.refresh_from_db()
        assert held.status == "reserved" and held.expires_at > timezone.now()


@pytest.mark.django_db
class TestDesigns:
    def test_between_subjects_balances_conditions_in_a_seeded_order(self):
        study = make_study(design=Study.Design.BETWEEN)
        conditions = [enrol(study).condition.shots for _ in range(7)]
        assert sorted(Counter(conditions).values()) == [2, 2, 3]
        assert len(set(conditions[:3])) == 3
        assert conditions[3:6] == conditions[:3]  # the seeded tie order repeats

    def test_between_subjects_skips_a_condition_that_is_full(self):
        study = make_study(dataset=make_dataset(n_classes=2, test_per_class=1), design=Study.Design.BETWEEN,
                           k_per_item=1, items_per_participant=2)
        first = enrol(study)
        answer_all(first)  # fills the first condition of the seeded order
        others = {enrol(study).condition.shots for _ in range(2)}
        assert others == {0, 1, 2} - {first.condition.shots}
        # Counts tie again, and the seeded order would start with the full condition: it is skipped.
        assert enrol(study).condition.shots != first.condition.shots

    def test_declining_participants_do_not_count_towards_the_balance(self):
        study = make_study(design=Study.Design.BETWEEN)
        participant_enrol(study=study, enrolment=uuid.uuid4(), consent=False)
        assert Participant.objects.get().condition is None
        assert Counter(enrol(study).condition.shots for _ in range(3)) == Counter({0: 1, 1: 1, 2: 1})

    def test_by_default_a_person_never_sees_an_item_in_two_parts(self):
        # Four items, two per part: part 1 takes two, part 2 the other two, part 3 has none left for this person
        # although every item still has free places there.
        study = make_study(dataset=make_dataset(n_classes=2, test_per_class=2), items_per_participant=2, k_per_item=5)
        assert not study.repeat_items_across_parts
        participant = enrol(study)
        assert answer_all(participant) == 4
        items = list(participant.assignments.values_list("item_id", flat=True))
        assert len(items) == len(set(items)) == 4
        assert not participant.assignments.filter(condition__shots=2).exists()
        # Someone else still gets part 3: the places are there, only not for someone who saw every image.
        assert participant_start(participant=enrol(study)).step == Step.TRIAL

    def test_when_the_study_allows_it_an_item_may_come_back_in_a_later_part(self):
        study = make_study(dataset=make_dataset(n_classes=2, test_per_class=2), items_per_participant=2, k_per_item=5,
                           repeat_items_across_parts=True)
        participant = enrol(study)
        assert answer_all(participant) == 6
        per_item = Counter(participant.assignments.values_list("item_id", flat=True))
        assert max(per_item.values()) >= 2  # six trials from four items
        # Never twice within one part (assignment_no_repeat).
        assert not participant.assignments.values("condition", "item").annotate(n=Count("id")).filter(n__gt=1).exists()

    def test_the_repeat_setting_is_recorded_with_the_study_and_frozen_once_it_opens(self, rf, admin_user):
        from django.contrib.admin.sites import site

        study = make_study(repeat_items_across_parts=True)
        assert Study.objects.get(pk=study.pk).repeat_items_across_parts
        request = rf.get("/")
        request.user = admin_user
        frozen = site._registry[Study].get_readonly_fields(request, study)
        assert {"repeat_items_across_parts", "participant_id_required"} <= set(frozen)
        draft = make_study(open_it=False)
        assert "repeat_items_across_parts" not in site._registry[Study].get_readonly_fields(request, draft)

    def test_within_subjects_participants_see_every_condition(self):
        study = make_study(items_per_participant=2)
        participant = enrol(study)
        assert answer_all(participant) == 6
        assert participant.condition is None
        assert participant.assignments.values("condition").annotate(n=Count("id")).count() == 3


def lapse(*participants: Participant) -> None:
    """Their reservations run out (nobody has swept them yet: they are still marked reserved)."""
    Assignment.objects.filter(participant__in=participants, status="reserved").update(
        expires_at=timezone.now() - timedelta(seconds=1))


@pytest.mark.django_db
class TestPlacesComeBack:
    """A lapsed reservation is a free place everywhere at once: item fill, condition choice, "study full"."""

    def between(self, **fields) -> Study:
        fields = {"k_per_item": 1, "items_per_participant": 1, **fields}
        return make_study(dataset=make_dataset(n_classes=2, train_per_class=2, test_per_class=1),
                          design=Study.Design.BETWEEN, **fields)

    def test_two_newcomers_get_the_two_places_of_a_condition_whose_only_reservations_lapsed(self):
        study = self.between()  # 2 items x k=1 per condition, 1 item per participant: 2 places per condition
        by_condition: dict[int, list[Participant]] = {}
        while len(by_condition) < 3 or any(len(v) < 2 for v in by_condition.values()):
            participant = enrol(study)
            by_condition.setdefault(participant.condition_id, []).append(participant)
            assert participant_start(participant=participant).step == Step.TRIAL
        abandoned_id = next(iter(by_condition))
        abandoned = by_condition.pop(abandoned_id)
        for people in by_condition.values():
            for participant in people:
                answer_all(participant)  # the other two conditions are full for good
        lapse(*abandoned)
        # People who joined long ago and never started hold nothing either.
        stale = [enrol(study) for _ in range(2)]
        Participant.objects.filter(pk__in=[p.pk for p in stale]).update(
            condition_id=abandoned_id, created_at=timezone.now() - timedelta(days=1))
        newcomers = [enrol(study), enrol(study)]
        assert [p.condition_id for p in newcomers] == [abandoned_id] * 2
        steps = [participant_start(participant=p) for p in newcomers]
        assert [s.step for s in steps] == [Step.TRIAL] * 2
        assert {s.assignment.item_id for s in steps} == set(study.study_items.values_list("item_id", flat=True))
        assert_never_above_k(study)

    def test_condition_balance_counts_answers_and_live_reservations_not_participants(self):
        study = self.between(k_per_item=2)
        first = [enrol(study) for _ in range(3)]  # one per condition, in the seeded order
        for participant in first:
            participant_start(participant=participant)
        quitter_condition = first[0].condition_id
        # Two more people in the first condition start and walk away: three participants, nothing held.
        quitters = []
        for _ in range(2):
            participant = enrol(study)
            Participant.objects.filter(pk=participant.pk).update(condition_id=quitter_condition)
            participant.refresh_from_db()
            participant_start(participant=participant)
            quitters.append(participant)
        lapse(first[0], *quitters)
        assert enrol(study).condition_id == quitter_condition

    def test_a_late_answer_takes_a_slot_whose_new_holder_has_lapsed_too(self):
        study = make_study(dataset=make_dataset(n_classes=1, test_per_class=1, train_per_class=2), shots=(0,),
                           items_per_participant=1, k_per_item=1)
        first = enrol(study)
        held = participant_start(participant=first).assignment
        lapse(first)
        second = enrol(study)
        assert participant_start(participant=second).step == Step.TRIAL  # takes the lapsed slot
        lapse(second)
        outcome = response_submit(assignment=held, choice="0")
        assert outcome.created and not outcome.refused
        assert participant_allocate_next_step(participant=second).step == Step.FULL
        assert_never_above_k(study)

    def test_several_participants_with_lapses_in_every_condition_fill_each_item_to_exactly_k(self):
        study = make_study(dataset=make_dataset(n_classes=3, test_per_class=2, train_per_class=2),
                           items_per_participant=3, k_per_item=2)
        walked_away = []
        for round_ in range(4):
            people = [enrol(study) for _ in range(3)]
            for participant in people:
                step = participant_start(participant=participant)
                if round_ % 2 == 0 and participant is people[0]:
                    walked_away.append(participant)  # holds a batch, never answers
                    continue
                while step.step == Step.TRIAL:
                    response_submit(assignment=step.assignment, choice="1")
                    step = participant_allocate_next_step(participant=participant)
            lapse(*walked_away)
        while participant_start(participant=(late := enrol(study))).step != Step.FULL:
            answer_all(late)
        assert_filled_exactly(study, conditions=3)


def assert_never_above_k(study: Study) -> None:
    live = (Assignment.objects.filter(condition__study=study, is_attention_check=False)
            .exclude(status="expired").values("condition", "item").annotate(n=Count("id")))
    assert all(row["n"] <= study.k_per_item for row in live)


def assert_filled_exactly(study: Study, *, conditions: int) -> None:
    counts = answers_per_item(study)
    n_items = study.study_items.count()
    assert len(counts) == n_items * conditions
    assert set(counts.values()) == {study.k_per_item}, counts
    assert not Assignment.objects.filter(condition__study=study, status="reserved").exists()
    repeats = (
        Assignment.objects.filter(condition__study=study)
        .values("participant", "condition", "item")
        .annotate(n=Count("id"))
        .filter(n__gt=1)
    )
    assert not repeats.exists()


@pytest.mark.django_db(transaction=True)
def test_many_simultaneous_participants_fill_every_item_to_exactly_k_within_subjects():
    # 12 items x k=5 = 60 answers per condition at 3 per participant: 20 of the 40 can fill it.
    study = make_study(dataset=make_dataset(n_classes=3, test_per_class=4), items_per_participant=3, k_per_item=5)
    result = simulation_run(study=study, n=40, concurrency=20, accuracy=[0.5, 0.75, 0.75], idk_rate=[0.3, 0.05, 0.05])
    assert result.errors == []
    assert result.completed + result.turned_away == 40
    assert result.answers == 3 * 12 * 5
    assert_filled_exactly(study, conditions=3)
    assert Participant.objects.filter(study=study, simulated=True).count() == 40


@pytest.mark.django_db(transaction=True)
def test_many_simultaneous_participants_stay_balanced_between_subjects():
    # 6 items x k=4 = 24 answers per condition at 3 per participant: 8 participants per condition.
    study = make_study(dataset=make_dataset(n_classes=3, test_per_class=2), design=Study.Design.BETWEEN,
                       items_per_participant=3, k_per_item=4)
    result = simulation_run(study=study, n=24, concurrency=12)
    assert result.errors == [] and result.completed == 24
    per_condition = Counter(Participant.objects.filter(study=study).values_list("condition__shots", flat=True))
    assert per_condition == Counter({0: 8, 1: 8, 2: 8})
    assert_filled_exactly(study, conditions=3)


# Attention checks


@pytest.mark.django_db
def test_attention_checks_are_known_answer_items_that_are_never_shot_examples_nor_counted_as_answers():
    study = attention_study()
    client = Client()
    finish(client, start(client, study))
    participant = participant_of(client, study)
    checks = participant.assignments.filter(is_attention_check=True)
    assert checks.count() == 4  # rate 0.5: as many checks as test items
    assert all(a.slot is None and a.item.split == study.shot_split for a in checks)
    assert participant.assignments.filter(is_attention_check=False).count() == 4
    assert not participant.attention_failed


@pytest.mark.django_db
def test_without_spare_known_answer_items_attention_checks_are_skipped_with_a_warning(caplog):
    # Two training images per class, both used as two-shot examples: nothing left to check with.
    study = make_study(dataset=make_dataset(n_classes=3, train_per_class=2), attention_check_rate=0.3)
    client = Client()
    finish(client, start(client, study))
    assert not Assignment.objects.filter(is_attention_check=True).exists()
    wanted = {r.args[1] for r in caplog.records if "attention check(s) wanted" in r.msg}
    assert wanted and all(n > 0 for n in wanted)
    assert (f"study {study.code}: {min(wanted)} attention check(s) wanted, only 0 unused known-answer item(s) in "
            f"split 'train'") in caplog.messages


@pytest.mark.django_db
def test_a_study_longer_than_five_minutes_gives_everyone_at_least_two_attention_checks():
    dataset = make_dataset(n_classes=3, train_per_class=6, test_per_class=12)
    long_study = make_study(dataset=dataset, design=Study.Design.BETWEEN, items_per_participant=60,
                            attention_check_rate=0.01)  # 1 % of 36 items would mostly round to none
    short_study = make_study(dataset=dataset, design=Study.Design.BETWEEN, items_per_participant=5,
                             attention_check_rate=0.01)
    assert checks_minimum_per_part(study=long_study) == 2 and checks_minimum_per_part(study=short_study) == 0
    within = make_study(dataset=dataset, items_per_participant=20, attention_check_rate=0.05)
    assert checks_minimum_per_part(study=within) == 1  # three parts: at least three checks in all
    for n in range(4):
        start(Client(), long_study, pid=f"long-{n}")
    per_person = [p.assignments.filter(is_attention_check=True).count()
                  for p in Participant.objects.filter(study=long_study)]
    assert min(per_person) >= 2


def expired_first_trial(study: Study, *, slot: int | None = None) -> Assignment:
    """A new participant's first trial, marked expired (its slot free), optionally moved to `slot` first."""
    participant = enrol(study)
    trial = participant_start(participant=participant).assignment
    Assignment.objects.filter(pk=trial.pk).update(status=Assignment.Status.EXPIRED, slot=trial.slot if slot is None
                                                  else slot, expires_at=timezone.now() - timedelta(minutes=1))
    trial.refresh_from_db()
    return trial


@pytest.mark.django_db
def test_a_trial_taken_back_by_its_page_keeps_its_old_slot_and_gets_a_fresh_reservation():
    study = make_study(dataset=make_dataset(n_classes=2, test_per_class=1), shots=(0,), k_per_item=3,
                       items_per_participant=1)
    trial = expired_first_trial(study, slot=2)  # slots 0 and 1 are free too: the old one is preferred
    before = timezone.now()

    shown = assignment_show(assignment=trial)

    trial.refresh_from_db()
    assert shown is not None and (trial.status, trial.slot) == (Assignment.Status.RESERVED, 2)
    assert trial.expires_at >= before + timedelta(minutes=study.reservation_minutes)


@pytest.mark.django_db
def test_taking_a_trial_back_frees_the_lapsed_places_of_its_item_only():
    study = make_study(dataset=make_dataset(n_classes=3, test_per_class=1), shots=(0,), k_per_item=1,
                       items_per_participant=2)
    late = expired_first_trial(study)
    # Someone else got the late trial's item (its one slot) and the third item, and let both lapse unmarked.
    other = enrol(study)
    participant_start(participant=other)
    lapse(other)
    same_item, other_item = (Assignment.objects.get(participant=other, item_id=late.item_id),
                             Assignment.objects.exclude(item_id=late.item_id).get(participant=other))

    outcome = response_submit(assignment=late, choice="0")

    assert outcome.created
    late.refresh_from_db()
    same_item.refresh_from_db()
    other_item.refresh_from_db()
    assert (late.status, late.slot) == (Assignment.Status.ANSWERED, 0)
    assert same_item.status == Assignment.Status.EXPIRED  # its slot had to be freed
    assert other_item.status == Assignment.Status.RESERVED  # lapsed, but nobody needed its place yet


@pytest.mark.django_db
def test_a_late_answer_finds_the_free_slot_from_the_used_ones_without_colliding(django_assert_max_num_queries):
    # The free slots are read from the item's live trials; the unique constraint is the guarantee, not the search.
    study = make_study(dataset=make_dataset(n_classes=2, test_per_class=1), shots=(0,), k_per_item=3,
                       items_per_participant=1)
    late = expired_first_trial(study, slot=0)
    for slot in (0, 1):  # two others hold slots 0 and 1 of the same item: only slot 2 is free
        someone = enrol(study)
        Assignment.objects.create(participant=someone, condition=late.condition, item=late.item, position=0,
                                  slot=slot, expires_at=timezone.now() + timedelta(minutes=30))
    with CaptureQueriesContext(connection) as queries:
        outcome = response_submit(assignment=late, choice="1")
    late.refresh_from_db()
    assert outcome.created and (late.status, late.slot) == (Assignment.Status.ANSWERED, 2)
    slot_writes = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("UPDATE") and '"slot"' in q["sql"]]
    assert len(slot_writes) == 1, slot_writes


@pytest.mark.django_db
def test_taking_back_a_trial_that_another_request_already_took_back_and_answered_changes_nothing():
    study = make_study(dataset=make_dataset(n_classes=2, test_per_class=1), shots=(0,), k_per_item=2,
                       items_per_participant=1)
    stale = expired_first_trial(study)  # this request still sees it expired ...
    Assignment.objects.filter(pk=stale.pk).update(status=Assignment.Status.ANSWERED, slot=1)  # ... another answered it

    # It is back with this participant already: True, and the other request's answer stays as it is.
    assert allocation._reclaim(assignment=stale, to_status=Assignment.Status.RESERVED) is True
    assert Assignment.objects.filter(pk=stale.pk).values_list("status", "slot").get() == (
        Assignment.Status.ANSWERED, 1)


@pytest.mark.django_db
def test_an_attention_check_has_no_slot_to_take_back():
    study = attention_study()
    participant = enrol(study)
    participant_start(participant=participant)
    check = Assignment.objects.filter(participant=participant, is_attention_check=True).first()
    assert allocation._reclaim(assignment=check, to_status=Assignment.Status.RESERVED) is True  # still live
    Assignment.objects.filter(pk=check.pk).update(status=Assignment.Status.EXPIRED)  # as withdrawing does
    check.refresh_from_db()
    assert allocation._reclaim(assignment=check, to_status=Assignment.Status.RESERVED) is False
    assert Assignment.objects.filter(pk=check.pk).values_list("status", "slot").get() == (
        Assignment.Status.EXPIRED, None)


class TestCheckCount:
    """How many attention checks a part gets: a share of its trials, rounded at random (no database)."""

    def test_the_rounding_is_random_so_that_the_expected_share_of_checks_is_exact(self):
        # rate 0.3 of the part's trials with 5 test items: 5 * 0.3 / 0.7 = 2.142857 checks on average, i.e. exactly
        # 30% of the trials in expectation; each part gets 2 or 3.
        study = Study(attention_check_rate=0.3)
        rng = random.Random(7)
        counts = [allocation._check_count(5, study, rng, minimum=0) for _ in range(20_000)]
        assert set(counts) == {2, 3}
        mean = sum(counts) / len(counts)
        assert abs(mean - 15 / 7) < 4 * (0.142857 * 0.857143 / len(counts)) ** 0.5  # 4 standard errors
        share = mean / (mean + 5)
        assert abs(share - 0.3) < 0.002

    def test_a_whole_number_of_checks_is_never_rounded_up(self):
        rng = random.Random(3)
        assert {allocation._check_count(4, Study(attention_check_rate=0.5), rng, minimum=0) for _ in range(500)} == {4}

    def test_no_checks_without_a_rate_or_without_test_items_and_no_random_draw_either(self):
        for n_test, rate in ((5, 0.0), (0, 0.3)):
            rng, untouched = random.Random(11), random.Random(11)
            assert allocation._check_count(n_test, Study(attention_check_rate=rate), rng, minimum=2) == 0
            assert rng.random() == untouched.random()

    def test_a_minimum_raises_the_count_but_the_draw_is_made_all_the_same(self):
        study = Study(attention_check_rate=0.3)
        for seed in range(50):
            low, high = random.Random(seed), random.Random(seed)
            drawn = allocation._check_count(5, study, low, minimum=0)
            assert allocation._check_count(5, study, high, minimum=4) == max(drawn, 4) == 4
            assert allocation._check_count(5, study, random.Random(seed), minimum=1) == drawn
            assert low.random() == high.random()  # later draws (which checks, their order) do not depend on it


@pytest.mark.django_db
def test_attention_checks_are_never_a_practice_image_an_example_nor_the_same_image_twice_for_a_participant():
    # Three parts with two checks each from a pool of known-answer images some of which are examples (one- and
    # two-shot) and practice images: a participant sees each remaining one at most once.
    make_study(dataset=make_dataset(n_classes=3, train_per_class=5, test_per_class=4))  # another dataset's images
    dataset = make_dataset(n_classes=3, train_per_class=5, test_per_class=4)
    study = make_study(dataset=dataset, items_per_participant=2, attention_check_rate=0.5, practice_trials=2)
    examples = set(ShotExample.objects.filter(condition__study=study).values_list("item_id", flat=True))
    practice = set(practice_item_ids(study=study))
    allowed = set(Item.objects.filter(dataset=dataset, split=study.shot_split).values_list("id", flat=True)) - (
        examples | practice)
    assert len(practice) == 2 and examples and len(allowed) >= 6
    for _ in range(5):
        participant = enrol(study)
        answer_all(participant)
        checks = list(participant.assignments.filter(is_attention_check=True).values_list("item_id", flat=True))
        assert len(checks) == 6 and len(set(checks)) == 6
        assert set(checks) <= allowed
    # Drawn at random per participant, not the same six for everyone.
    assert Assignment.objects.filter(is_attention_check=True).values("item_id").distinct().count() > 6


def batch_of(participant: Participant) -> list[tuple]:
    """A participant's trials as allocated: (position, item, slot, check?, status), in position order."""
    return list(participant.assignments.order_by("condition__shots", "position").values_list(
        "condition__shots", "position", "item_id", "slot", "is_attention_check", "status"))


def assignment_inserts(queries: CaptureQueriesContext) -> int:
    table = Assignment._meta.db_table
    return sum(1 for q in queries.captured_queries if q["sql"].startswith(f'INSERT INTO "{table}"'))


@pytest.mark.django_db
def test_a_part_goes_in_as_one_insert_taking_the_slots_left_free_by_others():
    study = make_study(dataset=make_dataset(n_classes=3, train_per_class=6, test_per_class=2), shots=(0,),
                       k_per_item=3, items_per_participant=6, attention_check_rate=0.25)
    first, second = enrol(study), enrol(study)
    participant_start(participant=first)
    with CaptureQueriesContext(connection) as queries:
        participant_start(participant=second)
    # One statement for the whole batch: no slot it chose was taken (the used ones were read, not discovered).
    assert assignment_inserts(queries) == 1
    trials = second.assignments.all()
    assert sorted(a.position for a in trials) == list(range(len(trials)))
    assert {a.slot for a in trials if not a.is_attention_check} == {1}  # slot 0 of each item is the first's
    assert all(a.slot is None for a in trials if a.is_attention_check) and any(a.is_attention_check for a in trials)
    assert all(a.expires_at > timezone.now() + timedelta(minutes=study.reservation_minutes - 1) for a in trials)


@pytest.mark.django_db
def test_a_batch_whose_one_insert_collides_is_claimed_item_by_item_with_the_same_result(monkeypatch):
    # The rare case: a slot the batch counted as free was taken meanwhile (a late answer took its trial back), the
    # one insert fails, and the batch is claimed trial by trial. Two identical studies over one dataset, and two
    # participants with one seed: the slow way must give what the one insert gives.
    dataset = make_dataset(n_classes=3, train_per_class=6, test_per_class=3)
    studies = [make_study(dataset=dataset, k_per_item=2, items_per_participant=4, attention_check_rate=0.3, seed=9)
               for _ in range(2)]
    others = [enrol(study, seed=1) for study in studies]  # someone holds some slots already, in both
    for other in others:
        participant_start(participant=other)
    fast, slow = (enrol(study, seed=77) for study in studies)
    answer_all(fast)
    real_bulk_create = QuerySet.bulk_create
    collisions = []

    def colliding(self, objs, *args, **kwargs):
        if self.model is Assignment:
            collisions.append(len(objs))
            raise IntegrityError("simulated: a slot of the batch was taken meanwhile")
        return real_bulk_create(self, objs, *args, **kwargs)

    monkeypatch.setattr(QuerySet, "bulk_create", colliding)
    answer_all(slow)

    assert len(collisions) == 3  # each part's one insert failed and was claimed trial by trial
    assert batch_of(slow) == batch_of(fast) and batch_of(fast)
    slow_expiry = slow.assignments.values_list("expires_at", flat=True)
    assert all(abs(e - timezone.now()) < timedelta(minutes=studies[1].reservation_minutes + 1) for e in slow_expiry)
    assert {(a.participant_id, a.condition.study_id) for a in slow.assignments.select_related("condition")} == {
        (slow.pk, studies[1].pk)}


@pytest.mark.django_db
def test_a_trial_is_taken_back_on_its_own_conditions_slots_not_those_of_the_same_image_elsewhere():
    # Within subjects every image is in every part; its k slots are per condition.
    study = make_study(dataset=make_dataset(n_classes=1, test_per_class=1, train_per_class=3), k_per_item=1,
                       items_per_participant=1)
    late = expired_first_trial(study)  # zero-shot, its one slot free again
    other = enrol(study)
    for condition in study.conditions.exclude(pk=late.condition_id):  # someone holds the image in the other parts
        Assignment.objects.create(participant=other, condition=condition, item=late.item, position=0, slot=0,
                                  expires_at=timezone.now() + timedelta(minutes=30))

    outcome = response_submit(assignment=late, choice="0")

    late.refresh_from_db()
    assert outcome.created and (late.status, late.slot) == (Assignment.Status.ANSWERED, 0)


@pytest.mark.django_db
def test_the_minimum_of_checks_applies_from_just_over_five_minutes_of_estimated_trials():
    dataset = make_dataset(n_classes=3, train_per_class=6, test_per_class=20)

    def minimum(**fields):
        return checks_minimum_per_part(study=make_study(dataset=dataset, design=Study.Design.BETWEEN, **fields))

    # Trials per part = test items / (1 - rate), six seconds each: 25 / 0.5 = 50 trials are 300 s, not over five
    # minutes; 45 / 0.8 = 56.25 trials are 337.5 s.
    assert minimum(items_per_participant=25, attention_check_rate=0.5) == 0
    assert minimum(items_per_participant=26, attention_check_rate=0.5) == 2
    assert minimum(items_per_participant=45, attention_check_rate=0.2) == 2
    assert minimum(items_per_participant=60, attention_check_rate=0.0) == 0  # no checks at all: no minimum


@pytest.mark.django_db
def test_a_part_wanting_exactly_one_check_gets_one_even_from_a_pool_of_exactly_one(caplog):
    # Two test items at a rate of 1/3: 2 * (1/3) / (2/3) = 1 check, whole, so no random rounding. One training
    # image in all: just enough, so nothing to warn about.
    study = make_study(dataset=make_dataset(n_classes=1, train_per_class=1, test_per_class=2), shots=(0,),
                       items_per_participant=2, attention_check_rate=1 / 3)
    participant = enrol(study)
    participant_start(participant=participant)
    assert participant.assignments.filter(is_attention_check=True).count() == 1
    assert "attention check(s) wanted" not in caplog.text


@pytest.mark.django_db
def test_an_allocation_marks_lapsed_only_the_test_trials_of_its_own_condition():
    # Lapsed reservations elsewhere are free places already (counting ignores them); marking them is left to whoever
    # needs their slots. A check holds no slot and is never marked: its participant still gets it.
    dataset = make_dataset(n_classes=3, train_per_class=6, test_per_class=2)
    study = make_study(dataset=dataset, design=Study.Design.BETWEEN, items_per_participant=2,
                       attention_check_rate=0.5)
    elsewhere = make_study(dataset=dataset, design=Study.Design.BETWEEN, items_per_participant=2)
    walked_away, away_elsewhere = enrol(study), enrol(elsewhere)
    participant_start(participant=walked_away)
    participant_start(participant=away_elsewhere)
    lapse(walked_away, away_elsewhere)
    newcomer = enrol(study)
    Participant.objects.filter(pk=newcomer.pk).update(condition=walked_away.condition)
    newcomer.refresh_from_db()

    participant_start(participant=newcomer)

    statuses = {(a.is_attention_check, a.status) for a in walked_away.assignments.all()}
    assert statuses == {(False, Assignment.Status.EXPIRED), (True, Assignment.Status.RESERVED)}
    assert set(away_elsewhere.assignments.values_list("status", flat=True)) == {Assignment.Status.RESERVED}


@pytest.mark.django_db
class TestConditionChoice:
    """Between subjects: a newcomer goes to the condition with the least demand (places taken by test trials, plus
    a batch to be for each fresh joiner). Two conditions here, so that no tie is left to the seeded order."""

    def study(self) -> Study:
        return make_study(dataset=make_dataset(n_classes=4, train_per_class=6, test_per_class=1), shots=(0, 1),
                          design=Study.Design.BETWEEN, k_per_item=1, items_per_participant=2)

    def holder(self, study: Study, condition, **fields) -> Participant:
        """Someone in `condition` who has started (not fresh any more)."""
        return enrol(study, condition=condition, phases_entered=1, **fields)

    def hold(self, participant: Participant, items, **fields) -> None:
        for position, item in enumerate(items):
            Assignment.objects.create(participant=participant, condition=participant.condition, item=item,
                                      position=position, slot=None if fields.get("is_attention_check") else 0,
                                      expires_at=timezone.now() + timedelta(minutes=30), **fields)

    def test_attention_checks_take_no_place(self):
        study = self.study()
        zero, one = study.conditions.order_by("shots")
        tests = [si.item for si in study.study_items.select_related("item")]
        spare = list(Item.objects.filter(dataset=study.dataset, split=study.shot_split)
                     .exclude(id__in=ShotExample.objects.values("item_id"))[:3])
        self.hold(self.holder(study, zero), tests[:1])
        self.hold(self.holder(study, zero), spare, is_attention_check=True)  # three checks: no place
        self.hold(self.holder(study, one), tests[:2])
        assert enrol(study).condition == zero  # one place taken against two

    def test_places_freed_by_leaving_and_joiners_who_never_started_count_for_nothing(self):
        study = self.study()
        zero, one = study.conditions.order_by("shots")
        tests = [si.item for si in study.study_items.select_related("item")]
        left = self.holder(study, zero)
        self.hold(left, tests[:2])
        participant_withdraw(participant=left)  # their reservations are freed at once (marked expired, not lapsed)
        long_ago = enrol(study, condition=zero)  # joined yesterday, never started
        Participant.objects.filter(pk=long_ago.pk).update(created_at=timezone.now() - timedelta(days=1))
        self.hold(self.holder(study, one), tests[2:3])
        assert enrol(study).condition == zero  # nothing against one place


@pytest.mark.django_db
def test_a_batch_whose_slots_were_taken_meanwhile_moves_to_the_next_free_slot_or_to_a_spare(monkeypatch):
    # Between counting the free slots and inserting the batch, others took the first chosen item's planned slot and
    # both slots of the second (the race a late answer can win: it takes its trial back without the condition's
    # lock). The one insert fails; claimed trial by trial, the first item takes its other slot and the second gives
    # way to the next spare.
    study = make_study(dataset=make_dataset(n_classes=3, train_per_class=2, test_per_class=2), shots=(0,),
                       k_per_item=2, items_per_participant=3)
    intruders = [enrol(study) for _ in range(3)]
    real_plan = allocation._batch_plan
    taken = {}

    def plan_then_race(**kwargs):
        plan = real_plan(**kwargs)
        (first, first_slot), (second, _) = plan[0], plan[1]
        condition = intruders[0].condition or study.conditions.get()
        for who, item, slot in ((intruders[0], first, first_slot), (intruders[1], second, 0), (intruders[2], second, 1)):
            Assignment.objects.create(participant=who, condition=condition, item_id=item, position=0, slot=slot,
                                      expires_at=timezone.now() + timedelta(minutes=30))
        taken.update(first=first, first_slot=first_slot, second=second, chosen=[item for item, _ in plan])
        return plan

    monkeypatch.setattr(allocation, "_batch_plan", plan_then_race)
    participant = enrol(study)
    participant_start(participant=participant)

    trials = list(participant.assignments.order_by("position").values_list("position", "item_id", "slot"))
    assert [p for p, _, _ in trials] == [0, 1, 2]
    assert trials[0] == (0, taken["first"], 1 - taken["first_slot"])  # the other slot of the same item
    assert trials[1][1] not in taken["chosen"]  # the second item is full: a spare in its place
    assert trials[2][1] == taken["chosen"][2]
    assert_never_above_k(study)


@pytest.mark.django_db
def test_a_condition_is_full_at_items_times_k_places_not_before():
    # Four items, k = 3: twelve places a condition. Two taken is far from full, so the fewer-places condition wins
    # against one that is empty but awaits two fresh joiners' batches.
    study = make_study(dataset=make_dataset(n_classes=4, train_per_class=2, test_per_class=1), shots=(0, 1),
                       design=Study.Design.BETWEEN, k_per_item=3, items_per_participant=2)
    zero, one = study.conditions.order_by("shots")
    started = enrol(study, condition=zero, phases_entered=1)
    for position, study_item in enumerate(study.study_items.select_related("item")[:2]):
        Assignment.objects.create(participant=started, condition=zero, item=study_item.item, position=position,
                                  slot=0, expires_at=timezone.now() + timedelta(minutes=30))
    enrol(study, condition=one), enrol(study, condition=one)  # fresh: two batches of two to come
    assert enrol(study).condition == zero  # demand 2 against 4
