"""What a network is, measured: parameters, multiply-adds, depth, kernel sizes."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


@dataclass(frozen=True)
class ModelStats:
    parameters: int
    trainable: int
    macs: int
    """Multiply-adds of one forward pass on one image (FLOPs / 2, as papers count them)."""
    depth: int
    """Weight layers: convolutions and fully connected layers."""
    largest_kernel: str


def measure(model: nn.Module, input_shape: tuple[int, int, int]) -> ModelStats:
    kernels = [m.kernel_size for m in model.modules() if isinstance(m, nn.Conv2d)]
    largest = max(kernels, key=lambda k: k[0] * k[1]) if kernels else None
    depth = sum(1 for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear))
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, *input_shape))
    model.train(was_training)
    return ModelStats(
        parameters=sum(p.numel() for p in model.parameters()),
        trainable=sum(p.numel() for p in model.parameters() if p.requires_grad),
        macs=counter.get_total_flops() // 2,
        depth=depth,
        largest_kernel=f"{largest[0]}x{largest[1]}" if largest else "-",
    )
