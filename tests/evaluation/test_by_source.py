"""Per-source metrics agree with scikit-learn on a synthetic set of three sources, one single-class."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import recall_score, roc_auc_score

from cnnlab.evaluation.by_source import NO_SOURCE, by_source_section, per_source_metrics
from cnnlab.evaluation.report import Table

CLASSES = ["covid19", "normal", "pneumonia"]


@pytest.fixture
def fixture() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """mhh: covid19 only; kermany and nih: normal and pneumonia; noisy probabilities."""
    rng = np.random.default_rng(3)
    y = np.r_[np.zeros(15), rng.integers(1, 3, 40), rng.integers(1, 3, 30)].astype(np.int64)
    sources = np.array(["mhh"] * 15 + ["kermany"] * 40 + ["nih"] * 30)
    logits = rng.normal(size=(len(y), 3)) + 1.5 * np.eye(3)[y]
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    groups = np.array([f"P{i // 2}" for i in range(len(y))])  # two images per patient
    return y, proba, sources, groups


def test_per_source_figures_match_sklearn(fixture) -> None:
    y, proba, sources, groups = fixture
    result = per_source_metrics(y, proba, CLASSES, sources, groups)
    assert list(result["sources"]) == ["kermany", "mhh", "nih"]
    for name, row in result["sources"].items():
        m = sources == name
        ys, ps = y[m], proba[m]
        assert row["images"] == m.sum()
        assert row["patients"] == len(set(groups[m]))
        assert row["counts"] == {c: int(np.sum(ys == i)) for i, c in enumerate(CLASSES)}
        assert row["accuracy"] == pytest.approx(np.mean(ps.argmax(axis=1) == ys))
        present = sorted(set(ys.tolist()))
        recalls = recall_score(ys, ps.argmax(axis=1), labels=present, average=None)
        assert row["sensitivity"] == pytest.approx({CLASSES[c]: r for c, r in zip(present, recalls, strict=True)})
        for c, cls in enumerate(CLASSES):
            if 0 < np.sum(ys == c) < len(ys):
                assert row["roc_auc"][cls] == pytest.approx(roc_auc_score(ys == c, ps[:, c]))
            else:
                assert row["roc_auc"][cls] is None  # absent class, or no negatives in the source
    mhh = result["sources"]["mhh"]
    assert mhh["within_source_auc"] is None and mhh["roc_auc"] == {c: None for c in CLASSES}
    assert list(mhh["sensitivity"]) == ["covid19"]
    kermany = result["sources"]["kermany"]
    m = sources == "kermany"
    expected = np.mean([roc_auc_score(y[m] == c, proba[m, c]) for c in (1, 2)])
    assert kermany["within_source_auc"] == pytest.approx(expected)
    assert set(result["within_source"]) == {"kermany", "nih"}  # mhh holds one class
    assert result["within_source"]["kermany"] == pytest.approx(expected)


def test_operating_point_per_source_and_missing_sources(fixture) -> None:
    y, proba, sources, _ = fixture
    sources = sources.copy()
    sources[:3] = ""  # rows without a source
    point = {"positive": ["covid19", "pneumonia"], "value": 0.5}
    result = per_source_metrics(y, proba, CLASSES, sources, threshold=point)
    assert NO_SOURCE in result["sources"] and result["sources"][NO_SOURCE]["images"] == 3
    assert all(row["patients"] is None for row in result["sources"].values())
    called = proba[:, [0, 2]].sum(axis=1) >= 0.5
    positive = np.isin(y, [0, 2])
    for name, row in result["sources"].items():
        m = sources == ("" if name == NO_SOURCE else name)
        op = row["operating_point"]
        if positive[m].all():  # mhh: covid19 only, so no specificity
            assert op["specificity"] is None
            assert op["sensitivity"] == pytest.approx(recall_score(positive[m], called[m]))
        else:
            assert op["sensitivity"] == pytest.approx(recall_score(positive[m], called[m]))
            assert op["specificity"] == pytest.approx(recall_score(~positive[m], ~called[m]))


def test_section_has_a_table_per_source(fixture) -> None:
    y, proba, sources, groups = fixture
    section = by_source_section(per_source_metrics(y, proba, CLASSES, sources, groups, {"positive": ["covid19"],
                                                                                        "value": 0.4}))  # fmt: skip
    tables = [b for b in section.blocks if isinstance(b, Table)]
    assert section.title == "By source" and [t.header[0] for t in tables] == [
        "source kermany",
        "source mhh",
        "source nih",
    ]
    assert "source shortcut" in section.blocks[0]
    mhh = dict(map(tuple, tables[1].rows))
    assert mhh["within-source macro ROC AUC"] == "n/a" and mhh["normal images"] == "0"
    assert mhh["specificity at the operating point"] == "n/a" and "patients" in mhh
