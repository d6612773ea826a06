from evaluator.models import ModelPrediction, ModelRun
from evaluator.services import model_run_create, model_run_score_chunk, model_spec_resolve
from studyapp.models import StudyItem


def create_run(study, checkpoint, **kwargs) -> ModelRun:
    kwargs.setdefault("templates", ["a photo of a {}."])  # one template keeps the tiny model's text pass quick
    return model_run_create(study=study, spec=model_spec_resolve(checkpoint=str(checkpoint)), **kwargs)


def score_all(run: ModelRun, **kwargs) -> list[str]:
    """Score every chunk in this process, as a worker would, in order."""
    outcomes = [model_run_score_chunk(chunk_id=pk, **kwargs) for pk in run.chunks.order_by("index").values_list("pk", flat=True)]
    run.refresh_from_db()
    return outcomes


def expected_answers(run: ModelRun) -> set[tuple[int, str, int]]:
    """(condition, method, item) of every answer the run must give: zero-shot once, few-shot once per method."""
    items = set(StudyItem.objects.filter(study=run.study).values_list("item_id", flat=True))
    keys = [(c.pk, m) for c in run.study.conditions.filter(shots__in=run.condition_shots)
            for m in ([""] if c.shots == 0 else run.fewshot_methods)]
    return {(c, m, i) for c, m in keys for i in items}


def assert_scored_exactly_once(run: ModelRun) -> None:
    run.refresh_from_db()
    answers = list(ModelPrediction.objects.filter(run=run).values_list("condition_id", "method", "item_id"))
    expected = expected_answers(run)
    assert len(answers) == len(set(answers)) == run.items_total == len(expected)
    assert set(answers) == expected
