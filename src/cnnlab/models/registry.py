"""The model registry: a name -> builder map with the metadata that travels with the weights.

Every registered model answers timm's contract: `forward_features(x)` (the convolutional
trunk's output map), `forward_head(features)` (logits), `reset_classifier(num_classes)`, and
names in its `ModelSpec` the layer Grad-CAM should hook.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
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


def list_models() -> list[str]:
    _load_builtin_models()
    return sorted(_REGISTRY)


TIMM_PREFIX = "timm:"


def get_spec(name: str) -> ModelSpec:
    _load_builtin_models()
    if name.startswith(TIMM_PREFIX):
        return _timm_spec(name[len(TIMM_PREFIX) :])
    try:
        return _REGISTRY[name]
    except KeyError:
        hint = did_you_mean(name, _REGISTRY)
        raise ModelError(f"unknown model '{name}'{hint}; `cnnlab models` lists them") from None


def _timm_spec(timm_name: str) -> ModelSpec:
    import timm

    if not timm.is_model(timm_name):
        hint = did_you_mean(timm_name, timm.list_models(), prefix=TIMM_PREFIX)
        raise ModelError(f"unknown timm model '{timm_name}'{hint}")
    cfg = timm.get_pretrained_cfg(timm_name)
    size = int(cfg.input_size[-1]) if cfg is not None else 224
    mean = tuple(cfg.mean) if cfg is not None else (0.485, 0.456, 0.406)
    std = tuple(cfg.std) if cfg is not None else (0.229, 0.224, 0.225)

    def builder(num_classes: int, in_chans: int, input_size: int) -> nn.Module:
        from cnnlab.models.zoo import create_timm

        return create_timm(timm_name, num_classes, in_chans)

    return ModelSpec(
        name=f"{TIMM_PREFIX}{timm_name}",
        builder=builder,
        input_size=size,
        in_chans=3,
        mean=mean,
        std=std,
        cam_layer="",  # found on the built model: the last convolution with a spatial output
        description=f"timm's {timm_name}",
        min_input_size=32,
        pretrained="timm",
    )


def create_model(
    name: str,
    num_classes: int | None = None,
    in_chans: int | None = None,
    input_size: int | None = None,
    weights: str = "none",
) -> nn.Module:
    """Build a model for the given classes, channels and input side.

    `weights`: `none` (random initialisation), `imagenet` (the spec's pretrained source, offline
    first), or a path to a `.safetensors` / `.pth` state dict of this architecture.
    """
    spec = get_spec(name)
    size = input_size or spec.input_size
    if size < spec.min_input_size:
        raise ModelError(f"{name} needs inputs of at least {spec.min_input_size} px, got {size}")
    classes = num_classes if num_classes is not None else (2 if spec.binary else 10)
    if spec.binary and classes != 2:
        raise ModelError(f"{name} is a binary (one sigmoid output) model: it needs 2 classes, not {classes}")
    if classes < 2:
        raise ModelError(f"a classifier needs at least 2 classes, got {classes}")
    chans = in_chans or spec.in_chans
    if weights == "none":
        return spec.builder(num_classes=classes, in_chans=chans, input_size=size)
    from cnnlab.models import weights as pretrained

    return pretrained.build_with_weights(spec, weights, classes, chans, size)


def find_cam_layer(model: nn.Module, in_chans: int, size: int) -> str:
    """The last convolution (in execution order) whose output still has a spatial extent."""

    order: list[tuple[str, tuple[int, ...]]] = []
    hooks = [
        m.register_forward_hook(lambda mod, inp, out, n=n: order.append((n, tuple(out.shape))))
        for n, m in model.named_modules()
        if isinstance(m, nn.Conv2d)
    ]
    try:
        was_training = model.training
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, in_chans, size, size))
        model.train(was_training)
    finally:
        for h in hooks:
            h.remove()
    spatial = [n for n, shape in order if len(shape) == 4 and shape[-1] * shape[-2] > 1]
    if not spatial:
        raise ModelError("no convolution with a spatial output: Grad-CAM needs one")
    return spatial[-1]


def num_outputs(num_classes: int, binary: bool) -> int:
    return 1 if binary else num_classes


def _load_builtin_models() -> None:
    # Importing the model modules runs their @register_model decorators.
    from cnnlab.models import classic, zoo  # noqa: F401


def pooled_embedding(features: torch.Tensor) -> np.ndarray:
    """(N, D) float32 embeddings from `forward_features` output: a feature map averaged over its
    spatial positions, or flat features as they are (what drift monitoring compares)."""
    pooled = features.float().mean(dim=(2, 3)) if features.ndim == 4 else features.float().flatten(1)
    return pooled.detach().numpy().astype("float32")
