"""A model trained on a folder predicts raw files exactly as training evaluated them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import cnnlab
from cnnlab.config import load_config
from cnnlab.data.folder import scan_folder
from cnnlab.tasks.train import train
from tests.conftest import SHARED_DATA
from tests.data.folders import write_image


def test_crop_preprocessing_is_the_same_at_serving(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "shapes"
    for cls, seed in (("wide", 0), ("tall", 1)):
        for i in range(24):
            size = (48, 30) if cls == "wide" else (30, 48)
            write_image(root / cls / f"{i}.png", seed * 100 + i, size=size)
    values = {"data.source": f"folder:{root}", "model.name": "vgg_mini", "train.epochs": 1, "data.input_size": 24}
    train(load_config(None, values=values), tmp_path / "run")
    clf = cnnlab.load(tmp_path / "run")
    assert clf.preprocessing.crop is True and clf.preprocessing.pad_to == (24, 24)
    result = cnnlab.evaluate(tmp_path / "run")
    # The same test images, predicted from their files through the card's preprocessing:
    manifest = scan_folder(root)
    proba = clf.predict_proba([root / e.path for e in manifest.ok])
    data_pixels = clf.preprocess([root / e.path for e in manifest.ok])
    assert proba.shape == (48, 2) and data_pixels.shape == (48, 3, 24, 24)
    assert result.data_matches


def test_chest_xray_inspect_acceptance(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cnnlab.config import DataConfig
    from cnnlab.data.inspect import inspect_source

    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / "cache"))
    report = inspect_source(DataConfig(source=f"folder:{SHARED_DATA / 'chest-xray'}"), tmp_path / "out")
    assert report.classes == ["covid19", "normal", "pneumonia"]
    assert report.bad == [] and report.shared_patients == 0
    assert sum(report.patients.values()) == 302
    assert sum(sum(row.values()) for row in report.counts.values()) == 495
    assert report.grid.stat().st_size > 10_000
    assert np.all([row["train"] > 0 for row in report.counts.values()])
