"""How an image becomes the network's input: resize, pad, normalise.

Training and inference both go through `fit_to_input` and `normalize` with the same
`Preprocessing` (stored in the model card), so the two cannot drift apart.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from cnnlab.data.decode import decode_image


@dataclass(frozen=True)
class Preprocessing:
    channels: int
    resize_to: tuple[int, int]
    """Images are first resized (bilinear, antialiased) to this (H, W) ..."""
    pad_to: tuple[int, int]
    """... then zero-padded, centred, to the network input (H, W)."""
    mean: tuple[float, ...]
    std: tuple[float, ...]
    """Per-channel statistics on the 0-1 scale."""
    crop: bool = False
    """Centre-crop to the aspect of `resize_to` before resizing (else stretch)."""

    @property
    def input_size(self) -> tuple[int, int]:
        return self.pad_to

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocessing:
        return cls(
            channels=int(data["channels"]),
            resize_to=tuple(data["resize_to"]),
            pad_to=tuple(data["pad_to"]),
            mean=tuple(float(v) for v in data["mean"]),
            std=tuple(float(v) for v in data["std"]),
            crop=bool(data.get("crop", False)),
        )


def image_to_input(
    source: Any, channels: int, resize_to: tuple[int, int], pad_to: tuple[int, int], crop: bool
) -> torch.Tensor:
    """One image (path, bytes, PIL image or array) as uint8 (C, H, W) network-ready pixels.

    The train/serve contract: the decoded cache and every prediction go through this function."""
    pixels = decode_image(source, channels)
    tensor = torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)))[None]
    return fit_to_input(tensor, resize_to, pad_to, crop=crop)[0]


def plan_resize(native: tuple[int, int], input_size: int, rule: str) -> tuple[tuple[int, int], tuple[int, int]]:
    """(resize_to, pad_to) for images of `native` (H, W) entering a square `input_size` input.

    `pad` keeps every pixel (LeNet-5 pads 28x28 digits to 32x32 rather than interpolating);
    `auto` pads when the image is smaller than the input by at most 25%, resizes otherwise.
    """
    target = (input_size, input_size)
    fits = native[0] <= input_size and native[1] <= input_size
    if rule == "pad" or (rule == "auto" and fits and min(native) * 1.25 >= input_size):
        if not fits:
            raise ValueError(f"cannot pad {native[0]}x{native[1]} images into a {input_size} px input")
        return native, target
    return target, target


def fit_to_input(
    images: torch.Tensor, resize_to: tuple[int, int], pad_to: tuple[int, int], crop: bool = False
) -> torch.Tensor:
    """uint8 (N, C, H, W) images (optionally centre-cropped to the target aspect) resized to
    `resize_to`, then zero-padded to `pad_to`."""
    if crop:
        images = center_crop_to_aspect(images, resize_to[1] / resize_to[0])
    if tuple(images.shape[-2:]) != tuple(resize_to):
        resized = F.interpolate(images.float(), size=resize_to, mode="bilinear", antialias=True, align_corners=False)
        images = resized.round_().clamp_(0, 255).to(torch.uint8)
    dh, dw = pad_to[0] - resize_to[0], pad_to[1] - resize_to[1]
    if dh or dw:
        images = F.pad(images, (dw // 2, dw - dw // 2, dh // 2, dh - dh // 2))
    return images


def center_crop_to_aspect(images: torch.Tensor, aspect: float) -> torch.Tensor:
    """The largest centred window of width/height `aspect`."""
    h, w = images.shape[-2:]
    if w > h * aspect:
        new_w = max(1, round(h * aspect))
        left = (w - new_w) // 2
        return images[..., :, left : left + new_w]
    new_h = max(1, round(w / aspect))
    top = (h - new_h) // 2
    return images[..., top : top + new_h, :]


def normalize(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
    """(N, C, H, W) pixels on the 0-255 scale -> float32 standardised; `mean`/`std` are
    (1, C, 1, 1) on the same scale. A float32 batch is standardised in place (batches are
    always fresh tensors here: a gather or an augmentation's output)."""
    x = images.float().sub_(mean).div_(std)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def stats_tensors(mean: tuple[float, ...], std: tuple[float, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """The card's 0-1 statistics as (1, C, 1, 1) tensors on the uint8 scale, for `normalize`."""
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1) * 255.0
    s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1) * 255.0
    return m, s


def channel_stats(images: torch.Tensor, chunk: int = 1024) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std (0-1 scale) of uint8 (N, C, H, W) images, in chunks (no full
    float copy of a large set)."""
    total = torch.zeros(images.shape[1], dtype=torch.float64)
    squares = torch.zeros_like(total)
    for start in range(0, len(images), chunk):
        x = images[start : start + chunk].double().div_(255.0)
        total += x.sum(dim=(0, 2, 3))
        squares += x.square().sum(dim=(0, 2, 3))
    n = images.numel() // images.shape[1]
    mean = total / n
    std = (squares / n - mean.square()).clamp_min(0).mul(n / max(n - 1, 1)).sqrt().clamp_min(1e-6)
    return tuple(round(float(v), 6) for v in mean), tuple(round(float(v), 6) for v in std)


def fit_all(
    images: torch.Tensor, resize_to: tuple[int, int], pad_to: tuple[int, int], crop: bool = False, chunk: int = 512
) -> torch.Tensor:
    """`fit_to_input` over a whole split, a chunk at a time (a float copy of 60,000 images at
    224 px would need 12 GB)."""
    if tuple(images.shape[-2:]) == tuple(resize_to) == tuple(pad_to):
        return images
    return torch.cat(
        [fit_to_input(images[i : i + chunk], resize_to, pad_to, crop) for i in range(0, len(images), chunk)]
    )
