"""`cnnlab evaluate RUN --data-dir FOLDER` scores a bundle on any class folder whose classes are
among its own (issue 18), and reports per-source metrics wherever images carry a source."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

import cnnlab
from cnnlab.bundle.data import ALL, external_data, split_outputs
from cnnlab.config import load_config
from cnnlab.errors import DataError
from cnnlab.tasks.evaluate import evaluate
from cnnlab.tasks.train import train
from tests.conftest import SHARED_DATA
from tests.data.folders import write_image, write_metadata
from tests.tasks.helpers import run_cli

CLASSES = ("covid19", "normal", "pneumonia")


def xray_like_folder(root: Path, patients: int, seed: int, classes: tuple[str, ...] = CLASSES) -> Path:
    """`patients` patients per class, two 16 px grey images each, in no split; covid19 only from
    mhh, the other classes from kermany and nih in turn (metadata.csv: patient_id, source)."""
    rows = []
    for c, cls in enumerate(classes):
        for p in range(patients):
            source = "mhh" if cls == "covid19" else ("kermany", "nih")[p % 2]
            for i in range(2):
                name = f"{cls}/p{p:02d}_{i}.png"
                write_image(root / name, seed * 10_000 + c * 1000 + p * 10 + i, size=(16, 16), mode="L")
                rows.append({"file": name, "label": cls, "patient_id": f"{cls}-{p}", "source": source})
    write_metadata(root, rows)
    return root


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 16 px vgg_mini trained for one epoch on a three-class folder with sources (a few seconds)."""
    base = tmp_path_factory.mktemp("external")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CNNLAB_CACHE", str(base / "cache"))
        root = xray_like_folder(base / "train-data", patients=8, seed=0)
        values = {"name": "xr", "data.source": f"folder:{root}", "data.input_size": 16, "model.name": "vgg_mini",
                  "train.epochs": 1, "train.batch_size": 16}  # fmt: skip
        train(load_config(None, values=values), base / "run")
    return base / "run"


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / "cache"))


def test_a_folder_without_splits_is_scored_whole_with_metrics_by_source(bundle: Path, tmp_path: Path) -> None:
    other = xray_like_folder(tmp_path / "other-hospital", patients=5, seed=7)
    result = evaluate(bundle, data_dir=str(other), out=tmp_path / "ev", resamples=20)
    m = result.metrics
    assert result.split == ALL and result.external and not result.data_matches
    assert m["images"] == 30 and m["intervals"]["unit"] == "patient"
    assert m["external_data"] == {"folder": str(other.resolve()), "images": 30, "also_in_training_folder": 0}
    # The figures are those of the folder's images, read as the model reads any image file:
    clf = cnnlab.load(bundle)
    data = external_data(clf, other)
    out = split_outputs(clf, data, ALL)
    proba = clf.calibrated(out.logits).numpy()
    files = [other / e.path for e in data.manifest.ok]
    np.testing.assert_allclose(proba, clf.predict_proba(files), atol=1e-5)
    by_source = m["by_source"]
    assert set(by_source["sources"]) == {"mhh", "kermany", "nih"} and set(by_source["within_source"]) == {
        "kermany",
        "nih",
    }
    for name, row in by_source["sources"].items():
        mask = out.sources == name
        assert row["images"] == mask.sum() and row["patients"] == len(set(out.groups[mask]))
        for c, cls in enumerate(clf.classes):
            positive = out.labels[mask] == c
            expected = roc_auc_score(positive, proba[mask, c]) if 0 < positive.sum() < mask.sum() else None
            assert row["roc_auc"][cls] == (pytest.approx(expected) if expected is not None else None)
    assert by_source["sources"]["mhh"]["within_source_auc"] is None
    saved = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert saved["by_source"] == by_source and saved["split"] == ALL
    report = (tmp_path / "ev" / "report.md").read_text()
    assert f"all 30 images of {other.resolve()}" in report and "## By source" in report
    assert "source shortcut" in report and "| source kermany | value |" in report
    assert "External data: not the data this model was trained on" in report and "differs from" not in report


def test_a_subset_of_the_classes_works_and_the_absent_ones_are_na(bundle: Path, tmp_path: Path) -> None:
    part = xray_like_folder(tmp_path / "part", patients=3, seed=3, classes=("normal", "pneumonia"))
    shutil.rmtree(part / "normal")  # one class only; its metadata.csv rows now name missing files
    (part / "metadata.csv").write_text(
        "\n".join(line for line in (part / "metadata.csv").read_text().splitlines() if ",normal," not in line) + "\n"
    )
    result = evaluate(bundle, data_dir=str(part), out=tmp_path / "ev", resamples=0)
    m = result.metrics
    assert m["images"] == 6 and result.confusion[2].sum() == 6 and result.confusion[:2].sum() == 0
    assert m["per_class"]["covid19"]["recall"] is None and m["per_class"]["normal"]["roc_auc"] is None
    assert m["per_class"]["pneumonia"]["roc_auc"] is None  # no negatives: undefined, not 0 or 1
    report = (tmp_path / "ev" / "report.md").read_text()
    assert "| covid19 | 0 | " in report and "n/a" in report


def test_an_unknown_class_names_it_and_the_models_classes(bundle: Path, tmp_path: Path) -> None:
    odd = xray_like_folder(tmp_path / "odd", patients=2, seed=4, classes=("normal", "tuberculosis"))
    with pytest.raises(DataError, match=r"'tuberculosis' is not among the model's classes \(covid19, normal, pneu"):
        evaluate(bundle, data_dir=str(odd), out=tmp_path / "ev", resamples=0)
    xray_like_folder(tmp_path / "ok", patients=1, seed=5, classes=("normal",))
    with pytest.raises(DataError, match="no 'tset' split; choose one of train, val, test, all"):
        evaluate(bundle, split="tset", data_dir=str(odd.parent / "ok"), out=tmp_path / "ev", resamples=0)


def test_a_folder_with_splits_is_scored_on_the_chosen_one(bundle: Path, tmp_path: Path) -> None:
    root = tmp_path / "split"
    for split, n in (("train", 4), ("test", 2)):
        for c, cls in enumerate(CLASSES):
            for i in range(n):
                write_image(root / split / cls / f"{i}.png", 100 * c + 10 * i + (split == "test"), (16, 16), "L")
    result = evaluate(bundle, data_dir=str(root), out=tmp_path / "ev", resamples=0)
    assert result.split == "test" and result.metrics["images"] == 6 and "by_source" not in result.metrics
    assert evaluate(bundle, split=ALL, data_dir=str(root), out=tmp_path / "ev", resamples=0).metrics["images"] == 18
    with pytest.raises(DataError, match="has no val images; it has train, test"):
        evaluate(bundle, split="val", data_dir=str(root), out=tmp_path / "ev", resamples=0)


def test_the_bundles_own_data_moved_elsewhere_is_split_as_in_training(bundle: Path, tmp_path: Path) -> None:
    card = json.loads((bundle / "model.json").read_text())
    moved = shutil.copytree(card["data"]["location"], tmp_path / "moved")
    result = evaluate(bundle, data_dir=str(moved), out=tmp_path / "ev", resamples=0)
    assert result.split == "test" and not result.external and result.data_matches
    assert result.metrics["images"] == card["data"]["splits"]["test"]
    assert set(result.metrics["by_source"]["sources"]) <= {"mhh", "kermany", "nih"}
    with pytest.raises(DataError, match="no 'all' split"):
        evaluate(bundle, split=ALL, out=tmp_path / "ev", resamples=0)


def test_cli_scores_an_external_folder(bundle: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    run = tmp_path / "run"
    shutil.copytree(bundle, run, ignore=shutil.ignore_patterns("checkpoints", "eval"))
    card = json.loads((run / "model.json").read_text())
    card["threshold"] = {"positive": ["covid19", "pneumonia"], "value": 0.5, "method": "youden", "val": {}}
    (run / "model.json").write_text(json.dumps(card))
    other = xray_like_folder(tmp_path / "other", patients=3, seed=9)
    args = ["evaluate", str(run), "--data-dir", str(other), "--bootstrap", "0"]
    code, out, err = run_cli(args, capsys, monkeypatch)
    text = " ".join(out.split())
    assert code == 0, err
    assert "all accuracy" in text and "external data: not the data this model was trained on" in text
    assert "by source" in text and "kermany" in text
    report = (run / "eval-other" / "report.md").read_text()
    assert "## By source" in report and "sensitivity at the operating point" in report
    assert (run / "eval-other" / "report.html").is_file()
    code, out, _ = run_cli(["evaluate", "--help"], capsys, monkeypatch)
    assert "--data-dir ~/xrays-other-hospital" in " ".join(out.split()) and "all" in out


def test_real_chest_xrays_by_source(bundle: Path, tmp_path: Path) -> None:
    result = evaluate(bundle, split=ALL, data_dir=str(SHARED_DATA / "chest-xray"), out=tmp_path / "ev", resamples=0)
    by_source = result.metrics["by_source"]
    assert result.metrics["images"] == 495 and result.external
    assert set(by_source["sources"]) == {"mhh", "kermany", "nih"}
    assert by_source["sources"]["mhh"]["within_source_auc"] is None
    assert set(by_source["within_source"]) == {"kermany", "nih"}
    assert all(value is not None for value in by_source["within_source"].values())


def test_external_images_that_are_training_images_are_counted_and_the_report_goes_beside(
    bundle: Path, tmp_path: Path
) -> None:
    other = xray_like_folder(tmp_path / "other-hospital", patients=5, seed=7)
    trained_from = Path(cnnlab.load(bundle).card.data["location"])
    copied = next(trained_from.rglob("*.png"))
    shutil.copyfile(copied, other / copied.parent.name / "copied.png")
    result = evaluate(bundle, data_dir=str(other), resamples=0)
    assert result.metrics["external_data"]["also_in_training_folder"] == 1
    assert result.out_dir == bundle / "eval-other-hospital"  # the bundle's own eval/ is left as it was
    assert (
        "byte-identical to images in the folder the model was trained from"
        in (result.out_dir / "report.md").read_text()
    )
