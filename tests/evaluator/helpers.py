"""Helpers of the evaluator's tests: create and score runs in-process, check exactly-once, point Celery at a broker."""

from contextlib import contextmanager

from evaluator.models import ModelPrediction, ModelRun
from evaluator.services.chunks import model_run_score_chunk
from evaluator.services.runs import model_run_create
from evaluator.services.specs import model_spec_resolve
from studyapp.models import StudyItem
from tests.factories import write_image


def existing_run_lookup_misses_once(monkeypatch) -> None:
    """As when two requests create the same run at once: the second looked before the first had committed."""
    from evaluator.services import runs

    real, calls = runs._existing_run, []

    def racing(*, study, name):
        calls.append(name)
        return None if len(calls) == 1 else real(study=study, name=name)

    monkeypatch.setattr(runs, "_existing_run", racing)


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


@contextmanager
def broker(url: str):
    """Point this process's Celery app (which queues the chunks) at ``url``."""
    from evaluator.celery_app import app

    old = (app.conf.broker_url, app.conf.result_backend, app.conf.task_always_eager)
    app.conf.update(broker_url=url, result_backend=url, task_always_eager=False)
    _reset_pool(app)
    try:
        yield app
    finally:
        app.conf.update(broker_url=old[0], result_backend=old[1], task_always_eager=old[2])
        _reset_pool(app)


def _reset_pool(app) -> None:
    # Drop the cached pools (kombu keeps one per broker URL globally, so closing them would break later use).
    app._pool = None
    if "amqp" in app.__dict__:
        app.amqp._producer_pool = None
    app.__dict__.pop("backend", None)


def flush_redis(url: str) -> None:
    import redis

    redis.Redis.from_url(url).flushdb()


def write_demo_data(root):
    """The shared-data layout with a Pets manifest (3 breeds x 9 images), a EuroSAT one (2 classes x 30) and a
    CIFAR-10 one (2 classes x 3): what the house model trains on, in miniature."""
    rows = {"oxford_pets": [], "eurosat": [], "cifar10": []}
    for label in range(3):
        rows["oxford_pets"] += [(f"breed{label}_{i}.jpg", label, f"Breed {label}", "trainval") for i in range(9)]
    for label in range(2):
        rows["eurosat"] += [(f"C{label}/C{label}_{i}.jpg", label, f"C {label}", "test" if i < 15 else "train")
                            for i in range(30)]
    rows["cifar10"] = [(f"c{i}.png", i % 2, f"thing {i % 2}", "train") for i in range(6)]
    seed = 5000
    for dataset, entries in rows.items():
        lines = ["filename,label,label_name,split\n"]
        for filename, label, name, split in entries:
            seed += 1
            write_image(root / dataset / "images" / filename, seed=seed)
            lines.append(f"{filename},{label},{name},{split}\n")
        (root / dataset / "manifest.csv").write_text("".join(lines))
