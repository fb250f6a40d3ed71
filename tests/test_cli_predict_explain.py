"""`cnnlab predict` and `cnnlab explain` (issue 17): the triage decision is shown in every format,
the exit code says whether every input, some or none were read, and a long explain run says how
far it is when nobody watches a terminal."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from tests.tasks.helpers import digit_files, private_copy, run_cli

POINT = {"positive": ["7", "9"], "value": 0.3}


@pytest.fixture
def triage_run(trained_bundle: Path, tmp_path: Path) -> Path:
    return private_copy(trained_bundle, tmp_path, threshold=POINT)


def test_predict_csv_and_table_show_the_decision_and_the_operating_point(triage_run, tmp_path, capsys, monkeypatch):
    files = digit_files(tmp_path / "imgs", 4)
    code, out, _ = run_cli(["predict", str(triage_run), *map(str, files), "--format", "csv"], capsys, monkeypatch)
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == 4
    for row in rows:
        assert row["decision"] in ("positive", "negative")
        assert row["positive"] == "7;9" and float(row["threshold"]) == pytest.approx(0.3)
        p = float(row["p_positive"])
        assert row["decision"] == ("positive" if p >= 0.3 else "negative")
    code, out, _ = run_cli(["predict", str(triage_run), *map(str, files)], capsys, monkeypatch)
    assert code == 0 and "decision" in out and ("positive" in out.split("decision", 1)[1])
    assert "7, 9" in out and "0.3000" in out  # the operating point is stated beside the table
    code, out, _ = run_cli(["predict", str(triage_run), str(files[0]), "--format", "json"], capsys, monkeypatch)
    row = json.loads(out)[0]
    assert row["decision"] in ("positive", "negative") and row["threshold"] == POINT


def test_predict_without_an_operating_point_has_empty_decision_columns(trained_bundle, tmp_path, capsys, monkeypatch):
    files = digit_files(tmp_path / "imgs", 2)
    code, out, _ = run_cli(["predict", str(trained_bundle), *map(str, files), "--format", "csv"], capsys, monkeypatch)
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and len(rows) == 2 and all(r["decision"] == "" and r["threshold"] == "" for r in rows)
    code, out, _ = run_cli(["predict", str(trained_bundle), *map(str, files)], capsys, monkeypatch)
    assert code == 0 and "decision" not in out


def test_predict_exit_codes_all_some_none(trained_bundle, tmp_path, capsys, monkeypatch):
    good = digit_files(tmp_path / "imgs", 2)
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 30)
    missing = tmp_path / "nope.png"
    code, _, _ = run_cli(["predict", str(trained_bundle), *map(str, good)], capsys, monkeypatch)
    assert code == 0
    code, out, err = run_cli(["predict", str(trained_bundle), str(good[0]), str(corrupt)], capsys, monkeypatch)
    assert code == 3 and "corrupt.png" in out and "1 predicted, 1 unreadable" in err
    code, out, err = run_cli(["predict", str(trained_bundle), str(corrupt), str(missing)], capsys, monkeypatch)
    assert code == 2 and "corrupt.png" in out and "nope.png" in out  # the per-file reasons are still there
    assert "0 predicted, 2 unreadable" in err and "none of the 2 files" in err
    code, out, _ = run_cli(["predict", "--help"], capsys, monkeypatch)
    assert "Exit codes" in out


def test_explain_exit_codes_all_some_none(trained_bundle, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # short relative paths keep the table's rows on one line
    run = private_copy(trained_bundle, tmp_path).relative_to(tmp_path)
    folder = Path("imgs")
    digit_files(folder, 2)
    code, _, _ = run_cli(["explain", str(run), str(folder)], capsys, monkeypatch)
    assert code == 0
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 30)
    code, out, _ = run_cli(["explain", str(run), str(folder)], capsys, monkeypatch)
    assert code == 3 and "corrupt.png" in out and "2 explained, 1 unreadable" in out
    code, out, _ = run_cli(["explain", str(run), str(folder / "corrupt.png")], capsys, monkeypatch)
    assert code == 2 and "corrupt.png" in out and "0 explained, 1 unreadable" in out
    code, out, _ = run_cli(["explain", "--help"], capsys, monkeypatch)
    assert "Exit codes" in out


def test_explain_prints_progress_lines_when_output_is_not_a_terminal(trained_bundle, tmp_path, capsys, monkeypatch):
    run = private_copy(trained_bundle, tmp_path)
    folder = tmp_path / "imgs"
    digit_files(folder, 20)
    code, _, err = run_cli(
        ["explain", str(run), str(folder), "--faithfulness", "--batch-size", "4"], capsys, monkeypatch
    )
    assert code == 0
    lines = [line for line in err.splitlines() if line.startswith("faithfulness:")]
    assert lines, err
    assert "/20 images" in lines[0] and "images/s" in lines[0] and "left" in lines[0]
    # counted after the work, not before it: the first estimate is a real rate, not millions a second
    rate = float(lines[0].split("images/s")[0].rsplit(", ", 1)[1])
    assert rate < 10_000
