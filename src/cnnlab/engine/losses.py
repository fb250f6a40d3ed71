"""Losses and the logits -> predictions/probabilities rules, for multi-class and binary heads.

A binary model (one sigmoid output, the seed's `class_mode='binary'`) emits one logit per image;
everything downstream sees two-column probabilities [P(class 0), P(class 1)].
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def make_loss(binary: bool, label_smoothing: float = 0.0) -> LossFn:
    if binary:

        def bce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            soft = target.float() * (1.0 - label_smoothing) + 0.5 * label_smoothing
            return F.binary_cross_entropy_with_logits(logits.float().squeeze(1), soft)

        return bce

    def cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), target, label_smoothing=label_smoothing)

    return cross_entropy


def predicted_index(logits: torch.Tensor, binary: bool) -> torch.Tensor:
    if binary:
        return (logits.squeeze(1) > 0).long()
    return logits.argmax(dim=1)


def probabilities(logits: torch.Tensor, binary: bool, temperature: float = 1.0) -> torch.Tensor:
    """(N, num_classes) probabilities; `temperature` > 1 softens over-confident logits."""
    scaled = logits.float() / temperature
    if binary:
        p = torch.sigmoid(scaled.squeeze(1))
        return torch.stack([1.0 - p, p], dim=1)
    return scaled.softmax(dim=1)
