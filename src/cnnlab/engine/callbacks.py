"""Keras-style callbacks around `fit`: the training state as one dataclass, and hooks that see it.

`fit` runs the epochs; what happens around an epoch (early stopping, checkpoints, the history
file, the epoch line, a user's own logger) is a `Callback`. A callback may read the state and
may raise: `NonFiniteLoss` from `on_epoch_start` counts as that epoch's training diverging (so a
test injects a diverging epoch with a callback, not by patching the loop), and any exception from
`on_epoch_end` ends the run after that epoch was checkpointed (a simulated kill).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from cnnlab.engine.checkpoint import save_checkpoint


@dataclass
class TrainingState:
    """Everything `fit` carries from epoch to epoch; checkpoints save it for --resume."""

    total_epochs: int
    epoch: int = 0
    """Epochs completed (1-based number of the last one)."""
    stage_index: int = -1
    stage_name: str = ""
    history: list[dict[str, Any]] = field(default_factory=list)
    best_key: tuple[float, ...] = (math.inf, math.inf)
    """The best epoch's `engine.monitor.selection_key` (lower is better)."""
    best_epoch: int = 0
    bad_epochs: int = 0
    """Epochs since the monitored validation figure (`train.monitor`) last improved, in this stage."""
    best_state: dict[str, torch.Tensor] | None = None
    improved: bool = False
    """Whether the epoch just finished set a new best monitored validation figure."""
    stops_stage: bool = False
    """Set by early stopping: the rest of this stage is skipped."""
    skip_stage: int = -1
    stop_reason: str = "completed"
    model: torch.nn.Module | None = None
    optimizer: torch.optim.Optimizer | None = None
    policy: Any = None
    """The stage's learning-rate policy (`engine.schedule.LRPolicy`)."""


class Callback:
    """Override any hook; each receives the live `TrainingState`."""

    def on_fit_start(self, state: TrainingState) -> None:
        pass

    def on_epoch_start(self, state: TrainingState) -> None:
        pass

    def on_epoch_end(self, state: TrainingState, row: dict[str, Any]) -> None:
        pass

    def on_fit_end(self, state: TrainingState) -> None:
        pass


class CallbackList(Callback):
    def __init__(self, callbacks: Sequence[Callback]) -> None:
        self.callbacks = list(callbacks)

    def on_fit_start(self, state: TrainingState) -> None:
        for cb in self.callbacks:
            cb.on_fit_start(state)

    def on_epoch_start(self, state: TrainingState) -> None:
        for cb in self.callbacks:
            cb.on_epoch_start(state)

    def on_epoch_end(self, state: TrainingState, row: dict[str, Any]) -> None:
        for cb in self.callbacks:
            cb.on_epoch_end(state, row)

    def on_fit_end(self, state: TrainingState) -> None:
        for cb in self.callbacks:
            cb.on_fit_end(state)


class EarlyStopping(Callback):
    """Skip the rest of a stage after `patience` epochs without a better monitored figure."""

    def __init__(self, patience: int | None, monitored: str = "validation loss") -> None:
        self.patience = patience
        self.monitored = monitored

    def on_epoch_end(self, state: TrainingState, row: dict[str, Any]) -> None:
        state.stops_stage = self.patience is not None and state.bad_epochs >= self.patience
        if state.stops_stage:
            state.stop_reason = (
                f"early stopping in stage '{state.stage_name}': "
                f"no better {self.monitored} for {state.bad_epochs} epochs"
            )
            state.skip_stage = state.stage_index


class Checkpointing(Callback):
    """`last.pt` (weights, optimiser, schedule, RNG, history) after every epoch and `best.pt`
    (weights only) when the epoch improved; what `--resume` reads. Written atomically."""

    def __init__(self, folder: Path, config: dict[str, Any]) -> None:
        self.folder = folder
        self.config = config

    def on_epoch_end(self, state: TrainingState, row: dict[str, Any]) -> None:
        assert state.model is not None and state.optimizer is not None
        weights = state.model.state_dict()
        save_checkpoint(
            self.folder / "last.pt",
            {
                "model": weights,
                "optimizer": state.optimizer.state_dict(),
                "policy": state.policy.state_dict(),
                "stage": state.stage_index,
                "rng": torch.get_rng_state(),
                "history": state.history,
                "epoch": state.epoch,
                "best_key": list(state.best_key),
                "best_epoch": state.best_epoch,
                "bad_epochs": state.bad_epochs,
                "stops_stage": state.stops_stage,
                "skip_stage": state.skip_stage,
                "stop_reason": state.stop_reason,
                "config": self.config,
            },
        )
        if state.improved:  # resume reads only the weights from here; the rest is in last.pt
            save_checkpoint(self.folder / "best.pt", {"model": weights})


class History(Callback):
    """Hands the whole history to `write(rows)` after every epoch (the bundle's history.csv)."""

    def __init__(self, write: Callable[[list[dict[str, Any]]], None]) -> None:
        self.write = write

    def on_epoch_end(self, state: TrainingState, row: dict[str, Any]) -> None:
        self.write(state.history)


class EpochLine(Callback):
    """One line per epoch on the console, and why a stage stopped early."""

    def __init__(self, console: Console) -> None:
        self.console = console

    def on_epoch_end(self, state: TrainingState, row: dict[str, Any]) -> None:
        mark = "  [green]best[/green]" if state.improved else ""
        self.console.print(
            f"epoch {row['epoch']:>3}/{state.total_epochs}  train loss {row['train_loss']:.4f}"
            f" acc {row['train_acc']:.4f}  |  val loss {row['val_loss']:.4f} acc {row['val_acc']:.4f}"
            f" auc {row['val_auc']:.4f}  |  lr {row['lr']:.2e}"
            f"  |  {row['train_seconds']:.1f} s train, {row['images_per_second']:,.0f} img/s{mark}"
        )
        if state.stops_stage:
            self.console.print(state.stop_reason)
