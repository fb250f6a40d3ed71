"""Every task honours an explicit device: with `cpu` (on a machine with a GPU too) the network and
its inputs stay on the CPU, the card records where training ran, and a GPU that is not there is
one line and exit code 2 before any work."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from cnnlab import bundle
from cnnlab.bundle import classifier as classifier_module
from cnnlab.engine.device import resolve_precision
from cnnlab.errors import CnnlabError
from tests.conftest import tiny_config
from tests.tasks.helpers import digit_files, private_copy, run_cli

MISSING_GPU = f"cuda:{torch.cuda.device_count()}" if torch.cuda.is_available() else "cuda"
"""A device this machine does not have, whether it has GPUs or not."""


@pytest.fixture
def loads(monkeypatch: pytest.MonkeyPatch) -> list[classifier_module.Classifier]:
    """Every Classifier the tasks load, whatever module they call `load` from."""
    made: list[classifier_module.Classifier] = []
    real = classifier_module.load

    def spy(*args, **kwargs):
        clf = real(*args, **kwargs)
        made.append(clf)
        return clf

    from cnnlab.tasks import evaluate, explain, export, predict

    for module in (classifier_module, evaluate, explain, predict, export):
        monkeypatch.setattr(module, "load", spy)
    return made


def _all_on_cpu(clf: classifier_module.Classifier) -> bool:
    tensors = [*clf.model.parameters(), *clf.model.buffers()]
    return clf.device == torch.device("cpu") and all(t.device.type == "cpu" for t in tensors)


def test_train_on_an_explicit_cpu_records_device_and_precision(tmp_path: Path) -> None:
    from cnnlab.tasks.train import train

    cfg = tiny_config(**{"train.epochs": 1, "data.limit_train": 300, "train.device": "cpu"})
    summary = train(cfg, tmp_path / "run")
    assert summary is not None
    training = bundle.read_card(tmp_path / "run").training
    assert training["device"] == "cpu"
    assert training["precision"] == resolve_precision("auto", torch.device("cpu"))
    # the saved config keeps what was asked (auto travels to another machine), not what was resolved
    assert "device: cpu" in (tmp_path / "run" / bundle.CONFIG).read_text()


def test_train_refuses_a_missing_gpu_before_any_file(tmp_path: Path) -> None:
    from cnnlab.tasks.train import train

    with pytest.raises(CnnlabError) as info:  # what the CLI prints as one line
        train(tiny_config(**{"train.device": MISSING_GPU}), tmp_path / "run")
    assert "\n" not in str(info.value) and "this machine has: cpu" in str(info.value)
    assert not (tmp_path / "run").exists()


def test_evaluate_predict_explain_export_honour_cpu(trained_bundle: Path, tmp_path: Path, loads) -> None:
    from cnnlab.tasks.evaluate import evaluate
    from cnnlab.tasks.explain import explain_folder
    from cnnlab.tasks.export import export_model
    from cnnlab.tasks.predict import predict

    run = private_copy(trained_bundle, tmp_path)
    images = digit_files(tmp_path / "images", 3)
    result = evaluate(run, out=tmp_path / "eval", resamples=0, device="cpu")
    assert result.metrics["accuracy"] == pytest.approx(bundle.read_card(run).metrics["test_accuracy"], abs=1e-9)
    assert len(predict(run, [str(tmp_path / "images")], device="cpu").results) == 3
    report = explain_folder(run, tmp_path / "images", out=tmp_path / "cam", device="cpu")
    assert report.failed == 0 and len(report.results) == len(images)
    _, parity = export_model(run, samples=0, device="cpu")
    assert parity.passed
    assert len(loads) == 4 and all(_all_on_cpu(clf) for clf in loads)


def test_a_bundle_loads_on_the_cpu_whatever_device_wrote_it(trained_bundle: Path, tmp_path: Path) -> None:
    """safetensors hold no device: weights written from a GPU (where there is one) or from CPU
    tensors in another memory layout load on the CPU as the same numbers."""
    run = private_copy(trained_bundle, tmp_path)
    card = bundle.read_card(run)
    state = bundle.load_state(run, card)
    source = "cuda" if torch.cuda.is_available() else "cpu"
    moved = {k: (v.to(source).contiguous(memory_format=torch.channels_last) if v.ndim == 4 else v.to(source))
             for k, v in state.items()}  # fmt: skip
    sha = bundle.save_weights(moved, run / bundle.WEIGHTS)
    assert sha == card.weights_sha256  # byte for byte the file the CPU wrote
    clf = classifier_module.load(run, device="cpu")
    assert _all_on_cpu(clf)
    for key, value in clf.model.state_dict().items():
        assert torch.equal(value, state[key]), key


@pytest.mark.parametrize("command", ["evaluate", "predict", "explain", "export", "calibrate"])
def test_cli_device_that_is_not_there_exits_2_in_one_line(
    trained_bundle: Path, tmp_path: Path, capsys, monkeypatch, command: str
) -> None:
    run = private_copy(trained_bundle, tmp_path)
    image = str(digit_files(tmp_path / "images", 1)[0])
    extra = {"predict": [image], "explain": [image]}.get(command, [])
    code, _out, err = run_cli([command, str(run), *extra, "--device", MISSING_GPU], capsys, monkeypatch)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "error:" in lines[0] and "this machine has: cpu" in lines[0], err
    assert not (run / "eval").exists() and not (run / "export").exists()


def test_cli_train_refuses_a_bad_device_string(tmp_path: Path, capsys, monkeypatch) -> None:
    code, _out, err = run_cli(
        ["train", "--data", "mnist-sample", "--epochs", "1", "--out", str(tmp_path / "r"), "--device", "tpu"],
        capsys,
        monkeypatch,
    )
    assert code == 2 and "device must be auto, cpu, cuda or cuda:N" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()


def test_card_json_keeps_device_beside_threads(trained_bundle: Path) -> None:
    training = json.loads((trained_bundle / bundle.CARD).read_text())["training"]
    assert {"device", "precision", "threads"} <= set(training)
