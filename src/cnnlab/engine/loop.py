"""One epoch of training or evaluation, as plain functions over (model, batches, optimizer).

Batches go to the device of the model's parameters (`engine.device`); mixed precision follows
that device's type, with a GradScaler for fp16."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from cnnlab.engine.device import autocast, grad_scaler, module_device, to_device
from cnnlab.engine.distributed import all_finite, gather_across, sum_across
from cnnlab.engine.losses import LossFn, target_index
from cnnlab.models.outputs import predicted_index


class NonFiniteLoss(RuntimeError):
    def __init__(self, step: int, value: float) -> None:
        super().__init__(f"loss became {value} at step {step}")
        self.step = step


@dataclass
class EpochStats:
    loss: float
    accuracy: float
    images: int
    seconds: float
    logits: torch.Tensor | None = None
    """Every image's logits (all ranks), when the caller asked to keep them (`fit` does, for val_auc)."""
    labels: torch.Tensor | None = None

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0


def training_loss(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: LossFn, precision: str, aux_weight: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(the loss one training step minimises, the head's logits): the head's loss plus the auxiliary
    classifier's (Inception v3 in training mode) weighted by `aux_weight`. Autocast follows `x`'s
    device; the loss is computed in fp32 whatever the forward pass ran in (as AMP advises)."""
    with autocast(precision, x.device):
        logits = model(x)
    loss = loss_fn(logits.float(), y)
    aux = getattr(model, "aux_logits", None)
    if aux is not None:
        loss = loss + aux_weight * loss_fn(aux.float(), y)
    return loss, logits


def optimizer_step(
    loss: torch.Tensor, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None = None
) -> None:
    """Backward and one optimiser step; with fp16's GradScaler (CUDA), the loss is scaled and the
    step skipped when the scaled gradients overflow."""
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        optimizer.step()


def train_one_epoch(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    optimizer: torch.optim.Optimizer,
    loss_fn: LossFn,
    *,
    binary: bool,
    precision: str = "fp32",
    set_lr: Callable[[int], float] | None = None,
    first_step: int = 0,
    on_batch: Callable[[int], None] | None = None,
    frozen: Sequence[nn.Module] = (),
    aux_weight: float = 0.4,
    scaler: torch.amp.GradScaler | None = None,
) -> EpochStats:
    """Train over `batches`; raises NonFiniteLoss before a NaN/inf loss can update the weights.
    In a data-parallel job the loss and accuracy are summed over every rank's images.

    `frozen` modules (BatchNorm layers of a frozen trunk) stay in eval mode. A model that
    leaves `aux_logits` after its forward (Inception's auxiliary head) adds their loss,
    weighted by `aux_weight`. fp16 scales the loss with `scaler` (one is made when none is given;
    `fit` keeps one across epochs so its scale carries over).
    """
    model.train()
    for module in frozen:
        module.eval()
    device = module_device(model)
    if scaler is None:
        scaler = grad_scaler(precision, device)
    total_loss = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    seen = 0
    start = time.perf_counter()
    step = first_step
    for x, y in batches:
        x, y = to_device((x, y), device)
        if set_lr is not None:
            set_lr(step)
        loss, logits = training_loss(model, x, y, loss_fn, precision, aux_weight)
        if not all_finite(loss):
            raise NonFiniteLoss(step, float(loss.detach()))
        optimizer_step(loss, optimizer, scaler)
        n = len(y)
        total_loss += loss.detach() * n
        correct += (predicted_index(logits.detach(), binary) == target_index(y)).sum()
        seen += n
        step += 1
        if on_batch is not None:
            on_batch(n)
    seconds = time.perf_counter() - start
    loss_sum, right, seen = sum_across([float(total_loss), float(correct), seen])
    return EpochStats(loss_sum / max(seen, 1), right / max(seen, 1), int(seen), seconds)


@torch.inference_mode()
def evaluate_epoch(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    loss_fn: LossFn,
    *,
    binary: bool,
    precision: str = "fp32",
    keep_outputs: bool = False,
) -> EpochStats:
    model.eval()
    device = module_device(model)
    total_loss = 0.0
    correct = 0
    seen = 0
    kept: list[tuple[torch.Tensor, torch.Tensor]] = []
    start = time.perf_counter()
    for x, y in batches:
        x, y = to_device((x, y), device)
        with autocast(precision, device):
            logits = model(x)
        logits = logits.float()
        total_loss += float(loss_fn(logits, y)) * len(y)
        correct += int((predicted_index(logits, binary) == y).sum())
        seen += len(y)
        if keep_outputs:  # metrics read them on the CPU
            kept.append((logits.detach().cpu(), y.cpu()))
    seconds = time.perf_counter() - start
    loss_sum, right, seen = sum_across([total_loss, correct, seen])
    stats = EpochStats(loss_sum / max(seen, 1), right / max(seen, 1), int(seen), seconds)
    if keep_outputs and kept:
        stats.logits = gather_across(torch.cat([k[0] for k in kept]))
        stats.labels = gather_across(torch.cat([k[1] for k in kept]))
    return stats
