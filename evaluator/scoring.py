"""The model side of a scoring run, kept per worker process: the loaded model, the run's classifiers and
the encoding of a chunk's images with per-item errors. No Celery here; services decide what to score.

Workers live for many chunks, so the model and the classifiers are built once per process and run
(loading a model per chunk would cost more than scoring it).
"""

from __future__ import annotations

import hashlib
import io
import logging
import multiprocessing
import platform
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from django.conf import settings

import clipmodel
from evaluator.models import ModelRun
from studyapp.models import ClassLabel, Condition, Item, ShotExample
from studyapp.services.images import image_path

logger = logging.getLogger(__name__)

_MODELS: OrderedDict[tuple, clipmodel.LoadedClip] = OrderedDict()
_RUNS: OrderedDict[tuple, PreparedRun] = OrderedDict()
_LOCK = threading.Lock()
# Two models per process at most: a GPU holds a few CLIPs, not a zoo.
MAX_MODELS = 2
MAX_RUNS = 8


class ScoringError(RuntimeError):
    """The run cannot be scored (not one item's fault); the message says why."""


@dataclass(frozen=True)
class PreparedRun:
    clip: clipmodel.LoadedClip
    class_ids: list[int]  # ClassLabel pk of column i
    class_index: dict[int, int]  # ClassLabel pk -> column
    text_weights: torch.Tensor  # [D, C]
    # (condition pk, method) -> few-shot classifier; (zero-shot condition pk, "") -> None: the text weights answer.
    classifiers: dict[tuple[int, str], clipmodel.FewShotClassifier | None]


def feature_cache() -> clipmodel.FeatureCache:
    return clipmodel.FeatureCache(root=Path(settings.HUMANCLIP_CACHE))


def library_versions() -> dict[str, str]:
    import open_clip

    versions = {"torch": torch.__version__, "open_clip": open_clip.__version__, "python": platform.python_version()}
    if torch.cuda.is_available():
        versions["cuda"] = str(torch.version.cuda)
    return versions


def dtype_label(clip: clipmodel.LoadedClip) -> str:
    return "fp32" if clip.autocast_dtype is None else f"autocast-{str(clip.autocast_dtype).removeprefix('torch.')}"


def load_model(*, run: ModelRun) -> clipmodel.LoadedClip:
    """The run's model, loaded once per process (ModelUnavailable propagates: nothing to retry)."""
    key = (run.model_name, run.pretrained, run.checkpoint, run.device_request)
    with _LOCK:
        if key in _MODELS:
            _MODELS.move_to_end(key)
            return _MODELS[key]
    checkpoint = run.checkpoint or None
    kwargs = {"name": run.model_name or None, "device": run.device_request or "auto"}
    if checkpoint:
        kwargs["checkpoint"] = checkpoint
        if run.is_house_model:
            kwargs["name"] = None  # a house checkpoint carries its own config
    elif run.pretrained:
        kwargs["pretrained"] = run.pretrained
    clip = clipmodel.load_clip(**kwargs)
    with _LOCK:
        _MODELS[key] = clip
        while len(_MODELS) > MAX_MODELS:
            _MODELS.popitem(last=False)
            _drop_runs_without_model()
    return clip


def _drop_runs_without_model() -> None:
    live = {id(clip) for clip in _MODELS.values()}
    for key in [k for k, prepared in _RUNS.items() if id(prepared.clip) not in live]:
        del _RUNS[key]


def prepare_run(*, run: ModelRun, clip: clipmodel.LoadedClip, heartbeat: Callable[[], None]) -> PreparedRun:
    """Text weights from the run's recorded prompt strings, and one classifier per few-shot condition and
    method with the run's recorded hyperparameters, fitted on exactly the shots the humans saw."""
    key = (run.pk, clip.fingerprint)
    with _LOCK:
        if key in _RUNS:
            return _RUNS[key]
    labels = list(ClassLabel.objects.filter(dataset_id=run.study.dataset_id).order_by("index"))
    if [label.index for label in labels] != list(range(len(labels))):
        raise ScoringError("class indices of the dataset are not 0..C-1; columns would not match classes")
    class_ids = [label.pk for label in labels]
    class_index = {pk: i for i, pk in enumerate(class_ids)}
    if len(run.prompts) != len(labels):
        raise ScoringError(f"the run records prompts for {len(run.prompts)} classes but the dataset has {len(labels)}")
    text_weights = clipmodel.prompt_weights(clip=clip, prompts=run.prompts)
    heartbeat()
    conditions = list(Condition.objects.filter(study_id=run.study_id, shots__in=run.condition_shots))
    shots_of = {
        condition.pk: list(ShotExample.objects.filter(condition=condition).select_related("item")
                           .order_by("label__index", "rank"))
        for condition in conditions
    }
    # All shot images in one pass (the one-shot shots are also two-shot shots): fewer, fuller batches.
    unique = {shot.item_id: shot.item for shots in shots_of.values() for shot in shots}
    features, errors = encode_items(clip=clip, items=list(unique.values()), heartbeat=heartbeat)
    if errors:
        raise ScoringError("shot image(s) unusable: " + "; ".join(sorted(set(errors.values()))))
    classifiers: dict[tuple[int, str], clipmodel.FewShotClassifier | None] = {}
    for condition in conditions:
        shots = shots_of[condition.pk]
        if condition.shots == 0:
            classifiers[(condition.pk, "")] = None
            continue
        for method in run.fewshot_methods:
            params = run.fewshot_params.get(method, {})
            classifiers[(condition.pk, method)] = clipmodel.fit_few_shot(
                method=method,
                shot_features=torch.stack([features[shot.item_id] for shot in shots]),
                shot_labels=torch.tensor([class_index[shot.label_id] for shot in shots]),
                num_classes=len(labels),
                text_weights=text_weights,
                logit_scale=clip.logit_scale,
                C=params.get("C"),
                prior_lambda=params.get("lambda"),
            )
            heartbeat()
    prepared = PreparedRun(clip=clip, class_ids=class_ids, class_index=class_index, text_weights=text_weights,
                           classifiers=classifiers)
    with _LOCK:
        _RUNS[key] = prepared
        while len(_RUNS) > MAX_RUNS:
            _RUNS.popitem(last=False)
    return prepared


def probabilities(*, prepared: PreparedRun, key: tuple[int, str], features: torch.Tensor) -> torch.Tensor:
    """Class probabilities [N, C] of one (condition pk, method) classifier."""
    classifier = prepared.classifiers[key]
    if classifier is None:
        return clipmodel.zero_shot_probs(
            image_features=features, text_weights=prepared.text_weights, logit_scale=prepared.clip.logit_scale
        )
    return classifier.predict_proba(features)


def _read_checked(item: Item) -> tuple[bytes | None, str | None]:
    """(the stored file's bytes, None), or (None, why it is unusable). Stored images are named by the sha256 of
    their bytes, so a mismatch means the file was corrupted or replaced: the model must see exactly what the
    humans saw. The decoder gets these very bytes, so each file is read once."""
    try:
        data = image_path(relative_path=item.image).read_bytes()
    except FileNotFoundError:
        return None, f"image file missing: {item.image}"
    except OSError as exc:
        return None, f"image file unreadable: {item.image} ({exc})"
    if hashlib.sha256(data).hexdigest() != item.content_hash:
        return None, f"image file corrupt or replaced: {item.image} does not match its content hash"
    return data, None


def _num_workers() -> int | None:
    # Prefork children are daemonic and may not start DataLoader workers; decode in-process there.
    return 0 if multiprocessing.current_process().daemon else None


def encode_items(
    *, clip: clipmodel.LoadedClip, items: list[Item], heartbeat: Callable[[], None]
) -> tuple[dict[int, torch.Tensor], dict[int, str]]:
    """({item pk: embedding}, {item pk: error}) for ``items``; cached embeddings are reused, the rest encoded.

    The cache key is the item's content hash, which is exactly clipmodel.image_hash of the stored file, so
    entries are shared with clipmodel.encode_with_cache and across runs, conditions and workers. Each file is
    read once: its bytes are checked against the content hash and decoded from memory.
    """
    cache = feature_cache()
    by_hash = {item.content_hash: item for item in items}
    found = cache.get_many(fingerprint=clip.fingerprint, keys=list(by_hash))
    errors: dict[int, str] = {}
    todo: list[tuple[Item, bytes]] = []
    for content_hash, item in by_hash.items():
        if content_hash in found:
            continue
        data, problem = _read_checked(item)
        if problem:
            errors[item.pk] = problem
        else:
            todo.append((item, data))
    if todo:
        encoded = _encode(clip=clip, todo=todo, heartbeat=heartbeat, errors=errors)
        cache.put_many(fingerprint=clip.fingerprint, features=encoded)  # one file for the whole chunk
        found.update(encoded)
    return {item.pk: found[item.content_hash] for item in items if item.content_hash in found}, errors


def _encode(*, clip, todo: list[tuple[Item, bytes]], heartbeat, errors: dict[int, str]) -> dict[str, torch.Tensor]:
    batch_size = settings.SCORING_BATCH_SIZE
    try:
        vectors = clipmodel.encode_images(
            clip=clip, images=[io.BytesIO(data) for _, data in todo], batch_size=batch_size,
            num_workers=_num_workers(), progress=lambda *_: heartbeat(),
        )
        return {item.content_hash: vector for (item, _), vector in zip(todo, vectors, strict=True)}
    except (OSError, ValueError, SyntaxError) as exc:
        # One undecodable image must not sink its neighbours: retry one by one to find the culprit(s).
        logger.warning("batch encode failed (%s); encoding %d images one by one", exc, len(todo))
    out = {}
    for item, data in todo:
        try:
            out[item.content_hash] = clipmodel.encode_images(clip=clip, images=[io.BytesIO(data)], batch_size=1,
                                                             num_workers=0)[0]
        except (OSError, ValueError, SyntaxError) as exc:
            errors[item.pk] = f"image could not be decoded: {item.image} ({exc})"
        heartbeat()
    return out


def clear_caches() -> None:
    """Forget loaded models and prepared runs (tests; a worker that must free its GPU)."""
    with _LOCK:
        _MODELS.clear()
        _RUNS.clear()
