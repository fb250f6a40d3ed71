"""The library calls behind the commands: `train` (a config -> a bundle) and `evaluate`."""

from __future__ import annotations

import platform
import shutil
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console

from cnnlab import __version__, bundle
from cnnlab.config import Config, load_config
from cnnlab.data.augment import build_augment, build_mix
from cnnlab.data.loader import TensorBatches
from cnnlab.data.preprocess import (
    Preprocessing,
    channel_stats,
    fit_all,
    plan_resize,
    stats_tensors,
)
from cnnlab.data.sources import FOLDER_PREFIX, ArrayDataset, load_source
from cnnlab.engine.fit import HISTORY_FIELDS, fit
from cnnlab.engine.loop import evaluate_epoch
from cnnlab.engine.losses import make_loss, predicted_index
from cnnlab.errors import DataError, ModelError
from cnnlab.evaluation.diagnosis import diagnose
from cnnlab.evaluation.metrics import accuracy, confusion_matrix, per_class_accuracy
from cnnlab.export.predictor import Classifier, load
from cnnlab.figures import plot_confusion, plot_curves
from cnnlab.fileio import atomic_write_json
from cnnlab.models import create_model, get_spec
from cnnlab.models.registry import find_cam_layer


@dataclass
class TrainSummary:
    run_dir: Path
    test_accuracy: float
    val_accuracy: float
    train_seconds: float
    eval_seconds: float
    test_seconds: float
    epochs: int
    best_epoch: int
    verdict: str
    stop_reason: str
    stages: list[dict[str, Any]]


def prepare_data(
    cfg: Config, data: ArrayDataset, spec_mean: tuple[float, ...], spec_std: tuple[float, ...], input_size: int
) -> tuple[Preprocessing, dict[str, tuple[torch.Tensor, torch.Tensor]]]:
    """Fit every split to the network input once, and fix the preprocessing the card will hold."""
    # Square sources (digits, CIFAR) are cropped to nothing in training; the flag still matters
    # when a non-square photo is served later.
    crop = cfg.data.fit == "crop"
    if data.fitted_crop is not None:  # the loader already decoded every image at the input size
        resize_to = pad_to = (input_size, input_size)
    else:
        resize_to, pad_to = plan_resize(data.image_size, input_size, cfg.data.resize)
    splits = {name: (fit_all(x, resize_to, pad_to, crop), y) for name, (x, y) in data.splits.items()}
    if cfg.model.weights != "none" and spec_mean:
        # Pretrained weights expect their own normalisation; grey input gets the RGB average, the
        # same for every channel, which keeps it equivalent to the grey image replicated to RGB.
        mean, std = spec_mean, spec_std
        if data.channels == 1:
            mean, std = (sum(mean) / len(mean),), (sum(std) / len(std),)
    else:  # trained from scratch: standardise with the training split's own statistics
        mean, std = channel_stats(splits["train"][0])
    return Preprocessing(data.channels, resize_to, pad_to, mean, std, crop), splits


def train(
    cfg: Config,
    out: str | Path | None = None,
    *,
    overwrite: bool = False,
    resume: bool = False,
    console: Console | None = None,
) -> TrainSummary:
    console = console or Console(quiet=True)
    out = Path(out) if out is not None else Path("runs") / cfg.name
    spec = get_spec(cfg.model.name)
    bundle.check_run_dir(out, overwrite=overwrite, resume=resume)
    if cfg.data.source.startswith(FOLDER_PREFIX):  # recorded absolute: evaluate may run elsewhere
        folder = Path(cfg.data.source[len(FOLDER_PREFIX) :]).expanduser().resolve()
        cfg = cfg.replace(data=replace(cfg.data, source=f"{FOLDER_PREFIX}{folder}"))
    cfg = resolve_auto_weights(cfg, console)
    input_size = cfg.data.input_size or spec.input_size
    data = load_source(cfg.data, input_size, console)
    if spec.binary and len(data.classes) != 2:
        raise ModelError(f"{spec.name} is a binary model; {cfg.data.source} has {len(data.classes)} classes")
    try:
        prep, splits = prepare_data(cfg, data, spec.mean, spec.std, input_size)
    except ValueError as exc:
        raise DataError(str(exc)) from None
    sizes = data.sizes()
    console.print(
        f"data: {data.source} ({len(data.classes)} classes; train {sizes['train']:,}, val {sizes['val']:,}, "
        f"test {sizes['test']:,}) from {data.origin}"
    )
    torch.manual_seed(cfg.train.seed)
    model = create_model(spec.name, len(data.classes), data.channels, input_size, cfg.model.weights)
    cam_layer = spec.cam_layer or find_cam_layer(model, data.channels, input_size)
    n_params = sum(p.numel() for p in model.parameters())
    console.print(
        f"model: {spec.name}, {n_params:,} parameters, input {data.channels}x{prep.pad_to[0]}x{prep.pad_to[1]}"
    )

    mean, std = stats_tensors(prep.mean, prep.std)
    tc = cfg.train
    train_batches = TensorBatches(
        *splits["train"],
        tc.batch_size,
        mean,
        std,
        shuffle=True,
        seed=tc.seed,
        channels_last=tc.channels_last,
        balanced=cfg.data.sampler == "balanced",
        augment=build_augment(cfg.data.augment, input_size),
        mix=build_mix(cfg.data.mix, cfg.data.mix_alpha, len(data.classes)),
    )
    val_batches = TensorBatches(*splits["val"], tc.eval_batch_size, mean, std, channels_last=tc.channels_last)
    test_batches = TensorBatches(*splits["test"], tc.eval_batch_size, mean, std, channels_last=tc.channels_last)

    created = bundle.prepare_run_dir(out, overwrite=overwrite, resume=resume)
    try:
        bundle.write_config(out, cfg.to_yaml())
        result = fit(
            model,
            train_batches,
            val_batches,
            cfg,
            binary=spec.binary,
            num_classes=len(data.classes),
            checkpoint_dir=out / bundle.CHECKPOINTS,
            resume=resume,
            console=console,
            on_epoch=lambda rows: bundle.write_history(out / bundle.HISTORY, rows, HISTORY_FIELDS),
        )
    except BaseException:
        if created and not (out / bundle.CHECKPOINTS / "last.pt").exists():
            shutil.rmtree(out, ignore_errors=True)  # nothing resumable was written: leave no trace
        raise

    model.load_state_dict(result.best_state)
    loss_fn = make_loss(spec.binary)
    test = evaluate_epoch(model, test_batches, loss_fn, binary=spec.binary, precision=tc.precision)
    best_row = next(r for r in result.history if r["epoch"] == result.best_epoch)
    diagnosis = diagnose(result.history, len(data.classes))
    plot_curves(result.history, diagnosis, out / bundle.CURVES, f"{spec.name} on {data.source}")
    bundle.write_history(out / bundle.HISTORY, result.history, HISTORY_FIELDS)
    weights_sha = bundle.save_weights(model.state_dict(), out / bundle.WEIGHTS)
    card = {
        "format": bundle.CARD_FORMAT,
        "name": cfg.name,
        "architecture": spec.name,
        "description": spec.description,
        "binary": spec.binary,
        "num_classes": len(data.classes),
        "classes": data.classes,
        "in_chans": data.channels,
        "input_size": list(prep.pad_to),
        "preprocessing": prep.to_dict(),
        "cam_layer": cam_layer,
        "weights": cfg.model.weights,
        "temperature": None,
        "threshold": None,
        "parameters": n_params,
        "metrics": {
            "test_accuracy": test.accuracy,
            "test_loss": test.loss,
            "val_accuracy": best_row["val_acc"],
            "val_loss": best_row["val_loss"],
            "best_epoch": result.best_epoch,
        },
        "training": {
            "epochs_run": len(result.history),
            "stages": stage_times(result.history),
            "stop_reason": result.stop_reason,
            "train_seconds": result.train_seconds,
            "eval_seconds": result.eval_seconds,
            "test_seconds": test.seconds,
            "fit": diagnosis.to_dict(),
            "precision": tc.precision,
            "channels_last": tc.channels_last,
            "threads": torch.get_num_threads(),
        },
        "data": data_summary(data),
        "cnnlab_version": __version__,
        "torch_version": torch.__version__,
        "python": platform.python_version(),
        "weights_sha256": weights_sha,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    bundle.write_card(out, card)  # last: its presence marks a finished bundle
    return TrainSummary(
        run_dir=out,
        test_accuracy=test.accuracy,
        val_accuracy=best_row["val_acc"],
        train_seconds=result.train_seconds,
        eval_seconds=result.eval_seconds,
        test_seconds=test.seconds,
        epochs=len(result.history),
        best_epoch=result.best_epoch,
        verdict=diagnosis.headline(),
        stop_reason=result.stop_reason,
        stages=stage_times(result.history),
    )


def resolve_auto_weights(cfg: Config, console: Console) -> Config:
    """`model.weights: auto`: ImageNet weights with the recipe's stages when they are available
    offline; otherwise random initialisation with every stage training all layers."""
    if cfg.model.weights != "auto":
        return cfg
    try:
        create_model(cfg.model.name, 2, 3, get_spec(cfg.model.name).input_size, "imagenet")
        return cfg.replace(model=replace(cfg.model, weights="imagenet"))
    except ModelError as exc:
        console.print(f"[yellow]{exc}[/yellow]")
        console.print("training from scratch instead: every stage trains all layers")
        stages = tuple(replace(st, trainable="all") for st in cfg.train.stages)
        return cfg.replace(model=replace(cfg.model, weights="none"), train=replace(cfg.train, stages=stages))


def stage_times(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per stage, in order: epochs, training seconds, best validation accuracy."""
    stages: list[dict[str, Any]] = []
    for row in history:
        if not stages or stages[-1]["name"] != row["stage"]:
            stages.append({"name": row["stage"], "epochs": 0, "train_seconds": 0.0, "best_val_acc": 0.0})
        stage = stages[-1]
        stage["epochs"] += 1
        stage["train_seconds"] += row["train_seconds"]
        stage["best_val_acc"] = max(stage["best_val_acc"], row["val_acc"])
    return stages


def data_summary(data: ArrayDataset) -> dict[str, Any]:
    """What the model card records of the data: enough to recognise it and its problems."""
    summary: dict[str, Any] = {
        "source": data.source,
        "origin": data.origin,
        "sha256": data.digest(),
        "splits": data.sizes(),
    }
    if data.groups is not None:
        summary["groups_per_split"] = {name: len(set(g.tolist())) for name, g in data.groups.items()}
    if data.manifest is not None:
        manifest = data.manifest
        summary["manifest_sha256"] = manifest.digest()
        summary["bad_files"] = [{"file": e.path, "reason": e.reason} for e in manifest.bad][:100]
        summary["cross_split_duplicates"] = len(manifest.cross_split_duplicates())
    return summary


@dataclass
class EvalSummary:
    split: str
    accuracy: float
    loss: float
    classes: list[str]
    confusion: np.ndarray
    per_class: np.ndarray
    seconds: float
    out_dir: Path
    data_matches: bool


def evaluate(
    run_dir: str | Path, split: str = "test", data_dir: str | None = None, out: str | Path | None = None
) -> EvalSummary:
    """Score a bundle on one split of the data it was trained on; writes `eval/` in the bundle."""
    run_dir = Path(run_dir)
    clf = load(run_dir)
    data = bundle_data(run_dir, clf, data_dir)
    if split not in data.splits:
        raise DataError(f"no '{split}' split; choose one of {', '.join(data.splits)}")
    return evaluate_arrays(clf, data, split, Path(out) if out else run_dir / "eval")


def bundle_data(run_dir: Path, clf: Classifier, data_dir: str | None = None) -> ArrayDataset:
    """The data a bundle was trained on, as the model saw it (its channels and input size), from
    `data_dir` when given (another folder for folder sources)."""
    cfg = load_config(str(run_dir / bundle.CONFIG))
    data_cfg = replace(cfg.data, channels=clf.preprocessing.channels)
    if data_dir is not None:
        if data_cfg.source.startswith(FOLDER_PREFIX):
            data_cfg = replace(data_cfg, source=f"{FOLDER_PREFIX}{Path(data_dir).expanduser().resolve()}")
        else:
            data_cfg = replace(data_cfg, data_dir=data_dir)
    return load_source(data_cfg, clf.preprocessing.pad_to[0])


def evaluate_arrays(clf: Classifier, data: ArrayDataset, split: str, out_dir: Path) -> EvalSummary:
    x, y = data.splits[split]
    pixels = clf.fit_pixels(x, already_fitted=data.fitted_crop is not None)
    start = time.perf_counter()
    logits = clf.logits_from_pixels(pixels)
    seconds = time.perf_counter() - start
    loss = float(make_loss(clf.binary)(logits, y))
    pred = predicted_index(logits, clf.binary).numpy()
    cm = confusion_matrix(y.numpy(), pred, len(clf.classes))
    summary = EvalSummary(
        split=split,
        accuracy=accuracy(cm),
        loss=loss,
        classes=clf.classes,
        confusion=cm,
        per_class=per_class_accuracy(cm),
        seconds=seconds,
        out_dir=out_dir,
        data_matches=data.digest() == clf.card["data"]["sha256"],
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    plot_confusion(
        cm,
        clf.classes,
        out_dir / "confusion_matrix.png",
        f"{clf.card['architecture']} — {split} accuracy {summary.accuracy:.4f}",
    )
    metrics: dict[str, Any] = {
        "split": split,
        "images": int(cm.sum()),
        "accuracy": summary.accuracy,
        "loss": loss,
        "per_class_accuracy": {
            c: (None if np.isnan(a) else float(a)) for c, a in zip(clf.classes, summary.per_class, strict=True)
        },
        "confusion_matrix": cm.tolist(),
        "seconds": seconds,
        "data_sha256_matches_card": summary.data_matches,
    }
    atomic_write_json(out_dir / "metrics.json", metrics)
    return summary
