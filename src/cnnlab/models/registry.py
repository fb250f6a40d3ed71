"""The model registry: a name -> builder map with the metadata that travels with the weights.

Every registered model answers timm's contract: `forward_features(x)` (the convolutional
trunk's output map), `forward_head(features)` (logits), `reset_classifier(num_classes)`, and
names in its `ModelSpec` the layer Grad-CAM should hook.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn

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


class ContractModel(Protocol):
    def forward_features(self, x: torch.Tensor) -> torch.Tensor: ...
    def forward_head(self, x: torch.Tensor) -> torch.Tensor: ...
    def reset_classifier(self, num_classes: int) -> None: ...


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
        )
        return builder

    return wrap


def list_models() -> list[str]:
    _load_builtin_models()
    return sorted(_REGISTRY)


def get_spec(name: str) -> ModelSpec:
    _load_builtin_models()
    try:
        return _REGISTRY[name]
    except KeyError:
        import difflib

        close = difflib.get_close_matches(name, _REGISTRY, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ModelError(f"unknown model '{name}'{hint}; `cnnlab models` lists them") from None


def create_model(
    name: str,
    num_classes: int | None = None,
    in_chans: int | None = None,
    input_size: int | None = None,
) -> nn.Module:
    """Build a registered model for the given classes, channels and input side."""
    spec = get_spec(name)
    size = input_size or spec.input_size
    if size < spec.min_input_size:
        raise ModelError(f"{name} needs inputs of at least {spec.min_input_size} px, got {size}")
    classes = num_classes if num_classes is not None else (2 if spec.binary else 10)
    if spec.binary and classes != 2:
        raise ModelError(f"{name} is a binary (one sigmoid output) model: it needs 2 classes, not {classes}")
    if classes < 2:
        raise ModelError(f"a classifier needs at least 2 classes, got {classes}")
    return spec.builder(num_classes=classes, in_chans=in_chans or spec.in_chans, input_size=size)


def num_outputs(num_classes: int, binary: bool) -> int:
    return 1 if binary else num_classes


def _load_builtin_models() -> None:
    # Importing the model modules runs their @register_model decorators.
    from cnnlab.models import classic  # noqa: F401
