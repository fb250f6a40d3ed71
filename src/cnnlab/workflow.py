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
from cnnlab.data.folder import GROUP_COLUMNS
from cnnlab.data.loader import TensorBatches
from cnnlab.data.preprocess import (
    Preprocessing,
    channel_stats,
    fit_all,
    plan_resize,
    stats_tensors,
)
from cnnlab.data.sources import FOLDER_PREFIX, ArrayDataset, load_source, pooled
from cnnlab.data.splits import check_no_group_leak, fold_splits
from cnnlab.engine import distributed
from cnnlab.engine.fit import HISTORY_FIELDS, fit
from cnnlab.engine.loop import evaluate_epoch
from cnnlab.engine.losses import make_loss, probabilities
from cnnlab.errors import DataError, ModelError
from cnnlab.evaluation.calibration import Calibration, calibration_scores, fit_calibration, reliability
from cnnlab.evaluation.diagnosis import diagnose
from cnnlab.evaluation.drift import REFERENCE, reference_sample, save_reference
from cnnlab.evaluation.metrics import (
    bootstrap,
    classification_metrics,
    clean,
    per_class_accuracy,
    row_normalised,
)
from cnnlab.evaluation.operating import (
    OperatingPoint,
    evaluate_operating_point,
    fit_operating_point,
    parse_positive,
)
from cnnlab.evaluation.report import evaluation_sections, write_html, write_markdown
from cnnlab.export.predictor import Classifier, load
from cnnlab.figures import plot_confusion, plot_curves, plot_labelled_images, plot_reliability, plot_roc_pr
from cnnlab.fileio import atomic_write_json, atomic_write_text
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
) -> TrainSummary | None:
    """Train `cfg` into the bundle `out`. In a data-parallel job (torchrun) every rank trains and
    rank 0 alone writes the bundle and prints; the other ranks return None."""
    rank = distributed.setup()
    console = console if console is not None and rank.main else Console(quiet=True)
    out = Path(out) if out is not None else Path("runs") / cfg.name
    spec = get_spec(cfg.model.name)
    if rank.main:
        bundle.check_run_dir(out, overwrite=overwrite, resume=resume)
    if cfg.data.source.startswith(FOLDER_PREFIX):  # recorded absolute: evaluate may run elsewhere
        folder = Path(cfg.data.source[len(FOLDER_PREFIX) :]).expanduser().resolve()
        cfg = cfg.replace(data=replace(cfg.data, source=f"{FOLDER_PREFIX}{folder}"))
    cfg = resolve_auto_weights(cfg, console)
    input_size = cfg.data.input_size or spec.input_size
    if not rank.main:  # rank 0 decodes first and fills the cache the others then read
        distributed.barrier()
    data = load_source(cfg.data, input_size, console)
    if rank.main:
        distributed.barrier()
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
        rank=rank.rank,
        world=rank.world,
    )
    val_batches, test_batches = (
        TensorBatches(*splits[name], tc.eval_batch_size, mean, std, channels_last=tc.channels_last,
                      rank=rank.rank, world=rank.world)
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
            on_epoch=lambda rows: bundle.write_history(out / bundle.HISTORY, rows, HISTORY_FIELDS),
        )
    except BaseException:
        if created and not (out / bundle.CHECKPOINTS / "last.pt").exists():
            shutil.rmtree(out, ignore_errors=True)  # nothing resumable was written: leave no trace
        raise

    model.load_state_dict(result.best_state)
    loss_fn = make_loss(spec.binary)
    test = evaluate_epoch(model, test_batches, loss_fn, binary=spec.binary, precision=tc.precision)
    distributed.shutdown()  # the last collective is done; rank 0 alone writes the bundle
    if not rank.main:
        return None
    best_row = next(r for r in result.history if r["epoch"] == result.best_epoch)
    diagnosis = diagnose(result.history, len(data.classes))
    plot_curves(result.history, diagnosis, out / bundle.CURVES, f"{spec.name} on {data.source}")
    bundle.write_history(out / bundle.HISTORY, result.history, HISTORY_FIELDS)
    weights_sha = bundle.save_weights(model.state_dict(), out / bundle.WEIGHTS)
    # What a deployed model's inputs are later compared with (drift, `cnnlab serve`'s /v1/monitor).
    ref_embeddings, ref_predicted = reference_sample(model, splits["val"][0], mean, std, spec.binary, tc.seed)
    save_reference(out, ref_embeddings, ref_predicted)
    ref_counts = np.bincount(ref_predicted, minlength=len(data.classes))
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
            "processes": rank.world,
        },
        "data": data_summary(data),
        "reference": {
            "file": REFERENCE,
            "split": "val",
            "images": len(ref_predicted),
            "dimensions": int(ref_embeddings.shape[1]),
            "predicted_distribution": dict(zip(data.classes, (ref_counts / ref_counts.sum()).tolist(), strict=True)),
        },
        "cnnlab_version": __version__,
        "torch_version": torch.__version__,
        "python": platform.python_version(),
        "weights_sha256": weights_sha,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
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


def resolve_auto_weights(cfg: Config, console: Console) -> Config:
    """`model.weights: auto`: ImageNet weights with the recipe's stages when they are available
    offline; otherwise random initialisation with every stage training all layers."""
    from cnnlab.models.weights import imagenet_offline

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
    """Recall of each class (NaN when absent from the split)."""
    seconds: float
    out_dir: Path
    data_matches: bool
    metrics: dict[str, Any]
    """Everything metrics.json holds (JSON-ready: undefined values are None)."""


def evaluate(
    run_dir: str | Path,
    split: str = "test",
    data_dir: str | None = None,
    out: str | Path | None = None,
    resamples: int = 1000,
) -> EvalSummary:
    """Score a bundle on one split of the data it was trained on and write the report: `eval/`
    in the bundle holds metrics.json, report.md, report.html and the figures."""
    run_dir = Path(run_dir)
    clf = load(run_dir)
    data = bundle_data(run_dir, clf, data_dir)
    if split not in data.splits:
        raise DataError(f"no '{split}' split; choose one of {', '.join(data.splits)}")
    return evaluate_arrays(clf, data, split, Path(out) if out else run_dir / "eval", resamples)


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


@dataclass
class SplitOutputs:
    pixels: torch.Tensor
    """uint8 (N, C, H, W) network input before normalisation."""
    labels: np.ndarray
    logits: torch.Tensor
    groups: np.ndarray | None
    seconds: float


def split_outputs(clf: Classifier, data: ArrayDataset, split: str) -> SplitOutputs:
    x, y = data.splits[split]
    pixels = clf.fit_pixels(x, already_fitted=data.fitted_crop is not None)
    start = time.perf_counter()
    logits = clf.logits_from_pixels(pixels)
    seconds = time.perf_counter() - start
    groups = data.groups[split] if data.groups is not None else None
    return SplitOutputs(pixels, y.numpy(), logits, groups, seconds)


def evaluate_arrays(
    clf: Classifier, data: ArrayDataset, split: str, out_dir: Path, resamples: int = 1000
) -> EvalSummary:
    out = split_outputs(clf, data, split)
    y, classes, card = out.labels, clf.classes, clf.card
    raw = probabilities(out.logits, clf.binary).numpy()
    proba = clf.calibrated(out.logits).numpy()
    loss = float(make_loss(clf.binary)(out.logits, torch.from_numpy(y)))
    scores = classification_metrics(y, proba, classes)
    intervals = bootstrap(y, proba, classes, out.groups, resamples) if resamples else None
    operating = None
    if card.get("threshold"):
        rates, ci = evaluate_operating_point(card["threshold"], proba, y, classes, out.groups, resamples)
        operating = {"point": card["threshold"], split: rates, f"{split}_intervals": ci}
    calibration = {"raw": calibration_scores(y, raw)}
    if card.get("calibration") or card.get("temperature"):
        calibration["calibrated"] = calibration_scores(y, proba)
    cm = scores.pop("confusion_matrix")
    metrics = clean(
        {
            "run": card.get("name"),
            "architecture": card["architecture"],
            "split": split,
            **scores,
            "loss": loss,
            "confusion_matrix": cm,
            "confusion_matrix_normalised": row_normalised(cm),
            "per_class_accuracy": dict(zip(classes, per_class_accuracy(cm).tolist(), strict=True)),
            "intervals": intervals.to_json() if intervals else None,
            "calibration": calibration,
            "operating_point": operating,
            "seconds": out.seconds,
            "data_sha256_matches_card": data.digest() == card["data"]["sha256"],
        }
    )
    summary = EvalSummary(
        split=split,
        accuracy=metrics["accuracy"],
        loss=loss,
        classes=classes,
        confusion=cm,
        per_class=per_class_accuracy(cm),
        seconds=out.seconds,
        out_dir=out_dir,
        data_matches=metrics["data_sha256_matches_card"],
        metrics=metrics,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out_dir / "metrics.json", metrics)
    write_evaluation_report(clf, out, proba, raw, metrics, out_dir)
    return summary


def write_evaluation_report(
    clf: Classifier, out: SplitOutputs, proba: np.ndarray, raw: np.ndarray, metrics: dict[str, Any], out_dir: Path
) -> None:
    """The figures, report.md and the self-contained report.html of one evaluated split."""
    card, classes, split = clf.card, clf.classes, metrics["split"]
    y = out.labels
    name = f"{card.get('name')} ({card['architecture']})"
    cm = np.asarray(metrics["confusion_matrix"])
    plot_confusion(
        cm, classes, out_dir / "confusion_matrix.png", f"{name} — {split} accuracy {metrics['accuracy']:.4f}"
    )
    plot_roc_pr(y, proba, classes, out_dir / "roc_pr.png", f"{name} — {split}")
    panels = [("raw probabilities", reliability(y, raw))]
    if "calibrated" in metrics["calibration"]:
        panels.append(("calibrated (as served)", reliability(y, proba)))
    plot_reliability(panels, out_dir / "reliability.png", f"reliability on {split} ({len(y):,} images, 15 bins)")
    pred = proba.argmax(axis=1)
    wrong = np.flatnonzero(pred != y)
    worst = wrong[np.argsort(-proba[wrong, pred[wrong]], kind="stable")][:18]
    plot_labelled_images(
        [out.pixels[i].permute(1, 2, 0).numpy() for i in worst],
        [f"true {classes[y[i]]}\npredicted {classes[pred[i]]} {proba[i, pred[i]]:.2f}" for i in worst],
        out_dir / "confident_errors.png",
        f"the {len(worst)} most confidently wrong {split} images (of {len(wrong)} errors)",
    )
    run_dir = clf.run_dir or out_dir.parent
    sections = evaluation_sections(card, metrics, run_dir, out_dir, len(wrong))
    title = f"Evaluation of {name} on the {split} split"
    write_markdown(title, sections, out_dir / "report.md")
    write_html(title, sections, out_dir / "report.html")


@dataclass
class CalibrationSummary:
    method: str
    calibration: Calibration | None
    scores: dict[str, dict[str, dict[str, float]]]
    """split -> "before"/"after" -> ECE, MCE, NLL, Brier, accuracy."""
    operating_point: OperatingPoint | None
    figure: Path


def calibrate(
    run_dir: str | Path,
    method: str = "temperature",
    positive: str | None = None,
    target_sensitivity: float | None = None,
    data_dir: str | None = None,
) -> CalibrationSummary:
    """Fit calibration (and, with `positive`, an operating point) on the validation split, report
    before/after on validation and test, and store both in the model card for every prediction.

    method: temperature, vector, or none (keep the card's calibration; choose an operating point only)."""
    if method == "none" and positive is None:
        raise DataError("--method none keeps the card's calibration: pass --positive CLASS for an operating point")
    if positive is None and target_sensitivity is not None:
        raise DataError("--target-sensitivity needs --positive CLASS (or 'not CLASS')")
    run_dir = Path(run_dir)
    clf = load(run_dir)
    data = bundle_data(run_dir, clf, data_dir)
    outputs = {split: split_outputs(clf, data, split) for split in ("val", "test") if split in data.splits}
    val = outputs["val"]
    card = dict(clf.card)
    calibration = None
    if method != "none":
        calibration = fit_calibration(val.logits, torch.from_numpy(val.labels), clf.binary, method)
        card["temperature"] = calibration.temperature
        card["calibration"] = {**calibration.to_card(), "fitted_on": "val", "images": len(val.labels)}
        clf = Classifier(clf.model, card, run_dir)
    scores = {
        split: {
            "before": calibration_scores(out.labels, probabilities(out.logits, clf.binary).numpy()),
            "after": calibration_scores(out.labels, clf.calibrated(out.logits).numpy()),
        }
        for split, out in outputs.items()
    }
    if calibration is not None:
        card["calibration"]["scores"] = clean(scores)
    point = None
    stored = card.get("threshold")
    if positive is None and stored:
        # The stored threshold was chosen on the old probabilities: choose it again, by its own
        # rule, on the new ones.
        positive, target_sensitivity = ",".join(stored["positive"]), stored.get("target_sensitivity")
    if positive is not None:
        chosen = parse_positive(positive, clf.classes)
        point = fit_operating_point(
            clf.calibrated(val.logits).numpy(), val.labels, clf.classes, chosen, target_sensitivity
        )
        if "test" in outputs:
            test = outputs["test"]
            point.test, point.test_intervals = evaluate_operating_point(
                point.to_card(), clf.calibrated(test.logits).numpy(), test.labels, clf.classes, test.groups
            )
        card["threshold"] = clean(point.to_card())
    figure = run_dir / "eval" / "calibration.png"
    figure.parent.mkdir(exist_ok=True)
    panels = []
    for split, out in outputs.items():
        panels.append((f"{split}, raw", reliability(out.labels, probabilities(out.logits, clf.binary).numpy())))
        panels.append((f"{split}, {(clf.card.get('calibration') or {}).get('method', 'raw')}",
                       reliability(out.labels, clf.calibrated(out.logits).numpy())))  # fmt: skip
    plot_reliability(panels, figure, f"{card.get('name')}: calibration fitted on val, checked on test")
    bundle.write_card(run_dir, card)
    return CalibrationSummary(method, calibration, scores, point, figure)


@dataclass
class CrossvalSummary:
    out_dir: Path
    folds: int
    unit: str
    """What the folds split: "patient" or "image"."""
    rows: list[dict[str, Any]]
    """One per fold: the fold's test-part metrics."""
    mean: dict[str, float]
    std: dict[str, float]


CROSSVAL_METRICS = ("accuracy", "balanced_accuracy", "macro_roc_auc", "macro_f1", "log_loss", "brier")


def crossval(
    cfg: Config,
    folds: int,
    out: str | Path | None = None,
    *,
    group_by: str | None = None,
    overwrite: bool = False,
    console: Console | None = None,
) -> CrossvalSummary:
    """K-fold cross-validation: every split of the source pooled and cut into `folds` stratified
    folds (by patient when the data has patient ids); one bundle per fold in `out/foldK`, each
    trained on its own train part, early-stopped on its val part, scored on its test part. Writes
    crossval.json, crossval.csv (every metric per fold, mean and std) and oof_predictions.csv.

    A finished fold bundle already in `out` is reused, so an interrupted cross-validation goes on
    where it stopped."""
    console = console or Console(quiet=True)
    out = Path(out) if out is not None else Path("runs") / f"{cfg.name}-crossval"
    if folds < 2:
        raise DataError(f"--folds must be at least 2, not {folds}")
    spec = get_spec(cfg.model.name)
    base = load_source(replace(cfg.data, folds=0), cfg.data.input_size or spec.input_size, console)
    _, y, groups = pooled(base)
    # Folds are always by patient when the data has patient ids (anything else leaks); --group-by
    # makes the requirement explicit and fails when there are none.
    if group_by is not None and group_by not in GROUP_COLUMNS:
        raise DataError(f"--group-by must name metadata.csv's patient column ({' or '.join(GROUP_COLUMNS)})")
    if group_by is not None and groups is None:
        raise DataError(f"--group-by {group_by}: {cfg.data.source} has no patient ids (metadata.csv patient_id)")
    parts = [fold_splits(y.numpy(), groups, folds, k, cfg.data.val_fraction, cfg.data.split_seed) for k in range(folds)]
    if groups is not None:  # the promise of grouped folds, checked rather than assumed
        check_no_group_leak({f"fold {k + 1} test": p["test"] for k, p in enumerate(parts)}, groups)
    unit = "patient" if groups is not None else "image"
    console.print(f"cross-validation: {len(y):,} images in {folds} folds by {unit} -> {out}")
    out.mkdir(parents=True, exist_ok=True)
    rows, oof = [], []
    for k, part in enumerate(parts):
        fold_dir = out / f"fold{k + 1}"
        fold_cfg = cfg.replace(name=f"{cfg.name}-fold{k + 1}", data=replace(cfg.data, folds=folds, fold=k))
        if (fold_dir / bundle.CARD).is_file() and not overwrite:
            console.print(f"fold {k + 1}/{folds}: reusing the finished bundle in {fold_dir}")
        else:
            console.print(f"[bold]fold {k + 1}/{folds}[/bold]: train {len(part['train']):,}, val {len(part['val']):,}, "
                          f"test {len(part['test']):,}")  # fmt: skip
            train(fold_cfg, fold_dir, overwrite=overwrite, console=console)
        clf = load(fold_dir)
        data = bundle_data(fold_dir, clf)
        test = split_outputs(clf, data, "test")
        proba = clf.calibrated(test.logits).numpy()
        scores = classification_metrics(test.labels, proba, clf.classes)
        row = {
            "fold": k + 1,
            "images": scores["images"],
            "accuracy": scores["accuracy"],
            "balanced_accuracy": scores["balanced_accuracy"],
            "macro_roc_auc": scores["averages"]["macro"]["roc_auc"],
            "macro_f1": scores["averages"]["macro"]["f1"],
            "log_loss": scores["log_loss"],
            "brier": scores["brier"],
        }
        for cls, m in scores["per_class"].items():
            row[f"sensitivity {cls}"] = m["recall"]
            row[f"specificity {cls}"] = m["specificity"]
            row[f"roc_auc {cls}"] = m["roc_auc"]
        rows.append(row)
        for i, p in zip(part["test"], proba, strict=True):
            oof.append({"index": int(i), "fold": k + 1, "group": "" if groups is None else str(groups[i]),
                        "label": clf.classes[int(y[i])], "predicted": clf.classes[int(p.argmax())],
                        **{f"p_{c}": float(v) for c, v in zip(clf.classes, p, strict=True)}})  # fmt: skip
    keys = [key for key in rows[0] if key not in ("fold", "images")]
    mean = {key: float(np.nanmean([r[key] for r in rows])) for key in keys}
    std = {key: float(np.nanstd([r[key] for r in rows], ddof=1)) for key in keys}
    _write_csv(out / "crossval.csv", [*rows, {"fold": "mean", **mean}, {"fold": "std", **std}])
    _write_csv(out / "oof_predictions.csv", sorted(oof, key=lambda r: r["index"]))
    atomic_write_json(
        out / "crossval.json",
        clean({"recipe": cfg.name, "folds": folds, "unit": unit, "images": len(y), "per_fold": rows,
               "mean": mean, "std": std, "config": cfg.to_yaml()}),
    )  # fmt: skip
    return CrossvalSummary(out, folds, unit, rows, mean, std)


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    import csv
    import io

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: f"{v:.6g}" if isinstance(v, float) else v for k, v in row.items()})
    atomic_write_text(path, buf.getvalue())
