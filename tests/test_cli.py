"""The command line: happy paths, and bad input as one clear line with exit code 2."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
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
    code, out, _ = run_cli(
        ["calibrate", str(tmp_path / "run"), "--method", "temperature", "--positive", "not 0"], capsys, monkeypatch
    )
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


# ------------------------------------------------------------ issue 17: what a hands-on user trips over


def command_paths() -> list[list[str]]:
    """Every command and group of the `cnnlab` tree, as the words that reach it."""
    import typer

    from cnnlab.cli import app

    paths: list[list[str]] = []

    def walk(command, path: list[str]) -> None:
        paths.append(path)
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, [*path, name])

    walk(typer.main.get_command(app), [])
    return paths


def test_demo_leaves_example_images_and_says_where(tmp_path: Path, capsys, monkeypatch) -> None:
    from PIL import Image

    code, out, _ = run_cli(["demo", "--epochs", "1", "--out", str(tmp_path / "demo")], capsys, monkeypatch)
    assert code == 0
    examples = tmp_path / "demo" / "examples"
    names = sorted(p.name for p in examples.iterdir())
    assert names == [f"digit-{d}.png" for d in range(10)]  # one real test digit per class, nothing half-written
    with Image.open(examples / "digit-7.png") as image:
        assert image.size == (28, 28) and image.mode == "L"
    assert f"examples: 10 test images to try, {examples / 'digit-0.png'}" in out
    assert f"cnnlab predict {tmp_path / 'demo'} {examples / 'digit-7.png'} --explain" in out
    # the digit-7 image is a 7 of the demo's test split, which the model is measured on
    from cnnlab.config import load_config
    from cnnlab.data.sources import load_source

    images, labels = load_source(load_config("lenet5-mnist-sample").data, 32).splits["test"]
    first_seven = images[int((labels == 7).nonzero()[0])][0].numpy()
    with Image.open(examples / "digit-7.png") as image:
        assert (np.asarray(image) == first_seven).all()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["recipe", "run", "lite0-xray"], "'lite0-xray' is a training recipe, not an exercise recipe: "
         "train it with `cnnlab train lite0-xray`"),
        (["train", "xray-triage"], "'xray-triage' is an exercise recipe, not a training recipe: "
         "run it with `cnnlab recipe run xray-triage`"),
        (["crossval", "cnn-vs-dense"], "run it with `cnnlab recipe run cnn-vs-dense`"),
        (["recipe", "run", "no-such-thing"], "unknown recipe 'no-such-thing'"),
    ],
)  # fmt: skip
def test_each_kind_of_recipe_points_at_the_other_command(args, message, tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(args, capsys, monkeypatch)
    assert code == 2 and message in " ".join(err.split())
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err + out
    assert not (tmp_path / "runs").exists()


def test_both_kinds_of_recipe_are_listed(capsys, monkeypatch) -> None:
    from cnnlab.config import recipe_names

    code, out, _ = run_cli(["train", "--list"], capsys, monkeypatch)
    assert code == 0 and "training recipes: cnnlab train NAME" in out and "cnnlab recipe list" in out
    for name in recipe_names():
        assert name in out
    assert "efficientnet_lite0" in out and "8+5" in out  # lite0-flowers: model and epochs per stage
    code, out, _ = run_cli(["recipe", "list"], capsys, monkeypatch)
    assert code == 0 and "exercise recipes: cnnlab recipe run NAME" in out and "cnnlab train --list" in out
    assert "xray-triage" in out
    code, out, _ = run_cli(["recipe", "--help"], capsys, monkeypatch)
    assert "cnnlab train --list" in " ".join(out.split())


@pytest.mark.parametrize("flag", ["-h", "--help"])
def test_every_command_answers_dash_h(flag: str, capsys, monkeypatch) -> None:
    for path in command_paths():
        code, out, err = run_cli([*path, flag], capsys, monkeypatch)
        assert code == 0 and "Usage: " in out and "Show this message and exit." in out, (path, err)


def test_help_labels_say_what_to_type(capsys, monkeypatch) -> None:
    """Typer would label a flag `<bool>` (as if it took true or false) and a repeatable option `<list[str]>`."""
    for path in command_paths():
        code, out, _ = run_cli([*path, "--help"], capsys, monkeypatch)
        assert code == 0 and "<bool>" not in out and "<list[" not in out, path
    _, out, _ = run_cli(["train", "--help"], capsys, monkeypatch)
    assert "KEY=VALUE" in out and "none|light|standard|strong|xray" in out
    _, out, _ = run_cli(["keys", "create", "--help"], capsys, monkeypatch)
    assert "viewer|clinician|admin" in out and "URL" in out
    _, out, _ = run_cli(["compare-models", "--help"], capsys, monkeypatch)
    assert re.search(r"names\.\.\.\s+<str>\s", out)


def test_shell_completion_works_offline_and_without_torch(monkeypatch, capsys) -> None:
    import subprocess

    _, out, _ = run_cli(["--help"], capsys, monkeypatch)
    assert "--install-completion" in out and "--show-completion" in out
    env = {"PATH": "/usr/bin:/bin", "_CNNLAB_COMPLETE": "complete_bash", "COMP_CWORD": "2"}
    script = "import sys, cnnlab.cli; sys.argv = ['cnnlab']; cnnlab.cli.main()"
    for words, expected in [("cnnlab train lite0", {"lite0-flowers", "lite0-flowers-scratch", "lite0-xray"}),
                            ("cnnlab recipe ", {"list", "run"})]:  # fmt: skip
        done = subprocess.run(
            [sys.executable, "-c", script], env={**env, "COMP_WORDS": words}, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0 and set(done.stdout.split()) == expected, done.stderr
    code = "import sys, cnnlab.cli\nsys.argv = ['cnnlab', 'train', '--list']\ntry:\n    cnnlab.cli.main()\n"
    code += "except SystemExit:\n    pass\nsys.exit('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, "`cnnlab train --list` loaded torch"


@pytest.mark.parametrize(
    ("args", "blocked", "message"),
    [
        (["serve", "runs/x"], "fastapi", "cnnlab serve needs the service's packages: pip install 'cnnlab[serve]'"),
        (["keys", "create", "--role", "admin"], "sqlalchemy",
         "cnnlab keys needs the service's packages: pip install 'cnnlab[serve]'"),
        (["keys", "list"], "uvicorn", "cnnlab keys needs the service's packages: pip install 'cnnlab[serve]'"),
        (["audit", "verify"], "alembic", "cnnlab audit needs the service's packages: pip install 'cnnlab[serve]'"),
        (["feedback", "export", "--out", "fb"], "fastapi",
         "cnnlab feedback needs the service's packages: pip install 'cnnlab[serve]'"),
        (["ui", "--api", "http://127.0.0.1:8000"], "streamlit",
         "cnnlab ui needs the web page's packages: pip install 'cnnlab[ui]'"),
        (["serve", "runs/x", "--db", "postgresql+psycopg://cnnlab@db/cnnlab"], "psycopg",
         "cnnlab serve --db postgresql+psycopg://... needs PostgreSQL's driver: pip install 'cnnlab[postgres]'"),
        (["keys", "list", "--db", "postgresql+psycopg://cnnlab@db/cnnlab"], "psycopg",
         "pip install 'cnnlab[postgres]'"),
        (["audit", "verify", "--db", "postgresql://cnnlab@db/cnnlab"], "psycopg2",
         "write the URL as postgresql+psycopg://"),
    ],
)  # fmt: skip
def test_a_missing_extra_is_named_in_one_line(args, blocked, message, tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, blocked, None)  # `import blocked` now raises ImportError, as if not installed
    code, out, err = run_cli(args, capsys, monkeypatch)
    assert code == 2 and message in " ".join(err.split()), err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err + out
    assert list(tmp_path.iterdir()) == []  # nothing started, nothing written
