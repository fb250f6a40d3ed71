"""Training losses for multi-class and binary heads (the head's own rules, logits -> predictions
and probabilities, live with the models in `cnnlab.models.outputs`).

A binary model (one sigmoid output, the seed's `class_mode='binary'`) is trained as a two-way
softmax whose first logit is fixed at zero.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def make_loss(
    binary: bool,
    label_smoothing: float = 0.0,
    kind: str = "cross_entropy",
    gamma: float = 2.0,
    class_weights: torch.Tensor | None = None,
) -> LossFn:
    """Cross-entropy or focal loss (Lin et al. 2017), optionally class-weighted.

    Targets are class indices, or class probabilities (MixUp/CutMix) of shape (N, K).
    """

    def loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        if binary:
            logits = torch.cat([torch.zeros_like(logits), logits], dim=1)  # sigmoid == 2-way softmax
        k = logits.shape[1]
        probs = F.one_hot(target, k).float() if target.ndim == 1 else target.float()
        if label_smoothing:
            probs = probs * (1.0 - label_smoothing) + label_smoothing / k
        logp = logits.log_softmax(dim=1)
        per_class = -probs * logp
        if kind == "focal":
            per_class = per_class * (1.0 - logp.exp()).pow(gamma)
        if class_weights is not None:
            per_class = per_class * class_weights.to(per_class.dtype)
        return per_class.sum(dim=1).mean()

    return loss


def balanced_class_weights(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """scikit-learn's 'balanced' weights: n_samples / (n_classes * count per class)."""
    counts = torch.bincount(labels, minlength=num_classes).float().clamp_min(1.0)
    return len(labels) / (num_classes * counts)


def target_index(target: torch.Tensor) -> torch.Tensor:
    """Class indices from index targets or (mixed) probability targets."""
    return target.argmax(dim=1) if target.ndim == 2 else target
