"""`cnnlab crossval`: k-fold cross-validation by patient, one bundle per fold, with the
out-of-fold predictions (calibrated probabilities in a CSV, raw logits in safetensors) and, on
request, one ensemble bundle averaging the fold models. Leave-one-source-out is `by_source.py`."""

from __future__ import annotations

import csv
import json
import platform
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from safetensors import safe_open
from safetensors.torch import save as save_safetensors

from cnnlab import __version__, bundle
from cnnlab.bundle.card import ModelCard, read_card
from cnnlab.bundle.classifier import Classifier, load
from cnnlab.bundle.data import bundle_data, network_pixels, split_outputs
from cnnlab.bundle.ensemble import assemble, member_cam_layer
from cnnlab.bundle.views import with_views
from cnnlab.config import Config, DataConfig, load_config
from cnnlab.data.folder import GROUP_COLUMNS
from cnnlab.data.preprocess import stats_tensors
from cnnlab.data.resplit import without_test
from cnnlab.data.sources import load_source, pooled
from cnnlab.data.splits import check_no_group_leak, fold_splits
from cnnlab.errors import DataError
from cnnlab.evaluation.drift import reference_sample, save_reference
from cnnlab.evaluation.metrics import classification_metrics, clean
from cnnlab.fileio import atomic_write_bytes, atomic_write_json, write_csv
from cnnlab.models import get_spec
from cnnlab.tasks.train import data_summary, train

OOF_LOGITS = "oof_logits.safetensors"
"""Raw out-of-fold logits (before any calibration) with labels, pooled index and fold."""
OOF_GROUPS = "oof_groups.csv"
"""The patient group of each out-of-fold row, in the order of OOF_LOGITS."""
ENSEMBLE = "ensemble"
"""The ensemble bundle's folder inside the cross-validation folder."""


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
    ensemble: dict[str, Any] | None = None
    """With `ensemble=True`: the ensemble bundle and its scores on the test split no fold saw."""


CROSSVAL_METRICS = ("accuracy", "balanced_accuracy", "macro_roc_auc", "macro_f1", "log_loss", "brier")


def crossval(
    cfg: Config,
    folds: int,
    out: str | Path | None = None,
    *,
    group_by: str | None = None,
    ensemble: bool = False,
    overwrite: bool = False,
    console: Console | None = None,
) -> CrossvalSummary:
    """K-fold cross-validation: every split of the source pooled and cut into `folds` stratified
    folds (by patient when the data has patient ids); one bundle per fold in `out/foldK`, each
    trained on its own train part, early-stopped on its val part, scored on its test part. Writes
    crossval.json, crossval.csv (every metric per fold, mean and std), oof_predictions.csv and the
    raw out-of-fold logits (OOF_LOGITS, OOF_GROUPS; `load_out_of_fold` reads them).

    With `ensemble`, the source's own test split stays out of every fold (the folds are cut from
    train + val), and `out/ensemble` becomes one bundle whose logits are the mean of the fold
    models', scored on that test split.

    A finished fold bundle already in `out` is reused, so an interrupted cross-validation goes on
    where it stopped. Folds train and are scored on `train.device`."""
    console = console or Console(quiet=True)
    out = Path(out) if out is not None else Path("runs") / f"{cfg.name}-crossval"
    if folds < 2:
        raise DataError(f"--folds must be at least 2, not {folds}")
    spec = get_spec(cfg.model.name)
    fold_data = replace(cfg.data, folds=folds, fold=0, folds_exclude_test=ensemble, holdout_source=None)
    base = load_source(replace(fold_data, folds=0), cfg.data.input_size or spec.input_size, console)
    _, y, groups = pooled(without_test(base, fold_data))  # what the folds are cut from
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
    held = f"; the test split ({len(base.splits['test'][1]):,} images) stays out for the ensemble" if ensemble else ""
    console.print(f"cross-validation: {len(y):,} images in {folds} folds by {unit} -> {out}{held}")
    out.mkdir(parents=True, exist_ok=True)
    rows, oof, raw = [], [], []
    fold_dirs = [out / f"fold{k + 1}" for k in range(folds)]
    for k, (part, fold_dir) in enumerate(zip(parts, fold_dirs, strict=True)):
        fold_cfg = cfg.replace(name=f"{cfg.name}-fold{k + 1}", data=replace(fold_data, fold=k))
        sizes = f"train {len(part['train']):,}, val {len(part['val']):,}, test {len(part['test']):,}"
        train_or_reuse(fold_cfg, fold_dir, f"fold {k + 1}/{folds}", sizes, overwrite, console)
        clf = load(fold_dir, device=cfg.train.device)
        data = bundle_data(fold_dir, clf)
        test = split_outputs(clf, data, "test")
        if not np.array_equal(test.labels, y[part["test"]].numpy()):  # a reused bundle of other data
            raise DataError(f"{fold_dir} was trained on other data than this run's; pass --overwrite")
        proba = clf.calibrated(test.logits).numpy()
        rows.append({"fold": k + 1, **summary_row(classification_metrics(test.labels, proba, clf.classes))})
        raw.append((part["test"], k + 1, test.logits))
        for i, p in zip(part["test"], proba, strict=True):
            oof.append({"index": int(i), "fold": k + 1, "group": "" if groups is None else str(groups[i]),
                        "label": clf.classes[int(y[i])], "predicted": clf.classes[int(p.argmax())],
                        **{f"p_{c}": float(v) for c, v in zip(clf.classes, p, strict=True)}})  # fmt: skip
    keys = [key for key in rows[0] if key not in ("fold", "images")]
    mean = {key: float(np.nanmean([r[key] for r in rows])) for key in keys}
    std = {key: float(np.nanstd([r[key] for r in rows], ddof=1)) for key in keys}
    write_csv(out / "crossval.csv", [*rows, {"fold": "mean", **mean}, {"fold": "std", **std}])
    write_csv(out / "oof_predictions.csv", sorted(oof, key=lambda r: r["index"]))
    write_out_of_fold(out, raw, y.numpy(), groups, read_card(fold_dirs[0]))
    scored = (
        write_ensemble(fold_dirs, out / ENSEMBLE, overwrite=overwrite, console=console, device=cfg.train.device)
        if ensemble
        else None
    )
    summary = {
        "recipe": cfg.name,
        "folds": folds,
        "unit": unit,
        "images": len(y),
        "per_fold": rows,
        "mean": mean,
        "std": std,
        "test_split": "set apart from the folds (--ensemble)" if ensemble else "pooled into the folds",
        "out_of_fold_logits": OOF_LOGITS,
        "ensemble": scored,
        "config": cfg.to_yaml(),
    }
    atomic_write_json(out / "crossval.json", clean(summary))
    return CrossvalSummary(out, folds, unit, rows, mean, std, scored)


def summary_row(scores: dict[str, Any]) -> dict[str, Any]:
    """One line of crossval.csv from `classification_metrics`: the headline figures, then per class."""
    row = {
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
    return row


def train_or_reuse(cfg: Config, run_dir: Path, what: str, sizes: str, overwrite: bool, console: Console) -> None:
    """Train one part of a cross-validation (`what`: "fold 2/5", "kermany held out") into `run_dir`,
    unless a finished bundle of the same cut is there: an interrupted run goes on where it stopped."""
    if reusable(run_dir, cfg.data, overwrite):
        console.print(f"{what}: reusing the finished bundle in {run_dir}")
        return
    console.print(f"[bold]{what}[/bold]: {sizes}")
    train(cfg, run_dir, overwrite=overwrite, console=console)


def reusable(run_dir: Path, data: DataConfig, overwrite: bool) -> bool:
    """A finished bundle in `run_dir` trained on the same cut of the data (fold, folds, test split,
    held-out source, limits, sizes: the whole data section but where its files are found): reused
    instead of trained again. A bundle of another cut is an error."""
    if overwrite or not (run_dir / bundle.CARD).is_file():
        return False
    saved = load_config(str(run_dir / bundle.CONFIG)).data
    where = {"data_dir", "download", "cache"}  # where the files are found, not which images they are
    if {k: v for k, v in asdict(saved).items() if k not in where} != {
        k: v for k, v in asdict(data).items() if k not in where
    }:
        raise DataError(
            f"{run_dir} holds a bundle of another cut of the data; pass --overwrite or choose another --out"
        )
    return True


# --------------------------------------------------------------------------- out-of-fold logits


@dataclass
class OutOfFold:
    """Every pooled image's raw logits from the fold model that did not train on it: what a
    calibration of the ensemble can be fitted on (`cnnlab.tasks.calibrate.FitSet(logits, labels,
    groups, name)` takes the first four fields)."""

    logits: torch.Tensor
    """(N, num_classes) float32, or (N, 1) for a binary model; before any calibration."""
    labels: np.ndarray
    groups: np.ndarray | None
    name: str
    folds: np.ndarray
    """The fold (1..K) whose model gave each row."""
    index: np.ndarray
    """Each row's position in the pooled data the folds were cut from (oof_predictions.csv's index)."""
    classes: list[str]


def write_out_of_fold(
    out: Path,
    raw: list[tuple[np.ndarray, int, torch.Tensor]],
    y: np.ndarray,
    groups: np.ndarray | None,
    card: ModelCard,
) -> None:
    """OOF_LOGITS (safetensors: logits, labels, index, fold; classes in its metadata) and
    OOF_GROUPS (index, fold, group), rows in pooled-index order. No pickle anywhere."""
    index = np.concatenate([idx for idx, _, _ in raw])
    fold = np.concatenate([np.full(len(idx), k) for idx, k, _ in raw])
    logits = torch.cat([lg for _, _, lg in raw]).float()
    order = np.argsort(index, kind="stable")
    index, fold, logits = index[order], fold[order], logits[torch.from_numpy(order)]
    tensors = {
        "logits": logits.contiguous(),
        "labels": torch.from_numpy(y[index].astype(np.int64)),
        "index": torch.from_numpy(index.astype(np.int64)),
        "fold": torch.from_numpy(fold.astype(np.int64)),
    }
    meta = {
        "classes": json.dumps(card.classes),
        "binary": json.dumps(card.binary),
        "grouped": json.dumps(groups is not None),
    }
    atomic_write_bytes(out / OOF_LOGITS, save_safetensors(tensors, metadata=meta))
    group_of = (lambda i: str(groups[i])) if groups is not None else (lambda i: "")
    rows = [{"index": int(i), "fold": int(f), "group": group_of(int(i))} for i, f in zip(index, fold, strict=True)]
    write_csv(out / OOF_GROUPS, rows, ["index", "fold", "group"])


def load_out_of_fold(path: str | Path) -> OutOfFold:
    """The raw out-of-fold logits of the cross-validation in `path`, or of the one an ensemble
    bundle at `path` was built from (its parent folder)."""
    path = Path(path)
    folder = path if (path / OOF_LOGITS).is_file() else path.parent
    if not (folder / OOF_LOGITS).is_file() or not (folder / OOF_GROUPS).is_file():
        raise DataError(f"no out-of-fold logits ({OOF_LOGITS}, {OOF_GROUPS}) in {path}; run `cnnlab crossval` again")
    with safe_open(str(folder / OOF_LOGITS), framework="pt") as fh:
        meta = fh.metadata() or {}
        tensors = {key: fh.get_tensor(key) for key in fh.keys()}  # noqa: SIM118 (safe_open is no dict)
    with open(folder / OOF_GROUPS, newline="", encoding="utf-8") as fh:
        table = list(csv.DictReader(fh))
    index = tensors["index"].numpy()
    if [int(r["index"]) for r in table] != index.tolist():
        raise DataError(f"{folder / OOF_GROUPS} does not list the rows of {OOF_LOGITS}; run `cnnlab crossval` again")
    groups = np.array([r["group"] for r in table]) if json.loads(meta.get("grouped", "false")) else None
    folds = tensors["fold"].numpy()
    return OutOfFold(
        logits=tensors["logits"],
        labels=tensors["labels"].numpy(),
        groups=groups,
        name="out-of-fold",
        folds=folds,
        index=index,
        classes=json.loads(meta.get("classes", "[]")),
    )


# --------------------------------------------------------------------------- the ensemble bundle


def write_ensemble(
    fold_dirs: list[Path],
    out: Path,
    *,
    overwrite: bool = False,
    console: Console | None = None,
    device: str | None = None,
) -> dict[str, Any]:
    """One deployable bundle in `out` whose logits are the mean of the fold bundles' (see
    `cnnlab.bundle.ensemble`), configured with the un-folded data so that `cnnlab evaluate` scores
    it on the source's own test split. Returns its scores on that split, and each member's
    accuracy there. A finished ensemble in `out` is kept (it may have been calibrated since)
    unless `overwrite` or its members changed. The members score on `device` (default auto)."""
    console = console or Console(quiet=True)
    members = [load(d, device=device) for d in fold_dirs]
    shas = [m.card.weights_sha256 for m in members]
    if not overwrite and (out / bundle.CARD).is_file() and read_card(out).training.get("members_sha256") == shas:
        console.print(f"ensemble: keeping the finished bundle in {out}")
        clf = load(out, device=device)
    else:  # new, or its members were trained again
        clf = build_ensemble(fold_dirs, members, out)
    data = bundle_data(out, clf)
    test = split_outputs(clf, data, "test")
    scored: dict[str, Any] = {"dir": str(out), "members": len(members), "test_split_excluded_from_folds": True}
    scored |= summary_row(classification_metrics(test.labels, clf.calibrated(test.logits).numpy(), clf.classes))
    scored["members_accuracy"] = []
    for member in members:
        logits = split_outputs(member, data, "test").logits
        scored["members_accuracy"].append(
            classification_metrics(test.labels, member.calibrated(logits).numpy(), member.classes)["accuracy"]
        )
    console.print(
        f"ensemble of {len(members)}: test accuracy {scored['accuracy']:.4f} on {scored['images']:,} images "
        f"none of its members saw -> {out}"
    )
    return scored


def build_ensemble(fold_dirs: list[Path], members: list[Classifier], out: Path) -> Classifier:
    """Write the ensemble bundle of `members` (loaded from `fold_dirs`) into `out`: config,
    weights, reference sample for drift, and the card last."""
    cards = [m.card for m in members]
    first = cards[0]
    for d, card in zip(fold_dirs[1:], cards[1:], strict=True):
        if (card.architecture, card.classes, card.binary) != (first.architecture, first.classes, first.binary):
            raise DataError(f"{d} is not the same kind of model as {fold_dirs[0]}: no ensemble of them")
    cfg = load_config(str(fold_dirs[0] / bundle.CONFIG))  # as trained: absolute folder, resolved weights
    cfg = cfg.replace(
        name=cfg.name.rsplit("-fold", 1)[0] + "-ensemble",
        data=replace(cfg.data, folds=0, fold=0, folds_exclude_test=False, holdout_source=None),
    )
    bundle.check_run_dir(out, overwrite=True, resume=False)
    bundle.prepare_run_dir(out, overwrite=True, resume=False)
    if any(card.tta != first.tta for card in cards):
        raise DataError(f"the fold models in {fold_dirs[0].parent} average different test-time views: no ensemble")
    # Built of the networks; the folds' test-time views apply to the ensemble as a whole.
    plain, prep = assemble([m.network for m in members], [m.preprocessing for m in members])
    model = with_views(plain, first.tta)
    bundle.write_config(out, cfg.to_yaml())
    card = ModelCard(
        name=cfg.name,
        architecture=first.architecture,
        members=len(members),
        num_classes=first.num_classes,
        classes=first.classes,
        in_chans=first.in_chans,
        input_size=first.input_size,
        preprocessing=prep.to_dict(),
        weights_sha256=bundle.save_weights(plain.state_dict(), out / bundle.WEIGHTS),
        binary=first.binary,
        description=f"the mean of the logits of {len(members)} cross-validation fold models of {first.architecture}",
        cam_layer=member_cam_layer(first.cam_layer),
        weights=first.weights,
        tta=first.tta,
        parameters=sum(c.parameters for c in cards),
    )
    clf = Classifier(model, card, out)
    data = bundle_data(out, clf)
    test = split_outputs(clf, data, "test")
    scores = classification_metrics(test.labels, clf.calibrated(test.logits).numpy(), clf.classes)
    mean, std = stats_tensors(prep.mean, prep.std)
    val = network_pixels(clf, data, data.splits["val"][0])
    sample = reference_sample(model, val, mean, std, first.binary, cfg.train.seed)
    reference = save_reference(out, *sample, first.classes)
    card = card.with_changes(
        metrics={
            "test_accuracy": scores["accuracy"],
            "test_loss": scores["log_loss"],
            "test_macro_roc_auc": scores["averages"]["macro"]["roc_auc"],
        },
        training={
            "ensemble_of": [str(d.resolve()) for d in fold_dirs],
            "members_sha256": [c.weights_sha256 for c in cards],
            "combination": "mean of the members' logits",
            "out_of_fold_logits": f"../{OOF_LOGITS}",
            "epochs_run": sum(c.training.get("epochs_run", 0) for c in cards),
            "train_seconds": sum(c.training.get("train_seconds", 0.0) for c in cards),
        },
        data=data_summary(data),
        reference=reference,
        cnnlab_version=__version__,
        torch_version=torch.__version__,
        python=platform.python_version(),
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    bundle.write_card(out, card)  # last: its presence marks a finished bundle
    return Classifier(model, card, out)
