"""The command line: happy paths, and bad input as one clear line with exit code 2."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from cnnlab import bundle
from cnnlab.cli import main


def run_cli(
    args: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["cnnlab", *args])
    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit) as info:
        main()
    out, err = capsys.readouterr()
    code = info.value.code
    return (0 if code is None else int(code)), out, err


TINY = ["--data", "mnist-sample", "--set", "data.limit_train=300", "--epochs", "1"]


def test_train_then_evaluate(tmp_path: Path, capsys, monkeypatch) -> None:
    code, out, _ = run_cli(["train", *TINY, "--out", str(tmp_path / "run")], capsys, monkeypatch)
    assert code == 0
    assert "test accuracy" in out and "training time" in out and str(tmp_path / "run") in out
    assert "cnnlab evaluate" in out
    code, out, _ = run_cli(["evaluate", str(tmp_path / "run")], capsys, monkeypatch)
    assert code == 0 and "test accuracy" in out and "confusion matrix" in out
    assert (tmp_path / "run" / "eval" / "confusion_matrix.png").is_file()
    assert (tmp_path / "run" / "eval" / "report.html").is_file() and "per class" in out and "ROC AUC" in out
    code, out, _ = run_cli(["calibrate", str(tmp_path / "run"), "--positive", "not 0"], capsys, monkeypatch)
    assert code == 0 and "fitted temperature T =" in out and "operating point: positive = 1, 2" in out
    code, out, _ = run_cli(["evaluate", str(tmp_path / "run"), "--bootstrap", "0"], capsys, monkeypatch)
    assert code == 0 and "as served" in out and "operating point: 1, 2" in out
    code, _, err = run_cli(["train", *TINY, "--out", str(tmp_path / "run")], capsys, monkeypatch)
    assert code == 2 and "already holds a bundle" in err
    code, _, _ = run_cli(["train", *TINY, "--out", str(tmp_path / "run"), "--overwrite"], capsys, monkeypatch)
    assert code == 0


def test_recipe_with_overrides(tmp_path: Path, capsys, monkeypatch) -> None:
    args = [
        "train",
        "lenet5-mnist",
        "--data",
        "mnist-sample",
        "--set",
        "data.limit_train=300",
        "--epochs",
        "1",
        "--set",
        "optim.lr=2e-3",
        "--out",
        str(tmp_path / "r"),
    ]
    code, _, _ = run_cli(args, capsys, monkeypatch)
    assert code == 0
    saved = (tmp_path / "r" / bundle.CONFIG).read_text()
    assert "lr: 0.002" in saved and "epochs: 1" in saved and "name: lenet5-mnist" in saved


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "--model", "lenet", *TINY], "unknown model 'lenet' (did you mean 'lenet5'?)"),
        (["train", *TINY, "--set", "train.epoch=3"], "unknown key 'train.epoch'"),
        (["train", "no-such-recipe"], "unknown recipe 'no-such-recipe'"),
        (["train", "--data", "mnist", "--data-dir", "/nonexistent/mnist"], "data source 'mnist' not found"),
        (["train", "--data", "cifar10", "--data-dir", "/nonexistent"], "place {train,val,test}/CLASS/*.png"),
        (["evaluate", "/nonexistent/run"], "no run directory at /nonexistent/run"),
        (["evaluate", "/nonexistent/run", "--bootstrap", "-1"], "--bootstrap must be 0 or more"),
        (["calibrate", "/nonexistent/run", "--method", "isotonic"], "--method must be one of temperature, vector"),
        (["calibrate", "/nonexistent/run"], "no run directory at /nonexistent/run"),
        (["crossval", "lenet5-mnist-sample", "--folds", "1"], "--folds must be at least 2"),
        (["crossval", "lenet5-mnist-sample", "--group-by", "patient_id"], "has no patient ids"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, message, tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(args, capsys, monkeypatch)
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err + out
    assert not (tmp_path / "runs").exists()  # no half-written bundle


def test_malformed_yaml(tmp_path: Path, capsys, monkeypatch) -> None:
    recipe = tmp_path / "broken.yaml"
    recipe.write_text("model: {name: lenet5\n")
    code, _, err = run_cli(["train", str(recipe), "--out", str(tmp_path / "r")], capsys, monkeypatch)
    assert code == 2 and "malformed YAML" in err and not (tmp_path / "r").exists()


def test_unwritable_output(tmp_path: Path, capsys, monkeypatch) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    code, _, err = run_cli(["train", *TINY, "--out", str(blocker / "run")], capsys, monkeypatch)
    assert code == 2 and "cannot write to" in err and "is not a directory" in err
    code, _, err = run_cli(["train", *TINY, "--out", "/proc/cnnlab-run"], capsys, monkeypatch)
    assert code == 2 and "cannot write to /proc/cnnlab-run" in err


def test_usage_errors_exit_2(capsys, monkeypatch) -> None:
    code, _, _ = run_cli(["train", "--epochs", "many"], capsys, monkeypatch)
    assert code == 2


def test_models_and_datasets(capsys, monkeypatch) -> None:
    code, out, _ = run_cli(["models"], capsys, monkeypatch)
    assert code == 0 and "lenet5" in out and "61,706" in out and "simple_cnn_torch" in out
    code, out, _ = run_cli(["datasets", "--data-dir", "/nonexistent"], capsys, monkeypatch)
    assert code == 0 and "mnist-sample" in out and "place" in out
    code, out, _ = run_cli(["datasets"], capsys, monkeypatch)
    assert code == 0 and "fashion-mnist" in out


@pytest.mark.parametrize("command", ["demo", "train", "evaluate", "calibrate", "crossval", "models", "datasets"])
def test_help_has_an_example(command: str, capsys, monkeypatch) -> None:
    code, out, _ = run_cli([command, "--help"], capsys, monkeypatch)
    assert code == 0 and "Example" in out


@pytest.mark.slow
def test_demo_meets_its_promise(tmp_path: Path, capsys, monkeypatch) -> None:
    code, out, _ = run_cli(["demo", "--out", str(tmp_path / "demo")], capsys, monkeypatch)
    assert code == 0
    card = json.loads((tmp_path / "demo" / bundle.CARD).read_text())
    assert card["metrics"]["test_accuracy"] >= 0.95
    assert f"test accuracy {card['metrics']['test_accuracy']:.4f}" in out
    for name in (bundle.WEIGHTS, bundle.CONFIG, bundle.HISTORY, bundle.CURVES):
        assert (tmp_path / "demo" / name).is_file()
    assert not (tmp_path / "demo" / bundle.CHECKPOINTS).exists()


@pytest.mark.parametrize(
    "command",
    [["compare-models"], ["compare"], ["export"], ["predict"], ["filters"], ["featuremaps"], ["explain"],
     ["summary"], ["calc"], ["serve"], ["ui"], ["data", "inspect"], ["data", "preview"], ["keys", "create"],
     ["audit", "verify"], ["feedback", "export"], ["recipe", "run"]],
)  # fmt: skip
def test_every_command_module_has_help_with_an_example(command: list[str], capsys, monkeypatch) -> None:
    code, out, _ = run_cli([*command, "--help"], capsys, monkeypatch)
    assert code == 0 and "Example" in out


def test_help_offers_the_library_choices(capsys, monkeypatch) -> None:
    from cnnlab import choices
    from cnnlab.bundle import backends
    from cnnlab.data import augment
    from cnnlab.evaluation import calibration
    from cnnlab.explain import cam
    from cnnlab.export import onnx as onnx_export

    # The help lists cnnlab.choices without importing torch; the code that implements each choice
    # uses the very same constant.
    assert cam.METHODS is choices.CAM_METHODS and backends.BACKENDS is choices.BACKENDS
    assert onnx_export.FILENAMES is choices.EXPORT_FILENAMES and calibration.METHODS is choices.CALIBRATION_METHODS
    assert augment.PRESETS is choices.AUGMENT_PRESETS
    CAM_METHODS = choices.CAM_METHODS
    code, out, _ = run_cli(["explain", "--help"], capsys, monkeypatch)
    assert code == 0 and f"{CAM_METHODS[-2]} or {CAM_METHODS[-1]}" in " ".join(out.split())


def test_cli_imports_no_torch() -> None:
    import subprocess

    code = "import sys, cnnlab.cli; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


def test_compare_models_takes_every_input_shape(tmp_path: Path, capsys, monkeypatch) -> None:
    chart = tmp_path / "charts" / "c.png"
    code, out, _ = run_cli(["compare-models", "lenet5", "--input", "32", "--out", str(chart)], capsys, monkeypatch)
    assert code == 0 and "input 32" in out and "lenet5" in out and chart.is_file()
    code, _, err = run_cli(["compare-models", "lenet5", "--input", "3x"], capsys, monkeypatch)
    assert code == 2 and "--input must look like 3x224x224" in err
