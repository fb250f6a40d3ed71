"""`fit`: epochs of `train_one_epoch` / `evaluate_epoch`, with checkpoints, early stopping,
a learning-rate policy, a non-finite-loss guard and resume. It writes only `checkpoints/`;
the bundle around it is assembled by `cnnlab.workflow`."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from torch import nn

from cnnlab.config import Config
from cnnlab.data.loader import TensorBatches
from cnnlab.engine.checkpoint import load_checkpoint, save_checkpoint
from cnnlab.engine.loop import NonFiniteLoss, evaluate_epoch, train_one_epoch
from cnnlab.engine.losses import balanced_class_weights, make_loss
from cnnlab.engine.schedule import LRPolicy, make_optimizer
from cnnlab.errors import BundleError, CnnlabError
from cnnlab.progress import progress_bar

HISTORY_FIELDS = (
    "stage",
    "epoch",
    "lr",
    "train_loss",
    "train_acc",
    "val_loss",
    "val_acc",
    "train_seconds",
    "eval_seconds",
    "images_per_second",
)


@dataclass
class FitResult:
    history: list[dict[str, Any]]
    best_epoch: int
    best_state: dict[str, torch.Tensor]
    stop_reason: str

    @property
    def train_seconds(self) -> float:
        return sum(row["train_seconds"] for row in self.history)

    @property
    def eval_seconds(self) -> float:
        return sum(row["eval_seconds"] for row in self.history)


def fit(
    model: nn.Module,
    train: TensorBatches,
    val: TensorBatches,
    cfg: Config,
    *,
    binary: bool,
    num_classes: int,
    checkpoint_dir: Path,
    resume: bool = False,
    console: Console | None = None,
    on_epoch: Callable[[list[dict[str, Any]]], None] | None = None,
) -> FitResult:
    tc, oc = cfg.train, cfg.optim
    console = console or Console(quiet=True)
    if tc.threads:
        torch.set_num_threads(tc.threads)
    if tc.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer([{"params": [p for p in model.parameters() if p.requires_grad]}], oc)
    policy = LRPolicy(oc, tc.epochs, len(train))
    weights = balanced_class_weights(train.labels, num_classes) if oc.class_weights == "auto" else None
    if weights is not None:
        console.print("class weights: " + ", ".join(f"{w:.2f}" for w in weights.tolist()))
    loss_fn = make_loss(binary, oc.label_smoothing, oc.loss, oc.focal_gamma, weights)

    history: list[dict[str, Any]] = []
    start_epoch, best_loss, best_epoch, bad_epochs = 0, math.inf, 0, 0
    best_state: dict[str, torch.Tensor] | None = None
    if resume:
        state = load_checkpoint(checkpoint_dir / "last.pt")
        _check_resumable(state, cfg)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        policy.load_state_dict(state["policy"])
        torch.set_rng_state(state["rng"])
        history = list(state["history"])
        start_epoch, best_loss, best_epoch, bad_epochs = (
            state["epoch"],
            state["best_val_loss"],
            state["best_epoch"],
            state["bad_epochs"],
        )
        best_state = load_checkpoint(checkpoint_dir / "best.pt")["model"]
        console.print(f"resuming after epoch {start_epoch} of {tc.epochs}")
        if start_epoch >= tc.epochs:
            console.print("nothing left to train: the checkpoint has every epoch")

    net = torch.compile(model) if tc.compile else model
    stop_reason = "completed"
    for epoch in range(start_epoch, tc.epochs):
        train.set_epoch(epoch)
        try:
            with progress_bar(console, f"epoch {epoch + 1}/{tc.epochs}", train.num_samples) as advance:
                stats = train_one_epoch(
                    net,
                    train,
                    optimizer,
                    loss_fn,
                    binary=binary,
                    precision=tc.precision,
                    set_lr=lambda step: policy.apply(optimizer, step),
                    first_step=epoch * len(train),
                    on_batch=advance,
                )
        except NonFiniteLoss as exc:
            if best_state is None:
                raise CnnlabError(
                    f"training diverged: {exc} in epoch {epoch + 1}, before any epoch completed; "
                    f"lower the learning rate (optim.lr={oc.lr:g})"
                ) from None
            stop_reason = f"non-finite loss in epoch {epoch + 1}; kept the weights of epoch {best_epoch}"
            console.print(f"[red]stopped: {stop_reason}[/red]")
            break
        lr = optimizer.param_groups[0]["lr"]
        evaluation = evaluate_epoch(net, val, loss_fn, binary=binary, precision=tc.precision)
        policy.end_epoch(evaluation.loss)
        row = {
            "stage": "train",
            "epoch": epoch + 1,
            "lr": lr,
            "train_loss": stats.loss,
            "train_acc": stats.accuracy,
            "val_loss": evaluation.loss,
            "val_acc": evaluation.accuracy,
            "train_seconds": stats.seconds,
            "eval_seconds": evaluation.seconds,
            "images_per_second": stats.images_per_second,
        }
        history.append(row)
        improved = evaluation.loss < best_loss
        if improved:
            best_loss, best_epoch, bad_epochs = evaluation.loss, epoch + 1, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            bad_epochs += 1
        state = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "policy": policy.state_dict(),
            "rng": torch.get_rng_state(),
            "history": history,
            "epoch": epoch + 1,
            "best_val_loss": best_loss,
            "best_epoch": best_epoch,
            "bad_epochs": bad_epochs,
            "config": cfg.to_dict(),
        }
        save_checkpoint(checkpoint_dir / "last.pt", state)
        if improved:
            save_checkpoint(checkpoint_dir / "best.pt", state)
        console.print(_epoch_line(row, tc.epochs, improved))
        if on_epoch is not None:
            on_epoch(history)
        if tc.early_stopping is not None and bad_epochs >= tc.early_stopping:
            stop_reason = f"early stopping: no better validation loss for {bad_epochs} epochs"
            console.print(stop_reason)
            break
    if best_state is None:
        raise CnnlabError("no epoch was trained (train.epochs must be at least 1)")
    return FitResult(history, best_epoch, best_state, stop_reason)


def _check_resumable(state: dict[str, Any], cfg: Config) -> None:
    saved = state.get("config", {})
    for section in ("data", "model"):
        if saved.get(section) != cfg.to_dict()[section]:
            raise BundleError(
                f"cannot resume: the checkpoint was trained with a different '{section}' section; "
                "start a new run (--out) or --overwrite"
            )


def _epoch_line(row: dict[str, Any], epochs: int, improved: bool) -> str:
    mark = "  [green]best[/green]" if improved else ""
    return (
        f"epoch {row['epoch']:>3}/{epochs}  train loss {row['train_loss']:.4f} acc {row['train_acc']:.4f}"
        f"  |  val loss {row['val_loss']:.4f} acc {row['val_acc']:.4f}  |  lr {row['lr']:.2e}"
        f"  |  {row['train_seconds']:.1f} s train, {row['images_per_second']:,.0f} img/s{mark}"
    )
