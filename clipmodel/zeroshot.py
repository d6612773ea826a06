"""Zero-shot classification with prompt ensembling (CLIP paper, sec. 3.1.4).

Class order is the caller's: ``classnames[i]`` is column ``i`` of the weights and the probabilities.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from clipmodel.loading import LoadedClip
from clipmodel.templates import class_prompts, validate_templates


def ensemble_text_embeddings(embeddings: Sequence[torch.Tensor]) -> torch.Tensor:
    """One [T_c, D] tensor of prompt embeddings per class -> [D, C] classifier weights.

    Each embedding is L2-normalised, averaged over the class's prompts, then re-normalised.
    """
    return F.normalize(torch.stack([F.normalize(e.float(), dim=-1).mean(dim=0) for e in embeddings]), dim=-1).T


def zero_shot_weights(
    *,
    clip: LoadedClip,
    classnames: Sequence[str],
    templates: Sequence[str],
    batch_size: int = 256,
) -> torch.Tensor:
    """Text classifier weights [D, C] (float32, CPU) for ``classnames`` x ``templates``."""
    templates = validate_templates(templates)
    if isinstance(classnames, str) or len(classnames) == 0:
        raise ValueError("classnames must be a non-empty ordered list of strings")
    if len(set(classnames)) != len(classnames):
        raise ValueError("classnames must be unique, otherwise two classes share one column")
    return prompt_weights(clip=clip, prompts=class_prompts(classnames=classnames, templates=templates),
                          batch_size=batch_size)


def prompt_weights(*, clip: LoadedClip, prompts: Sequence[Sequence[str]], batch_size: int = 256) -> torch.Tensor:
    """Text classifier weights [D, C] from the exact prompt strings of each class (column i = class i): each
    prompt embedding L2-normalised, averaged per class, re-normalised (CLIP's prompt ensembling)."""
    if isinstance(prompts, str) or not prompts or any(isinstance(p, str) or not p for p in prompts):
        raise ValueError("prompts must be a non-empty list (one per class) of non-empty lists of strings")
    texts = [text for class_prompts_ in prompts for text in class_prompts_]
    chunks = []
    with torch.no_grad(), clip.autocast():
        for start in range(0, len(texts), batch_size):
            tokens = clip.tokenizer(texts[start : start + batch_size]).to(clip.device)
            chunks.append(clip.model.encode_text(tokens).float().cpu())
    return ensemble_text_embeddings(torch.cat(chunks).split([len(p) for p in prompts]))


def zero_shot_logits(*, image_features: torch.Tensor, text_weights: torch.Tensor, logit_scale: float) -> torch.Tensor:
    """logit_scale * cosine(image, class) as [N, C]."""
    return logit_scale * F.normalize(image_features.float(), dim=-1) @ F.normalize(text_weights.float(), dim=0)


def zero_shot_probs(*, image_features: torch.Tensor, text_weights: torch.Tensor, logit_scale: float = 100.0) -> torch.Tensor:
    """Softmax over classes [N, C] of ``logit_scale`` * cosine; 100 is CLIP's trained exp(t)."""
    return zero_shot_logits(image_features=image_features, text_weights=text_weights, logit_scale=logit_scale).softmax(dim=-1)


def classify(
    *,
    clip: LoadedClip,
    image_features: torch.Tensor,
    classnames: Sequence[str],
    templates: Sequence[str],
) -> torch.Tensor:
    """Zero-shot probabilities [N, C] using the model's own logit scale."""
    weights = zero_shot_weights(clip=clip, classnames=classnames, templates=templates)
    return zero_shot_probs(image_features=image_features, text_weights=weights, logit_scale=clip.logit_scale)
