"""The model registry: a name -> builder map with the metadata that travels with the weights.

A leaf, as timm's `_registry.py`: model modules (`classic`, `zoo`) import it and register their
builders; `factory` looks names up and builds. Nothing here imports a model module.

Every registered model answers timm's contract: `forward_features(x)` (the convolutional
trunk's output map), `forward_head(features)` (logits), `reset_classifier(num_classes)`, and
names in its `ModelSpec` the layer Grad-CAM should hook.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from cnnlab.config import did_you_mean
from cnnlab.errors import ModelError

_NAME = re.compile(r"^[a-z0-9_]+$")


@dataclass(frozen=True)
class ModelSpec:
    name: str
    builder: Callable[..., nn.Module]
    input_size: int
    """Default side of the square input."""
    in_chans: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    cam_layer: str
    """Dotted module path of the layer whose activations Grad-CAM uses."""
    description: str
    min_input_size: int = 1
    binary: bool = False
    """One sigmoid output trained with binary cross-entropy (two classes only)."""
    pretrained: str | None = None
    """Where `weights: imagenet` comes from: torchvision, lite0-package, timm; None: no such weights.
    `mean`/`std` are the normalisation those weights expect."""


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(
    name: str,
    *,
    input_size: int,
    in_chans: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    cam_layer: str,
    description: str,
    min_input_size: int = 1,
    binary: bool = False,
    pretrained: str | None = None,
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator registering `builder(num_classes, in_chans, input_size) -> nn.Module`."""
    if not _NAME.match(name):
        raise ValueError(f"model name '{name}' must match [a-z0-9_]+")

    def wrap(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model '{name}' is already registered")
        _REGISTRY[name] = ModelSpec(
            name=name,
            builder=builder,
            input_size=input_size,
            in_chans=in_chans,
            mean=mean,
            std=std,
            cam_layer=cam_layer,
            description=description,
            min_input_size=min_input_size,
            binary=binary,
            pretrained=pretrained,
        )
        return builder

    return wrap


def registered_names() -> list[str]:
    return sorted(_REGISTRY)


def registered_spec(name: str) -> ModelSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        hint = did_you_mean(name, _REGISTRY)
        raise ModelError(f"unknown model '{name}'{hint}; `cnnlab models` lists them") from None
