"""What a model was trained on (evaluator.house): the house model's exclusions, and the refusal to score a study
with a model that trained on its test items or shots."""

import hashlib
import io
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from evaluator.errors import TrainedOnStudyItems
from evaluator.house import house_exclusions, training_check, training_note
from evaluator.models import ModelRun
from evaluator.study_reports import study_report_meta
from studyapp.models import Item, ShotExample, StudyItem
from studyapp.services.datasets import dataset_import
from tests.evaluator.helpers import create_run, write_demo_data
from tests.evaluator.tinymodel import write_tiny_checkpoint
from tests.factories import make_dataset, make_study, write_image

pytestmark = pytest.mark.django_db


def _digests(items) -> set[str]:
    return {item.source_sha256 for item in items}


def test_house_exclusions_are_every_studys_test_items_and_shots_and_every_demo_image(settings, tmp_path):
    from clipmodel.demo_split import demo_files

    settings.DEMO_DATA = str(tmp_path / "data")
    write_demo_data(tmp_path / "data")
    open_study = make_study()
    draft = make_study(open_it=False)
    unused = make_dataset()  # a dataset no study uses: its images may be trained on

    excluded = house_exclusions()

    for study in (open_study, draft):
        test_items = Item.objects.filter(pk__in=StudyItem.objects.filter(study=study).values("item_id"))
        shots = Item.objects.filter(pk__in=ShotExample.objects.filter(condition__study=study).values("item_id"))
        assert _digests(test_items) | _digests(shots) <= excluded
        assert len(_digests(shots)) == 3 * 2  # two shots per class
    not_shown = Item.objects.filter(dataset=open_study.dataset, split="train").exclude(
        pk__in=ShotExample.objects.filter(condition__study=open_study).values("item_id"))
    assert not _digests(not_shown) & excluded and not _digests(unused.items.all()) & excluded
    demo = {hashlib.sha256((tmp_path / "data" / dataset / "images" / name).read_bytes()).hexdigest()
            for dataset, names in demo_files(data_root=tmp_path / "data").items() for name in names}
    assert len(demo) == 3 * 7 + 2 * 20 and demo <= excluded  # Pets 5 test + 2 shots, EuroSAT 10 + 10 per class
    assert excluded == demo | {d for s in (open_study, draft) for d in _digests(
        Item.objects.filter(pk__in=StudyItem.objects.filter(study=s).values("item_id"))
        | Item.objects.filter(pk__in=ShotExample.objects.filter(condition__study=s).values("item_id")))}


@pytest.fixture
def imported_study(tmp_path):
    """A study imported from files, so each item's source digest is that of a real file."""
    source = tmp_path / "src"
    seed = 0
    for split in ("train", "test"):
        for name in ("cat", "dog", "bird"):
            for i in range(3):
                seed += 1
                write_image(source / split / name / f"{name}_{i}.png", fmt="PNG", seed=seed)
    dataset = dataset_import(name="animals", path=source, fmt="folder").dataset
    return make_study(dataset=dataset), source


def _checkpoint_trained_on(path, files):
    """A tiny model whose checkpoint records these files as its training images, as our trainer writes it."""
    import torch

    from clipmodel.loading import digests_to_tensor

    write_tiny_checkpoint(path)
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["trained_sha256"] = digests_to_tensor({hashlib.sha256(f.read_bytes()).hexdigest() for f in files})
    torch.save(checkpoint, path)
    return path


def test_imports_record_the_source_files_digest_although_the_stored_image_is_re_encoded(imported_study):
    study, source = imported_study
    for item in Item.objects.filter(dataset=study.dataset):
        raw = (source / item.original_filename).read_bytes()
        assert item.source_sha256 == hashlib.sha256(raw).hexdigest() != item.content_hash


def test_scoring_a_study_with_a_model_trained_on_its_items_is_refused_before_anything_is_queued(
    imported_study, tmp_path, monkeypatch
):
    study, source = imported_study
    test_files = [source / i.original_filename for i in Item.objects.filter(
        pk__in=StudyItem.objects.filter(study=study).values("item_id"))][:2]
    shot_file = source / ShotExample.objects.filter(condition__study=study).first().item.original_filename
    not_shown = Item.objects.filter(dataset=study.dataset, split="train").exclude(
        pk__in=ShotExample.objects.filter(condition__study=study).values("item_id")).first()
    checkpoint = _checkpoint_trained_on(tmp_path / "leaky.pt",
                                        [*test_files, shot_file, source / not_shown.original_filename])
    sent = []
    monkeypatch.setattr("evaluator.services.queue.chunks_send", lambda *, chunk_ids: sent.extend(chunk_ids))

    with pytest.raises(TrainedOnStudyItems, match=r"trained on 2 of this study's 9 test items and 1 of its 6 shot"):
        create_run(study, checkpoint)
    with pytest.raises(CommandError) as failure:
        call_command("score_study", str(study.code), "--checkpoint", str(checkpoint), "--no-wait", stdout=io.StringIO())
    assert "manage.py house_model" in str(failure.value) and "--allow-trained-items" in str(failure.value)
    assert not ModelRun.objects.exists() and sent == []

    call_command("score_study", str(study.code), "--checkpoint", str(checkpoint), "--no-wait", "--allow-trained-items",
                 stdout=io.StringIO())
    run = ModelRun.objects.get()
    assert run.allow_trained_items
    assert (run.training_data["test_items"], run.training_data["shots"], run.training_data["trained_images"]) == (2, 1, 4)
    ModelRun.objects.filter(pk=run.pk).update(status=ModelRun.Status.DONE)
    notes = study_report_meta(study=study)["model_notes"]
    assert notes == [f"{run.name}: TRAINED ON STUDY ITEMS (scored with --allow-trained-items: not a fair test): 2 of 9 "
                     "test items and 1 of 6 shot images were among its 4 training images; 0 could not be checked"]


def test_a_model_that_trained_on_none_of_the_studys_images_is_scored_and_says_so(imported_study, tmp_path):
    study, source = imported_study
    unrelated = tmp_path / "other.png"
    write_image(unrelated, fmt="PNG", seed=999)
    run = create_run(study, _checkpoint_trained_on(tmp_path / "clean.pt", [unrelated]))
    assert not run.allow_trained_items and run.training_data["known"]
    ModelRun.objects.filter(pk=run.pk).update(status=ModelRun.Status.DONE)
    assert study_report_meta(study=study)["model_notes"] == [
        f"{run.name}: none of this study's 9 test items and 6 shot images is among the 1 images it was trained on"]


def test_items_without_a_recorded_source_digest_cannot_be_checked_and_are_refused(imported_study, tmp_path):
    study, _ = imported_study
    Item.objects.filter(dataset=study.dataset).update(source_sha256="")  # imported before it was recorded
    with pytest.raises(TrainedOnStudyItems, match="15 of the study's images have no recorded source digest"):
        create_run(study, _checkpoint_trained_on(tmp_path / "any.pt", []))


def test_external_weights_have_unknown_training_data_and_point_to_the_papers_overlap_analysis(tiny_checkpoint):
    study = make_study()
    check = training_check(study=study, model_name="ViT-L-14-336", pretrained="openai", checkpoint="")
    assert not check.known
    assert training_note(run_name="CLIP ViT-L/14@336px", check=check.as_json(), allowed=False) == (
        "CLIP ViT-L/14@336px: training data unknown (openai weights): see the CLIP paper §5 on data overlap")
    run = create_run(study, tiny_checkpoint)  # a checkpoint that records nothing: scored, and marked unknown
    assert not run.training_data["known"] and "records no training data" in run.training_data["source"]


def test_the_admin_refuses_a_model_trained_on_the_studys_items_unless_allowed(admin_client, imported_study, tmp_path):
    study, source = imported_study
    checkpoint = _checkpoint_trained_on(tmp_path / "leaky.pt", [source / i.original_filename for i in Item.objects.filter(
        pk__in=StudyItem.objects.filter(study=study).values("item_id"))])
    form = {"study": study.pk, "source": "checkpoint", "checkpoint": str(checkpoint), "conditions": ["0"],
            "fewshot_methods": ["linear-probe", "zero-shot-prior"], "name": "", "device": "cpu"}
    response = admin_client.post(reverse("admin:evaluator_modelrun_add"), form)
    assert response.status_code == 200 and "trained on 9 of this study" in response.content.decode()
    assert not ModelRun.objects.exists()
    response = admin_client.post(reverse("admin:evaluator_modelrun_add"), {**form, "allow_trained_items": "on"})
    assert response.status_code == 302 and ModelRun.objects.get().allow_trained_items


SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


@pytest.mark.skipif(not (SHARED_DATA / "oxford_pets").is_dir(), reason="../shared/data is not beside this checkout")
def test_the_demo_studies_images_are_exactly_what_the_house_model_leaves_out_without_a_database(settings):
    """`python -m clipmodel.train --house` (no database) and `./run demo` (the demo studies in the database)
    leave out the same images, so they are the same model: every test item and shot of both demo studies is
    among the demo datasets' images, which is what clipmodel.demo_split names."""
    from clipmodel.house import demo_exclusions
    from studyapp.services.demo import demo_setup

    settings.DEMO_DATA = str(SHARED_DATA)
    demo = demo_exclusions(data_root=SHARED_DATA)
    studies = demo_setup(data_root=SHARED_DATA)
    for study in (studies.pets, studies.eurosat):
        shown = Item.objects.filter(pk__in=StudyItem.objects.filter(study=study).values("item_id")) | Item.objects.filter(
            pk__in=ShotExample.objects.filter(condition__study=study).values("item_id"))
        assert _digests(shown) <= demo and "" not in _digests(shown)
    assert house_exclusions() == demo
    # And the prompts the demo's EuroSAT study is scored with are CLIP's.
    prompts = dict(studies.eurosat.dataset.classes.values_list("name", "prompt_name"))
    assert prompts["Sea Lake"] == "lake or sea" and prompts["Herbaceous Vegetation"] == "brushland or shrubland"
