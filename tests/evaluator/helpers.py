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


def assert_scored_exactly_once(run: ModelRun) -> None:
    run.refresh_from_db()
    items = set(StudyItem.objects.filter(study=run.study).values_list("item_id", flat=True))
    conditions = set(run.study.conditions.filter(shots__in=run.condition_shots).values_list("pk", flat=True))
    pairs = list(ModelPrediction.objects.filter(run=run).values_list("condition_id", "item_id"))
    assert len(pairs) == len(set(pairs)) == run.items_total == len(items) * len(conditions)
    assert set(pairs) == {(c, i) for c in conditions for i in items}
