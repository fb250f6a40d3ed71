"""`cnnlab calc`'s defaults follow the frameworks: pooling strides by its kernel size."""

from __future__ import annotations

import torch
from torch import nn

from cnnlab.explain.calc import layer_calc


def test_pooling_stride_defaults_to_the_kernel_size_as_in_pytorch_and_keras() -> None:
    # `cnnlab calc pool --input 224 --kernel 2` once answered 223 (stride 1); nn.MaxPool2d(2) gives 112.
    pooled = nn.MaxPool2d(2)(torch.zeros(1, 1, 224, 224)).shape[-1]
    assert layer_calc("pool", 224, 2).output == pooled == 112
    assert layer_calc("pool", 224, 2).stride == 2
    assert layer_calc("conv", 224, 3).output == nn.Conv2d(1, 1, 3)(torch.zeros(1, 1, 224, 224)).shape[-1] == 222
    assert layer_calc("pool", 224, 3, stride=1).output == 222  # an explicit stride still wins
