"""`cnnlab evaluate`: score a bundle on one split and write the report (metrics.json, report.md,
report.html and the figures) in the bundle's `eval/`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from cnnlab.bundle.card import ModelCard
from cnnlab.bundle.classifier import Classifier, load
from cnnlab.bundle.data import ALL, SplitOutputs, data_matches_card, evaluation_data, seen_in_training, split_outputs
from cnnlab.bundle.layout import CONFIG, CURVES
from cnnlab.data.sources import ArrayDataset
from cnnlab.engine.losses import make_loss
from cnnlab.errors import DataError
from cnnlab.evaluation.by_source import by_source_section, per_source_metrics
from cnnlab.evaluation.calibration import calibration_scores, reliability
from cnnlab.evaluation.figures import plot_confusion, plot_reliability, plot_roc_pr
from cnnlab.evaluation.metrics import bootstrap, classification_metrics, clean, per_class_accuracy, row_normalised
from cnnlab.evaluation.operating import evaluate_operating_point
from cnnlab.evaluation.report import (
    Figure,
    Section,
    Table,
    config_table,
    data_table,
    fmt,
    training_table,
    with_interval,
    write_html,
    write_markdown,
)
from cnnlab.figures import plot_labelled_images
from cnnlab.fileio import atomic_write_json
from cnnlab.models.outputs import probabilities

FIT_SET_TEXT = {
    "val": "the validation split",
    "out-of-fold": "the out-of-fold predictions of a k-fold run",
    "ensemble out-of-fold": "the out-of-fold predictions of ensembles of K-1 fold models that never saw the image",
}
"""How the report names the images a calibration or an operating point was fitted on."""


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
    external: bool = False
    """Scored on a class folder other than the bundle's own data (`--data-dir`)."""


def evaluate(
    run_dir: str | Path,
    split: str | None = None,
    data_dir: str | None = None,
    out: str | Path | None = None,
    resamples: int = 1000,
    *,
    device: str | None = None,
) -> EvalSummary:
    """Score a bundle on one split and write the report: `eval/` in the bundle holds metrics.json,
    report.md, report.html and the figures. The split is one of the data it was trained on (default
    test), or with `data_dir` of any class folder whose classes are among the bundle's: its own
    split (default test), or `all` of its images (the default when it has no splits). The network
    runs on `device` (default auto: a GPU if there is one)."""
    if resamples < 0:
        raise DataError(f"--bootstrap must be 0 or more, not {resamples}")
    run_dir = Path(run_dir)
    clf = load(run_dir, device=device)
    data, split, external = evaluation_data(run_dir, clf, data_dir, split)
    if split not in data.splits:
        raise DataError(f"no '{split}' split; choose one of {', '.join(data.splits)}")
    # Another hospital's report goes beside the bundle's own test report, not over it.
    default = run_dir / (f"eval-{Path(data.location or 'external').name}" if external else "eval")
    return evaluate_arrays(clf, data, split, Path(out) if out else default, resamples, external)


def evaluate_arrays(
    clf: Classifier, data: ArrayDataset, split: str, out_dir: Path, resamples: int = 1000, external: bool = False
) -> EvalSummary:
    out = split_outputs(clf, data, split)
    y, classes, card = out.labels, clf.classes, clf.card
    raw = probabilities(out.logits, clf.binary).numpy()
    proba = clf.calibrated(out.logits).numpy()
    loss = float(make_loss(clf.binary)(out.logits, torch.from_numpy(y)))
    scores = classification_metrics(y, proba, classes)
    intervals = bootstrap(y, proba, classes, out.groups, resamples) if resamples else None
    operating = None
    if card.threshold:
        rates, ci = evaluate_operating_point(card.threshold, proba, y, classes, out.groups, resamples)
        operating = {"point": card.threshold, split: rates, f"{split}_intervals": ci}
    calibration = {"raw": calibration_scores(y, raw)}
    if card.calibrated:
        calibration["calibrated"] = calibration_scores(y, proba)
    by_source = None
    if out.sources is not None:
        by_source = per_source_metrics(y, proba, classes, out.sources, out.groups, card.threshold or None)
    cm = scores.pop("confusion_matrix")
    metrics = clean(
        {
            "run": card.name,
            "architecture": card.architecture,
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
            "data_sha256_matches_card": not external and data_matches_card(data, card),
            "external_data": {
                "folder": data.location,
                "images": len(y),
                "also_in_training_folder": seen_in_training(clf, data),
            }
            if external
            else None,
            **({"by_source": by_source} if by_source is not None else {}),
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
        external=external,
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
    name = f"{card.name} ({card.architecture})"
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
        f"the {len(worst)} most confidently wrong {'' if split == ALL else split + ' '}images (of {len(wrong)} errors)",
    )
    run_dir = clf.run_dir or out_dir.parent
    sections = evaluation_sections(card, metrics, run_dir, out_dir, len(wrong))
    title = f"Evaluation of {name} on {evaluated_on(metrics)}"
    write_markdown(title, sections, out_dir / "report.md")
    write_html(title, sections, out_dir / "report.html")


def evaluated_on(metrics: dict[str, Any]) -> str:
    """`the test split`, `the test split of FOLDER`, or `all N images of FOLDER`."""
    split, external = metrics["split"], metrics.get("external_data")
    if external and split == ALL:
        return f"all {external['images']:,} images of {external['folder']}"
    return f"the {split} split" + (f" of {external['folder']}" if external else "")


def evaluation_sections(
    card: ModelCard, metrics: dict[str, Any], run_dir: Path, out_dir: Path, errors: int
) -> list[Section]:
    split, classes = metrics["split"], card.classes
    ci = metrics["intervals"] or {}
    per_ci = ci.get("per_class") or {}
    unit = f"{ci.get('resamples')} bootstrap resamples of {ci.get('unit')}s" if ci else "no bootstrap"
    fit = card.training.get("fit") or {}
    sections = []

    config_path = run_dir / CONFIG
    config = yaml.safe_load(config_path.read_text()) if config_path.is_file() else {}
    sections.append(
        Section(
            "Run",
            [
                f"{card.architecture}, {card.parameters:,} parameters, weights {card.weights}, input "
                f"{card.in_chans}x{card.input_size[0]}x{card.input_size[1]}; created {card.created_at} "
                f"with cnnlab {card.cnnlab_version} and torch {card.torch_version}.",
                config_table(config),
            ],
        )
    )
    data_blocks: list[Any] = [data_table(card.data)]
    if metrics.get("external_data"):
        data_blocks.insert(
            0,
            f"External data: not the data this model was trained on. Evaluated on {evaluated_on(metrics)}; "
            "the table describes the training data. A class absent from it shows n/a.",
        )
        overlap = metrics["external_data"].get("also_in_training_folder")
        if overlap:
            data_blocks.insert(
                1,
                f"Warning: {overlap} of these images are byte-identical to images in the folder the model was "
                "trained from (any split): the figures here are not fully external.",
            )
    elif card.members and metrics["split"] != "test":
        data_blocks.insert(0, f"Warning: the ensemble's members trained on the {metrics['split']} images (their "
                              "folds were cut from train and val): these figures are in-sample.")  # fmt: skip
    elif not metrics["data_sha256_matches_card"]:
        data_blocks.insert(0, "Warning: the data evaluated here differs from what the model card recorded.")
    sections.append(Section("Data", data_blocks))
    training_blocks: list[Any] = [training_table(card.training)]
    if fit:
        training_blocks.append(f"Fit: {fit.get('verdict')}: {fit.get('reason')}. Suggestion: {fit.get('suggestion')}.")
    if (run_dir / CURVES).is_file():
        training_blocks.append(Figure(run_dir / CURVES, "training and validation curves, with the fit verdict"))
    sections.append(Section("Training", training_blocks))

    summary_rows = [
        ["images", f"{metrics['images']:,}"],
        ["accuracy", with_interval(metrics["accuracy"], ci.get("accuracy"))],
        ["balanced accuracy", fmt(metrics["balanced_accuracy"])],
        ["macro ROC AUC", with_interval(metrics["averages"]["macro"]["roc_auc"], ci.get("macro_roc_auc"))],
        ["macro F1", fmt(metrics["averages"]["macro"]["f1"])],
        ["macro PR AUC", fmt(metrics["averages"]["macro"]["pr_auc"])],
        ["log loss", fmt(metrics["log_loss"])],
        ["Brier score", fmt(metrics["brier"])],
    ]
    sections.append(
        Section(
            f"Results on {split}",
            [
                f"Evaluated on {evaluated_on(metrics)}. 95% intervals from {unit}; n/a marks a value that is "
                "undefined on this split.",
                Table(["metric", "value [95% CI]"], summary_rows),
            ],
        )
    )
    header = ["class", "support", "precision (PPV)", "sensitivity (recall)", "specificity", "F1", "NPV"]
    rows = []
    for cls in classes:
        m, c = metrics["per_class"][cls], per_ci.get(cls, {})
        rows.append(
            [
                cls,
                str(m["support"]),
                fmt(m["precision"]),
                with_interval(m["recall"], c.get("recall")),
                with_interval(m["specificity"], c.get("specificity")),
                fmt(m["f1"]),
                fmt(m["npv"]),
            ]
        )
    for avg in ("macro", "weighted"):
        a = metrics["averages"][avg]
        rows.append(
            [
                f"{avg} average",
                "",
                fmt(a["precision"]),
                fmt(a["recall"]),
                fmt(a["specificity"]),
                fmt(a["f1"]),
                fmt(a["npv"]),
            ]
        )
    auc_rows = [
        [
            cls,
            with_interval(metrics["per_class"][cls]["roc_auc"], per_ci.get(cls, {}).get("roc_auc")),
            fmt(metrics["per_class"][cls]["pr_auc"]),
        ]
        for cls in classes
    ]
    sections.append(
        Section(
            "Per class (one class vs the rest)",
            [
                Table(header, rows),
                Table(["class", "ROC AUC [95% CI]", "PR AUC"], auc_rows),
                Figure(out_dir / "confusion_matrix.png", "confusion matrix: counts and row-normalised"),
                Figure(out_dir / "roc_pr.png", "ROC and precision-recall curves, one class vs the rest"),
            ],
        )
    )

    cal = metrics["calibration"]
    cal_rows = [
        [key, fmt(cal["raw"][key]), fmt(cal.get("calibrated", {}).get(key))]
        for key in ("ece", "mce", "nll", "brier", "accuracy")
    ]
    stored = card.calibration or {}
    fitted_on = FIT_SET_TEXT.get(stored.get("fitted_on", "val"), stored.get("fitted_on", "val"))
    if "calibrated" in cal:
        how = (
            f"Calibrated by {stored.get('method', 'temperature')} scaling fitted on {fitted_on}"
            + (f" (T = {card.temperature:.3f})" if card.temperature else "")
            + "; every prediction applies it."
        )
    elif stored.get("method") == "none":
        how = (
            f"Not calibrated, by choice: on {fitted_on}, no scaling lowered the held-out log loss "
            "(`cnnlab calibrate --method auto`), so the probabilities are the network's own."
        )
    else:
        how = (
            "Not calibrated: the probabilities are the network's own. `cnnlab calibrate RUN` chooses none, "
            "temperature or vector scaling by held-out log loss on the validation split."
        )
    sections.append(
        Section(
            "Calibration",
            [
                how,
                Table(["on " + split, "raw", "calibrated"], cal_rows),
                Figure(out_dir / "reliability.png", "reliability diagram: accuracy per confidence bin"),
            ],
        )
    )

    op = metrics.get("operating_point")
    if op:
        point, rates, cis = op["point"], op[split], op[f"{split}_intervals"]
        target = f" (target sensitivity {point['target_sensitivity']})" if point.get("target_sensitivity") else ""
        blocks: list[Any] = [
            f"Positive: {', '.join(point['positive'])}. Threshold {point['value']:.4f} on the summed probability, "
            f"chosen on {FIT_SET_TEXT.get(point.get('chosen_on', 'val'), point.get('chosen_on'))} by "
            f"{point.get('method')}{target}.",
            Table(
                ["", "where chosen", f"{split} [95% CI]"],
                [
                    [key, fmt((point.get("val") or {}).get(key)), with_interval(rates[key], cis.get(key))]
                    for key in ("sensitivity", "specificity", "ppv", "npv")
                ],
            ),
        ]
    else:
        blocks = [
            "No operating point is set: predictions take the most probable class. `cnnlab calibrate RUN --positive "
            "CLASS --target-sensitivity 0.95` chooses one on the validation split."
        ]
    sections.append(Section("Operating point", blocks))
    if metrics.get("by_source"):
        sections.append(by_source_section(metrics["by_source"]))
    sections.append(
        Section(
            "Most confidently wrong",
            [
                f"{errors} of {metrics['images']:,} {'' if split == ALL else split + ' '}images are misclassified; "
                "most confident first.",
                Figure(
                    out_dir / "confident_errors.png", "most confidently wrong images (true / predicted, confidence)"
                ),
            ],
        )
    )
    return sections
