"""Grad-CAM (Selvaraju et al. 2017) on a model's CAM layer, mapped back onto the input image."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def gradcam(model: nn.Module, layer: str, x: torch.Tensor, class_index: int) -> np.ndarray:
    """Heat map (H, W) in [0, 1] over the network input `x` (1, C, H, W) for one class.

    A binary (one-logit) model explains class 1 with +logit and class 0 with -logit. Hooks are
    removed whatever happens."""
    module = model.get_submodule(layer)
    saved: dict[str, torch.Tensor] = {}
    hooks = [
        module.register_forward_hook(lambda m, i, o: saved.__setitem__("act", o)),
        module.register_full_backward_hook(lambda m, gi, go: saved.__setitem__("grad", go[0])),
    ]
    was_training = model.training
    try:
        model.eval()
        with torch.enable_grad():
            logits = model(x.detach().requires_grad_(True))
            score = logits[0, 0] * (1 if class_index == 1 else -1) if logits.shape[1] == 1 else logits[0, class_index]
            model.zero_grad(set_to_none=True)
            score.backward()
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    act, grad = saved["act"].detach(), saved["grad"].detach()
    cam = F.relu((grad.mean(dim=(2, 3), keepdim=True) * act).sum(dim=1, keepdim=True))
    cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
    peak = float(cam.max())
    return (cam / peak).numpy() if peak > 0 else cam.numpy()


def overlay(image: np.ndarray, heat: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """The heat map in a jet-like colour over the (grey or RGB) uint8 image."""
    import matplotlib

    rgb = np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image
    colours = (matplotlib.colormaps["jet"](heat)[..., :3] * 255).astype(np.float64)
    return (rgb.astype(np.float64) * (1 - alpha) + colours * alpha).round().astype(np.uint8)
