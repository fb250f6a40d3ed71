"""The learning-rate range test (Leslie Smith 2015, fastai's `lr_find`): train for up to `steps`
batches while the learning rate grows exponentially from `start_lr` to `end_lr`, record the loss,
and stop once the smoothed loss has diverged. It trains a deep copy with a fresh optimiser: the
caller's model, its optimiser state and the global RNG are left as they were.

The suggestion is fastai's `valley` (its default since fastai 2.5): the middle of the longest run
over which the smoothed loss keeps falling. The steepest-descent point (fastai's older default)
takes the derivative of a noisy curve and jumps between runs; the minimum itself is already the
edge of divergence, so fastai's other classic reference, the lr at the minimum divided by 10, is
reported beside it.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import torch
from torch import nn

from cnnlab.config import OptimConfig
from cnnlab.engine.device import grad_scaler, module_device, to_device
from cnnlab.engine.loop import optimizer_step, training_loss
from cnnlab.engine.losses import LossFn, make_loss
from cnnlab.engine.schedule import make_optimizer
from cnnlab.engine.transfer import plan_stage

SUGGESTION_METHOD = "valley"


@dataclass
class LRFindResult:
    lrs: list[float]
    """The learning rate of each step (of the first parameter group: the head in a staged run)."""
    losses: list[float]
    """The training loss of each step's batch, before that step's update."""
    smoothed: list[float]
    """Exponentially smoothed losses with bias correction (what the suggestion reads)."""
    suggestion: float
    """fastai's `valley`: the middle of the longest stretch of falling smoothed loss."""
    min_lr_over_10: float
    """The lr at the smoothed loss's minimum, divided by 10 (a conservative second reference)."""
    stop_reason: str
    diverged_at: float | None = None
    """The lr at which the smoothed loss exceeded `diverge` x its best (None: it never did)."""
    seconds: float = 0.0
    method: str = field(default=SUGGESTION_METHOD)

    @property
    def steps(self) -> int:
        return len(self.lrs)

    def to_dict(self) -> dict[str, object]:
        return {
            "method": self.method,
            "suggestion": self.suggestion,
            "min_lr_over_10": self.min_lr_over_10,
            "stop_reason": self.stop_reason,
            "diverged_at": self.diverged_at,
            "steps": self.steps,
            "seconds": self.seconds,
            "lrs": self.lrs,
            "losses": self.losses,
            "smoothed": self.smoothed,
        }


def lr_find(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    loss_fn: LossFn | None,
    *,
    binary: bool,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    steps: int = 100,
    beta: float = 0.98,
    diverge: float = 4.0,
    precision: str = "fp32",
    optim: OptimConfig | None = None,
    trainable: str = "all",
    lr_decay: float = 1.0,
    aux_weight: float = 0.4,
) -> LRFindResult:
    """Run the range test from `model`'s current weights over `batches` (cycled as often as needed).

    `optim` gives the optimiser (type, momentum, weight decay) as training builds it; `trainable`
    and `lr_decay` a stage's plan (`engine.transfer.plan_stage`): deeper groups run at the swept
    lr x decay^depth, as in that stage. `loss_fn` None: plain cross-entropy for the head."""
    if not 0 < start_lr < end_lr:
        raise ValueError("lr_find needs 0 < start_lr < end_lr")
    if steps < 2:
        raise ValueError("lr_find needs at least 2 steps")
    loss_fn = loss_fn if loss_fn is not None else make_loss(binary)
    net = copy.deepcopy(model)
    plan = plan_stage(net, trainable, 1.0, lr_decay)  # base_lr: each group's multiplier of the swept lr
    optimizer = make_optimizer(plan.groups, optim or OptimConfig())
    device = module_device(net)
    scaler = grad_scaler(precision, device)
    ratio = (end_lr / start_lr) ** (1.0 / (steps - 1))
    lrs: list[float] = []
    losses: list[float] = []
    smoothed: list[float] = []
    avg, best = 0.0, math.inf
    stop_reason, diverged_at = f"completed {steps} steps up to lr {end_lr:g}", None
    rng = torch.get_rng_state()
    epoch = getattr(batches, "epoch", None)
    start = time.perf_counter()
    try:
        net.train()
        for module in plan.frozen_norms:
            module.eval()
        for i, (x, y) in enumerate(_cycle(batches, steps)):
            lr = start_lr * ratio**i
            for group in optimizer.param_groups:
                group["lr"] = group["base_lr"] * lr
            x, y = to_device((x, y), device)
            loss, _ = training_loss(net, x, y, loss_fn, precision, aux_weight)
            value = float(loss.detach())
            if not math.isfinite(value):
                stop_reason, diverged_at = f"the loss became {value} at lr {lr:.3g}", lr
                break
            avg = beta * avg + (1 - beta) * value
            smooth = avg / (1 - beta ** (i + 1))
            lrs.append(lr)
            losses.append(value)
            smoothed.append(smooth)
            if i > 0 and smooth > diverge * best:
                stop_reason, diverged_at = f"diverged at lr {lr:.3g} (smoothed loss > {diverge:g} x its best)", lr
                break
            best = min(best, smooth)
            optimizer_step(loss, optimizer, scaler)
    finally:
        torch.set_rng_state(rng)
        if epoch is not None:
            batches.set_epoch(epoch)  # type: ignore[attr-defined]
    if len(lrs) < 2:
        raise ValueError(f"lr_find stopped after {len(lrs)} step(s) ({stop_reason}): lower start_lr")
    suggestion, floor = suggest(lrs, smoothed, steps)
    return LRFindResult(lrs, losses, smoothed, suggestion, floor, stop_reason, diverged_at, time.perf_counter() - start)


def suggest(lrs: list[float], smoothed: list[float], steps: int) -> tuple[float, float]:
    """(valley, lr at the minimum / 10) over the curve without its first tenth and last 5 points,
    as fastai reads it (the start is flat noise, the end the explosion); a short curve is read whole."""
    lo, hi = steps // 10, len(lrs) - 5
    if hi - lo < 5:
        lo, hi = 0, len(lrs)
    xs, ys = lrs[lo:hi], smoothed[lo:hi]
    return xs[valley_index(ys)], xs[min(range(len(ys)), key=ys.__getitem__)] / 10


def valley_index(losses: list[float]) -> int:
    """fastai's `valley`: the longest strictly decreasing subsequence of the losses ends at its
    lowest point; the suggestion lies half-way along it (a third, plus a sixth), well before the
    minimum, where the loss still falls fast. O(n^2), n <= a few hundred."""
    n = len(losses)
    longest = [1] * n
    start = end = 0
    for i in range(1, n):
        for j in range(i):
            if losses[i] < losses[j] and longest[i] < longest[j] + 1:
                longest[i] = longest[j] + 1
        if longest[end] < longest[i]:
            end = i
            start = end - longest[end]
    section = (end - start) / 3
    return min(n - 1, start + int(section) + int(section / 2))


Batch = tuple[torch.Tensor, torch.Tensor]


def _cycle(batches: Iterable[Batch], steps: int) -> Iterator[Batch]:
    """`steps` batches, passing over the data as often as needed (a new shuffle each pass)."""
    done, epoch = 0, 0
    set_epoch = getattr(batches, "set_epoch", None)
    while done < steps:
        if set_epoch is not None:
            set_epoch(epoch)
        empty = True
        for batch in batches:
            empty = False
            yield batch
            done += 1
            if done >= steps:
                return
        if empty:
            raise ValueError("lr_find got no batches")
        epoch += 1
