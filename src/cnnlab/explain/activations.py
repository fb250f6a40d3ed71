"""Feature maps: what chosen layers output for one image, recorded by hooks that are always removed."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cnnlab.explain.cam import get_layer
from cnnlab.figures import save_figure


@contextmanager
def recording(model: nn.Module, layers: list[str]) -> Iterator[dict[str, torch.Tensor]]:
    """Yields a dict that fills with each layer's output on the next forward passes; the hooks
    are removed on exit, whatever happens inside."""
    saved: dict[str, torch.Tensor] = {}
    modules = [(name, get_layer(model, name)) for name in layers]
    hooks = []
    try:
        for name, module in modules:
            hooks.append(
                module.register_forward_hook(
                    lambda m, i, o, name=name: (
                        saved.__setitem__(name, o.detach().clone()) if isinstance(o, torch.Tensor) else None
                    )
                )
            )
        yield saved
    finally:
        for h in hooks:
            h.remove()


def stage_layers(model: nn.Module, input_shape: tuple[int, int, int]) -> list[str]:
    """The last layer of each run of equal spatial size (each stage's output), in execution order."""
    order: list[tuple[str, tuple[int, ...]]] = []
    leaves = [(n, m) for n, m in model.named_modules() if n and not any(True for _ in m.children())]
    hooks = [
        m.register_forward_hook(
            lambda mod, i, o, n=n: order.append((n, tuple(o.shape))) if isinstance(o, torch.Tensor) else None
        )
        for n, m in leaves
    ]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, *input_shape))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    spatial = [(n, s) for n, s in order if len(s) == 4 and s[2] * s[3] > 1]
    stages = [n for (n, s), nxt in zip(spatial, [*spatial[1:], ("", ())], strict=True) if s[2:] != nxt[1][2:]]
    return list(dict.fromkeys(stages))


def feature_maps(model: nn.Module, layers: list[str], x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each layer's output (C, H, W) for one normalised input (1, C, H, W)."""
    was_training = model.training
    model.eval()
    try:
        with recording(model, layers) as saved, torch.no_grad():
            model(x)
    finally:
        model.train(was_training)
    return {name: saved[name][0] for name in layers if name in saved}


def plot_feature_maps(
    image: np.ndarray, maps: dict[str, torch.Tensor], path: Path, title: str, max_maps: int = 32
) -> None:
    """A row per layer: the network-input image, then up to `max_maps` channels (each stretched
    to its own range; a dead, constant map is drawn black and counted in the row title)."""
    import matplotlib.pyplot as plt

    cols = 8
    rows_per = [max(1, -(-min(max_maps, m.shape[0]) // cols)) if m.ndim == 3 else 1 for m in maps.values()]
    fig = plt.figure(figsize=(1.2 * (cols + 2) + 0.5, sum(1.2 * r + 0.5 for r in rows_per) + 1.0))
    # A strip of its own for the title, so it never sits on the first layer's heading.
    heights = [0.5] + [1.2 * r + 0.5 for r in rows_per]
    header, *subfigs = fig.subfigures(len(maps) + 1, 1, height_ratios=heights, squeeze=False)[:, 0]
    grey = image.ndim == 2 or image.shape[-1] == 1
    for sub, (name, fmap), nrows in zip(subfigs, maps.items(), rows_per, strict=True):
        grid = sub.add_gridspec(nrows, cols + 2)
        ax_in = sub.add_subplot(grid[:, :2])
        ax_in.imshow(image.squeeze(-1) if grey else image, cmap="gray" if grey else None, vmin=0, vmax=255)
        ax_in.set_title("input", fontsize=8)
        ax_in.axis("off")
        if fmap.ndim != 3:
            ax = sub.add_subplot(grid[:, 2:])
            ax.bar(range(fmap.numel()), fmap.flatten().numpy())
            sub.suptitle(f"{name}  {tuple(fmap.shape)} (no spatial map)", fontsize=9)
            continue
        values = fmap.float()
        shown = min(max_maps, values.shape[0])
        flat = values.flatten(1)
        dead = int(((flat.max(1)[0] - flat.min(1)[0]) <= 1e-12).sum())
        for k in range(shown):
            ax = sub.add_subplot(grid[k // cols, 2 + k % cols])
            m = values[k]
            lo, hi = float(m.min()), float(m.max())
            ax.imshow(((m - lo) / (hi - lo)).numpy() if hi > lo else np.zeros(m.shape), cmap="viridis", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
        more = f"; first {shown} of {values.shape[0]} channels" if shown < values.shape[0] else ""
        sub.suptitle(
            f"{name}  {values.shape[0]} x {values.shape[1]} x {values.shape[2]}{more}; {dead} constant (dead) maps",
            fontsize=9,
        )
    header.suptitle(title, fontsize=11, y=0.5, va="center")
    path.parent.mkdir(parents=True, exist_ok=True)
    save_figure(fig, path)
