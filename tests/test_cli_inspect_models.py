"""`cnnlab data inspect` always reports (issue 17): every bad file with its reason, whatever their
share, and an exit code that says whether training would take the data. `cnnlab models` and
`cnnlab compare-models` count parameters the same way and say for how many classes."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from tests.data.folders import make_folder
from tests.tasks.helpers import run_cli


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / "cache"))


def _corrupt(root: Path, n: int) -> list[Path]:
    files = sorted(root.rglob("*.png"))[:n]
    for f in files:
        f.write_bytes(f.read_bytes()[:40])
    return files


def test_inspect_lists_every_bad_file_above_the_training_limit(tmp_path, capsys, monkeypatch):
    root = make_folder(tmp_path / "d", {"cat": 40, "dog": 43})
    bad = _corrupt(root, 3)  # 3 of 83 = 3.6%, above training's 1%
    code, out, err = run_cli(["data", "inspect", f"folder:{root}", "--out", str(tmp_path / "out")], capsys, monkeypatch)
    assert code == 3, err
    assert "bad files: 3" in out
    for f in bad:
        assert f.relative_to(root).as_posix() in out
    assert "3.6% > max_bad_fraction 1.0%" in out and "training" in out
    assert "`cnnlab data inspect` lists them" not in out + err  # it does, right here
    assert (tmp_path / "out" / "manifest.csv").is_file() and (tmp_path / "out" / "samples.png").is_file()
    code, out, _ = run_cli(["data", "inspect", "--help"], capsys, monkeypatch)
    assert "Exit codes" in out


def test_inspect_of_a_named_folder_source_reports_too(tmp_path, capsys, monkeypatch):
    root = make_folder(tmp_path / "flowers", {"daisy": 40, "rose": 43})
    _corrupt(root, 3)
    args = ["data", "inspect", "flowers", "--data-dir", str(root), "--out", str(tmp_path / "out")]
    code, out, err = run_cli(args, capsys, monkeypatch)
    assert code == 3, err
    assert "bad files: 3" in out and "daisy/000.png" in out


def test_inspect_under_the_limit_exits_0_and_still_lists(tmp_path, capsys, monkeypatch):
    root = make_folder(tmp_path / "d", {"cat": 40, "dog": 43})
    _corrupt(root, 3)
    args = ["data", "inspect", f"folder:{root}", "--out", str(tmp_path / "out"), "--max-bad-fraction", "0.05"]
    code, out, _ = run_cli(args, capsys, monkeypatch)
    assert code == 0 and "bad files: 3" in out


def test_inspect_reports_a_class_with_no_readable_image(tmp_path, capsys, monkeypatch):
    root = make_folder(tmp_path / "d", {"cat": 10, "dog": 10})
    (root / "bird").mkdir()
    (root / "bird" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    code, out, err = run_cli(["data", "inspect", f"folder:{root}", "--out", str(tmp_path / "out")], capsys, monkeypatch)
    assert code == 3, err
    assert "bird/broken.png" in out and "class 'bird' has no readable images" in out


def test_models_is_fast_and_states_its_class_count(capsys, monkeypatch):
    start = time.perf_counter()
    code, out, _ = run_cli(["models"], capsys, monkeypatch)
    assert code == 0 and time.perf_counter() - start < 5
    assert "10 classes" in out
    assert re.search(r"alexnet\s.*57,044,810", out) and "61,706" in out
    code, out, _ = run_cli(["models", "--classes", "1000"], capsys, monkeypatch)
    assert code == 0 and "1000 classes" in out and re.search(r"alexnet\s.*61,100,840", out)


def test_models_and_compare_models_agree_at_the_same_settings(tmp_path, capsys, monkeypatch):
    chart = tmp_path / "c.png"
    args = ["compare-models", "alexnet", "--input", "3x224x224", "--classes", "10", "--out", str(chart)]
    code, out, _ = run_cli(args, capsys, monkeypatch)
    assert code == 0 and re.search(r"alexnet\s.*57,044,810", out) and "10 classes" in out
    code, out, _ = run_cli(["compare-models", "alexnet", "lenet5", "--out", str(chart)], capsys, monkeypatch)
    assert code == 0 and re.search(r"alexnet\s.*1,000\s.*61,100,840", out) and re.search(r"lenet5\s.*10\s", out)


def test_count_parameters_on_the_meta_device_matches_a_real_build():
    from cnnlab.models import create_model, list_models
    from cnnlab.models.factory import count_parameters

    start = time.perf_counter()
    counts = {name: count_parameters(name) for name in list_models()}
    assert time.perf_counter() - start < 5
    for name in ("lenet5", "alexnet", "resnet18"):
        assert counts[name] == sum(p.numel() for p in create_model(name).parameters())
    assert count_parameters("alexnet", num_classes=1000) == 61_100_840
