"""`cnnlab crossval`: k-fold cross-validation by patient, one bundle per fold, with the
out-of-fold predictions (calibrated probabilities in a CSV, raw logits in safetensors) and, on
request, one ensemble bundle averaging the fold models, and the ensemble's own out-of-fold
logits to calibrate it on. Leave-one-source-out is `by_source.py`."""

from __future__ import annotations

import platform
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console

from cnnlab import __version__, bundle
from cnnlab.bundle.card import ModelCard, read_card
from cnnlab.bundle.classifier import Classifier, load
from cnnlab.bundle.data import bundle_data, network_pixels, split_outputs
from cnnlab.bundle.ensemble import assemble, member_cam_layer
from cnnlab.bundle.views import with_views
from cnnlab.config import Config, DataConfig, load_config
from cnnlab.data.folder import GROUP_COLUMNS
from cnnlab.data.preprocess import stats_tensors
from cnnlab.data.resplit import pooled_per_image, without_test
from cnnlab.data.sources import load_source, pooled
from cnnlab.data.splits import check_no_group_leak, fold_splits
from cnnlab.errors import DataError
from cnnlab.evaluation.by_source import per_source_metrics
from cnnlab.evaluation.drift import reference_sample, save_reference
from cnnlab.evaluation.metrics import classification_metrics, clean
from cnnlab.fileio import atomic_write_json, write_csv
from cnnlab.models import get_spec
from cnnlab.models.outputs import probabilities
from cnnlab.tasks.out_of_fold import (
    ENSEMBLE_OOF_GROUPS,
    ENSEMBLE_OOF_LOGITS,
    OOF_LOGITS,
    write_out_of_fold,
)
from cnnlab.tasks.train import data_summary, train

ENSEMBLE = "ensemble"
"""The ensemble bundle's folder inside the cross-validation folder."""
PAIRS = "pairs"
"""The folder of the models that leave two folds out (`--ensemble-oof`)."""


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
    ensemble_oof: dict[str, Any] | None = None
    """With `ensemble_oof=True`: the headline metrics of the ensemble's out-of-fold predictions
    beside the single fold models' (both over every pooled image, uncalibrated)."""


CROSSVAL_METRICS = ("accuracy", "balanced_accuracy", "macro_roc_auc", "macro_f1", "log_loss", "brier")


def crossval(
    cfg: Config,
    folds: int,
    out: str | Path | None = None,
    *,
    group_by: str | None = None,
    ensemble: bool = False,
    ensemble_oof: bool = False,
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

    With `ensemble_oof` (K >= 3), the K(K-1)/2 models that each leave two folds out are trained too
    (`out/pairs`), so that every pooled image gets a prediction from an ensemble none of whose K-1
    members saw it: the mean of the logits of the models that left its fold and one other out
    (ENSEMBLE_OOF_LOGITS). An ensemble is often more accurate, and less confident for its accuracy,
    than its members: its calibration and operating point belong on its own held-out predictions,
    which the single fold models' out-of-fold logits only approximate (`cnnlab calibrate` prefers
    these). Its members train on (K-2)/K of the data, though: where that weakens them more than
    ensembling helps, the fold models' logits are the closer fit set (README).

    A finished fold bundle already in `out` is reused, so an interrupted cross-validation goes on
    where it stopped. Folds train and are scored on `train.device`."""
    console = console or Console(quiet=True)
    out = Path(out) if out is not None else Path("runs") / f"{cfg.name}-crossval"
    if folds < 2:
        raise DataError(f"--folds must be at least 2, not {folds}")
    if ensemble_oof and (not ensemble or folds < 3):
        raise DataError("--ensemble-oof needs --ensemble and at least 3 folds (its models leave two folds out)")
    spec = get_spec(cfg.model.name)
    fold_data = replace(cfg.data, folds=folds, fold=0, folds_exclude_test=ensemble, holdout_source=None)
    base = load_source(replace(fold_data, folds=0), cfg.data.input_size or spec.input_size, console)
    pool = without_test(base, fold_data)  # what the folds are cut from
    _, y, groups = pooled(pool)
    origins = pooled_per_image(pool.sources)
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
    rows, oof, raw, calibrated = [], [], [], []
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
        calibrated.append((part["test"], proba))
        for i, p in zip(part["test"], proba, strict=True):
            oof.append({"index": int(i), "fold": k + 1, "group": "" if groups is None else str(groups[i]),
                        "label": clf.classes[int(y[i])], "predicted": clf.classes[int(p.argmax())],
                        **{f"p_{c}": float(v) for c, v in zip(clf.classes, p, strict=True)}})  # fmt: skip
    keys = [key for key in rows[0] if key not in ("fold", "images")]
    mean = {key: float(np.nanmean([r[key] for r in rows])) for key in keys}
    std = {key: float(np.nanstd([r[key] for r in rows], ddof=1)) for key in keys}
    write_csv(out / "crossval.csv", [*rows, {"fold": "mean", **mean}, {"fold": "std", **std}])
    write_csv(out / "oof_predictions.csv", sorted(oof, key=lambda r: r["index"]))
    card = read_card(fold_dirs[0])
    write_out_of_fold(out, raw, y.numpy(), groups, card, sources=origins)
    # Where the sources differ in difficulty, the pooled figures hide it: every image's out-of-fold
    # prediction, broken down by source (within-source AUCs: no source shortcut can explain them).
    by_source = None
    if origins is not None:
        oof_proba = np.zeros((len(y), len(card.classes)))
        for index, proba in calibrated:
            oof_proba[index] = proba
        by_source = per_source_metrics(y.numpy(), oof_proba, card.classes, origins, groups)
    nested = None
    if ensemble_oof:
        nested = ensemble_out_of_fold(cfg, fold_data, out, y.numpy(), groups, origins, card, overwrite, console, raw)
    else:  # an earlier run's would describe other folds' ensemble, and `calibrate` would fit on them
        for stale in (ENSEMBLE_OOF_LOGITS, ENSEMBLE_OOF_GROUPS):
            (out / stale).unlink(missing_ok=True)
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
        "by_source": by_source,
        "test_split": "set apart from the folds (--ensemble)" if ensemble else "pooled into the folds",
        "out_of_fold_logits": OOF_LOGITS,
        "ensemble": scored,
        "ensemble_out_of_fold": nested,
        "config": cfg.to_yaml(),
    }
    atomic_write_json(out / "crossval.json", clean(summary))
    return CrossvalSummary(out, folds, unit, rows, mean, std, scored, nested)


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


def ensemble_out_of_fold(
    cfg: Config,
    fold_data: DataConfig,
    out: Path,
    y: np.ndarray,
    groups: np.ndarray | None,
    sources: np.ndarray | None,
    card: ModelCard,
    overwrite: bool,
    console: Console,
    single: list[tuple[np.ndarray, int, torch.Tensor]],
) -> dict[str, Any]:
    """Train the models that leave folds a and b out (`out/pairs/foldsA+B`), and write each pooled
    image's mean logits over the K-1 of them that left its fold out (ENSEMBLE_OOF_LOGITS). Returns
    the headline metrics of those predictions beside the single fold models' (`single`: the
    crossval's (index, fold, logits) parts, one per fold; `card`: a fold model's)."""
    folds = len(single)
    pairs = [(a, b) for a in range(folds) for b in range(a + 1, folds)]
    alone: list[tuple[np.ndarray, torch.Tensor]] = []  # each pair model's own predictions
    for n, (a, b) in enumerate(pairs):
        run_dir = out / PAIRS / f"folds{a + 1}+{b + 1}"
        pair_cfg = cfg.replace(name=f"{cfg.name}-folds{a + 1}+{b + 1}", data=replace(fold_data, fold=a, second_fold=b))
        part = fold_splits(y, groups, folds, a, fold_data.val_fraction, fold_data.split_seed, b)
        sizes = f"train {len(part['train']):,}, val {len(part['val']):,}, folds {a + 1} and {b + 1} held out"
        train_or_reuse(pair_cfg, run_dir, f"ensemble out-of-fold model {n + 1}/{len(pairs)}", sizes, overwrite, console)
        clf = load(run_dir, device=cfg.train.device)
        test = split_outputs(clf, bundle_data(run_dir, clf), "test")
        if not np.array_equal(test.labels, y[part["test"]]):  # a reused bundle of other data
            raise DataError(f"{run_dir} was trained on other data than this run's; pass --overwrite")
        alone.append((part["test"], test.logits.float()))
    total = torch.zeros(len(y), alone[0][1].shape[1])
    count = np.zeros(len(y), dtype=np.int64)
    for index, logits in alone:
        total[torch.from_numpy(index)] += logits
        count[index] += 1
    assert (count == folds - 1).all()  # each image: the K-1 pairs holding its fold out
    mean = total / torch.from_numpy(count).unsqueeze(1).float()
    raw = [(index, k, mean[torch.from_numpy(index)]) for index, k, _ in single]
    write_out_of_fold(out, raw, y, groups, card, (ENSEMBLE_OOF_LOGITS, ENSEMBLE_OOF_GROUPS), sources)
    members = torch.zeros_like(mean)
    for index, _, logits in single:
        members[torch.from_numpy(index)] = logits.float()
    pair_index = np.concatenate([index for index, _ in alone])
    pair_logits = torch.cat([logits for _, logits in alone])
    scores = {}
    for name, labels, logits in (
        ("single fold models", y, members),
        ("single models leaving two folds out", y[pair_index], pair_logits),  # each image K-1 times
        (f"ensembles of {folds - 1}", y, mean),
    ):
        proba = probabilities(logits, card.binary)
        m = classification_metrics(labels, proba.numpy(), card.classes)
        scores[name] = {**summary_row(m), "mean_confidence": float(proba.max(dim=1).values.mean())}
    return {"models": len(pairs), "logits": ENSEMBLE_OOF_LOGITS, "uncalibrated": scores}


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
