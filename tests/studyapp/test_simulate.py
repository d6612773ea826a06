from collections import Counter

import pytest
from django.core.management import CommandError, call_command

from studyapp.models import Assignment, Participant, Response, Study
from studyapp.simulation import AnswerModel, simulation_run
from tests.factories import make_dataset, make_study


def responses(study: Study):
    return Response.objects.filter(assignment__condition__study=study, assignment__is_attention_check=False)


@pytest.mark.django_db(transaction=True)
def test_the_command_runs_participants_concurrently_and_fills_every_item_to_k(capsys):
    # Exactly enough places for six people only if a person may see an item again in a later part.
    study = make_study(dataset=make_dataset(n_classes=3, test_per_class=2), items_per_participant=3, k_per_item=2,
                       repeat_items_across_parts=True)
    call_command("simulate_participants", str(study.code), "--n", "6", "--concurrency", "3",
                 "--accuracy", "0.5,0.75,0.75", "--idk-rate", "0.3,0.05,0.05", "--seed", "4")
    out = capsys.readouterr().out
    assert "participants: 6 (" in out and "answers: 36 in" in out and "answers/s" in out and "errors: 0" in out
    per_item = Counter(
        Assignment.objects.filter(condition__study=study, status="answered").values_list("condition", "item")
    )
    assert len(per_item) == 18 and set(per_item.values()) == {2}
    participants = Participant.objects.filter(study=study)
    assert participants.count() == 6
    assert all(p.simulated and p.external_id.startswith("sim-") for p in participants)


@pytest.mark.django_db(transaction=True)
def test_the_answer_model_follows_accuracy_and_idk_rate_per_condition():
    study = make_study(dataset=make_dataset(n_classes=3, test_per_class=4), items_per_participant=12, k_per_item=1,
                       repeat_items_across_parts=True)  # one person answers all twelve items in every part
    result = simulation_run(study=study, n=1, accuracy=[1.0, 0.0, 1.0], idk_rate=[0.0, 0.0, 1.0])
    assert result.errors == [] and result.answers == 36
    by_shots = {shots: responses(study).filter(assignment__condition__shots=shots) for shots in (0, 1, 2)}
    assert all(r.choice_id == r.assignment.item.label_id for r in by_shots[0])
    assert all(not r.is_idk and r.choice_id != r.assignment.item.label_id for r in by_shots[1])
    assert all(r.is_idk for r in by_shots[2])
    assert all(r.rt_client_ms and r.rt_client_ms > 0 for r in responses(study))


def test_without_an_idk_option_the_model_never_answers_idk():
    import random

    model = AnswerModel(accuracy=0.0, idk_rate=1.0)
    answers = {model.answer(target="0", offered=["0", "1", "2"], rng=random.Random(i)) for i in range(50)}
    assert answers == {"1", "2"}


@pytest.mark.django_db(transaction=True)
def test_simulated_participants_drive_a_running_server_over_http(live_server):
    # 2 items x k=2 per condition at 2 per participant: two participants fill it, the third finds it full.
    study = make_study(dataset=make_dataset(n_classes=2, test_per_class=1), items_per_participant=2, k_per_item=2,
                       repeat_items_across_parts=True)
    result = simulation_run(study=study, n=3, concurrency=2, base_url=live_server.url)
    assert result.errors == []
    # Who finds which phase full depends on timing; the totals do not.
    assert result.completed + result.turned_away == 3
    assert result.answers == 2 * 2 * 3
    assert Participant.objects.filter(study=study, simulated=True).count() == 3


@pytest.mark.django_db(transaction=True)
def test_if_needed_runs_only_while_the_study_has_no_simulated_participants(capsys):
    study = make_study(dataset=make_dataset(n_classes=2, test_per_class=1), items_per_participant=1)
    call_command("simulate_participants", str(study.code), "--n", "2", "--if-needed")
    call_command("simulate_participants", str(study.code), "--n", "2", "--if-needed")
    assert "nothing to do" in capsys.readouterr().out
    assert Participant.objects.filter(study=study).count() == 2


@pytest.mark.django_db
def test_the_command_rejects_a_wrong_number_of_per_condition_values():
    study = make_study()
    with pytest.raises(CommandError, match="one per condition"):
        call_command("simulate_participants", str(study.code), "--n", "1", "--accuracy", "0.5,0.5")
    with pytest.raises(CommandError, match="no study"):
        call_command("simulate_participants", "not-a-code", "--n", "1")
