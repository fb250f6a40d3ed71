"""Calibration and operating points: the maths on synthetic logits, then through a real bundle."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import cnnlab
from cnnlab.errors import DataError
from cnnlab.evaluation.calibration import calibration_scores, fit_calibration, reliability
from cnnlab.evaluation.operating import choose_threshold, parse_positive, rates_at
from cnnlab.tasks.calibrate import calibrate


def overconfident(n: int = 3000, k: int = 5, sharpen: float = 3.0, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels drawn from softmax(z) (so z is perfectly calibrated), returned as logits z * sharpen."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, k, generator=g) * 1.5
    y = torch.multinomial(z.softmax(1), 1, generator=g).squeeze(1)
    return z * sharpen, y


def test_temperature_recovers_the_sharpening_and_keeps_every_prediction() -> None:
    logits, y = overconfident(sharpen=3.0)
    cal = fit_calibration(logits, y, binary=False, method="temperature")
    assert cal.temperature == pytest.approx(3.0, rel=0.1)
    before = logits.softmax(1).numpy()
    after = cal.probabilities(logits, binary=False).numpy()
    assert np.array_equal(before.argmax(1), after.argmax(1))  # accuracy cannot change
    s0, s1 = calibration_scores(y.numpy(), before), calibration_scores(y.numpy(), after)
    assert s1["ece"] < s0["ece"] / 3 and s1["nll"] < s0["nll"] and s1["brier"] < s0["brier"]
    assert s1["accuracy"] == s0["accuracy"]


def test_vector_scaling_removes_a_class_bias_and_platt_works_for_one_logit() -> None:
    logits, y = overconfident(sharpen=1.0, seed=1)
    biased = logits + torch.tensor([2.0, 0, 0, 0, 0])
    cal = fit_calibration(biased, y, binary=False, method="vector")
    assert cal.bias[0] - np.mean(cal.bias[1:]) == pytest.approx(-2.0, abs=0.3)
    # Binary models have one logit: vector scaling is Platt's a*z + b.
    g = torch.Generator().manual_seed(2)
    z = torch.randn(2000, 1, generator=g)
    y2 = torch.bernoulli(torch.sigmoid(z.squeeze(1)), generator=g).long()
    platt = fit_calibration(z * 4 + 1, y2, binary=True, method="vector")
    assert platt.scale[0] == pytest.approx(0.25, rel=0.2) and platt.bias[0] == pytest.approx(-0.25, abs=0.2)


def test_calibration_refuses_what_it_cannot_fit() -> None:
    with pytest.raises(DataError, match="method"):
        fit_calibration(torch.zeros(4, 2), torch.tensor([0, 1, 0, 1]), False, "isotonic")
    with pytest.raises(DataError, match="1 class"):
        fit_calibration(torch.zeros(4, 2), torch.tensor([0, 0, 0, 0]), False)


def test_reliability_bins_by_hand() -> None:
    y = np.array([0, 0, 1, 1])
    proba = np.array([[0.95, 0.05], [0.95, 0.05], [0.6, 0.4], [0.45, 0.55]])
    rel = reliability(y, proba, bins=10)
    # bin (0.9, 1.0]: conf 0.95, acc 1; bin (0.5, 0.6]: conf 0.6 and 0.55 -> two images, acc 0.5
    assert rel.counts[9] == 2 and rel.counts[5] == 2
    assert rel.ece == pytest.approx((2 * 0.05 + 2 * abs(0.5 - 0.575)) / 4)
    assert rel.mce == pytest.approx(0.075)


def test_positive_classes_and_thresholds() -> None:
    classes = ["covid19", "normal", "pneumonia"]
    assert parse_positive("not normal", classes) == ["covid19", "pneumonia"]
    assert parse_positive("pneumonia, covid19", classes) == ["covid19", "pneumonia"]
    with pytest.raises(DataError, match="did you mean 'pneumonia'"):
        parse_positive("pneumonie", classes)
    with pytest.raises(DataError, match="each side"):
        parse_positive("not covid19,normal,pneumonia", classes)
    score = np.array([0.1, 0.2, 0.35, 0.4, 0.6, 0.7, 0.8, 0.9])
    is_pos = np.array([0, 0, 1, 0, 1, 0, 1, 1], dtype=bool)
    # Target sensitivity 1.0 needs every positive called: the lowest positive score, 0.35.
    assert choose_threshold(score, is_pos, 1.0) == 0.35
    assert choose_threshold(score, is_pos, 0.75) == 0.6
    t = choose_threshold(score, is_pos)  # Youden's J: best sensitivity + specificity - 1
    r = rates_at(score, is_pos, t)
    j = r["sensitivity"] + r["specificity"] - 1
    assert all(
        j >= rates_at(score, is_pos, c)["sensitivity"] + rates_at(score, is_pos, c)["specificity"] - 1 - 1e-12
        for c in score
    )


def test_calibrate_stores_temperature_and_operating_point_used_by_predict(trained_bundle: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(trained_bundle, run)
    before = cnnlab.load(run)
    result = calibrate(run, "temperature", positive="not 0", target_sensitivity=0.95)
    card = json.loads((run / "model.json").read_text())
    assert card["temperature"] == pytest.approx(result.calibration.temperature) and card["temperature"] > 0
    assert card["calibration"]["method"] == "temperature" and card["calibration"]["fitted_on"] == "val"
    assert card["threshold"]["positive"] == [str(d) for d in range(1, 10)]
    assert result.operating_point.val["sensitivity"] >= 0.95
    assert result.scores["val"]["after"]["nll"] <= result.scores["val"]["before"]["nll"] + 1e-9
    assert result.scores["test"]["after"]["accuracy"] == result.scores["test"]["before"]["accuracy"]
    assert result.figure.stat().st_size > 5000
    after = cnnlab.load(run)
    digits = list(np.random.default_rng(0).integers(0, 256, (4, 28, 28), dtype=np.uint8))
    p0, p1 = before.predict_proba(digits), after.predict_proba(digits)
    assert np.array_equal(p0.argmax(1), p1.argmax(1)) and not np.allclose(p0, p1)
    assert all(p.decision in ("positive", "negative") for p in after.predict(digits))
    # The report now shows the calibrated figures and the operating point.
    metrics = cnnlab.evaluate(run, resamples=50).metrics
    assert "calibrated" in metrics["calibration"] and metrics["operating_point"]["point"]["positive"][0] == "1"


def test_target_sensitivity_without_positive_is_refused(trained_bundle: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(trained_bundle, run)
    with pytest.raises(DataError, match="--positive"):
        calibrate(run, "temperature", target_sensitivity=0.9)


def test_recalibrating_chooses_the_stored_operating_point_again(trained_bundle: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(trained_bundle, run)
    first = calibrate(run, "none", positive="3", target_sensitivity=0.9)  # on the raw probabilities
    second = calibrate(run, "temperature")  # new probabilities: the threshold is chosen again, same rule
    card = json.loads((run / "model.json").read_text())
    assert card["calibration"]["method"] == "temperature" and card["temperature"] > 0
    assert card["threshold"]["positive"] == ["3"] and card["threshold"]["target_sensitivity"] == 0.9
    assert second.operating_point is not None and second.operating_point.val["sensitivity"] >= 0.9
    assert card["threshold"]["value"] == pytest.approx(second.operating_point.value)
    assert first.operating_point.value != second.operating_point.value
