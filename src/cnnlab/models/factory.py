"""Look a model up by name and build it: registered models and any `timm:NAME`.

The builtin model modules register themselves when `cnnlab.models` is imported (its `__init__`
imports them), so every lookup here sees them; `zoo` is imported only for its timm builder.
"""

from __future__ import annotations

import torch
from torch import nn

from cnnlab.config import did_you_mean
from cnnlab.errors import ModelError
from cnnlab.models import weights as pretrained
from cnnlab.models.registry import ModelSpec, registered_names, registered_spec
from cnnlab.models.zoo import create_timm

TIMM_PREFIX = "timm:"


def list_models() -> list[str]:
    return registered_names()


def get_spec(name: str) -> ModelSpec:
    if name.startswith(TIMM_PREFIX):
        return _timm_spec(name[len(TIMM_PREFIX) :])
    return registered_spec(name)


def _timm_spec(timm_name: str) -> ModelSpec:
    import timm  # loads hundreds of model definitions: only when a timm: model is asked for

    if not timm.is_model(timm_name):
        hint = did_you_mean(timm_name, timm.list_models(), prefix=TIMM_PREFIX)
        raise ModelError(f"unknown timm model '{timm_name}'{hint}")
    cfg = timm.get_pretrained_cfg(timm_name)
    size = int(cfg.input_size[-1]) if cfg is not None else 224
    mean = tuple(cfg.mean) if cfg is not None else (0.485, 0.456, 0.406)
    std = tuple(cfg.std) if cfg is not None else (0.229, 0.224, 0.225)

    def builder(num_classes: int, in_chans: int, input_size: int) -> nn.Module:
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
    return pretrained.build_with_weights(spec, weights, classes, chans, size)


def count_parameters(
    name: str, num_classes: int | None = None, in_chans: int | None = None, input_size: int | None = None
) -> int:
    """The parameters `create_model` would build, counted on the meta device: shapes without
    storage or initialisation, so every registered model is counted in well under a second
    (building AlexNet or VGG16 for real takes seconds each)."""
    try:
        with torch.device("meta"):
            model = create_model(name, num_classes, in_chans, input_size)
    except (NotImplementedError, RuntimeError):
        # A builder that needs real numbers (an op meta tensors lack, a data-dependent shape):
        # build it for real; a genuine error raises again from there.
        model = create_model(name, num_classes, in_chans, input_size)
    return sum(p.numel() for p in model.parameters())


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
