"""`cnnlab evaluate` writes a complete report; the HTML opens offline in a real browser."""

from __future__ import annotations

import json
import re
from pathlib import Path

import cnnlab
from tests.conftest import ARTIFACTS

SECTIONS = [
    "Run",
    "Data",
    "Training",
    "Results on test",
    "Per class (one class vs the rest)",
    "Calibration",
    "Operating point",
    "Most confidently wrong",
]


def test_evaluate_writes_metrics_markdown_and_html(trained_bundle: Path, tmp_path: Path) -> None:
    result = cnnlab.evaluate(trained_bundle, out=tmp_path / "eval", resamples=200)
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["accuracy"] == result.accuracy and 0.5 < metrics["accuracy"] <= 1
    low, high = metrics["intervals"]["accuracy"]
    assert low <= metrics["accuracy"] <= high and metrics["intervals"]["unit"] == "image"
    assert set(metrics["per_class"]["3"]) >= {"precision", "recall", "specificity", "f1", "npv", "roc_auc", "pr_auc"}
    assert len(metrics["confusion_matrix_normalised"]) == 10
    for png in ("confusion_matrix", "roc_pr", "reliability", "confident_errors"):
        assert (tmp_path / "eval" / f"{png}.png").stat().st_size > 5000
    md = (tmp_path / "eval" / "report.md").read_text()
    assert all(f"## {s}" in md for s in SECTIONS)
    # The numbers in the report are this run's numbers.
    assert f"{metrics['accuracy']:.4f} [{low:.3f}, {high:.3f}]" in md
    html = (tmp_path / "eval" / "report.html").read_text()
    assert "<script" not in html and not re.search(r'src="(?!data:)', html)  # nothing to fetch


def test_report_html_renders_every_section_in_chromium(trained_bundle: Path, tmp_path: Path, browser) -> None:
    cnnlab.evaluate(trained_bundle, out=tmp_path / "eval", resamples=100)
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.goto((tmp_path / "eval" / "report.html").as_uri())
    headings = page.locator("h2").all_inner_texts()
    assert headings == SECTIONS
    widths = page.evaluate("[...document.images].map(i => i.complete ? i.naturalWidth : 0)")
    assert len(widths) == 5 and all(w > 300 for w in widths)  # curves, confusion, ROC/PR, reliability, errors
    assert page.locator("table").count() >= 6
    page.screenshot(path=str(ARTIFACTS / "evaluation-report.png"), full_page=True)
    assert (ARTIFACTS / "evaluation-report.png").stat().st_size > 50_000
