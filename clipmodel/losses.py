"""Contrastive losses. The CLIP paper's pseudocode (Radford et al. 2021, Fig. 3):

    I_e = l2_normalize(I_f @ W_i);  T_e = l2_normalize(T_f @ W_t)
    logits = I_e @ T_e.T * exp(t);  labels = arange(n)
    loss = (cross_entropy(logits, labels, axis=0) + cross_entropy(logits, labels, axis=1)) / 2

open_clip's ``ClipLoss`` computes exactly this on one process (tests/clipmodel checks it on random inputs),
so training uses it for the plain loss.
"""

from __future__ import annotations

import torch
from open_clip import ClipLoss

LOSSES: tuple[str, ...] = ("clip", "label-aware")


def label_aware_clip_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    logit_scale: torch.Tensor,
    groups: torch.Tensor,
) -> torch.Tensor:
    """CLIP loss with every same-group pair as a positive (soft target spread evenly over positives).

    With few classes a batch holds many captions of the same class; the plain loss pushes them apart as
    false negatives. When all groups are distinct this equals ``ClipLoss``.
    """
    logits = logit_scale * image_features @ text_features.T
    positives = (groups[:, None] == groups[None, :]).to(logits.dtype)
    # Same-group relation is symmetric, so both directions share one target matrix.
    targets = positives / positives.sum(dim=1, keepdim=True)
    loss_image = -(targets * logits.log_softmax(dim=1)).sum(dim=1).mean()
    loss_text = -(targets * logits.T.log_softmax(dim=1)).sum(dim=1).mean()
    return (loss_image + loss_text) / 2


def contrastive_loss(
    *,
    kind: str,
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    logit_scale: torch.Tensor,
    groups: torch.Tensor | None = None,
) -> torch.Tensor:
    """``kind="clip"`` -> open_clip ClipLoss (the paper's formula); ``"label-aware"`` -> multi-positive."""
    if kind == "clip":
        return ClipLoss()(image_features, text_features, logit_scale)
    if kind == "label-aware":
        if groups is None:
            raise ValueError("label-aware loss needs groups (class ids) per pair")
        return label_aware_clip_loss(image_features, text_features, logit_scale, groups)
    raise ValueError(f"loss must be one of {LOSSES}, not {kind!r}")
