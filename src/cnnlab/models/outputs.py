"""Head and probability rules: how a model's outputs become predictions and probabilities.

A binary model (one sigmoid output, the seed's `class_mode='binary'`) emits one logit per image;
everything downstream sees two-column probabilities [P(class 0), P(class 1)].
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def num_outputs(num_classes: int, binary: bool) -> int:
    return 1 if binary else num_classes


def predicted_index(logits: torch.Tensor, binary: bool) -> torch.Tensor:
    if binary:
        return (logits.squeeze(1) > 0).long()
    return logits.argmax(dim=1)


def probabilities(
    logits: torch.Tensor,
    binary: bool,
    temperature: float = 1.0,
    scale: Sequence[float] | None = None,
    bias: Sequence[float] | None = None,
) -> torch.Tensor:
    """(N, num_classes) probabilities of calibrated logits: divided by `temperature` (> 1 softens
    over-confident logits), or, with vector scaling, `logits * scale + bias` per logit."""
    scaled = logits.float() / temperature
    if scale is not None and bias is not None:
        scaled = scaled * torch.tensor(scale, dtype=scaled.dtype) + torch.tensor(bias, dtype=scaled.dtype)
    if binary:
        p = torch.sigmoid(scaled.squeeze(1))
        return torch.stack([1.0 - p, p], dim=1)
    return scaled.softmax(dim=1)


def pooled_embedding(features: torch.Tensor) -> np.ndarray:
    """(N, D) float32 embeddings from `forward_features` output: a feature map averaged over its
    spatial positions, or flat features as they are (what drift monitoring compares)."""
    pooled = features.float().mean(dim=(2, 3)) if features.ndim == 4 else features.float().flatten(1)
    return pooled.detach().numpy().astype("float32")
