"""A bundle finds the data it was trained on from any working directory, and exports without any."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from cnnlab.errors import DataError
from cnnlab.tasks.evaluate import evaluate
from cnnlab.tasks.export import export_model
from cnnlab.tasks.train import train
from tests.conftest import SHARED_DATA, tiny_config


@pytest.fixture
def trained_elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A bundle trained on MNIST read from a relative --data-dir, as a user in their project folder does."""
    project = tmp_path / "project"
    shutil.copytree(SHARED_DATA / "mnist", project / "my-mnist", ignore=shutil.ignore_patterns("README.md"))
    monkeypatch.chdir(project)
    values = {"data.source": "mnist", "data.data_dir": "my-mnist", "data.limit_eval": 300, "train.epochs": 1}
    train(tiny_config(**values), project / "run")
    monkeypatch.chdir(tmp_path)  # somewhere else: the relative data_dir in config.yaml now points nowhere
    return project / "run"


def test_evaluate_from_another_directory_reads_the_folder_the_card_recorded(trained_elsewhere: Path) -> None:
    card = json.loads((trained_elsewhere / "model.json").read_text())
    assert card["data"]["location"] == str((trained_elsewhere.parent / "my-mnist").resolve())
    result = evaluate(trained_elsewhere, resamples=0)
    assert result.data_matches and 0 < result.accuracy <= 1


def test_data_dir_still_overrides_and_export_needs_no_data(trained_elsewhere: Path) -> None:
    shutil.rmtree(trained_elsewhere.parent / "my-mnist")
    with pytest.raises(DataError, match="not found"):
        evaluate(trained_elsewhere, data_dir=str(trained_elsewhere.parent / "nowhere"), resamples=0)
    path, parity = export_model(trained_elsewhere, samples=0)
    assert path.is_file() and parity.passed and parity.samples > 0
    assert json.loads((trained_elsewhere / "export" / "parity.json").read_text())["inputs"].endswith("random images")
    with pytest.raises(DataError, match="--samples must be 0 or more"):
        export_model(trained_elsewhere, samples=-1)
