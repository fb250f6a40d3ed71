"""Learning-rate policy: warm-up times a schedule, applied per optimisation step.

A pure function of the step (plus the plateau scale, which is saved in checkpoints), so a
resumed run continues on exactly the curve it was on.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from cnnlab.config import OptimConfig


class LRPolicy:
    def __init__(self, optim: OptimConfig, epochs: int, steps_per_epoch: int) -> None:
        self.cfg = optim
        self.steps_per_epoch = max(1, steps_per_epoch)
        self.total_steps = max(1, epochs * self.steps_per_epoch)
        self.warmup_steps = round(optim.warmup_epochs * self.steps_per_epoch)
        self.plateau_scale = 1.0
        self.plateau_best = math.inf
        self.plateau_bad = 0

    def factor(self, step: int) -> float:
        """Multiplier of each parameter group's base learning rate at `step` (0-based)."""
        f = 1.0
        if step < self.warmup_steps:
            f = (step + 1) / self.warmup_steps
        kind = self.cfg.schedule
        if kind == "cosine":
            span = max(1, self.total_steps - self.warmup_steps)
            t = min(1.0, max(0.0, (step - self.warmup_steps) / span))
            f *= 0.5 * (1.0 + math.cos(math.pi * t))
        elif kind == "step":
            f *= self.cfg.gamma ** ((step // self.steps_per_epoch) // self.cfg.step_size)
        elif kind == "plateau":
            f *= self.plateau_scale
        return f

    def apply(self, optimizer: torch.optim.Optimizer, step: int) -> float:
        f = self.factor(step)
        for group in optimizer.param_groups:
            group["lr"] = group["base_lr"] * f
        return optimizer.param_groups[0]["lr"]

    def end_epoch(self, val_loss: float) -> None:
        """`plateau`: multiply the rate by gamma after `plateau_patience` epochs without improvement."""
        if self.cfg.schedule != "plateau":
            return
        if val_loss < self.plateau_best * (1 - 1e-4):
            self.plateau_best, self.plateau_bad = val_loss, 0
        else:
            self.plateau_bad += 1
            if self.plateau_bad > self.cfg.plateau_patience:
                self.plateau_scale *= self.cfg.gamma
                self.plateau_bad = 0

    def state_dict(self) -> dict[str, Any]:
        return {"scale": self.plateau_scale, "best": self.plateau_best, "bad": self.plateau_bad}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.plateau_scale, self.plateau_best, self.plateau_bad = state["scale"], state["best"], state["bad"]


def make_optimizer(params: list[dict[str, Any]], optim: OptimConfig) -> torch.optim.Optimizer:
    """An optimizer over parameter groups; each group's `base_lr` is what the policy scales."""
    for group in params:
        group.setdefault("base_lr", optim.lr)
        group["lr"] = group["base_lr"]
    if optim.optimizer == "adam":
        return torch.optim.Adam(params, lr=optim.lr, weight_decay=optim.weight_decay)
    if optim.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=optim.lr, weight_decay=optim.weight_decay)
    return torch.optim.SGD(
        params, lr=optim.lr, momentum=optim.momentum, nesterov=optim.momentum > 0, weight_decay=optim.weight_decay
    )
