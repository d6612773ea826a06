"""evaluator.services.runs: creating a run (conditions, draft studies, names), cancelling and resuming it."""

import pytest

from evaluator.errors import ScoringSetupError
from evaluator.models import ModelPrediction, ModelRun, ScoringChunk
from evaluator.services.chunks import model_run_score_chunk
from evaluator.services.runs import RunExists, model_run_cancel, model_run_resume
from tests.evaluator.helpers import assert_scored_exactly_once, create_run, existing_run_lookup_misses_once, score_all
from tests.factories import make_study

pytestmark = pytest.mark.django_db


def test_only_the_chosen_conditions_are_scored(tiny_checkpoint):
    study = make_study()
    run = create_run(study, tiny_checkpoint, conditions=[0, 2])
    score_all(run)
    assert run.condition_shots == [0, 2]
    assert set(ModelPrediction.objects.filter(run=run).values_list("condition__shots", flat=True)) == {0, 2}
    assert_scored_exactly_once(run)
    with pytest.raises(ScoringSetupError, match="conditions must be among"):
        create_run(make_study(shots=(0,)), tiny_checkpoint, conditions=[1])


def test_a_draft_study_cannot_be_scored(tiny_checkpoint):
    with pytest.raises(ScoringSetupError, match="open the study"):
        create_run(make_study(open_it=False), tiny_checkpoint)


def test_a_second_run_with_the_same_name_is_refused_so_that_a_rerun_resumes_instead(tiny_checkpoint):
    study = make_study()
    run = create_run(study, tiny_checkpoint)
    with pytest.raises(RunExists) as exc:
        create_run(study, tiny_checkpoint)
    assert exc.value.run == run


def test_two_runs_created_with_the_same_name_at_once_give_run_exists_and_not_a_database_error(tiny_checkpoint,
                                                                                             monkeypatch):
    study = make_study()
    first = create_run(study, tiny_checkpoint)
    existing_run_lookup_misses_once(monkeypatch)
    with pytest.raises(RunExists) as exc:
        create_run(study, tiny_checkpoint)
    assert exc.value.run == first and ModelRun.objects.filter(study=study).count() == 1
    assert first.chunks.count() == ScoringChunk.objects.count()  # nothing of the refused run was kept



def test_cancelling_stops_the_run_after_the_current_chunk_and_resuming_scores_the_rest(tiny_checkpoint):
    run = create_run(make_study(), tiny_checkpoint, chunk_size=3)
    chunks = list(run.chunks.order_by("index").values_list("pk", flat=True))
    assert model_run_score_chunk(chunk_id=chunks[0]) == "scored"

    assert model_run_cancel(run=run)
    assert [model_run_score_chunk(chunk_id=pk) for pk in chunks[1:]] == ["skipped"] * (len(chunks) - 1)
    assert run.status == ModelRun.Status.CANCELLED
    assert ModelPrediction.objects.filter(run=run).count() == 3 * 5  # 3 items x (zero-shot + 2 methods x 2 conditions)

    assert model_run_resume(run=run) == len(chunks) - 1
    score_all(run)
    assert run.status == ModelRun.Status.DONE
    assert_scored_exactly_once(run)


def test_resuming_a_run_in_progress_changes_nothing(tiny_checkpoint):
    run = create_run(make_study(), tiny_checkpoint, chunk_size=3)
    assert model_run_score_chunk(chunk_id=run.chunks.order_by("index").first().pk) == "scored"
    run.refresh_from_db()
    before = (run.status, run.started_at, sorted(run.chunks.values_list("pk", "status")))
    assert run.status in (ModelRun.Status.PENDING, ModelRun.Status.RUNNING)

    assert model_run_resume(run=run) == 0
    run.refresh_from_db()
    assert (run.status, run.started_at, sorted(run.chunks.values_list("pk", "status"))) == before

