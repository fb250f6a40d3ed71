"""`cnnlab crossval --by-source`: leave one source out. For each source (metadata.csv's `source`:
a hospital, a scanner, a public set) one bundle trained on the other sources and scored on every
image of the held-out one: how the model does on data from somewhere it has never seen."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from cnnlab.bundle.classifier import load
from cnnlab.bundle.data import bundle_data, split_outputs
from cnnlab.config import Config
from cnnlab.data.resplit import source_names
from cnnlab.data.sources import load_source, pooled, pooled_per_image
from cnnlab.errors import DataError
from cnnlab.evaluation.metrics import classification_metrics, clean, nan_average
from cnnlab.fileio import atomic_write_json, write_csv
from cnnlab.models import get_spec
from cnnlab.tasks.crossval import train_or_reuse


@dataclass
class BySourceSummary:
    out_dir: Path
    unit: str
    """How validation was held out of the other sources: by "patient" or by "image"."""
    rows: list[dict[str, Any]]
    """One per held-out source that was scored (see `score_source`)."""
    skipped: list[dict[str, Any]]
    """{source, images, classes, reason} per source that could not be scored fairly."""
    classes: list[str]


def source_dir_name(source: str) -> str:
    """The fold folder of a held-out source: `without-<source>`, file-name safe; a source whose name
    had to change (or differs only in case) gets a short hash of it, so two sources never share one."""
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in source).strip(".") or "source"
    if safe != source or safe != safe.lower():
        safe += "-" + hashlib.sha256(source.encode()).hexdigest()[:6]
    return "without-" + safe


def leave_one_source_out(
    cfg: Config, out: str | Path | None = None, *, overwrite: bool = False, console: Console | None = None
) -> BySourceSummary:
    """Leave one source out: for each source S, a bundle in `out/without-S` trained and validated
    on the other sources' images (validation held out by patient) and tested on every image of S,
    all splits pooled (`data.holdout_source`). A source none of whose classes occurs elsewhere is
    skipped with the reason; one with some classes only there is scored, those classes' figures
    undefined (None). Writes by_source.json and by_source.csv; reuses finished bundles in `out`."""
    console = console or Console(quiet=True)
    out = Path(out) if out is not None else Path("runs") / f"{cfg.name}-by-source"
    spec = get_spec(cfg.model.name)
    base_cfg = replace(cfg.data, folds=0, fold=0, folds_exclude_test=False, holdout_source=None)
    base = load_source(base_cfg, cfg.data.input_size or spec.input_size, console)
    _, y, groups = pooled(base)
    origins = pooled_per_image(base.sources)
    names = source_names(base)
    if origins is None or len(names) < 2:
        found = f"only {names[0]}" if names else "none"
        raise DataError(
            f"--by-source needs images from two sources or more (metadata.csv's source column); found {found}"
        )
    labels = y.numpy()
    unit = "patient" if groups is not None else "image"
    console.print(
        f"leave one source out: {len(labels):,} images from {len(names)} sources ({', '.join(names)}) -> {out}"
    )
    out.mkdir(parents=True, exist_ok=True)
    rows, skipped = [], []
    for source in names:
        mine = origins == source
        own = sorted(set(labels[mine].tolist()))
        elsewhere = set(labels[~mine].tolist())
        only_here = [base.classes[c] for c in own if c not in elsewhere]
        if len(only_here) == len(own):
            reason = f"{', '.join(only_here)} {'is' if len(only_here) == 1 else 'are'} only in {source}"
            console.print(f"[yellow]{source}: skipped[/yellow] ({reason}: a model trained without it never saw them)")
            skipped.append({"source": source, "images": int(mine.sum()), "classes": [base.classes[c] for c in own],
                            "reason": reason})  # fmt: skip
            continue
        run_dir = out / source_dir_name(source)
        fold_cfg = cfg.replace(name=f"{cfg.name}-without-{source}", data=replace(base_cfg, holdout_source=source))
        sizes = f"test {int(mine.sum()):,} images, train and val the other {int((~mine).sum()):,}"
        train_or_reuse(fold_cfg, run_dir, f"{source} held out", sizes, overwrite, console)
        rows.append(score_source(run_dir, source, device=cfg.train.device))
        if only_here:
            rows[-1]["note"] = f"{', '.join(only_here)} only in {source}: undefined (never trained on)"
    if not rows:
        raise DataError("no source could be held out: each one's classes occur nowhere else")
    write_csv(out / "by_source.csv", clean([*rows, *skipped]), csv_fields(base.classes))  # undefined: empty
    atomic_write_json(
        out / "by_source.json",
        clean({"recipe": cfg.name, "unit": unit, "images": len(labels),
               "sources": {s: int((origins == s).sum()) for s in names}, "held_out": rows, "skipped": skipped,
               "config": cfg.to_yaml()}),
    )  # fmt: skip
    return BySourceSummary(out, unit, rows, skipped, list(base.classes))


def score_source(run_dir: Path, source: str, *, device: str | None = None) -> dict[str, Any]:
    """The bundle in `run_dir` (trained without `source`) on every image of `source`: images,
    accuracy, within-source one-vs-rest ROC AUC per class and their macro, sensitivity per class;
    beside them the same figures in distribution, on its validation images (other sources) of the
    held-out source's classes. Figures of a class the model never trained on are None. The network
    runs on `device` (default auto)."""
    clf = load(run_dir, device=device)
    data = bundle_data(run_dir, clf)
    trained_on = data.sources["train"] if data.sources is not None else np.array([])
    if source in set(trained_on.tolist()):  # the cut's promise, checked on the data itself
        raise DataError(f"{run_dir}: {source} is in the training split; the bundle is not a held-out fold")
    trained = set(data.splits["train"][1].tolist())
    test, val = split_outputs(clf, data, "test"), split_outputs(clf, data, "val")
    held = within(test.labels, clf.calibrated(test.logits).numpy(), clf.classes, trained)
    same = np.isin(val.labels, np.unique(test.labels))  # in distribution: the same question, other sources
    seen = within(val.labels[same], clf.calibrated(val.logits[same]).numpy(), clf.classes, trained)
    row: dict[str, Any] = {
        "source": source,
        "images": held["images"],
        "trained_on": " ".join(sorted(set(trained_on.tolist()) - {""})),
        "accuracy": held["accuracy"],
        "macro_roc_auc": held["macro_roc_auc"],
    }
    predicted = clf.calibrated(test.logits).numpy().argmax(axis=1)
    for k, cls in enumerate(clf.classes):
        row[f"roc_auc {cls}"] = held["roc_auc"][cls]
        row[f"sensitivity {cls}"] = held["sensitivity"][cls]
        row[f"predicted {cls}"] = float((predicted == k).mean())  # where the unseen hospital's images go
    row |= {"val_images": seen["images"], "val_accuracy": seen["accuracy"], "val_macro_roc_auc": seen["macro_roc_auc"]}
    return row


def within(labels: np.ndarray, proba: np.ndarray, classes: list[str], trained: set[int]) -> dict[str, Any]:
    """Accuracy, per-class one-vs-rest ROC AUC and sensitivity among these images only (NaN where a
    class has no positives or no negatives here, or was never trained on), and the AUCs' macro."""
    if not len(labels):
        nan = {c: float("nan") for c in classes}
        return {
            "images": 0,
            "accuracy": float("nan"),
            "macro_roc_auc": float("nan"),
            "roc_auc": nan,
            "sensitivity": nan,
        }
    scores = classification_metrics(labels, proba, classes)
    auc = {c: scores["per_class"][c]["roc_auc"] if k in trained else float("nan") for k, c in enumerate(classes)}
    sens = {c: scores["per_class"][c]["recall"] if k in trained else float("nan") for k, c in enumerate(classes)}
    return {
        "images": scores["images"],
        "accuracy": scores["accuracy"],
        "macro_roc_auc": nan_average(np.array(list(auc.values()))),
        "roc_auc": auc,
        "sensitivity": sens,
    }


def csv_fields(classes: list[str]) -> list[str]:
    per_class = [f"{m} {c}" for m in ("roc_auc", "sensitivity", "predicted") for c in classes]
    return ["source", "images", "trained_on", "accuracy", "macro_roc_auc", *per_class,
            "val_images", "val_accuracy", "val_macro_roc_auc", "note", "reason"]  # fmt: skip
