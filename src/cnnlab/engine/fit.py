"""`fit`: epochs of `train_one_epoch` / `evaluate_epoch` through the config's stages, with a
learning-rate policy, a non-finite-loss guard and resume. Early stopping, checkpoints and the
epoch line are callbacks (`engine.callbacks`). It writes only `checkpoints/`; the bundle around
it is assembled by `cnnlab.tasks.train`."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from torch import nn

from cnnlab.config import Config, StageConfig
from cnnlab.data.augment import build_augment
from cnnlab.data.loader import TensorBatches
from cnnlab.engine import distributed
from cnnlab.engine.callbacks import (
    Callback,
    CallbackList,
    Checkpointing,
    EarlyStopping,
    EpochLine,
    TrainingState,
)
from cnnlab.engine.checkpoint import load_checkpoint
from cnnlab.engine.device import Placement, configure, grad_scaler, placement
from cnnlab.engine.loop import NonFiniteLoss, evaluate_epoch, train_one_epoch
from cnnlab.engine.losses import balanced_class_weights, make_loss
from cnnlab.engine.monitor import DESCRIPTIONS, macro_auc, selection_key
from cnnlab.engine.schedule import LRPolicy, make_optimizer
from cnnlab.engine.transfer import HeadOnly, plan_stage, trunk_features
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
    "val_auc",
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


@dataclass
class _Stage:
    index: int
    cfg: StageConfig
    net: nn.Module
    train: TensorBatches
    val: TensorBatches
    optimizer: torch.optim.Optimizer
    policy: LRPolicy
    frozen_norms: list[nn.Module]
    prep_seconds: float


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
    callbacks: Sequence[Callback] = (),
    where: Placement | None = None,
) -> FitResult:
    """Train through the config's stages (one `all` stage by default), keeping the best weights.
    The model moves to `where`'s device (default: `train.device` and `train.precision` resolved).

    After each epoch run, in order: early stopping (every rank, so all skip a stage together),
    checkpointing and `callbacks` (a user's logger, the bundle's history file; rank 0 only), then
    the epoch line (printed by rank 0 alone: other ranks' consoles are quiet)."""
    tc, oc = cfg.train, cfg.optim
    console = console or Console(quiet=True)
    if tc.threads:
        torch.set_num_threads(tc.threads)
    where = where or placement(tc.device, tc.precision)
    configure(where.device)
    model = model.to(where.device)
    if tc.channels_last:
        model = model.to(memory_format=torch.channels_last)
    precision = where.precision
    scaler = grad_scaler(precision, where.device)  # one for the whole run: its scale carries over
    stages = tc.resolved_stages()
    plan = [(i, e) for i, stage in enumerate(stages) for e in range(stage.epochs)]
    weights = balanced_class_weights(train.labels, num_classes) if oc.class_weights == "auto" else None
    if weights is not None:
        console.print("class weights: " + ", ".join(f"{w:.2f}" for w in weights.tolist()))
    loss_fn = make_loss(binary, oc.label_smoothing, oc.loss, oc.focal_gamma, weights)
    # Validation is scored with plain cross-entropy, like the test split and `cnnlab evaluate`,
    # whatever the training objective (weights, focal, smoothing): one comparable number.
    val_loss_fn = make_loss(binary)
    main = distributed.current().main  # one writer; every rank holds the same weights
    writers: list[Callback] = [Checkpointing(checkpoint_dir, cfg.to_dict()), *callbacks] if main else []
    hooks = CallbackList([EarlyStopping(tc.early_stopping, DESCRIPTIONS[tc.monitor]), *writers, EpochLine(console)])

    state = TrainingState(total_epochs=len(plan), model=model)
    saved: dict[str, Any] | None = None
    if resume:
        saved = _resume(state, model, checkpoint_dir, cfg)
        console.print(f"resuming after epoch {state.epoch} of {len(plan)}")
    hooks.on_fit_start(state)

    stage: _Stage | None = None
    for epoch in range(state.epoch, len(plan)):
        index, stage_epoch = plan[epoch]
        if index == state.skip_stage:
            continue
        if stage is None or stage.index != index:
            stage = _start_stage(model, index, stages[index], train, val, cfg, console, precision)
            if saved is not None and saved.get("stage") == index and stage_epoch > 0:
                stage.optimizer.load_state_dict(saved["optimizer"])
                stage.policy.load_state_dict(saved["policy"])
            elif stage_epoch == 0:
                state.bad_epochs = 0
            saved = None
            state.stage_index, state.stage_name = index, stage.cfg.name
            state.optimizer, state.policy = stage.optimizer, stage.policy
        stage.train.set_epoch(epoch)
        label = f"{stage.cfg.name} epoch {epoch + 1}/{len(plan)}"
        try:
            hooks.on_epoch_start(state)
            with progress_bar(console, label, stage.train.num_samples) as advance:
                stats = train_one_epoch(
                    stage.net,
                    stage.train,
                    stage.optimizer,
                    loss_fn,
                    binary=binary,
                    precision=precision,
                    set_lr=lambda step, st=stage: st.policy.apply(st.optimizer, step),
                    first_step=stage_epoch * len(stage.train),
                    on_batch=advance,
                    frozen=stage.frozen_norms,
                    aux_weight=tc.aux_weight,
                    scaler=scaler,
                )
        except NonFiniteLoss as exc:
            _raise_if_nothing_to_keep(state, f"{exc} in epoch {epoch + 1}, before any epoch completed", oc.lr)
            state.stop_reason = f"non-finite loss in epoch {epoch + 1}; kept the weights of epoch {state.best_epoch}"
            console.print(f"[red]stopped: {state.stop_reason}[/red]")
            break
        train_seconds = stats.seconds + (stage.prep_seconds if stage_epoch == 0 else 0.0)
        lr = stage.optimizer.param_groups[0]["lr"]
        evaluation = evaluate_epoch(
            stage.net, stage.val, val_loss_fn, binary=binary, precision=precision, keep_outputs=True
        )
        if not math.isfinite(evaluation.loss):
            _raise_if_nothing_to_keep(state, f"validation loss became {evaluation.loss} in epoch {epoch + 1}", oc.lr)
            state.stop_reason = (
                f"non-finite validation loss in epoch {epoch + 1}; kept the weights of epoch {state.best_epoch}"
            )
            console.print(f"[red]stopped: {state.stop_reason}[/red]")
            break
        stage.policy.end_epoch(evaluation.loss)
        assert evaluation.logits is not None and evaluation.labels is not None
        val_auc = macro_auc(evaluation.logits, evaluation.labels, binary)
        row = {
            "stage": stage.cfg.name,
            "epoch": epoch + 1,
            "lr": lr,
            "train_loss": stats.loss,
            "train_acc": stats.accuracy,
            "val_loss": evaluation.loss,
            "val_acc": evaluation.accuracy,
            "val_auc": val_auc,
            "train_seconds": train_seconds,
            "eval_seconds": evaluation.seconds,
            "images_per_second": stats.images / train_seconds if train_seconds > 0 else 0.0,
        }
        state.epoch = epoch + 1
        state.history.append(row)
        key = selection_key(tc.monitor, evaluation, val_auc)
        state.improved = key < state.best_key
        if state.improved:
            state.best_key, state.best_epoch, state.bad_epochs = key, epoch + 1, 0
            state.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            state.bad_epochs += 1
        hooks.on_epoch_end(state, row)
    if state.best_state is None:
        raise CnnlabError("no epoch was trained (train.epochs must be at least 1)")
    hooks.on_fit_end(state)
    return FitResult(state.history, state.best_epoch, state.best_state, state.stop_reason)


def _resume(state: TrainingState, model: nn.Module, checkpoint_dir: Path, cfg: Config) -> dict[str, Any]:
    """Load `last.pt` and `best.pt` into the model and the state; returns the saved training state
    (the optimiser and schedule are restored when their stage starts)."""
    saved = load_checkpoint(checkpoint_dir / "last.pt")
    _check_resumable(saved, cfg)
    model.load_state_dict(saved["model"])
    torch.set_rng_state(saved["rng"])
    # Rows from before val_auc was recorded lack it; NaN keeps history.csv's columns whole.
    state.history = [{"val_auc": math.nan, **row} for row in saved["history"]]
    # Checkpoints from before train.monitor hold the best validation loss alone.
    state.epoch = saved["epoch"]
    state.best_key = tuple(saved.get("best_key") or (saved["best_val_loss"], saved["best_val_loss"]))
    state.best_epoch, state.bad_epochs = saved["best_epoch"], saved["bad_epochs"]
    state.best_state = load_checkpoint(checkpoint_dir / "best.pt")["model"]
    state.skip_stage, state.stop_reason = saved.get("skip_stage", -1), saved.get("stop_reason", "completed")
    return saved


def _raise_if_nothing_to_keep(state: TrainingState, what: str, lr: float) -> None:
    """A non-finite loss before any good epoch is an error; after one, the run stops on its weights."""
    if state.best_state is None:
        raise CnnlabError(f"training diverged: {what}; lower the learning rate (optim.lr={lr:g})")


def _start_stage(
    model: nn.Module,
    index: int,
    stage: StageConfig,
    train: TensorBatches,
    val: TensorBatches,
    cfg: Config,
    console: Console,
    precision: str = "fp32",
) -> _Stage:
    oc, tc = cfg.optim, cfg.train
    lr = stage.lr if stage.lr is not None else oc.lr
    plan = plan_stage(model, stage.trainable, lr, stage.lr_decay)
    stage_optim = replace(
        oc,
        lr=lr,
        schedule=stage.schedule or oc.schedule,
        warmup_epochs=stage.warmup_epochs if stage.warmup_epochs is not None else oc.warmup_epochs,
    )
    if stage.augment is not None:
        train = loader_copy(train, augment=build_augment(stage.augment, int(train.images.shape[-1])))
    net: nn.Module = model
    prep = 0.0
    if (
        plan.head_only
        and stage.cache_features
        and train.augment is None
        and train.mix is None
        and hasattr(model, "forward_features")
    ):
        # Nothing before the head trains and nothing random happens to the input: run the frozen
        # trunk once over the data and train the head on its output.
        start = time.perf_counter()
        with progress_bar(console, "computing frozen features", train.num_samples + val.num_samples) as advance:
            feats = trunk_features(model, _in_order(train, advance), precision)
            val_feats = trunk_features(model, _in_order(val, advance), precision)
        prep = time.perf_counter() - start
        zero, one = torch.zeros(()), torch.ones(())  # features of any rank: identity "normalisation"
        train = TensorBatches(
            *feats, train.batch_size, zero, one, shuffle=True, seed=train.seed, balanced=train.balanced,
            rank=train.rank, world=train.world, device=train.device,
        )  # fmt: skip
        val = TensorBatches(*val_feats, val.batch_size, zero, one, rank=val.rank, world=val.world, device=val.device)
        net = distributed.wrap(HeadOnly(model))
        console.print(f"stage '{stage.name}': frozen features computed once in {prep:.1f} s")
    else:
        net = distributed.wrap(model, tc.sync_bn)
        if tc.compile:
            net = torch.compile(net)
    optimizer = make_optimizer(plan.groups, stage_optim)
    console.print(
        f"stage '{stage.name}': training {stage.trainable} ({plan.trainable_params:,} parameters), "
        f"{stage.epochs} epochs at lr {lr:g}"
    )
    return _Stage(
        index,
        stage,
        net,
        train,
        val,
        optimizer,
        LRPolicy(stage_optim, stage.epochs, len(train)),
        plan.frozen_norms,
        prep,
    )


def loader_copy(batches: TensorBatches, **changes: Any) -> TensorBatches:
    """A shallow copy of a loader with some attributes changed (the tensors are shared)."""
    clone = copy.copy(batches)
    for key, value in changes.items():
        setattr(clone, key, value)
    return clone


def _in_order(batches: TensorBatches, advance: Callable[[int], None]):
    """Every sample once, in order and unaugmented (features must line up with labels), with
    progress; in a data-parallel job every rank computes all of them and trains on its share."""
    source = loader_copy(batches, shuffle=False, balanced=False, augment=None, mix=None, rank=0, world=1)
    for x, y in source:
        yield x, y
        advance(len(y))


# Settings that only say where files are or how they are fetched may differ on resume.
_RESUME_FREE = {"data": {"data_dir", "download", "cache"}}


def _check_resumable(state: dict[str, Any], cfg: Config) -> None:
    saved, now = state.get("config", {}), cfg.to_dict()
    defaults = Config().to_dict()
    for section in ("data", "model"):
        free = _RESUME_FREE.get(section, set())
        # Keys added since the checkpoint was written take their defaults: an older run resumes.
        a = {k: v for k, v in {**defaults[section], **saved.get(section, {})}.items() if k not in free}
        b = {k: v for k, v in now[section].items() if k not in free}
        if a != b:
            raise BundleError(
                f"cannot resume: the checkpoint was trained with a different '{section}' section; "
                "start a new run (--out) or --overwrite"
            )
    if saved.get("train", {}).get("monitor", "val_loss") != cfg.train.monitor:
        raise BundleError(
            "cannot resume: train.monitor changed (the best epoch so far was chosen by another figure); "
            "start a new run (--out) or --overwrite"
        )
    old_plan = [(st["name"], st["trainable"]) for st in saved.get("train", {}).get("stages", [])]
    if old_plan != [(st.name, st.trainable) for st in cfg.train.stages]:
        raise BundleError("cannot resume: the training stages changed; start a new run (--out) or --overwrite")
