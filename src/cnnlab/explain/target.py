"""What the explain commands look at: a network, the input it takes and the preprocessing that makes
its input from an image. `model_target` builds one from the registry at random initialisation; a
trained bundle becomes one in `cnnlab.tasks.explain.load_target` (bundles sit above this layer)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cnnlab.data.preprocess import Preprocessing, image_to_input, normalize, stats_tensors
from cnnlab.errors import ModelError
from cnnlab.models import create_model, get_spec


@dataclass
class Target:
    model: nn.Module
    title: str
    input_shape: tuple[int, int, int]
    """C, H, W of the network input."""
    untrained: bool
    run_dir: Path | None = None
    preprocessing: Preprocessing | None = None
    """How an image becomes the network's input (a bundle's card); None: the registry spec's."""


def parse_input(text: str) -> tuple[int, int, int]:
    """The `--input` shape: `CxHxW`, `HxW` (one channel) or a single side (a square RGB input)."""
    parts = text.lower().replace(" ", "").split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise ModelError(f"--input must look like 3x224x224, not '{text}'") from None
    if len(values) == 1:
        values = [3, values[0], values[0]]
    elif len(values) == 2:
        values = [1, *values]
    if len(values) != 3 or min(values) < 1:
        raise ModelError(f"--input must look like 3x224x224, not '{text}'")
    return values[0], values[1], values[2]


def model_target(name: str, input_shape: tuple[int, int, int] | None = None) -> Target:
    """A registry model (`timm:` included) at random initialisation, at its default input unless given."""
    spec = get_spec(name)
    shape = input_shape or (spec.in_chans, spec.input_size, spec.input_size)
    model = create_model(name, in_chans=shape[0], input_size=shape[1])
    return Target(model.eval(), name, shape, True)


def input_pixels(target: Target, image: Path) -> tuple[np.ndarray, torch.Tensor]:
    """The network-input pixels (H, W, C uint8, for display) and the normalised (1, C, H, W) tensor."""
    prep = target.preprocessing
    if prep is None:
        c, h, w = target.input_shape
        spec = get_spec(target.title)
        prep = Preprocessing(c, (h, w), (h, w), spec.mean or (0.5,) * c, spec.std or (0.5,) * c)
    pixels = image_to_input(image, prep.channels, prep.resize_to, prep.pad_to, prep.crop)
    mean, std = stats_tensors(prep.mean, prep.std)
    x = normalize(pixels[None], mean, std)
    return pixels.permute(1, 2, 0).numpy(), x.to(torch.float32)
