"""Augmentation presets (torchvision.transforms.v2) applied to cached uint8 batches, and
batch-level MixUp / CutMix.

Presets, by name in `data.augment`:
- `none`
- `light`: random resized crop (80-100% of the area) and horizontal flip
- `standard`: the seed's Keras ImageDataGenerator (rotation 15 deg, shifts 0.1, shear 0.1 rad,
  zoom 0.1, horizontal flip); Keras fills with the nearest edge, here with black
- `strong`: random resized crop (50-100%), flip, TrivialAugmentWide, random erasing
- `xray`: small rotation (7 deg), shift 0.05, zoom 0.9-1.1, brightness/contrast 0.1; no flips
  (the heart is on the left) and no colour changes
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torchvision.transforms import v2

PRESETS = ("none", "light", "standard", "strong", "xray")

Augment = Callable[[torch.Tensor], torch.Tensor]


def build_augment(preset: str, size: int) -> Augment | None:
    """A function from uint8 (N, C, H, W) to uint8 (N, C, H, W), random per sample."""
    if preset == "none":
        return None
    if preset == "light":
        transform = v2.Compose(
            [v2.RandomResizedCrop(size, scale=(0.8, 1.0), antialias=True), v2.RandomHorizontalFlip()]
        )
    elif preset == "standard":
        transform = v2.Compose(
            [
                v2.RandomAffine(degrees=15, translate=(0.1, 0.1), scale=(0.9, 1.1), shear=math.degrees(0.1)),
                v2.RandomHorizontalFlip(),
            ]
        )
    elif preset == "strong":
        transform = v2.Compose(
            [
                v2.RandomResizedCrop(size, scale=(0.5, 1.0), antialias=True),
                v2.RandomHorizontalFlip(),
                v2.TrivialAugmentWide(),
                v2.RandomErasing(p=0.25),
            ]
        )
    elif preset == "xray":
        transform = v2.Compose(
            [
                v2.RandomAffine(degrees=7, translate=(0.05, 0.05), scale=(0.9, 1.1)),
                v2.ColorJitter(brightness=0.1, contrast=0.1),
            ]
        )
    else:
        raise ValueError(f"unknown augmentation preset '{preset}'; choose one of {', '.join(PRESETS)}")

    def apply(batch: torch.Tensor) -> torch.Tensor:
        # Per sample, so every image gets its own random parameters (a batched call shares them).
        return torch.stack([transform(image) for image in batch])

    return apply


Mix = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def build_mix(mode: str, alpha: float, num_classes: int) -> Mix | None:
    """MixUp or CutMix over a normalised float batch; labels become class probabilities."""
    if mode == "none":
        return None
    if mode not in ("mixup", "cutmix"):
        raise ValueError(f"unknown mix '{mode}'")
    beta = torch.distributions.Beta(alpha, alpha)

    def mix(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lam = float(beta.sample())
        perm = torch.randperm(len(x))
        target = F.one_hot(y, num_classes).float()
        if mode == "mixup":
            x = lam * x + (1 - lam) * x[perm]
        else:
            h, w = x.shape[-2:]
            cut_h, cut_w = int(h * math.sqrt(1 - lam)), int(w * math.sqrt(1 - lam))
            cy, cx = int(torch.randint(h, ())), int(torch.randint(w, ()))
            top, bottom = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, h)
            left, right = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, w)
            x = x.clone()
            x[..., top:bottom, left:right] = x[perm][..., top:bottom, left:right]
            lam = 1 - (bottom - top) * (right - left) / (h * w)  # the pasted area decides the label
        return x, lam * target + (1 - lam) * target[perm]

    return mix
