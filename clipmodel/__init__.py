"""Framework-free CLIP toolkit for the human-vs-CLIP study (no Django, no Celery).

Public API (all keyword-only):

- ``load_clip(*, name=None, pretrained=None, checkpoint=None, device="auto", dtype="auto") -> LoadedClip``
  any open_clip model + tag, a local state dict, or a house-model checkpoint (carries its own config).
- ``LoadedClip``: model, preprocess, tokenizer, device, autocast dtype, ``fingerprint`` (+ ``fingerprint_info``).
- ``ModelUnavailable``: raised within seconds when weights are missing or unreachable offline.
- ``benchmark_match(class_names)``: CLIP's prompt names and templates when the classes are a known benchmark's
  (Oxford-IIIT Pets, EuroSAT, CIFAR-10); ``prompt_defaults(class_names)``, ``templates_for(dataset)``,
  ``class_prompts(*, classnames, templates)`` (the exact prompt strings), ``validate_templates(templates)``.
- ``zero_shot_weights(*, clip, classnames, templates) -> Tensor[D, C]`` (prompt ensembling);
  ``prompt_weights(*, clip, prompts)`` the same from the exact prompt strings of each class.
- ``zero_shot_probs(*, image_features, text_weights, logit_scale) -> Tensor[N, C]``;
  ``classify(*, clip, image_features, classnames, templates)`` does both with the model's logit scale.
- ``fit_few_shot(*, method, shot_features, shot_labels, num_classes, text_weights=None, logit_scale=100.0,
  C=None, prior_lambda=None) -> FewShotClassifier`` (pass ``clip.logit_scale``); ``classifier.predict_proba(features)``;
  ``FEW_SHOT_METHODS``.
- ``FeatureCache(root=None)`` with ``get_many`` / ``put_many``; ``image_hash(image)``.
- ``encode_images(*, clip, images, batch_size, num_workers, progress)`` -> L2-normalised float32 [N, D] on CPU;
  ``encode_with_cache(*, clip, images, cache, ...)`` encodes only images the cache lacks.
- ``ensure_house_model(*, data_root=None, cache_dir=None, progress=True, exclude_sha256=()) -> Path``: trains the
  small "house model" once (``python -m clipmodel.train``, never on the images whose file sha256 is excluded) and
  returns its cached checkpoint; every checkpoint records the sha256 of the images it trained on.

Class order is always the caller's: index ``i`` of ``classnames`` is column ``i`` of every weight/probability.
"""

from clipmodel.hub import decide_offline

# Before open_clip (and huggingface_hub, which reads HF_HUB_OFFLINE once at import) is imported below.
decide_offline()

from clipmodel.cache import FeatureCache, image_hash  # noqa: E402
from clipmodel.encode import encode_images, encode_with_cache  # noqa: E402
from clipmodel.errors import ModelUnavailable  # noqa: E402
from clipmodel.fewshot import FEW_SHOT_METHODS, FewShotClassifier, fit_few_shot  # noqa: E402
from clipmodel.house import HOUSE_MODEL_NAME, ensure_house_model  # noqa: E402
from clipmodel.loading import LoadedClip, load_clip  # noqa: E402
from clipmodel.templates import (  # noqa: E402
    benchmark_match,
    class_prompts,
    prompt_defaults,
    templates_for,
    validate_templates,
)
from clipmodel.zeroshot import classify, prompt_weights, zero_shot_probs, zero_shot_weights  # noqa: E402

__all__ = [
    "FEW_SHOT_METHODS",
    "FeatureCache",
    "FewShotClassifier",
    "HOUSE_MODEL_NAME",
    "LoadedClip",
    "ModelUnavailable",
    "benchmark_match",
    "class_prompts",
    "classify",
    "encode_images",
    "encode_with_cache",
    "ensure_house_model",
    "fit_few_shot",
    "image_hash",
    "load_clip",
    "prompt_defaults",
    "prompt_weights",
    "templates_for",
    "validate_templates",
    "zero_shot_probs",
    "zero_shot_weights",
]
