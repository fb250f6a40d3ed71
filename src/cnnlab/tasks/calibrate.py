"""`cnnlab calibrate`: calibration and an operating point, fitted on the validation split (or on
another fit set, such as a k-fold run's out-of-fold predictions), checked on validation and test,
stored in the model card for every later prediction.

The method is chosen by cross-fitted held-out log loss (`choose_calibration`): `auto` keeps the
best of none, temperature and vector scaling; an explicit method that would make held-out log
loss worse is refused and the card is left as it was."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnlab.bundle.card import write_card
from cnnlab.bundle.classifier import Classifier, load
from cnnlab.bundle.data import bundle_data, split_outputs
from cnnlab.choices import CALIBRATION_METHODS
from cnnlab.errors import DataError
from cnnlab.evaluation.calibration import (
    Calibration,
    CalibrationChoice,
    calibration_scores,
    choose_calibration,
    ece_interval,
    reliability,
)
from cnnlab.evaluation.figures import plot_reliability
from cnnlab.evaluation.metrics import clean
from cnnlab.evaluation.operating import (
    OperatingPoint,
    evaluate_operating_point,
    fit_operating_point,
    parse_positive,
)
from cnnlab.models.outputs import probabilities
from cnnlab.tasks.out_of_fold import has_ensemble_out_of_fold, load_out_of_fold

METHOD_CHOICES = (*CALIBRATION_METHODS, "none", "auto")
"""auto: the best by held-out log loss; none: keep the card's calibration (operating point only)."""


@dataclass
class FitSet:
    """What to fit calibration and the operating point on instead of the validation split: raw
    logits (N, K), or (N, 1) for a binary model, their labels and patients, and a name for the
    card ("out-of-fold")."""

    logits: torch.Tensor
    labels: np.ndarray
    groups: np.ndarray | None
    name: str


@dataclass
class CalibrationSummary:
    method: str
    """The method asked for: auto, temperature, vector or none."""
    calibration: Calibration | None
    """What the card now applies (method "none": the raw probabilities); None when --method none
    kept the card's calibration."""
    scores: dict[str, dict[str, dict[str, Any]]]
    """split -> "before"/"after" -> ECE, ece_ci ([low, high], 95%), MCE, NLL, Brier, accuracy."""
    operating_point: OperatingPoint | None
    figure: Path
    choice: CalibrationChoice | None = None
    """Every candidate's held-out log loss and why the method was kept (None with --method none)."""
    fitted_on: str = "val"


def _check_fit_set(fit: FitSet, width: int) -> FitSet:
    labels = np.asarray(fit.labels, dtype=np.int64)
    if fit.logits.ndim != 2 or fit.logits.shape[1] != width:
        raise DataError(f"the {fit.name} logits must be (N, {width}), not {tuple(fit.logits.shape)}")
    if len(labels) != len(fit.logits) or (fit.groups is not None and len(fit.groups) != len(labels)):
        raise DataError(f"the {fit.name} set has {len(fit.logits)} logits but {len(labels)} labels"
                        + ("" if fit.groups is None else f" and {len(fit.groups)} patient ids"))  # fmt: skip
    if len(labels) and (labels.min() < 0 or labels.max() >= max(width, 2)):
        raise DataError(f"the {fit.name} labels must be class indices 0..{max(width, 2) - 1}")
    return FitSet(fit.logits.detach().float(), labels, fit.groups, fit.name)


def calibrate(
    run_dir: str | Path,
    method: str = "auto",
    positive: str | None = None,
    target_sensitivity: float | None = None,
    data_dir: str | None = None,
    fit_on: FitSet | None = None,
    folds: int = 5,
    resamples: int = 1000,
    seed: int = 0,
    *,
    device: str | None = None,
) -> CalibrationSummary:
    """Fit calibration (and, with `positive`, an operating point) on the validation split, or on
    `fit_on` when given; report before/after with ECE intervals on validation and test, and store
    both in the model card for every prediction.

    method: auto (none, temperature or vector, whichever has the lowest held-out log loss under
    `folds`-fold cross-fitting), temperature or vector (refused when it would make held-out log loss
    worse), or none (keep the card's calibration; choose an operating point only). The network
    computes its logits on `device` (default auto)."""
    if method not in METHOD_CHOICES:
        raise DataError(f"--method must be one of {', '.join(METHOD_CHOICES)}, not '{method}'")
    if method == "none" and positive is None:
        raise DataError("--method none keeps the card's calibration: pass --positive CLASS for an operating point")
    if positive is None and target_sensitivity is not None:
        raise DataError("--target-sensitivity needs --positive CLASS (or 'not CLASS')")
    run_dir = Path(run_dir)
    clf = load(run_dir, device=device)
    data = bundle_data(run_dir, clf, data_dir)
    # An ensemble's members trained on the validation split (folds are cut from train + val): it is
    # fitted on out-of-fold logits instead, and judged on test alone. Its own (`--ensemble-oof`:
    # ensembles of K-1 models that never saw the image) when the cross-validation wrote them; else
    # the single fold models', which approximate it (README: which of the two is closer).
    splits = ("test",) if clf.card.members else ("val", "test")
    outputs = {split: split_outputs(clf, data, split) for split in splits if split in data.splits}
    if fit_on is None and clf.card.members:
        oof = load_out_of_fold(run_dir, ensemble=has_ensemble_out_of_fold(run_dir))
        fit_on = FitSet(oof.logits, oof.labels, oof.groups, oof.name)
    width = 1 if clf.binary else len(clf.classes)
    if fit_on is not None:
        fit = _check_fit_set(fit_on, width)
    elif "val" in outputs:
        fit = FitSet(outputs["val"].logits, outputs["val"].labels, outputs["val"].groups, "val")
    else:
        raise DataError(f"{run_dir} has no validation split to calibrate on")
    card = clf.card
    calibration = choice = None
    if method != "none":
        where = "validation" if fit.name == "val" else fit.name
        choice = choose_calibration(fit.logits, fit.labels, clf.binary, fit.groups, method, folds, seed, where)
        calibration = choice.calibration
        card = card.with_changes(
            temperature=calibration.temperature,
            calibration={**calibration.to_card(), "fitted_on": fit.name, "images": len(fit.labels),
                         "choice": clean(choice.to_card())},
        )  # fmt: skip
        clf = Classifier(clf.model, card, run_dir)
    scores: dict[str, dict[str, dict[str, Any]]] = {}
    for split, out in outputs.items():
        scores[split] = {}
        for when, proba in (("before", probabilities(out.logits, clf.binary)), ("after", clf.calibrated(out.logits))):
            p = proba.numpy()
            low, high = ece_interval(out.labels, p, out.groups, resamples, seed)
            scores[split][when] = {**calibration_scores(out.labels, p), "ece_ci": [low, high]}
    if calibration is not None:
        card = card.with_changes(calibration={**(card.calibration or {}), "scores": clean(scores)})
    point = None
    stored = card.threshold
    if positive is None and stored:
        # The stored threshold was chosen on the old probabilities: choose it again, by its own
        # rule, on the new ones.
        positive, target_sensitivity = ",".join(stored["positive"]), stored.get("target_sensitivity")
    if positive is not None:
        chosen = parse_positive(positive, clf.classes)
        fit_proba = clf.calibrated(fit.logits).numpy()
        point = fit_operating_point(fit_proba, fit.labels, clf.classes, chosen, target_sensitivity,
                                    fit.groups, resamples, seed, chosen_on=fit.name)  # fmt: skip
        if "test" in outputs:
            test = outputs["test"]
            point.test, point.test_intervals = evaluate_operating_point(
                point.to_card(), clf.calibrated(test.logits).numpy(), test.labels, clf.classes, test.groups,
                resamples, seed,
            )  # fmt: skip
        card = card.with_changes(threshold=clean(point.to_card()))
    figure = run_dir / "eval" / "calibration.png"
    figure.parent.mkdir(exist_ok=True)
    panels = []
    for split, out in outputs.items():
        panels.append((f"{split}, raw", reliability(out.labels, probabilities(out.logits, clf.binary).numpy())))
        panels.append((f"{split}, {(clf.card.calibration or {}).get('method', 'raw')}",
                       reliability(out.labels, clf.calibrated(out.logits).numpy())))  # fmt: skip
    checked = " and ".join(split for split in outputs if split != fit.name)
    title = f"{card.name}: calibration fitted on {fit.name}" + (f", checked on {checked}" if checked else "")
    plot_reliability(panels, figure, title)
    write_card(run_dir, card)
    return CalibrationSummary(method, calibration, scores, point, figure, choice, fit.name)
