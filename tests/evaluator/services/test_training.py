"""evaluator.services.training: the house model is trained by a worker, once for the studies that wait for it,
which then get their runs; progress and failures are recorded on the training's row.

Training the real house model takes 9-30 min, so these tests put a (tiny) house checkpoint where the trainer
writes it for the miniature data root, as a finished training leaves it: the cached path the worker takes
whenever the model exists. The trainer's output stream is tested in tests/clipmodel/test_house.py.
"""

import shutil

import pytest
from django.utils import timezone

from clipmodel.house import house_model_path
from evaluator.celery_app import HOUSE_TRAINING_TASK, SCORE_CHUNK_TASK
from evaluator.house import house_exclusions
from evaluator.models import HouseTraining, ModelRun
from evaluator.services import training as service
from evaluator.services.training import house_training_request, house_training_run
from tests.evaluator.helpers import write_demo_data
from tests.factories import make_study

pytestmark = pytest.mark.django_db(transaction=True)  # tasks are sent when a transaction commits

OPTIONS = {"templates": ["a photo of a {}."], "conditions": [0, 1]}


@pytest.fixture
def demo_data(settings, tmp_path):
    settings.DEMO_DATA = str(tmp_path / "data")
    write_demo_data(tmp_path / "data")
    return tmp_path / "data"


@pytest.fixture
def sent(monkeypatch):
    """Every task the services send once their transaction commits, as (task name, ids), instead of a broker."""
    messages = []
    monkeypatch.setattr("evaluator.services.queue.task_send", lambda *, name, ids, **kw: messages.append((name, ids)))
    return messages


def finish_training_as_the_trainer_would(settings, demo_data, tiny_house_checkpoint):
    """The checkpoint where ensure_house_model keeps the house model that leaves out the studies now in the database."""
    path = house_model_path(data_root=demo_data, cache_dir=settings.HUMANCLIP_CACHE, exclude_sha256=house_exclusions())
    path.parent.mkdir(parents=True)
    shutil.copy(tiny_house_checkpoint, path)
    return path


def test_studies_asked_for_before_the_training_starts_share_it_and_each_gets_its_run(
    settings, demo_data, sent, tiny_house_checkpoint
):
    pets, eurosat = make_study(title="Pets"), make_study(title="EuroSAT")

    first = house_training_request(study=pets, options=OPTIONS)
    again = house_training_request(study=pets, options=OPTIONS)
    second = house_training_request(study=eurosat, options={**OPTIONS, "name": "house model, my name"})

    assert first == again == second and HouseTraining.objects.count() == 1
    assert sent == [(HOUSE_TRAINING_TASK, [first.pk])]
    path = finish_training_as_the_trainer_would(settings, demo_data, tiny_house_checkpoint)

    assert house_training_run(training_id=first.pk) == "done"

    first.refresh_from_db()
    assert (first.status, first.progress, first.checkpoint, first.error) == ("done", 1.0, str(path), "")
    runs = {run.study_id: run for run in ModelRun.objects.all()}
    assert set(runs) == {pets.pk, eurosat.pk}
    assert runs[pets.pk].is_house_model and runs[pets.pk].checkpoint == str(path)
    assert runs[pets.pk].name.startswith("house model (") and runs[eurosat.pk].name == "house model, my name"
    assert all(run.condition_shots == [0, 1] and run.templates == ["a photo of a {}."] for run in runs.values())
    assert sorted(ids[0] for name, ids in sent if name == SCORE_CHUNK_TASK) == sorted(
        ModelRun.objects.values_list("chunks__pk", flat=True))
    assert house_training_run(training_id=first.pk) == "skipped"  # a duplicate message trains nothing


def test_a_running_training_takes_studies_opened_before_it_started_and_no_later_one(demo_data, sent):
    before = make_study()
    first = house_training_request(study=make_study(), options=OPTIONS)
    HouseTraining.objects.filter(pk=first.pk).update(status=HouseTraining.Status.RUNNING, started_at=timezone.now(),
                                                     heartbeat_at=timezone.now())
    after = make_study()  # opened now: its items may be among what the running training learns from

    assert house_training_request(study=before, options=OPTIONS) == first
    assert house_training_request(study=before, options=OPTIONS) == first  # asked again: nothing new
    later = house_training_request(study=after, options=OPTIONS)

    assert later != first and later.status == HouseTraining.Status.PENDING and len(sent) == 2
    first.refresh_from_db()
    assert [r["study"] for r in first.then_score] == [first.then_score[0]["study"], before.pk]
    assert [r["study"] for r in later.then_score] == [after.pk]
    assert house_training_run(training_id=first.pk) == "skipped"  # running, with a live heartbeat


def test_the_trainers_progress_bars_become_the_rows_progress_and_heartbeat(demo_data):
    training = HouseTraining.objects.create(status=HouseTraining.Status.RUNNING)
    progress = service._Progress(training.pk)

    progress("decode:  40%|####      | 12000/30000 [00:20<00:30, 600img/s]")
    training.refresh_from_db()
    assert training.progress == 0 and training.detail.startswith("decode:  40%") and training.heartbeat_at

    progress.last = 0  # the next line is written at once (the row is updated at most every 2 s)
    progress("epoch 2/5:  50%|#####     | 60/119 [00:57<00:56, 1.05it/s, loss=3.120, scale=14.2]")
    training.refresh_from_db()
    assert training.progress == pytest.approx((1 + 0.5) / 5)


def test_a_training_without_its_training_data_fails_with_the_reason_and_creates_no_run(settings, tmp_path, sent):
    settings.DEMO_DATA = str(tmp_path / "nothing here")
    training = house_training_request(study=make_study(), options=OPTIONS)

    assert house_training_run(training_id=training.pk) == "failed"

    training.refresh_from_db()
    assert training.status == HouseTraining.Status.FAILED and "training data is missing" in training.error
    assert not ModelRun.objects.exists()
