"""Edge cases found in review: each once gave a wrong result or a traceback."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import cnnlab
from cnnlab import bundle
from cnnlab.config import load_config
from cnnlab.errors import BundleError, ConfigError, DataError
from cnnlab.tasks.train import train
from tests.conftest import tiny_config, train_killed_after
from tests.data.folders import make_folder


def test_none_is_a_choice_not_null_for_optional_presets() -> None:
    cfg = load_config(None, values={"train.stages": [{"name": "a"}]}, overrides=["train.stages.0.augment=none"])
    assert cfg.train.stages[0].augment == "none"
    cfg = load_config(None, values={"train.stages": [{"name": "a"}]}, overrides=["train.stages.0.lr=null"])
    assert cfg.train.stages[0].lr is None


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.batch_size=0", "train.batch_size must be positive"),
        ("data.val_fraction=1.5", "data.val_fraction must be in [0, 1)"),
        ("optim.step_size=0", "optim.step_size must be positive"),
        ("data.channels=2", "data.channels must be 1 or 3"),
        ("train.early_stopping=0", "train.early_stopping must be positive"),
    ],
)
def test_out_of_range_values_are_config_errors(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, overrides=[override])
    assert message in str(info.value)


def test_early_stopping_survives_resume(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stages = [
        {"name": "frozen", "trainable": "all", "epochs": 4, "lr": 0.0},
        {"name": "train", "trainable": "all", "epochs": 2, "lr": 1e-3},
    ]
    cfg = tiny_config(**{"train.stages": stages, "train.early_stopping": 1})
    straight = train(cfg, tmp_path / "a")
    assert [s["epochs"] for s in straight.stages] == [2, 2]  # lr 0: stage 1 stops after epoch 2
    train_killed_after(cfg, tmp_path / "b", 2)  # killed after epoch 2 was saved
    resumed = train(cfg, tmp_path / "b", resume=True)
    assert [s["epochs"] for s in resumed.stages] == [2, 2]
    assert resumed.test_accuracy == straight.test_accuracy


def test_evaluate_reads_the_folder_given_now_with_the_cards_channels(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / "cache"))
    first = make_folder(tmp_path / "grey", {"a": 12, "b": 12}, mode="L")
    values = {"data.source": f"folder:{first}", "model.name": "simple_cnn", "train.epochs": 1}
    train(load_config(None, values=values), tmp_path / "run")
    other = make_folder(tmp_path / "colour", {"a": 6, "b": 6}, mode="RGB", seed=5)
    result = cnnlab.evaluate(tmp_path / "run", split="train", data_dir=str(other), out=tmp_path / "ev")
    assert not result.data_matches  # another folder, and colour images read as grey
    assert result.confusion.sum() > 0


def test_only_a_test_folder_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cnnlab.config import DataConfig
    from cnnlab.data.sources import load_source

    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / "cache"))
    root = make_folder(tmp_path / "d", {"a": 3, "b": 3}, split="test")
    with pytest.raises(DataError, match="no training images"):
        load_source(DataConfig(source=f"folder:{root}"), 16)


def test_malformed_dicom_window_marks_one_file_bad(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cnnlab.data.folder import scan_folder
    from tests.data.test_dicom import make_dicom, ramp

    root = make_folder(tmp_path / "d", {"a": 60, "b": 60}, mode="L")
    data = make_dicom(ramp(), window=(40.0, 80.0))
    at = data.find(b"40.0")  # the WindowCenter value
    (root / "a" / "odd.dcm").write_bytes(data[:at] + b"ab.c" + data[at + 4 :])
    manifest = scan_folder(root)
    assert [e.path for e in manifest.bad] == ["a/odd.dcm"]


def test_bad_files_are_looked_at_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cnnlab.data.cache import scan_folder_cached
    from tests.data.folders import write_image

    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / "cache"))
    root = make_folder(tmp_path / "d", {"a": 60, "b": 60})
    broken = root / "a" / "later.png"
    broken.write_bytes(b"not yet")
    assert [e.path for e in scan_folder_cached(root).bad] == ["a/later.png"]
    content = write_image(tmp_path / "x.png", 1).read_bytes()
    broken.write_bytes(content)
    assert scan_folder_cached(root).bad == []


def test_predict_input_shapes(trained_bundle: Path) -> None:
    clf = cnnlab.load(trained_bundle)
    with pytest.raises(DataError, match="channels-first"):
        clf.predict_proba(np.zeros((3, 28, 20), np.uint8))
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(buf, format="PNG")
    assert clf.predict_proba(bytearray(buf.getvalue())).shape == (1, 10)


def test_out_pointing_at_a_file(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(BundleError, match="it is a file"):
        train(tiny_config(), target)


def test_bundle_files_are_group_readable(trained_bundle: Path) -> None:
    assert (trained_bundle / bundle.CARD).stat().st_mode & 0o044


def test_grouped_data_with_no_validation_share_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cnnlab.config import DataConfig
    from cnnlab.data.sources import load_source
    from tests.data.folders import write_metadata

    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / "cache"))
    root = make_folder(tmp_path / "d", {"a": 10, "b": 10})
    files = sorted(root.rglob("*.png"))
    write_metadata(
        root, [{"file": f.relative_to(root).as_posix(), "patient_id": f"p{i // 2}"} for i, f in enumerate(files)]
    )
    with pytest.raises(DataError, match="the val split is empty"):
        load_source(DataConfig(source=f"folder:{root}", val_fraction=0.0), 16)
