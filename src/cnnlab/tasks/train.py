"""`cnnlab train`: a config becomes a bundle (weights, model card, config, history, curves)."""

from __future__ import annotations

import platform
import shutil
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from cnnlab import __version__, bundle
from cnnlab.bundle.card import ModelCard
from cnnlab.bundle.views import with_views
from cnnlab.config import Config
from cnnlab.data.augment import build_augment, build_mix
from cnnlab.data.loader import TensorBatches
from cnnlab.data.merge import join_extra_data, main_record
from cnnlab.data.preprocess import Preprocessing, channel_stats, fit_all, plan_resize, stats_tensors
from cnnlab.data.sources import FOLDER_PREFIX, ArrayDataset, load_source
from cnnlab.engine import distributed
from cnnlab.engine.callbacks import Callback, History
from cnnlab.engine.device import placement
from cnnlab.engine.fit import HISTORY_FIELDS, fit
from cnnlab.engine.loop import evaluate_epoch
from cnnlab.engine.losses import make_loss
from cnnlab.errors import DataError, ModelError
from cnnlab.evaluation.diagnosis import diagnose
from cnnlab.evaluation.drift import reference_sample, save_reference
from cnnlab.evaluation.figures import plot_curves
from cnnlab.models import ModelSpec, create_model, get_spec
from cnnlab.models.factory import find_cam_layer
from cnnlab.models.weights import imagenet_offline


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
    callbacks: Sequence[Callback] = (),
) -> TrainSummary | None:
    """Train `cfg` into the bundle `out`. In a data-parallel job (torchrun) every rank trains and
    rank 0 alone writes the bundle and prints; the other ranks return None.

    `callbacks` (`cnnlab.engine.callbacks.Callback`) see the training state around every epoch on
    rank 0, after the checkpoint and the history file are written: a logger of your own.

    `train.device` and `train.precision` are resolved first (a GPU that is not there fails before
    any data is read); the card's training section records what was used."""
    where = placement(cfg.train.device, cfg.train.precision)
    rank = distributed.setup(where.device)
    console = console if console is not None and rank.main else Console(quiet=True)
    out = Path(out) if out is not None else Path("runs") / cfg.name
    spec = get_spec(cfg.model.name)
    if rank.main:
        bundle.check_run_dir(out, overwrite=overwrite, resume=resume)
    if cfg.data.source.startswith(FOLDER_PREFIX):  # recorded absolute: evaluate may run elsewhere
        folder = Path(cfg.data.source[len(FOLDER_PREFIX) :]).expanduser().resolve()
        cfg = cfg.replace(data=replace(cfg.data, source=f"{FOLDER_PREFIX}{folder}"))
    if cfg.data.extra:
        extra = tuple(str(Path(folder).expanduser().resolve()) for folder in cfg.data.extra)
        cfg = cfg.replace(data=replace(cfg.data, extra=extra))
    cfg = resolve_auto_weights(cfg, console)
    input_size = cfg.data.input_size or spec.input_size
    if not rank.main:  # rank 0 decodes first and fills the cache the others then read
        distributed.barrier()
    data = load_source(cfg.data, input_size, console)
    # The card's sha256 is of what `cnnlab evaluate` reloads: the source without its extra folders.
    source_digest = data.digest() if rank.main else ""
    data, datasets = join_extra_data(data, cfg.data, console)
    if rank.main:
        distributed.barrier()
    prep, splits = prepare_for(cfg, spec, data, input_size)
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
    train_batches = training_batches(
        cfg, splits, prep, len(data.classes), input_size, rank=rank.rank, world=rank.world, device=where.device
    )
    val_batches, test_batches = (
        TensorBatches(*splits[name], tc.eval_batch_size, mean, std, channels_last=tc.channels_last,
                      rank=rank.rank, world=rank.world, device=where.device)
        for name in ("val", "test")
    )  # fmt: skip

    created = bundle.prepare_run_dir(out, overwrite=overwrite, resume=resume) if rank.main else False
    try:
        if rank.main:
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
            callbacks=[History(partial(bundle.write_history, out / bundle.HISTORY, fields=HISTORY_FIELDS)), *callbacks],
            where=where,
        )
    except BaseException:
        if created and not (out / bundle.CHECKPOINTS / "last.pt").exists():
            shutil.rmtree(out, ignore_errors=True)  # nothing resumable was written: leave no trace
        raise

    model.load_state_dict(result.best_state)
    loss_fn = make_loss(spec.binary)
    # In fp32 whatever training ran in, and over the recipe's test-time views: the card's test
    # figures are those of the model as `load` serves it and `cnnlab evaluate` scores it.
    served = with_views(model, cfg.model.tta)
    test = evaluate_epoch(served, test_batches, loss_fn, binary=spec.binary, precision="fp32")
    distributed.shutdown()  # the last collective is done; rank 0 alone writes the bundle
    if not rank.main:
        return None
    model = model.cpu()  # what follows writes files from a small sample: the weights leave as CPU tensors
    best_row = next(r for r in result.history if r["epoch"] == result.best_epoch)
    diagnosis = diagnose(result.history, len(data.classes))
    plot_curves(result.history, diagnosis, out / bundle.CURVES, f"{spec.name} on {data.source}")
    bundle.write_history(out / bundle.HISTORY, result.history, HISTORY_FIELDS)
    weights_sha = bundle.save_weights(model.state_dict(), out / bundle.WEIGHTS)
    # What a deployed model's inputs are later compared with (drift, `cnnlab serve`'s /v1/monitor).
    sample = reference_sample(served, splits["val"][0], mean, std, spec.binary, tc.seed)
    reference = save_reference(out, *sample, data.classes)
    card = ModelCard(
        name=cfg.name,
        architecture=spec.name,
        description=spec.description,
        binary=spec.binary,
        num_classes=len(data.classes),
        classes=data.classes,
        in_chans=data.channels,
        input_size=list(prep.pad_to),
        preprocessing=prep.to_dict(),
        cam_layer=cam_layer,
        weights=cfg.model.weights,
        tta=list(cfg.model.tta),
        parameters=n_params,
        metrics={
            "test_accuracy": test.accuracy,
            "test_loss": test.loss,
            "val_accuracy": best_row["val_acc"],
            "val_loss": best_row["val_loss"],
            "val_auc": best_row["val_auc"],
            "best_epoch": result.best_epoch,
            "monitor": tc.monitor,
        },
        training={
            "epochs_run": len(result.history),
            "stages": stage_times(result.history),
            "stop_reason": result.stop_reason,
            "train_seconds": result.train_seconds,
            "eval_seconds": result.eval_seconds,
            "test_seconds": test.seconds,
            "fit": diagnosis.to_dict(),
            "device": where.name,
            "precision": where.precision,
            "channels_last": tc.channels_last,
            "threads": torch.get_num_threads(),
            "processes": rank.world,
        },
        data=data_summary(data, datasets, source_digest),
        reference=reference,
        cnnlab_version=__version__,
        torch_version=torch.__version__,
        python=platform.python_version(),
        weights_sha256=weights_sha,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    bundle.write_card(out, card)  # last: its presence marks a finished bundle
    # --resume refuses a finished bundle, so its checkpoints are dead weight (with Adam's state,
    # about 4x the weights: gigabytes for VGG16).
    shutil.rmtree(out / bundle.CHECKPOINTS, ignore_errors=True)
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


def prepare_for(
    cfg: Config, spec: ModelSpec, data: ArrayDataset, input_size: int
) -> tuple[Preprocessing, dict[str, tuple[torch.Tensor, torch.Tensor]]]:
    """`prepare_data` for `spec`'s model, with the checks training makes first (a binary model
    needs two classes; images that cannot be fitted are a data error)."""
    if spec.binary and len(data.classes) != 2:
        raise ModelError(f"{spec.name} is a binary model; {cfg.data.source} has {len(data.classes)} classes")
    try:
        return prepare_data(cfg, data, spec.mean, spec.std, input_size)
    except ValueError as exc:
        raise DataError(str(exc)) from None


def training_batches(
    cfg: Config,
    splits: dict[str, tuple[torch.Tensor, torch.Tensor]],
    prep: Preprocessing,
    num_classes: int,
    input_size: int,
    augment: str | None = None,
    rank: int = 0,
    world: int = 1,
    device: torch.device | None = None,
) -> TensorBatches:
    """The training split as `fit` sees it: normalised as the card will say, shuffled by the run's
    seed, sampled, augmented (`augment`, default `data.augment`) and mixed as the config says;
    batches arrive on `device` (default: where they are)."""
    mean, std = stats_tensors(prep.mean, prep.std)
    tc = cfg.train
    return TensorBatches(
        *splits["train"],
        tc.batch_size,
        mean,
        std,
        shuffle=True,
        seed=tc.seed,
        channels_last=tc.channels_last,
        balanced=cfg.data.sampler == "balanced",
        augment=build_augment(augment or cfg.data.augment, input_size),
        mix=build_mix(cfg.data.mix, cfg.data.mix_alpha, num_classes),
        rank=rank,
        world=world,
        device=device,
    )


def resolve_auto_weights(cfg: Config, console: Console) -> Config:
    """`model.weights: auto`: ImageNet weights with the recipe's stages when they are available
    offline; otherwise random initialisation with every stage training all layers."""
    if cfg.model.weights != "auto":
        return cfg
    if imagenet_offline(get_spec(cfg.model.name)):  # never a download: "auto" means what is here
        return cfg.replace(model=replace(cfg.model, weights="imagenet"))
    console.print(f"[yellow]no ImageNet weights for {cfg.model.name} on this machine[/yellow]")
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


def data_summary(
    data: ArrayDataset, datasets: list[dict[str, Any]] | None = None, source_digest: str | None = None
) -> dict[str, Any]:
    """What the model card records of the data: enough to recognise it and its problems.

    `datasets`: every data set the run used (`cnnlab.data.merge.join_extra_data`), default `data`
    alone; `source_digest`: `data.digest()` of the source as loaded, before extra folders joined its
    training split (evaluation reloads the source alone and compares it with this)."""
    summary: dict[str, Any] = {
        "source": data.source,
        "origin": data.origin,
        "location": data.location,
        "sha256": source_digest or data.digest(),
        "splits": data.sizes(),
        "datasets": datasets if datasets is not None else [main_record(data)],
    }
    if data.groups is not None:
        summary["groups_per_split"] = {name: len(set(g.tolist())) for name, g in data.groups.items()}
    if data.sources is not None:  # images per source in each split: what a model was (not) trained on
        summary["sources_per_split"] = {name: dict(Counter(s.tolist())) for name, s in data.sources.items()}
    if data.manifest is not None:
        manifest = data.manifest
        summary["manifest_sha256"] = manifest.digest()
        summary["bad_files"] = [{"file": e.path, "reason": e.reason} for e in manifest.bad][:100]
        summary["cross_split_duplicates"] = len(manifest.cross_split_duplicates())
    return summary
