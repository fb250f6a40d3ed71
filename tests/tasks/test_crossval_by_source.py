"""Leave one source out (`cnnlab crossval --by-source`): the held-out source is never trained on,
a source whose classes occur nowhere else is skipped with the reason, and classes a fold never
saw are undefined rather than scored."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from cnnlab.bundle.card import read_card
from cnnlab.bundle.classifier import load
from cnnlab.bundle.data import bundle_data
from cnnlab.config import load_config
from cnnlab.data.resplit import source_holdout_splits
from cnnlab.data.sources import load_source
from cnnlab.errors import DataError
from cnnlab.tasks.by_source import leave_one_source_out, source_dir_name
from tests.conftest import folder_config
from tests.data.folders import write_image, write_metadata
from tests.tasks.helpers import run_cli

# a: well + sick; b: well + sick + odd (odd is only in b); c: rare only (c is skipped).
PLAN = {"a": {"well": 5, "sick": 5}, "b": {"well": 5, "sick": 5, "odd": 3}, "c": {"rare": 4}}


def three_source_folder(root: Path) -> Path:
    """Two images per patient, every patient at one source, no split column."""
    rows, seed = [], 0
    for source, classes in PLAN.items():
        for cls, patients in classes.items():
            for p in range(patients):
                for i in range(2):
                    seed += 1
                    name = f"{cls}/{source}_{p}_{i}.png"
                    write_image(root / name, seed, size=(16, 16), mode="L")
                    rows.append({"file": name, "label": cls, "patient_id": f"{source}-{cls}-{p}", "source": source})
    write_metadata(root, rows)
    return root


@pytest.fixture(scope="module")
def by_source(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple]:
    tmp = tmp_path_factory.mktemp("by-source")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CNNLAB_CACHE", str(tmp / "cache"))
        root = three_source_folder(tmp / "xr")
        cfg = folder_config(root, "bs")
        result = leave_one_source_out(cfg, tmp / "bs")
        yield cfg, result, tmp


def test_held_out_source_is_never_trained_on(by_source: tuple) -> None:
    _, result, tmp = by_source
    assert [r["source"] for r in result.rows] == ["a", "b"]
    for row in result.rows:
        source = row["source"]
        run = tmp / "bs" / source_dir_name(source)
        # The card records what each split drew from ...
        per_split = read_card(run).data["sources_per_split"]
        assert source not in per_split["train"] and source not in per_split["val"]
        assert set(per_split["test"]) == {source}
        assert set(per_split["train"]) == set(PLAN) - {source} and row["trained_on"] == " ".join(
            sorted(per_split["train"])
        )
        # ... and the data the bundle loads again agrees, with every image of the source in test.
        data = bundle_data(run, load(run))
        assert data.sources is not None and data.groups is not None
        assert source not in set(data.sources["train"].tolist()) | set(data.sources["val"].tolist())
        assert set(data.sources["test"].tolist()) == {source}
        assert row["images"] == len(data.splits["test"][1]) == 2 * sum(PLAN[source].values())
        train_patients = set(data.groups["train"].tolist())
        assert not train_patients & set(data.groups["val"].tolist())
        assert not train_patients & set(data.groups["test"].tolist())


def test_skipped_source_and_undefined_classes_are_reported(by_source: tuple) -> None:
    _, result, tmp = by_source
    assert result.skipped == [{"source": "c", "images": 8, "classes": ["rare"], "reason": "rare is only in c"}]
    saved = json.loads((tmp / "bs" / "by_source.json").read_text())
    assert saved["skipped"][0]["reason"] == "rare is only in c"
    assert saved["sources"] == {"a": 20, "b": 26, "c": 8}
    held = {r["source"]: r for r in saved["held_out"]}
    # b holds odd, which only b has: undefined, not a score; well and sick are scored within b.
    assert held["b"]["roc_auc odd"] is None and held["b"]["sensitivity odd"] is None
    assert "odd only in b" in held["b"]["note"]
    for source in ("a", "b"):
        assert all(0 <= held[source][f"roc_auc {c}"] <= 1 for c in ("well", "sick"))
        assert held[source]["roc_auc rare"] is None  # rare is in neither a nor b: no positives there
        aucs = [held[source][f"roc_auc {c}"] for c in ("well", "sick")]
        assert held[source]["macro_roc_auc"] == pytest.approx(np.mean(aucs))
        assert held[source]["val_images"] > 0
    with open(tmp / "bs" / "by_source.csv") as fh:
        table = {r["source"]: r for r in csv.DictReader(fh)}
    assert table["c"]["reason"] == "rare is only in c" and table["b"]["roc_auc odd"] == ""


def test_cli_by_source_reuses_the_finished_bundles(
    by_source: tuple, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg, _, tmp = by_source
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp / "cache"))
    recipe = tmp / "bs.yaml"
    recipe.write_text(cfg.to_yaml())
    code, out, err = run_cli(["crossval", str(recipe), "--by-source", "--out", str(tmp / "bs")], capsys, monkeypatch)
    assert code == 0, err
    assert "reusing the finished bundle" in out and "skipped c (8 images): rare is only in c" in out
    code, _, err = run_cli(["crossval", str(recipe), "--by-source", "--ensemble"], capsys, monkeypatch)
    assert code != 0 and "--by-source" in err


def test_source_holdout_splits_and_their_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    origins = np.array(["x"] * 6 + ["y"] * 12)
    labels = np.array([0, 1] * 9)
    groups = np.repeat(np.arange(9), 2).astype(str)
    parts = source_holdout_splits(labels, groups, origins, "x", 0.25, seed=0)
    assert parts["test"].tolist() == list(range(6))
    assert sorted(parts["train"].tolist() + parts["val"].tolist()) == list(range(6, 18)) and len(parts["val"])
    with pytest.raises(DataError, match="nothing is left to train on"):
        source_holdout_splits(labels, groups, np.array(["x"] * 18), "x", 0.25, seed=0)
    leaky = groups.copy()
    leaky[6] = leaky[0]  # one patient at both sources
    with pytest.raises(DataError, match="patient-level leakage"):
        source_holdout_splits(labels, leaky, origins, "x", 0.25, seed=0)
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / "cache"))
    root = three_source_folder(tmp_path / "xr")
    cfg = load_config(None, values={"data.source": f"folder:{root}", "data.holdout_source": "nowhere"}).data
    with pytest.raises(DataError, match="no image comes from it; the data's sources: a, b, c"):
        load_source(cfg, 16)
    with pytest.raises(DataError, match="needs images from two sources or more"):
        leave_one_source_out(load_config(None, values={"data.source": "mnist-sample"}), tmp_path / "none")


def test_kfold_out_of_fold_predictions_carry_their_source(by_source: tuple, monkeypatch: pytest.MonkeyPatch) -> None:
    from sklearn.metrics import roc_auc_score

    from cnnlab.tasks.crossval import crossval
    from cnnlab.tasks.out_of_fold import load_out_of_fold

    cfg, _, tmp = by_source
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp / "cache"))
    result = crossval(cfg, 3, tmp / "kfold")
    oof = load_out_of_fold(result.out_dir)
    assert oof.sources is not None and oof.groups is not None
    # every patient id starts with its source (three_source_folder)
    assert oof.sources.tolist() == [g.split("-")[0] for g in oof.groups.tolist()]
    with open(result.out_dir / "oof_predictions.csv") as fh:
        rows = {int(r["index"]): r for r in csv.DictReader(fh)}
    saved = json.loads((result.out_dir / "crossval.json").read_text())["by_source"]
    assert {s: r["images"] for s, r in saved["sources"].items()} == {"a": 20, "b": 26, "c": 8}
    a = [rows[int(i)] for i, s in zip(oof.index, oof.sources, strict=True) if s == "a"]
    expected = roc_auc_score([r["label"] == "sick" for r in a], [float(r["p_sick"]) for r in a])
    assert saved["sources"]["a"]["roc_auc"]["sick"] == pytest.approx(expected)
    assert set(saved["within_source"]) == {"a", "b"}  # c holds one class: no within-source AUC
