"""Every recipe runs in --quick mode and answers its exercise with the numbers of that run."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cnnlab.errors import CnnlabError
from cnnlab.recipebook import REGISTRY, read_results, run_recipe
from cnnlab.recipebook.core import pct


def _figures(readme: Path) -> list[Path]:
    return [readme.parent / link for link in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", readme.read_text())]


@pytest.mark.parametrize("name", list(REGISTRY))
def test_every_recipe_answers_its_exercise_quickly(name: str, quick_answer) -> None:
    out = quick_answer(name)
    readme = (out / "README.md").read_text()
    results = read_results(out)
    recipe = REGISTRY[name]
    assert readme.startswith(f"# {recipe.title}\n")
    assert recipe.seed in readme and results["summary"] in readme
    assert results["quick"] is True and results["recipe"] == name
    figures = _figures(out / "README.md")
    assert figures, "every answer shows at least one figure"
    for figure in figures:
        assert figure.is_file() and figure.stat().st_size > 1000, figure
    html = (out / "README.html").read_text()
    assert html.count("data:image/png;base64,") == len(figures)
    if "test_accuracy" in results:  # a training recipe reports the accuracy it measured
        assert pct(results["test_accuracy"]) in readme
        assert (out / "run" / "model.safetensors").is_file()
    if "train_seconds" in results:
        assert f"{results['train_seconds']:.1f} s" in readme


def test_the_answer_changes_with_the_run(quick_answer) -> None:
    """A different seed trains a different network, and the README says what that run measured."""
    first, second = quick_answer("lenet5-mnist"), quick_answer("lenet5-mnist", seed=1)
    a, b = read_results(first), read_results(second)
    assert a["test_accuracy"] != b["test_accuracy"]
    text_a, text_b = (first / "README.md").read_text(), (second / "README.md").read_text()
    assert pct(a["test_accuracy"]) in text_a and pct(b["test_accuracy"]) in text_b
    assert pct(b["test_accuracy"]) not in text_a
    assert "seed 1" in text_b and "seed 0" in text_a


def test_xray_triage_reports_the_clinical_figures(quick_answer) -> None:
    out = quick_answer("xray-triage", folds=2)
    results, readme = read_results(out), (out / "README.md").read_text()
    assert results["crossval"]["folds"] == 2 and "## 3. Cross-validation and the ensemble" in readme
    assert f"{results['crossval']['mean']['macro_roc_auc']:.4f}" in readme
    assert (out / "crossval" / "oof_predictions.csv").is_file()
    assert results["deployed"] == "crossval/ensemble" and results["calibration"]["fitted_on"] == "out-of-fold"
    by_source = results["operating_point_fit"]["by_source"]  # the threshold's rates on each source's OOF images
    assert {"kermany", "nih"} <= set(by_source["sources"]) and "normal vs not normal, within" in readme
    test = results["test"]
    assert 0.0 <= test["macro_roc_auc"] <= 1.0 and len(test["macro_roc_auc_ci"]) == 2
    assert f"{test['sensitivity']:.4f}" in readme and f"{test['specificity']:.4f}" in readme
    assert pct(test["ece"]) in readme and set(test["by_source"]["sources"]) == {"kermany", "mhh", "nih"}
    # leave one source out: covid19 lives only in mhh, so mhh cannot be held out; the others are
    loso = results["loso"]
    assert [r["source"] for r in loso["rows"]] == ["kermany", "nih"] and loso["skipped"][0]["source"] == "mhh"
    assert all(r["source"] not in r["trained_on"].split() for r in loso["rows"])
    assert "## 6. Shortcuts" in readme and "within normal" in results["shortcuts"]["probe"]
    assert results["data"]["shared_patients"] == 0
    assert results["export"]["passed"] and (out / results["export"]["path"]).is_file()
    assert f"cnnlab serve {out.as_posix()}/crossval/ensemble" in readme and "cnnlab ui --api" in readme


def test_theory_recipes_match_the_known_figures(quick_answer) -> None:
    dense = read_results(quick_answer("cnn-vs-dense"))["models"]["lenet5"]
    assert (dense["parameters"], dense["dense_parameters"]) == (61_706, 12_552_734)
    fields = read_results(quick_answer("receptive-field"))["models"]
    assert fields["lenet5"]["field"] == 32 and fields["vgg16"]["field"] == 212
    grid = read_results(quick_answer("padding-stride"))
    assert grid["agree"] == grid["settings"] > 40


def test_recipe_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(CnnlabError, match=r"unknown recipe 'lenet5-mnst'.*lenet5-mnist"):
        run_recipe("lenet5-mnst", tmp_path / "a")
    with pytest.raises(CnnlabError, match="--folds applies to xray-triage"):
        run_recipe("lenet5-mnist", tmp_path / "b", folds=3)
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "keep.txt").write_text("mine")
    with pytest.raises(CnnlabError, match="already exists"):
        run_recipe("padding-stride", tmp_path / "c")
    assert (tmp_path / "c" / "keep.txt").read_text() == "mine"
