import math

import numpy as np
import torch
from open_clip import ClipLoss

from clipmodel.losses import contrastive_loss, label_aware_clip_loss


def _paper_loss_numpy(i_f, t_f, w_i, w_t, t):
    """The CLIP paper's pseudocode (Fig. 3), line by line in numpy."""

    def l2_normalize(x, axis):
        return x / np.linalg.norm(x, axis=axis, keepdims=True)

    def cross_entropy_loss(logits, labels, axis):
        log_probs = logits - np.log(np.exp(logits).sum(axis=axis, keepdims=True))
        picked = log_probs[labels, labels]  # the diagonal, normalised along `axis`
        return -picked.mean()

    i_e = l2_normalize(i_f @ w_i, axis=1)
    t_e = l2_normalize(t_f @ w_t, axis=1)
    logits = i_e @ t_e.T * np.exp(t)
    n = logits.shape[0]
    labels = np.arange(n)
    loss_i = cross_entropy_loss(logits, labels, axis=0)
    loss_t = cross_entropy_loss(logits, labels, axis=1)
    return (loss_i + loss_t) / 2


def test_open_clip_clip_loss_equals_the_paper_formula_on_random_inputs():
    rng = np.random.default_rng(0)
    for n in (2, 7, 32):
        i_f, t_f = rng.normal(size=(n, 24)), rng.normal(size=(n, 20))
        w_i, w_t = rng.normal(size=(24, 16)), rng.normal(size=(20, 16))
        t = math.log(1 / 0.07) + rng.normal()
        expected = _paper_loss_numpy(i_f, t_f, w_i, w_t, t)

        def embed(f, w):
            return torch.nn.functional.normalize(torch.from_numpy(f @ w), dim=1)

        scale = torch.tensor(math.exp(t), dtype=torch.float64)
        got = ClipLoss()(embed(i_f, w_i), embed(t_f, w_t), scale)
        assert abs(got.item() - expected) < 1e-10
        via_ours = contrastive_loss(kind="clip", image_features=embed(i_f, w_i), text_features=embed(t_f, w_t), logit_scale=scale)
        assert abs(via_ours.item() - expected) < 1e-10


def test_label_aware_loss_equals_clip_loss_when_every_pair_is_its_own_class():
    gen = torch.Generator().manual_seed(0)
    images = torch.nn.functional.normalize(torch.randn(9, 8, generator=gen), dim=1)
    texts = torch.nn.functional.normalize(torch.randn(9, 8, generator=gen), dim=1)
    scale = torch.tensor(14.3)
    torch.testing.assert_close(label_aware_clip_loss(images, texts, scale, torch.arange(9)), ClipLoss()(images, texts, scale))


def test_label_aware_loss_spreads_the_target_over_same_class_captions():
    gen = torch.Generator().manual_seed(1)
    images = torch.nn.functional.normalize(torch.randn(3, 4, generator=gen), dim=1)
    texts = torch.nn.functional.normalize(torch.randn(3, 4, generator=gen), dim=1)
    groups = torch.tensor([0, 0, 1])
    logits = 10.0 * images @ texts.T
    target = torch.tensor([[0.5, 0.5, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 1.0]])
    by_hand = (
        -(target * logits.log_softmax(dim=1)).sum(dim=1).mean() - (target * logits.T.log_softmax(dim=1)).sum(dim=1).mean()
    ) / 2
    torch.testing.assert_close(label_aware_clip_loss(images, texts, torch.tensor(10.0), groups), by_hand)


def _same_class_cross_similarity(loss_fn, groups):
    """Optimise free embeddings under ``loss_fn``; mean cosine of images to other captions of their class."""
    torch.manual_seed(0)
    images = torch.randn(len(groups), 8, requires_grad=True)
    texts = torch.randn(len(groups), 8, requires_grad=True)
    optimizer = torch.optim.Adam([images, texts], lr=0.05)
    for _ in range(300):
        i, t = torch.nn.functional.normalize(images, dim=1), torch.nn.functional.normalize(texts, dim=1)
        optimizer.zero_grad()
        loss_fn(i, t).backward()
        optimizer.step()
    similarity = torch.nn.functional.normalize(images, dim=1) @ torch.nn.functional.normalize(texts, dim=1).T
    same_class_other_pair = (groups[:, None] == groups[None, :]) & ~torch.eye(len(groups), dtype=torch.bool)
    return similarity[same_class_other_pair].mean().item()


def test_label_aware_loss_stops_pushing_same_class_captions_apart():
    groups = torch.tensor([0, 0, 1, 1, 2, 2])
    scale = torch.tensor(10.0)
    label_aware = _same_class_cross_similarity(lambda i, t: label_aware_clip_loss(i, t, scale, groups), groups)
    plain = _same_class_cross_similarity(lambda i, t: ClipLoss()(i, t, scale), groups)
    # The paper's loss treats same-class captions as negatives and pushes them away (cosine < 0 here).
    assert plain < 0 < label_aware and label_aware - plain > 0.3
