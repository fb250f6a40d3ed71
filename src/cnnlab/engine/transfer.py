"""Transfer learning: what each stage trains, at which learning rates, and frozen BatchNorm.

`trainable` is `head` (everything outside the trunk: the new classifier), `top:N` (the head and
the last N of the model's `trunk_blocks()`), or `all`. In `head` and `top:N` stages every
BatchNorm layer stays in eval mode while the rest trains, so running statistics remain the
pretrained ones (the classic Keras fine-tuning pitfall is updating them on a small new data set).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import nn

from cnnlab.engine.device import autocast, module_device, to_device
from cnnlab.errors import ConfigError

_TOP = re.compile(r"^top:(\d+)$")


@dataclass
class StagePlan:
    groups: list[dict]
    """Optimizer parameter groups, each with its own `base_lr`."""
    frozen_norms: list[nn.Module]
    trainable_params: int
    head_only: bool


def trunk_blocks(model: nn.Module) -> list[nn.Module]:
    if hasattr(model, "trunk_blocks"):
        return list(model.trunk_blocks())
    return []


def plan_stage(model: nn.Module, trainable: str, lr: float, lr_decay: float = 1.0) -> StagePlan:
    blocks = trunk_blocks(model)
    trunk_ids = {id(p) for b in blocks for p in b.parameters()}
    head = [p for p in model.parameters() if id(p) not in trunk_ids]
    if trainable == "all":
        n_top = len(blocks)
    elif trainable == "head":
        n_top = 0
    elif match := _TOP.match(trainable):
        n_top = int(match.group(1))
        if not 0 < n_top <= len(blocks):
            raise ConfigError(f"trainable '{trainable}': this model's trunk has {len(blocks)} blocks")
    else:
        raise ConfigError(f"trainable must be head, top:N or all, not '{trainable}'")
    for p in model.parameters():
        p.requires_grad_(False)
    groups = [{"params": head, "base_lr": lr}] if head else []
    # The top block trains at lr * decay, the next at lr * decay^2, ... (ULMFiT's discriminative rates).
    for depth, block in enumerate(reversed(blocks[len(blocks) - n_top :]), start=1):
        params = [p for p in block.parameters() if id(p) in trunk_ids]
        if params:
            groups.append({"params": params, "base_lr": lr * lr_decay**depth})
    seen: set[int] = set()
    for group in groups:
        group["params"] = [p for p in group["params"] if not (id(p) in seen or seen.add(id(p)))]
        for p in group["params"]:
            p.requires_grad_(True)
    groups = [g for g in groups if g["params"]]
    # Frozen BatchNorm layers stay in eval mode; so do all of them when only part of a pretrained
    # trunk trains (Keras' fine-tuning advice): batch statistics of a few small batches would shift
    # the features the head has just learned. Only `all` stages update running statistics.
    frozen = [
        m
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
        and (n_top < len(blocks) or not any(p.requires_grad for p in m.parameters()))
    ]
    return StagePlan(
        groups=groups,
        frozen_norms=frozen,
        trainable_params=sum(p.numel() for g in groups for p in g["params"]),
        head_only=n_top == 0 and bool(blocks),
    )


class HeadOnly(nn.Module):
    """The classifier part of a model, to train on precomputed trunk features."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(features)


@torch.inference_mode()
def trunk_features(model: nn.Module, batches, precision: str = "fp32") -> tuple[torch.Tensor, torch.Tensor]:
    """The frozen trunk's output for every batch, once (eval mode: frozen means frozen), on the CPU
    whatever device the trunk runs on: they are a data set now, batched to the device like images."""
    model.eval()
    device = module_device(model)
    feats, labels = [], []
    for x, y in batches:
        with autocast(precision, device):
            feats.append(model.forward_features(to_device(x, device)).float().cpu())
        labels.append(y.cpu())
    return torch.cat(feats), torch.cat(labels)
