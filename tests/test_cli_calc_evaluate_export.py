"""Issue 17: `cnnlab calc pool` strides by the kernel by default, `cnnlab evaluate` says what its
two losses are, and `cnnlab export --samples 0` is documented and works without data."""

from __future__ import annotations

from pathlib import Path

from tests.tasks.helpers import private_copy, run_cli


def test_calc_pool_strides_by_its_kernel_by_default(capsys, monkeypatch):
    code, out, _ = run_cli(["calc", "pool", "--input", "224", "--kernel", "2"], capsys, monkeypatch)
    assert code == 0 and "112" in out and "223" not in out
    code, out, _ = run_cli(["calc", "conv", "--input", "224", "--kernel", "3"], capsys, monkeypatch)
    assert code == 0 and "222" in out
    code, out, _ = run_cli(["calc", "pool", "--input", "224", "--kernel", "3", "--stride", "1"], capsys, monkeypatch)
    assert code == 0 and "222" in out
    code, out, _ = run_cli(["calc", "--help"], capsys, monkeypatch)
    assert "the kernel size for pool" in " ".join(out.split())


def test_evaluate_says_which_loss_is_which(trained_bundle: Path, tmp_path: Path, capsys, monkeypatch):
    args = ["evaluate", str(trained_bundle), "--bootstrap", "0", "--out", str(tmp_path / "eval")]
    code, out, _ = run_cli(args, capsys, monkeypatch)
    text = " ".join(out.split())
    assert code == 0
    assert "cross-entropy of the raw logits" in text
    assert "log loss (of the probabilities as served, uncalibrated)" in text


def test_export_help_documents_samples_0_and_it_runs_without_data(trained_bundle, tmp_path, capsys, monkeypatch):
    code, out, _ = run_cli(["export", "--help"], capsys, monkeypatch)
    assert code == 0 and "0: no data needed" in " ".join(out.split())
    run = private_copy(trained_bundle, tmp_path)
    code, out, err = run_cli(["export", str(run), "--samples", "0"], capsys, monkeypatch)
    assert code == 0, err
    assert "parity on 32 random images" in " ".join(out.split()) and (run / "export" / "model.onnx").is_file()
