"""Padding, stride and parameter arithmetic of one convolution or pooling layer, written out.

The course questions (what does padding do, how does stride change the output, how many
parameters does a 5x5 filter bank have) as functions that show their working. Sizes follow
PyTorch's rule, `floor((H + 2P - D(K-1) - 1) / S) + 1`; `same` is TensorFlow's rule
(`ceil(H / S)`, padding split with the extra pixel after), `valid` is no padding.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

from cnnlab.errors import CnnlabError


class CalcError(CnnlabError):
    """A layer configuration that cannot produce an output."""


@dataclass(frozen=True)
class LayerCalc:
    kind: str
    """conv or pool."""
    input: int
    kernel: int
    stride: int
    padding: tuple[int, int]
    """Pixels added before and after (they differ only for `same` with an odd total)."""
    dilation: int
    output: int
    formula: str
    """The size computation with the numbers filled in."""
    in_channels: int | None = None
    out_channels: int | None = None
    groups: int = 1
    bias: bool = True
    parameters: int | None = None
    """Weights and biases (conv with channels given; 0 for pooling)."""
    macs: int | None = None
    """Multiply-adds for one image (conv with channels given; 0 for pooling)."""
    receptive_growth: int = 0
    """How much this layer widens the receptive field, in units of its input's jump: D(K-1)."""


def same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TensorFlow's `same`: enough padding for ceil(size / stride) outputs, the odd pixel after."""
    effective = dilation * (kernel - 1) + 1
    total = max((math.ceil(size / stride) - 1) * stride + effective - size, 0)
    return total // 2, total - total // 2


def output_size(size: int, kernel: int, stride: int = 1, padding: int | str = 0, dilation: int = 1) -> int:
    """Output side of a convolution or pooling layer, as PyTorch computes it."""
    return layer_calc("conv", size, kernel, stride, padding, dilation).output


def layer_calc(
    kind: str,
    size: int,
    kernel: int,
    stride: int | None = None,
    padding: int | str = 0,
    dilation: int = 1,
    in_channels: int | None = None,
    out_channels: int | None = None,
    groups: int = 1,
    bias: bool = True,
) -> LayerCalc:
    """Everything about one conv or pool layer on a square `size` x `size` input. The stride
    defaults as in PyTorch and Keras: 1 for a convolution, the kernel size for pooling."""
    if kind not in ("conv", "pool"):
        raise CalcError(f"layer kind must be conv or pool, not '{kind}'")
    if stride is None:
        stride = kernel if kind == "pool" else 1
    for name, value in (("input", size), ("kernel", kernel), ("stride", stride), ("dilation", dilation)):
        if value < 1:
            raise CalcError(f"--{name} must be at least 1, got {value}")
    effective = dilation * (kernel - 1) + 1
    if padding == "valid":
        pads = (0, 0)
    elif padding == "same":
        pads = same_padding(size, kernel, stride, dilation)
    else:
        try:
            p = int(padding)
        except ValueError:
            raise CalcError(f"--padding must be an integer, same or valid, not '{padding}'") from None
        if p < 0:
            raise CalcError(f"--padding must be >= 0, got {p}")
        if kind == "pool" and p > kernel // 2:
            raise CalcError(f"pooling padding {p} exceeds half the kernel ({kernel // 2}); PyTorch refuses it")
        pads = (p, p)
    padded = size + pads[0] + pads[1]
    if padded < effective:
        raise CalcError(
            f"the {'dilated ' if dilation > 1 else ''}kernel ({effective} px) "
            f"is larger than the padded input ({padded} px)"
        )
    out = (padded - effective) // stride + 1
    pad_text = f"{pads[0]} + {pads[1]}" if pads[0] != pads[1] else f"2x{pads[0]}"
    dil_text = f"{dilation}x({kernel}-1) + 1" if dilation > 1 else f"{kernel}"
    formula = (
        f"floor(({size} + {pad_text} - {dil_text}) / {stride}) + 1 = floor({padded - effective} / {stride}) + 1 = {out}"
    )
    if padding == "same":
        formula += f"  (same: ceil({size} / {stride}) = {math.ceil(size / stride)})"
    params = macs = None
    if kind == "pool":
        params, macs = 0, 0
        if in_channels is not None and out_channels is not None and in_channels != out_channels:
            raise CalcError("pooling keeps the channel count: --in and --out must match")
    elif in_channels is not None and out_channels is not None:
        if in_channels % groups or out_channels % groups:
            raise CalcError(f"--in {in_channels} and --out {out_channels} must both be divisible by groups {groups}")
        per_filter = (in_channels // groups) * kernel * kernel
        params = out_channels * per_filter + (out_channels if bias else 0)
        macs = out * out * out_channels * per_filter
    return LayerCalc(
        kind=kind,
        input=size,
        kernel=kernel,
        stride=stride,
        padding=pads,
        dilation=dilation,
        output=out,
        formula=formula,
        in_channels=in_channels,
        out_channels=out_channels,
        groups=groups,
        bias=bias,
        parameters=params,
        macs=macs,
        receptive_growth=dilation * (kernel - 1),
    )


def dense_parameters(widths: list[int]) -> int:
    """Weights and biases of a fully connected chain through `widths` (input first)."""
    return sum(a * b + b for a, b in itertools.pairwise(widths))
