"""`cnnlab shortcuts`: a tiny bundle on a folder whose metadata.csv names each image's source."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from cnnlab.errors import DataError
from cnnlab.tasks.shortcuts import shortcut_checks
from cnnlab.tasks.train import train
from tests.conftest import folder_config
from tests.data.folders import write_image, write_metadata
from tests.tasks.helpers import run_cli


def source_folder(root: Path, patients: int = 36, per_patient: int = 2, sources: bool = True) -> Path:
    """well and sick from hospitals a and b (by patient), covid from c only; no split column."""
    rows = []
    for p in range(patients):
        cls = ("well", "sick", "covid")[p % 3]
        for i in range(per_patient):
            name = f"{cls}/p{p:02d}_{i}.png"
            write_image(root / name, p * 10 + i, size=(16, 16), mode="L")
            row = {"file": name, "label": cls, "patient_id": f"P{p:02d}"}
            if sources:
                row["source"] = "c" if cls == "covid" else "ab"[(p // 3) % 2]
            rows.append(row)
    write_metadata(root, rows)
    return root


@pytest.fixture
def source_bundle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / "cache"))
    root = source_folder(tmp_path / "xr")
    cfg = folder_config(root, "sc")
    train(cfg, tmp_path / "run")
    return tmp_path / "run"


def test_shortcut_checks_write_the_probe_and_the_cam_statistics(
    source_bundle: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    result = shortcut_checks(source_bundle, out=tmp_path / "sc", folds=3)
    assert result.embedded == 72 and set(result.probe.within_class) == {"well", "sick"}
    assert result.probe.single_source == {"covid": "c"}
    report = json.loads((tmp_path / "sc" / "shortcuts.json").read_text())
    probe = report["probe"]
    assert probe["unit"] == "patient" and probe["images"] == 72
    assert probe["overall"]["sources"] == {"a": 24, "b": 24, "c": 24}
    within = probe["within_class"]["well"]
    assert 0 <= within["balanced_accuracy"] <= 1 and within["chance_balanced_accuracy"] == 0.5
    cam = report["cam"]
    assert cam["split"] == "test" and cam["layer"] == result.cam_layer and cam["method"] == "gradcam"
    assert cam["grid"] == list(result.cam_grid) and isinstance(cam["coarse"], bool)
    assert set(cam["by_source"]) <= {"a", "b", "c"} and cam["by_source"]
    test_images = cam["all"]["images"]
    assert test_images == len(cam["per_image"]) == sum(s["images"] for s in cam["by_source"].values())
    assert cam["all"]["border"]["area"] == pytest.approx(1 - (12 / 16) ** 2)  # 2 px of 16 on each side
    for row in cam["per_image"]:
        assert row["border_share"] is None or 0 <= row["border_share"] <= 1
    assert (tmp_path / "sc" / "shortcuts.png").stat().st_size > 1000

    code, out, _ = run_cli(["shortcuts", str(source_bundle), "--split", "val"], capsys, monkeypatch)
    assert code == 0 and "source probe" in out and "within well" in out and "border band" in out
    assert (source_bundle / "shortcuts" / "shortcuts.json").is_file()

    # the same folder without the source column: refused in one line, exit code 2
    plain = tmp_path / "plain"
    shutil.copytree(tmp_path / "xr", plain)
    source_folder(plain, sources=False)
    with pytest.raises(DataError, match=r"no source column in metadata\.csv"):
        shortcut_checks(source_bundle, data_dir=str(plain), out=tmp_path / "refused")
    code, _, err = run_cli(["shortcuts", str(source_bundle), "--data-dir", str(plain)], capsys, monkeypatch)
    assert code == 2 and "no source column in metadata.csv" in err
    assert not (tmp_path / "refused").exists()
