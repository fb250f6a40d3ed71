"""`cnnlab gate CANDIDATE --against ACTIVE --data FOLDER`: a bundle gated against itself passes,
a broken copy is refused (exit 1), and bad input is one line with exit code 2, nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlab.bundle.card import read_card, write_card
from cnnlab.bundle.classifier import load
from cnnlab.bundle.layout import WEIGHTS
from cnnlab.bundle.weights import load_state, save_weights
from cnnlab.data.sources import load_source
from cnnlab.errors import BundleError
from cnnlab.tasks.gate import gate_classifiers
from tests.conftest import tiny_config
from tests.data.folders import write_metadata
from tests.tasks.helpers import private_copy, run_cli

PER_CLASS = 8


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """PER_CLASS real test-split MNIST digits of each class as DIGITS/CLASS/*.png, two per patient
    (metadata.csv), in no split."""
    root = tmp_path_factory.mktemp("gate") / "digits"
    x, y = load_source(tiny_config().data, 28).splits["test"]
    rows = []
    for c in range(10):
        for i, k in enumerate(np.flatnonzero(y.numpy() == c)[:PER_CLASS]):
            name = f"{c}/{i:02d}.png"
            (root / str(c)).mkdir(parents=True, exist_ok=True)
            Image.fromarray(x[k, 0].numpy()).save(root / name)
            rows.append({"file": name, "label": str(c), "patient_id": f"{c}-{i // 2}"})
    write_metadata(root, rows)
    return root


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / "cache"))


def zeroed_copy(bundle: Path, into: Path) -> Path:
    """A copy with every weight zero (uniform probabilities), written as training writes weights,
    with the card's sha256 updated so that it loads."""
    run = private_copy(bundle, into)
    card = read_card(run)
    state = {k: torch.zeros_like(v) for k, v in load_state(run, card).items()}
    write_card(run, card.with_changes(weights_sha256=save_weights(state, run / WEIGHTS)))
    return run


def test_a_bundle_gated_against_itself_passes_and_writes_its_report(
    trained_bundle: Path, digits: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    out = tmp_path / "reports" / "gate.json"
    args = ["gate", str(trained_bundle), "--against", str(trained_bundle), "--data", f"folder:{digits}",
            "--resamples", "100", "--out", str(out)]  # fmt: skip
    code, text, err = run_cli(args, capsys, monkeypatch)
    assert code == 0, err
    text = " ".join(text.split())
    assert "PASSED:" in text and "REFUSED" not in text
    assert "macro AUC" in text and "ECE" in text and "40 patients" in text
    report = json.loads(out.read_text())
    sha = read_card(trained_bundle).weights_sha256
    assert report["passed"] is True and report["reasons"] == []
    assert report["candidate"]["weights_sha256"] == report["active"]["weights_sha256"] == sha
    assert report["candidate"]["name"] == read_card(trained_bundle).name
    assert report["data"]["images"] == 10 * PER_CLASS and report["data"]["folder"] == str(digits.resolve())
    assert report["gate"]["unit"] == "patient" and report["gate"]["groups"] == 40
    assert all(m["difference"] == 0 for m in report["gate"]["metrics"])


def test_a_broken_bundle_is_refused_with_exit_code_1(
    trained_bundle: Path, digits: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    broken = zeroed_copy(trained_bundle, tmp_path)
    out = tmp_path / "gate.json"
    args = ["gate", str(broken), "--against", str(trained_bundle), "--data", str(digits), "--resamples", "100",
            "--out", str(out)]  # fmt: skip
    code, text, _ = run_cli(args, capsys, monkeypatch)
    text = " ".join(text.split())
    assert code == 1
    assert "REFUSED: macro AUC is" in text and "beyond the 0.02 margin" in text and "PASSED" not in text
    report = json.loads(out.read_text())  # a refusal is a result: its report is written
    assert report["passed"] is False and report["gate"]["metrics"][0]["candidate"] == pytest.approx(0.5)
    assert report["candidate"]["weights_sha256"] != report["active"]["weights_sha256"]


def test_bad_input_exits_2_in_one_line_and_writes_nothing(
    trained_bundle: Path, digits: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    renamed = private_copy(trained_bundle, tmp_path)
    card = read_card(renamed)
    write_card(renamed, card.with_changes(classes=[f"d{c}" for c in card.classes]))
    odd = tmp_path / "odd"
    (odd / "cat").mkdir(parents=True)
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(odd / "cat" / "a.png")
    (tmp_path / "empty").mkdir()
    out = tmp_path / "gate.json"
    base = ["--out", str(out)]
    cases = {
        "different classes: candidate d0, d1": [str(renamed), "--against", str(trained_bundle), "--data", str(digits)],
        "'cat' is not among the model's classes": [str(trained_bundle), "--against", str(trained_bundle),
                                                    "--data", str(odd)],
        "no image files found": [str(trained_bundle), "--against", str(trained_bundle),
                                 "--data", str(tmp_path / "empty")],
        "no run directory": [str(tmp_path / "nope"), "--against", str(trained_bundle), "--data", str(digits)],
        "--margin-ece must be 0 or more": [str(trained_bundle), "--against", str(trained_bundle),
                                           "--data", str(digits), "--margin-ece", "-0.1"],
        "--resamples must be at least 1": [str(trained_bundle), "--against", str(trained_bundle),
                                           "--data", str(digits), "--resamples", "0"],
    }  # fmt: skip
    for message, args in cases.items():
        code, _, err = run_cli(
            ["gate", *args, *base, *([] if "--resamples" in args else ["--resamples", "20"])], capsys, monkeypatch
        )
        assert code == 2, (message, err)
        assert message in " ".join(err.split()) and "Traceback" not in err
        assert len(err.strip().splitlines()) <= 3  # one line, wrapped at most by the terminal width
        assert not out.exists()
    code, text, _ = run_cli(["gate", "--help"], capsys, monkeypatch)
    assert code == 0 and "Example:" in text and "--against" in text


def test_gate_classifiers_on_loaded_bundles_reads_each_cards_operating_point(
    trained_bundle: Path, digits: Path, tmp_path: Path, capsys
) -> None:
    # Never calling "0" positive (a threshold above any probability) costs all sensitivity to it.
    never = load(
        private_copy(trained_bundle, tmp_path / "a", threshold={"positive": ["0"], "value": 1.01}), device="cpu"
    )
    usual = load(
        private_copy(trained_bundle, tmp_path / "b", threshold={"positive": ["0"], "value": 0.5}), device="cpu"
    )
    report = gate_classifiers(never, usual, digits, resamples=100, progress=False)
    assert capsys.readouterr().err == ""  # the service's way: silent
    result = report.result
    assert result.positive == ["0"] and not report.passed
    sens = next(r for r in result.metrics if r.metric == "sensitivity")
    assert sens.candidate == 0 and sens.active > 0.5 and not sens.passed
    assert [r.startswith("sensitivity") for r in result.reasons] == [True]
    assert report.images == 10 * PER_CLASS and report.class_counts["0"] == PER_CLASS
    assert report.out is None
    renamed = private_copy(trained_bundle, tmp_path / "c")
    write_card(renamed, read_card(renamed).with_changes(classes=list("abcdefghij")))
    with pytest.raises(BundleError, match="different classes"):
        gate_classifiers(load(renamed, device="cpu"), usual, digits)
