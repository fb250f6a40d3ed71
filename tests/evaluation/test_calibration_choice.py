"""Choosing a calibration by cross-fitted held-out log loss: synthetic logits, then a real bundle
fitted on a given set (as an ensemble's out-of-fold predictions would be)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from cnnlab.bundle.classifier import load
from cnnlab.bundle.data import bundle_data, split_outputs
from cnnlab.errors import DataError
from cnnlab.evaluation.calibration import choose_calibration, cross_fit_parts, ece_interval, reliability
from cnnlab.models.outputs import probabilities
from cnnlab.tasks.calibrate import FitSet, calibrate


def calibrated_logits(n: int = 1000, k: int = 4, seed: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    """Logits z with labels drawn from softmax(z): already perfectly calibrated."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, k, generator=g) * 1.5
    y = torch.multinomial(z.softmax(1), 1, generator=g).squeeze(1)
    return z, y.numpy()


def test_auto_picks_temperature_for_overconfident_logits() -> None:
    z, y = calibrated_logits()
    choice = choose_calibration(z * 4, y, binary=False)
    assert choice.method == "temperature" and choice.calibration.temperature == pytest.approx(4.0, rel=0.15)
    assert choice.folds == 5 and choice.unit == "image" and choice.images == len(y)
    nll = choice.heldout_nll
    assert set(nll) == {"none", "temperature", "vector"} and nll["temperature"] < nll["none"] - 0.1
    assert choice.to_card()["chosen"] == "temperature" and choice.to_card()["requested"] == "auto"


def test_auto_keeps_calibrated_logits_as_they_are() -> None:
    z, y = calibrated_logits(seed=1)
    choice = choose_calibration(z, y, binary=False)
    assert choice.method == "none" and choice.calibration.method == "none"
    assert choice.calibration.temperature is None and choice.calibration.scale is None
    probs = choice.calibration.probabilities(z, binary=False)
    assert torch.allclose(probs, probabilities(z, False))  # "none" is the network's own probabilities


def test_an_explicit_method_that_makes_heldout_log_loss_worse_is_refused() -> None:
    z, y = calibrated_logits(n=300, seed=2)
    with pytest.raises(DataError, match="vector scaling would make held-out log loss worse") as info:
        choose_calibration(z, y, binary=False, method="vector")
    message = str(info.value)
    assert "\n" not in message and "5-fold cross-fitting on 300 validation images" in message
    assert "use --method auto or none" in message
    # An explicit method that helps is kept, with every candidate's score.
    kept = choose_calibration(z * 3, y, binary=False, method="temperature")
    assert kept.method == "temperature" and kept.heldout_nll["temperature"] < kept.heldout_nll["none"]


def test_binary_logits_choose_platt_or_temperature() -> None:
    g = torch.Generator().manual_seed(3)
    z = torch.randn(800, 1, generator=g) * 2
    y = torch.bernoulli(torch.sigmoid(z.squeeze(1)), generator=g).long().numpy()
    choice = choose_calibration(z * 3 + 1.5, y, binary=True)  # over-confident and shifted: only Platt fixes both
    assert choice.method == "vector"
    assert choice.heldout_nll["vector"] < choice.heldout_nll["temperature"] < choice.heldout_nll["none"]


def test_groups_keep_each_patient_in_one_part() -> None:
    z, y = calibrated_logits(n=600, seed=4)
    patients = np.repeat(np.arange(100), 6)  # six images per patient, consecutive
    parts = cross_fit_parts(y, patients, folds=5, seed=0)
    assert isinstance(parts, list) and len(parts) == 5
    assert sorted(np.concatenate(parts).tolist()) == list(range(600))  # each image held out exactly once
    part_of = np.empty(600, dtype=int)
    for i, held in enumerate(parts):
        part_of[held] = i
    assert all(len(set(part_of[patients == p])) == 1 for p in range(100))
    choice = choose_calibration(z * 4, y, binary=False, groups=patients)
    assert choice.unit == "patient" and "by patient" in choice.reason


def test_tiny_sets_use_fewer_parts_or_stay_uncalibrated() -> None:
    z, y = calibrated_logits(n=6, seed=5)
    y = np.array([0, 0, 0, 1, 1, 1])
    few = choose_calibration(z, y, binary=False, folds=5)
    assert few.folds == 3  # no more parts than the largest class has images
    patients = np.array(["a", "a", "a", "b", "b", "b"])  # two patients, one class each: no training side holds two
    alone = choose_calibration(z, y, binary=False, groups=patients)
    assert alone.method == "none" and alone.folds == 0 and "kept uncalibrated" in alone.reason
    assert set(alone.heldout_nll.values()) == {None}
    with pytest.raises(DataError, match="cannot check temperature scaling"):
        choose_calibration(z, y, binary=False, groups=patients, method="temperature")
    single = choose_calibration(z[:1], y[:1], binary=False)
    assert single.method == "none" and "one class" in single.reason
    with pytest.raises(DataError, match="method must be one of"):
        choose_calibration(z, y, binary=False, method="isotonic")


def test_ece_interval_contains_the_point_ece() -> None:
    z, y = calibrated_logits(n=800, seed=6)
    for logits in (z, z * 3):
        proba = probabilities(logits, False).numpy()
        ece = reliability(y, proba).ece
        low, high = ece_interval(y, proba, resamples=300)
        assert low <= ece <= high and high - low < 0.2
        patients = np.arange(800) // 4
        by_patient = ece_interval(y, proba, patients, resamples=300)
        assert by_patient[0] <= ece <= by_patient[1]
    assert ece_interval(y, proba, resamples=0) == (None, None)


def test_calibrate_fits_on_a_given_set_and_records_it(trained_bundle: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(trained_bundle, run)
    clf = load(run)
    # Stand-in for a k-fold run's out-of-fold predictions: the test split's logits, five images a patient.
    test = split_outputs(clf, bundle_data(run, clf), "test")
    patients = np.arange(len(test.labels)) // 5
    fit = FitSet(test.logits, test.labels, patients, "out-of-fold")
    result = calibrate(run, positive="not 0", target_sensitivity=0.95, fit_on=fit, resamples=200)
    card = json.loads((run / "model.json").read_text())
    cal, choice = card["calibration"], card["calibration"]["choice"]
    assert cal["fitted_on"] == "out-of-fold" and result.fitted_on == "out-of-fold"
    assert cal["images"] == len(test.labels) and choice["requested"] == "auto"
    assert choice["chosen"] == cal["method"] == result.choice.method and choice["unit"] == "patient"
    nll = choice["heldout_nll"]
    assert set(nll) == {"none", "temperature", "vector"} and nll[cal["method"]] <= nll["none"]
    for split in ("val", "test"):  # still reported before and after, with ECE intervals
        for when in ("before", "after"):
            s = cal["scores"][split][when]
            assert 0 <= s["ece_ci"][0] <= s["ece_ci"][1] <= 1  # (a small ECE may sit below it: see ece_interval)
    point = card["threshold"]
    assert point["chosen_on"] == "out-of-fold" and point["val"]["sensitivity"] >= 0.95
    low, high = point["fit_intervals"]["specificity"]
    assert low <= point["val"]["specificity"] <= high
    assert result.operating_point.fit_intervals == point["fit_intervals"]
    assert result.operating_point.test_intervals is not None


def test_calibrate_never_stores_a_calibration_worse_on_heldout_data(trained_bundle: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(trained_bundle, run)
    before = (run / "model.json").read_bytes()
    try:
        calibrate(run, "vector", resamples=0)
    except DataError as exc:
        assert "worse" in str(exc) and (run / "model.json").read_bytes() == before  # the card is untouched
    else:
        nll = json.loads((run / "model.json").read_text())["calibration"]["choice"]["heldout_nll"]
        assert nll["vector"] <= nll["none"]
    with pytest.raises(DataError, match=r"logits must be \(N, 10\)"):
        calibrate(run, fit_on=FitSet(torch.zeros(4, 3), np.zeros(4, dtype=int), None, "out-of-fold"))
