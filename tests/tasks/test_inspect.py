"""`tasks.inspect.inspect_data` reports on data training refuses, instead of refusing itself."""

from __future__ import annotations

from pathlib import Path

import pytest

from cnnlab.data.folder import scan_folder
from cnnlab.errors import DataError
from cnnlab.tasks.inspect import inspect_data
from tests.data.folders import make_folder


def test_half_corrupted_folder_is_reported_not_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / "cache"))
    root = make_folder(tmp_path / "d", {"cat": 10, "dog": 10})
    for f in sorted(root.rglob("*.png"))[::2]:  # half of each class
        f.write_bytes(f.read_bytes()[:40])
    with pytest.raises(DataError, match=r"50\.0% > max_bad_fraction"):  # training still refuses
        scan_folder(root)
    report = inspect_data(f"folder:{root}", out=tmp_path / "out")
    assert len(report.bad) == 10 and report.files == 20
    assert "10 of 20 files are unreadable (50.0% > max_bad_fraction 1.0%)" in report.refusal
    assert "cat" in report.counts and report.grid is not None and report.grid.is_file()
    clean = make_folder(tmp_path / "clean", {"cat": 10, "dog": 10})
    assert inspect_data(f"folder:{clean}", out=tmp_path / "out2").refusal == ""
    with pytest.raises(DataError, match="no image files found"):
        inspect_data(f"folder:{tmp_path / 'out2'}", out=tmp_path / "out3")
