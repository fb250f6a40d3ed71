"""The learned kernels of a convolution, drawn as a grid (the seed's 000 Q8, for any model)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cnnlab.errors import ModelError
from cnnlab.explain.cam import conv_layer_names, get_layer
from cnnlab.figures import save_figure


@dataclass(frozen=True)
class FilterGrid:
    layer: str
    shape: tuple[int, ...]
    """(out_channels, in_channels / groups, kh, kw)."""
    colour: bool
    shown_filters: int
    shown_channels: int
    path: Path


def conv_layer(model: nn.Module, name: str | None) -> tuple[str, nn.Conv2d]:
    """The named conv layer, or the first one."""
    convs = conv_layer_names(model)
    if not convs:
        raise ModelError(f"{type(model).__name__} has no convolution layers")
    if name is None:
        name = convs[0]
    module = get_layer(model, name)
    if not isinstance(module, nn.Conv2d):
        raise ModelError(
            f"'{name}' is a {type(module).__name__}, not a convolution; conv layers: {', '.join(convs[:12])}"
        )
    return name, module


def normalise_filters(weight: torch.Tensor) -> np.ndarray:
    """Each filter (all its input channels together) stretched to [0, 1]; a constant one is 0.5."""
    w = weight.detach().float()
    flat = w.flatten(1)
    lo, hi = flat.min(1)[0], flat.max(1)[0]
    span = (hi - lo).clamp_min(1e-12)
    out = (w - lo[:, None, None, None]) / span[:, None, None, None]
    out[(hi - lo) <= 1e-12] = 0.5
    return out.numpy()


def plot_filters(
    model: nn.Module,
    path: Path,
    layer: str | None = None,
    title: str = "",
    untrained: bool = False,
    max_filters: int = 96,
    max_channels: int = 12,
) -> FilterGrid:
    """RGB kernels (3 input channels) as colour tiles; other layers one grey tile per input channel
    (a row per filter). Every filter is normalised on its own."""
    import matplotlib.pyplot as plt

    name, conv = conv_layer(model, layer)
    weight = conv.weight
    shape = tuple(weight.shape)
    tiles = normalise_filters(weight)
    colour = shape[1] == 3
    n_filters = min(shape[0], max_filters)
    if colour:
        cols = min(12, n_filters)
        rows = -(-n_filters // cols)
        n_channels = 3
    else:
        n_channels = min(shape[1], max_channels)
        # one row per filter when channels are many; a filter grid when there is a single channel
        cols, rows = (
            (min(12, n_filters), -(-n_filters // min(12, n_filters))) if n_channels == 1 else (n_channels, n_filters)
        )
    n_filters = min(n_filters, 48) if not colour and n_channels > 1 else n_filters
    rows = n_filters if not colour and n_channels > 1 else rows
    cell = 0.75 if max(rows, cols) <= 16 else 0.5
    fig, axes = plt.subplots(rows, cols, figsize=(cols * cell + 0.4, rows * cell + 1.0), squeeze=False)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.axis("off")
    for f in range(n_filters):
        if colour:
            ax = axes[f // cols][f % cols]
            ax.imshow(tiles[f].transpose(1, 2, 0), interpolation="nearest")
        elif n_channels == 1:
            axes[f // cols][f % cols].imshow(tiles[f, 0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        else:
            for c in range(n_channels):
                axes[f][c].imshow(tiles[f, c], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    state = "random initialisation (untrained)" if untrained else "trained weights"
    shown = []
    if n_filters < shape[0]:
        shown.append(f"first {n_filters} of {shape[0]} filters")
    if not colour and n_channels < shape[1]:
        shown.append(f"first {n_channels} of {shape[1]} input channels")
    layout = (
        "RGB kernels in colour"
        if colour
        else ("one grey tile per filter" if n_channels == 1 else "row = filter, column = input channel")
    )
    heading = f"{title + ' — ' if title else ''}{name}  {' x '.join(map(str, shape))}  ({state})"
    sub = f"{layout}; each filter normalised on its own" + (f"; {', '.join(shown)}" if shown else "")
    fig.suptitle(f"{heading}\n{sub}", fontsize=9, color="#c0392b" if untrained else "black")
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    path.parent.mkdir(parents=True, exist_ok=True)
    save_figure(fig, path)
    return FilterGrid(name, shape, colour, n_filters, n_channels, path)
