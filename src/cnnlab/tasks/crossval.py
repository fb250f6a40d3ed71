"""`cnnlab crossval`: k-fold cross-validation by patient, one bundle per fold, with the
out-of-fold predictions."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from cnnlab import bundle
from cnnlab.bundle.classifier import load
from cnnlab.bundle.data import bundle_data, split_outputs
from cnnlab.config import Config
from cnnlab.data.folder import GROUP_COLUMNS
from cnnlab.data.sources import load_source, pooled
from cnnlab.data.splits import check_no_group_leak, fold_splits
from cnnlab.errors import DataError
from cnnlab.evaluation.metrics import classification_metrics, clean
from cnnlab.fileio import atomic_write_json, write_csv
from cnnlab.models import get_spec
from cnnlab.tasks.train import train


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
    write_csv(out / "crossval.csv", [*rows, {"fold": "mean", **mean}, {"fold": "std", **std}])
    write_csv(out / "oof_predictions.csv", sorted(oof, key=lambda r: r["index"]))
    atomic_write_json(
        out / "crossval.json",
        clean({"recipe": cfg.name, "folds": folds, "unit": unit, "images": len(y), "per_fold": rows,
               "mean": mean, "std": std, "config": cfg.to_yaml()}),
    )  # fmt: skip
    return CrossvalSummary(out, folds, unit, rows, mean, std)
