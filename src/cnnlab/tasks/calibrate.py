"""`cnnlab calibrate`: temperature or vector scaling and an operating point, fitted on the
validation split, checked on test, stored in the model card for every later prediction."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from cnnlab.bundle.card import write_card
from cnnlab.bundle.classifier import Classifier, load
from cnnlab.bundle.data import bundle_data, split_outputs
from cnnlab.choices import CALIBRATION_METHODS
from cnnlab.errors import DataError
from cnnlab.evaluation.calibration import Calibration, calibration_scores, fit_calibration, reliability
from cnnlab.evaluation.figures import plot_reliability
from cnnlab.evaluation.metrics import clean
from cnnlab.evaluation.operating import (
    OperatingPoint,
    evaluate_operating_point,
    fit_operating_point,
    parse_positive,
)
from cnnlab.models.outputs import probabilities


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
    if method not in (*CALIBRATION_METHODS, "none"):
        raise DataError(f"--method must be one of {', '.join((*CALIBRATION_METHODS, 'none'))}, not '{method}'")
    if method == "none" and positive is None:
        raise DataError("--method none keeps the card's calibration: pass --positive CLASS for an operating point")
    if positive is None and target_sensitivity is not None:
        raise DataError("--target-sensitivity needs --positive CLASS (or 'not CLASS')")
    run_dir = Path(run_dir)
    clf = load(run_dir)
    data = bundle_data(run_dir, clf, data_dir)
    outputs = {split: split_outputs(clf, data, split) for split in ("val", "test") if split in data.splits}
    val = outputs["val"]
    card = clf.card
    calibration = None
    if method != "none":
        calibration = fit_calibration(val.logits, torch.from_numpy(val.labels), clf.binary, method)
        card = card.with_changes(
            temperature=calibration.temperature,
            calibration={**calibration.to_card(), "fitted_on": "val", "images": len(val.labels)},
        )
        clf = Classifier(clf.model, card, run_dir)
    scores = {
        split: {
            "before": calibration_scores(out.labels, probabilities(out.logits, clf.binary).numpy()),
            "after": calibration_scores(out.labels, clf.calibrated(out.logits).numpy()),
        }
        for split, out in outputs.items()
    }
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
        point = fit_operating_point(
            clf.calibrated(val.logits).numpy(), val.labels, clf.classes, chosen, target_sensitivity
        )
        if "test" in outputs:
            test = outputs["test"]
            point.test, point.test_intervals = evaluate_operating_point(
                point.to_card(), clf.calibrated(test.logits).numpy(), test.labels, clf.classes, test.groups
            )
        card = card.with_changes(threshold=clean(point.to_card()))
    figure = run_dir / "eval" / "calibration.png"
    figure.parent.mkdir(exist_ok=True)
    panels = []
    for split, out in outputs.items():
        panels.append((f"{split}, raw", reliability(out.labels, probabilities(out.logits, clf.binary).numpy())))
        panels.append((f"{split}, {(clf.card.calibration or {}).get('method', 'raw')}",
                       reliability(out.labels, clf.calibrated(out.logits).numpy())))  # fmt: skip
    plot_reliability(panels, figure, f"{card.name}: calibration fitted on val, checked on test")
    write_card(run_dir, card)
    return CalibrationSummary(method, calibration, scores, point, figure)
