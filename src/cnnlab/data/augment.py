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
- `xray-robust`: `xray` with wider geometry (10 deg, shift 0.08, zoom 0.85-1.15) plus what differs
  between hospitals rather than between diseases: gamma 0.7-1.4, contrast 0.25, blur or a
  down-and-up resampling (resolution, JPEG softness), sensor noise, and black bands of random
  width at the borders (collimation, burnt-in labels and markers); trained to ignore them, a model
  leans less on the scanner (measured by `cnnlab crossval --by-source`)
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torchvision.transforms import v2

from cnnlab.choices import AUGMENT_PRESETS

PRESETS = AUGMENT_PRESETS

Augment = Callable[[torch.Tensor], torch.Tensor]
"""uint8 (N, C, H, W) -> (N, C, H, W) pixels on the 0-255 scale (uint8 or float)."""


def build_augment(preset: str, size: int) -> Augment | None:
    """The preset as one function over a batch, random per sample.

    The geometric presets run as tensor operations on the cached uint8 batch (one batched
    affine `grid_sample`, or a crop and resize per image) instead of PIL transforms.
    """
    if preset == "none":
        return None
    if preset == "light":
        return lambda x: _resized_crop_flip(x, (0.8, 1.0))
    if preset == "standard":
        return lambda x: _warp(x, degrees=15, translate=0.1, scale=(0.9, 1.1), shear=0.1, flip=True)
    if preset == "xray":
        return lambda x: _jitter(_warp(x, degrees=7, translate=0.05, scale=(0.9, 1.1)), brightness=0.1, contrast=0.1)
    if preset == "xray-robust":
        return _xray_robust
    if preset == "strong":
        transform = v2.Compose(
            [
                v2.RandomResizedCrop(size, scale=(0.5, 1.0), antialias=True),
                v2.RandomHorizontalFlip(),
                v2.TrivialAugmentWide(),
                v2.RandomErasing(p=0.25),
            ]
        )
        # TrivialAugment's operations differ per image, so this one loops over the batch.
        return lambda x: torch.stack([transform(image) for image in x])
    raise ValueError(f"unknown augmentation preset '{preset}'; choose one of {', '.join(PRESETS)}")


def _uniform(n: int, lo: float, hi: float) -> torch.Tensor:
    return torch.rand(n) * (hi - lo) + lo


def _crop_boxes(n: int, h: int, w: int, scale: tuple[float, float]) -> tuple[torch.Tensor, ...]:
    """Random (top, left, height, width) boxes as torchvision's RandomResizedCrop draws them:
    area fraction in `scale`, aspect ratio log-uniform in 3/4-4/3, position uniform."""
    area = _uniform(n, *scale)
    ratio = torch.exp(_uniform(n, math.log(3 / 4), math.log(4 / 3)))
    cw = (torch.sqrt(area * ratio).clamp(max=1.0) * w).round().long().clamp(min=1)
    ch = (torch.sqrt(area / ratio).clamp(max=1.0) * h).round().long().clamp(min=1)
    left = (torch.rand(n) * (w - cw + 1)).floor().long()
    top = (torch.rand(n) * (h - ch + 1)).floor().long()
    return top, left, ch, cw


def _resized_crop_flip(x: torch.Tensor, scale: tuple[float, float]) -> torch.Tensor:
    """Random resized crop plus horizontal flip: a crop and one bilinear resize per image
    (cheaper than a general warp, which would sample every output pixel through a grid)."""
    n, c, h, w = x.shape
    top, left, ch, cw = _crop_boxes(n, h, w, scale)
    flip = torch.rand(n) < 0.5
    out = torch.empty(n, c, h, w)
    for i in range(n):
        y0, x0, bh, bw = int(top[i]), int(left[i]), int(ch[i]), int(cw[i])
        crop = x[i : i + 1, :, y0 : y0 + bh, x0 : x0 + bw].float()
        resized = F.interpolate(crop, size=(h, w), mode="bilinear", align_corners=False)[0]
        out[i] = resized.flip(-1) if flip[i] else resized
    return out


def _warp(
    x: torch.Tensor,
    *,
    degrees: float = 0.0,
    translate: float = 0.0,
    scale: tuple[float, float] = (1.0, 1.0),
    shear: float = 0.0,
    flip: bool = False,
) -> torch.Tensor:
    """Per-sample random affine warps of a batch of square images in one `grid_sample`.

    Matrices map output to input coordinates in [-1, 1]: rotation (degrees), shift (fraction of
    the side), zoom, shear (radians) and horizontal flip. Uncovered pixels are black.
    """
    n = len(x)
    theta = torch.zeros(n, 2, 3)
    angle = torch.deg2rad(_uniform(n, -degrees, degrees))
    zoom = _uniform(n, *scale)
    sh = _uniform(n, -shear, shear)
    cos, sin = torch.cos(angle), torch.sin(angle)
    # forward = rotation @ shear @ zoom; the grid needs its inverse
    forward = torch.zeros(n, 2, 2)
    forward[:, 0, 0], forward[:, 0, 1] = cos * zoom, (cos * torch.tan(sh) - sin) * zoom
    forward[:, 1, 0], forward[:, 1, 1] = sin * zoom, (sin * torch.tan(sh) + cos) * zoom
    inverse = torch.linalg.inv(forward)
    shift = torch.stack([_uniform(n, -translate, translate), _uniform(n, -translate, translate)], dim=1) * 2
    theta[:, :, :2] = inverse
    theta[:, :, 2] = -(inverse @ shift.unsqueeze(2)).squeeze(2)
    if flip:
        mirror = torch.where(torch.rand(n) < 0.5, -1.0, 1.0)
        theta[:, :, 0] *= mirror.unsqueeze(1)
    return F.grid_sample(x.float(), _affine_grid(theta, *x.shape[-2:]), mode="bilinear", align_corners=False)


def _affine_grid(theta: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """`F.affine_grid(theta, ..., align_corners=False)` by broadcasting: 5x faster on a CPU."""
    ys = ((torch.arange(h, dtype=torch.float32) * 2 + 1) / h - 1).view(1, h, 1)
    xs = ((torch.arange(w, dtype=torch.float32) * 2 + 1) / w - 1).view(1, 1, w)
    t = theta.view(-1, 6, 1, 1)
    return torch.stack([t[:, 0] * xs + t[:, 1] * ys + t[:, 2], t[:, 3] * xs + t[:, 4] * ys + t[:, 5]], dim=-1)


def _jitter(x: torch.Tensor, brightness: float, contrast: float) -> torch.Tensor:
    """Random brightness and contrast per image (ColorJitter's definitions), on 0-255 pixels."""
    n = len(x)
    b = _uniform(n, 1 - brightness, 1 + brightness).view(n, 1, 1, 1)
    c = _uniform(n, 1 - contrast, 1 + contrast).view(n, 1, 1, 1)
    x = x.float() * b
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return ((x - mean) * c + mean).clamp_(0, 255)


def _xray_robust(x: torch.Tensor) -> torch.Tensor:
    x = _warp(x, degrees=10, translate=0.08, scale=(0.85, 1.15))
    x = _jitter(x, brightness=0.15, contrast=0.25)
    n = len(x)
    gamma = torch.exp(_uniform(n, math.log(0.7), math.log(1.4))).view(n, 1, 1, 1)
    x = (x / 255).clamp_(0, 1).pow(gamma) * 255
    x = _soften(x, torch.rand(n) < 0.4)
    noisy = (torch.rand(n) < 0.3).view(n, 1, 1, 1)
    x = torch.where(noisy, x + torch.randn_like(x) * _uniform(n, 2, 8).view(n, 1, 1, 1), x)
    return _border_bands(x, 0.08, torch.rand(n) < 0.5).clamp_(0, 255)


def _soften(x: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
    """For the chosen images, a resampling at 40-80% of the size and back: the softness of a
    smaller detector or of JPEG, which differs by hospital."""
    if not chosen.any():
        return x
    h, w = x.shape[-2:]
    out = x.clone()
    for i in chosen.nonzero().flatten().tolist():
        f = float(_uniform(1, 0.4, 0.8))
        small = F.interpolate(x[i : i + 1], size=(max(8, int(h * f)), max(8, int(w * f))), mode="area")
        out[i] = F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)[0]
    return out


def _border_bands(x: torch.Tensor, widest: float, chosen: torch.Tensor) -> torch.Tensor:
    """Black bands of random width (up to `widest` of the side) on each border of the chosen images."""
    n, _, h, w = x.shape
    ys = torch.arange(h).view(1, h, 1)
    xs = torch.arange(w).view(1, 1, w)
    top, bottom = (torch.rand(n) * widest * h).long(), (torch.rand(n) * widest * h).long()
    left, right = (torch.rand(n) * widest * w).long(), (torch.rand(n) * widest * w).long()
    inside = (
        (ys >= top.view(n, 1, 1))
        & (ys < h - bottom.view(n, 1, 1))
        & (xs >= left.view(n, 1, 1))
        & (xs < w - right.view(n, 1, 1))
    )
    keep = inside | ~chosen.view(n, 1, 1)
    return x * keep.unsqueeze(1)


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
