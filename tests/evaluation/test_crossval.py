"""K-fold cross-validation: folds by patient, one bundle per fold, out-of-fold predictions."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

import cnnlab
from cnnlab.config import load_config
from cnnlab.data.splits import fold_splits
from cnnlab.errors import DataError
from cnnlab.tasks.crossval import crossval
from tests.conftest import folder_config
from tests.data.folders import write_image, write_metadata


def patient_folder(root: Path, patients: int = 24, per_patient: int = 3) -> Path:
    """Two classes; each patient has several images of one class, in no split."""
    rows = []
    for p in range(patients):
        cls = "sick" if p % 2 else "well"
        for i in range(per_patient):
            name = f"{cls}/p{p:02d}_{i}.png"
            write_image(root / name, p * 10 + i, size=(16, 16), mode="L")
            rows.append({"file": name, "label": cls, "patient_id": f"P{p:02d}"})
    write_metadata(root, rows)
    return root


def test_fold_splits_partition_the_data_without_sharing_a_patient() -> None:
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(40), 3)
    labels = np.repeat(rng.integers(0, 2, 40), 3)
    tests = []
    for k in range(5):
        parts = fold_splits(labels, groups, 5, k, 0.2, seed=0)
        all_idx = np.concatenate(list(parts.values()))
        assert sorted(all_idx.tolist()) == list(range(120))  # each image in exactly one part
        sets = {name: set(groups[idx].tolist()) for name, idx in parts.items()}
        assert (
            not (sets["train"] & sets["val"])
            and not (sets["train"] & sets["test"])
            and not (sets["val"] & sets["test"])
        )
        tests.append(set(groups[parts["test"]].tolist()))
    assert set().union(*tests) == set(range(40)) and sum(len(t) for t in tests) == 40
    with pytest.raises(DataError, match="3 patients into 5 folds"):
        fold_splits(labels[:9], groups[:9], 5, 0, 0.2, seed=0)
    with pytest.raises(DataError, match="val_fraction"):
        fold_splits(labels, groups, 5, 0, 0.0, seed=0)


def test_a_second_fold_joins_the_test_part_and_leaves_training() -> None:
    rng = np.random.default_rng(1)
    groups = np.repeat(np.arange(40), 3)
    labels = np.repeat(rng.integers(0, 2, 40), 3)
    one = [fold_splits(labels, groups, 5, k, 0.2, seed=0)["test"] for k in range(5)]
    pair = fold_splits(labels, groups, 5, 1, 0.2, seed=0, second=3)
    assert pair["test"].tolist() == sorted([*one[1], *one[3]])
    assert sorted(np.concatenate(list(pair.values())).tolist()) == list(range(120))
    trained = set(groups[np.concatenate([pair["train"], pair["val"]])].tolist())
    assert not trained & set(groups[pair["test"]].tolist())
    for bad in (1, 5, -1):
        with pytest.raises(DataError, match="second_fold must be another fold"):
            fold_splits(labels, groups, 5, 1, 0.2, seed=0, second=bad)
    with pytest.raises(DataError, match="folds >= 3"):
        fold_splits(labels, groups, 2, 0, 0.2, seed=0, second=1)


def test_crossval_by_patient_writes_bundles_table_and_out_of_fold_predictions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / "cache"))
    root = patient_folder(tmp_path / "xr")
    cfg = folder_config(root, "cv")
    result = crossval(cfg, 3, tmp_path / "cv", group_by="patient_id")
    assert result.unit == "patient" and len(result.rows) == 3
    for k in (1, 2, 3):
        assert (tmp_path / "cv" / f"fold{k}" / "model.json").is_file()
    with open(tmp_path / "cv" / "oof_predictions.csv") as fh:
        oof = list(csv.DictReader(fh))
    assert sorted(int(r["index"]) for r in oof) == list(range(72))  # every image predicted once, out of fold
    fold_of_patient: dict[str, set[str]] = {}
    for r in oof:
        fold_of_patient.setdefault(r["group"], set()).add(r["fold"])
    assert all(len(f) == 1 for f in fold_of_patient.values())  # no patient in two folds' test parts
    assert all(abs(sum(float(r[f"p_{c}"]) for c in ("sick", "well")) - 1) < 1e-5 for r in oof)
    with open(tmp_path / "cv" / "crossval.csv") as fh:
        table = list(csv.DictReader(fh))
    assert [r["fold"] for r in table] == ["1", "2", "3", "mean", "std"]
    accs = [float(r["accuracy"]) for r in table[:3]]
    assert float(table[3]["accuracy"]) == pytest.approx(np.mean(accs), abs=1e-5)
    # A fold bundle evaluates on exactly its own test part (the fold is in its config).
    fold1 = cnnlab.evaluate(tmp_path / "cv" / "fold1", resamples=0)
    assert fold1.metrics["images"] == result.rows[0]["images"] and fold1.data_matches
    # Running again reuses the finished folds instead of training them again.
    again = crossval(cfg, 3, tmp_path / "cv", group_by="patient_id")
    assert [r["accuracy"] for r in again.rows] == [r["accuracy"] for r in result.rows]


def test_group_by_needs_patient_ids(tmp_path: Path) -> None:
    cfg = load_config(None, values={"data.source": "mnist-sample"})
    with pytest.raises(DataError, match="no patient ids"):
        crossval(cfg, 3, tmp_path / "cv", group_by="patient_id")
    with pytest.raises(DataError, match="patient_id or group"):
        crossval(cfg, 3, tmp_path / "cv", group_by="study")
