"""Bundles and `cnnlab.load`: the card alone rebuilds the model and its preprocessing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import cnnlab
from cnnlab import bundle
from cnnlab.config import DataConfig, load_config
from cnnlab.data.sources import load_source
from cnnlab.errors import BundleError


def test_bundle_holds_every_file(trained_bundle: Path) -> None:
    for name in (bundle.WEIGHTS, bundle.CARD, bundle.CONFIG, bundle.HISTORY, bundle.CURVES):
        assert (trained_bundle / name).is_file(), name
    assert not (trained_bundle / bundle.CHECKPOINTS).exists()  # a finished bundle cannot be resumed
    card = json.loads((trained_bundle / bundle.CARD).read_text())
    assert card["architecture"] == "lenet5" and card["classes"] == [str(d) for d in range(10)]
    assert card["preprocessing"]["resize_to"] == [28, 28] and card["preprocessing"]["pad_to"] == [32, 32]
    assert len(card["weights_sha256"]) == 64 and len(card["data"]["sha256"]) == 64
    assert card["training"]["train_seconds"] > 0 and card["training"]["fit"]["verdict"]
    assert 0.8 < card["metrics"]["test_accuracy"] <= 1
    assert load_config(str(trained_bundle / bundle.CONFIG)).data.limit_train == 1500
    with Image.open(trained_bundle / bundle.CURVES) as im:
        assert im.width > 800


def test_loaded_classifier_reproduces_the_test_accuracy_from_raw_images(trained_bundle: Path) -> None:
    # Serving sees raw 28x28 digits; the card's preprocessing must turn them into what training saw.
    clf = cnnlab.load(trained_bundle)
    x, y = load_source(DataConfig(source="mnist-sample")).splits["test"]
    raw = [img[0] for img in x.numpy()]  # HxW uint8 arrays, as a user would pass them
    predictions = clf.predict(raw)
    accuracy = np.mean([p.index == label for p, label in zip(predictions, y.tolist(), strict=True)])
    assert accuracy == pytest.approx(clf.card.metrics["test_accuracy"], abs=1e-9)


def test_predict_accepts_paths_pil_and_arrays(trained_bundle: Path, tmp_path: Path) -> None:
    clf = cnnlab.load(trained_bundle)
    x, _ = load_source(DataConfig(source="mnist-sample")).splits["test"]
    digit = x[0, 0].numpy()
    path = tmp_path / "digit.png"
    Image.fromarray(digit).save(path)
    rgb = Image.fromarray(digit).convert("RGB")
    probs = clf.predict_proba([path, str(path), Image.open(path), digit, rgb, digit[:, :, None]])
    assert probs.shape == (6, 10)
    assert np.allclose(probs.sum(axis=1), 1, atol=1e-5)
    assert np.allclose(probs, probs[0], atol=1e-6)
    single = clf.predict(path)
    assert len(single) == 1 and single[0].label == clf.classes[single[0].index]
    assert single[0].confidence == pytest.approx(max(single[0].probs.values()))
    assert clf.predict_proba(np.stack([digit, digit])).shape == (2, 10)


def test_tampered_weights_are_refused(trained_bundle: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(trained_bundle, copy)
    data = bytearray((copy / bundle.WEIGHTS).read_bytes())
    data[-1] ^= 0xFF
    (copy / bundle.WEIGHTS).write_bytes(bytes(data))
    with pytest.raises(BundleError, match="sha256 differs"):
        cnnlab.load(copy)


def test_not_a_bundle(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="no run directory"):
        cnnlab.load(tmp_path / "missing")
    with pytest.raises(BundleError, match="not a cnnlab bundle"):
        cnnlab.load(tmp_path)
    (tmp_path / bundle.CARD).write_text("{nope")
    with pytest.raises(BundleError, match="not valid JSON"):
        cnnlab.load(tmp_path)


def test_evaluate_writes_metrics_and_confusion_matrix(trained_bundle: Path, tmp_path: Path) -> None:
    result = cnnlab.evaluate(trained_bundle, out=tmp_path / "eval")
    assert result.accuracy == pytest.approx(cnnlab.load(trained_bundle).card.metrics["test_accuracy"])
    assert result.data_matches
    assert result.confusion.sum() == 1000 and result.confusion.shape == (10, 10)
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["accuracy"] == pytest.approx(result.accuracy)
    assert (tmp_path / "eval" / "confusion_matrix.png").stat().st_size > 1000
