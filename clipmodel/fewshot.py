"""Few-shot classifiers fitted on a handful of given shots (image features), all linear in the features.

- ``linear-probe``: the CLIP paper's few-shot baseline: multinomial logistic regression on L2-normalised
  features with an unpenalised bias, parameterised exactly as scikit-learn's ``LogisticRegression(C=...)``.
- ``zero-shot-prior``: logits = exp(t)·x·Wᵀ with W penalised towards the zero-shot text weights,
  λ·||W - W_zs||², and initialised from them, so with no evidence it stays the zero-shot classifier.
- ``prototype``: nearest class mean (mean normalised shot feature per class, cosine, scaled).

Every classifier gives probabilities for all ``num_classes`` classes, columns in class-index order.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

FEW_SHOT_METHODS: tuple[str, ...] = ("linear-probe", "zero-shot-prior", "prototype")
# What a one-/two-shot scoring run scores unless told otherwise: the paper's baseline and our prior probe.
DEFAULT_METHODS: tuple[str, ...] = ("linear-probe", "zero-shot-prior")

# Both strengths were chosen once, on the house model's validation slices of EuroSAT and CIFAR-10 (images held
# out of its training, in no study), never on a study's items: the best mean accuracy over both data sets and
# 1-2 shots (`python -m clipmodel.evaluate --dataset eurosat cifar10 --split val --sweep`, docs/clipmodel.md).
DEFAULT_C = 3.16  # scikit-learn's C: inverse strength of the L2 penalty on W
DEFAULT_PRIOR_LAMBDA = 100.0


def default_params(method: str) -> dict[str, float]:
    """The hyperparameters ``fit_few_shot`` uses for ``method`` by default, as a run records them."""
    return {"linear-probe": {"C": DEFAULT_C}, "zero-shot-prior": {"lambda": DEFAULT_PRIOR_LAMBDA}}.get(method, {})


@dataclass(frozen=True)
class FewShotClassifier:
    """probs = softmax(scale * normalize(x) @ weight.T + bias); ``shots_per_class`` records what it saw."""

    method: str
    weight: torch.Tensor  # [C, D]
    bias: torch.Tensor  # [C]
    scale: float
    shots_per_class: torch.Tensor  # [C]

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        x = F.normalize(features.to(self.weight.dtype), dim=-1)
        return self.scale * x @ self.weight.T + self.bias

    def predict_proba(self, features: torch.Tensor) -> torch.Tensor:
        """Class probabilities [N, C] for image features [N, D]."""
        return self.logits(features).softmax(dim=-1)


def _lbfgs(params: list[torch.Tensor], objective, *, max_iter: int) -> None:
    # Full-batch L-BFGS from a fixed start is deterministic (no sampling, no random init).
    optimizer = torch.optim.LBFGS(
        params, lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe", tolerance_grad=1e-9, tolerance_change=1e-12
    )

    def closure():
        optimizer.zero_grad()
        loss = objective()
        loss.backward()
        return loss

    optimizer.step(closure)


def fit_few_shot(
    *,
    method: str,
    shot_features: torch.Tensor,
    shot_labels: torch.Tensor,
    num_classes: int,
    text_weights: torch.Tensor | None = None,
    logit_scale: float = 100.0,
    C: float | None = None,  # noqa: N803 - scikit-learn's name for it
    prior_lambda: float | None = None,
    max_iter: int = 500,
) -> FewShotClassifier:
    """Fit ``method`` (one of FEW_SHOT_METHODS) on exactly the given shots.

    shot_features [N, D] (normalised here), shot_labels [N] in [0, num_classes). ``text_weights`` [D, C]
    from ``zero_shot_weights`` is required for ``zero-shot-prior``. ``logit_scale`` scales cosines for
    ``zero-shot-prior`` and ``prototype`` (pass ``clip.logit_scale``). ``C`` (linear-probe) and
    ``prior_lambda`` (zero-shot-prior) override DEFAULT_C and DEFAULT_PRIOR_LAMBDA.
    """
    if method not in FEW_SHOT_METHODS:
        raise ValueError(f"method must be one of {FEW_SHOT_METHODS}, not {method!r}")
    labels = torch.as_tensor(shot_labels, dtype=torch.long).reshape(-1)
    if shot_features.ndim != 2 or shot_features.shape[0] != labels.numel() or labels.numel() == 0:
        raise ValueError("shot_features must be [N, D] with one label per row (N > 0)")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"shot_labels must lie in [0, {num_classes})")
    # float64 makes L-BFGS converge cleanly on these tiny problems; results are cast back to float32.
    x = F.normalize(shot_features.detach().to(torch.float64), dim=-1)
    dim = x.shape[1]
    counts = torch.bincount(labels, minlength=num_classes)
    n = labels.numel()

    if method == "prototype":
        if (counts == 0).any():
            missing = torch.nonzero(counts == 0).flatten().tolist()
            raise ValueError(f"prototype needs at least one shot per class; none for classes {missing}")
        sums = torch.zeros(num_classes, dim, dtype=torch.float64).index_add_(0, labels, x)
        weight, bias, scale = F.normalize(sums / counts[:, None], dim=-1), torch.zeros(num_classes), logit_scale

    elif method == "linear-probe":
        c = DEFAULT_C if C is None else C
        weight = torch.zeros(num_classes, dim, dtype=torch.float64, requires_grad=True)
        bias_p = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
        # scikit-learn's objective  C * sum_i CE_i + ||W||^2 / 2  (bias unpenalised), divided by C * n so
        # L-BFGS sees a well-scaled mean loss: the minimiser is the same.
        _lbfgs(
            [weight, bias_p],
            lambda: F.cross_entropy(x @ weight.T + bias_p, labels) + weight.pow(2).sum() / (2 * c * n),
            max_iter=max_iter,
        )
        weight, bias, scale = weight.detach(), bias_p.detach(), 1.0

    else:  # zero-shot-prior
        if text_weights is None or tuple(text_weights.shape) != (dim, num_classes):
            raise ValueError(f"zero-shot-prior needs text_weights of shape [{dim}, {num_classes}]")
        strength = DEFAULT_PRIOR_LAMBDA if prior_lambda is None else prior_lambda
        prior = F.normalize(text_weights.detach().to(torch.float64), dim=0).T.contiguous()
        weight = prior.clone().requires_grad_(True)
        # mean_i CE(exp(t) x_i W^T) + lambda * ||W - W_zs||^2
        _lbfgs(
            [weight],
            lambda: F.cross_entropy(logit_scale * x @ weight.T, labels) + strength * (weight - prior).pow(2).sum(),
            max_iter=max_iter,
        )
        weight, bias, scale = weight.detach(), torch.zeros(num_classes), logit_scale

    return FewShotClassifier(
        method=method,
        weight=weight.float(),
        bias=bias.float(),
        scale=float(scale),
        shots_per_class=counts,
    )
