"""The learning-rate range test: the curve, the divergence stop, the suggestion, the caller's model
left alone, and `cnnlab train --find-lr` writing its figure and curve."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from cnnlab.config import OptimConfig
from cnnlab.engine.lr_find import lr_find, valley_index
from tests.test_cli import run_cli


def _problem(n: int = 512, batch: int = 32) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Four Gaussian blobs in 8 dimensions, a few dozen batches."""
    gen = torch.Generator().manual_seed(0)
    y = torch.randint(0, 4, (n,), generator=gen)
    x = torch.randn(n, 8, generator=gen) + 3.0 * nn.functional.one_hot(y, 8).float()
    return [(x[i : i + batch], y[i : i + batch]) for i in range(0, n, batch)]


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))


def test_the_loss_curve_is_recorded() -> None:
    result = lr_find(_model(), _problem(), None, binary=False, start_lr=1e-5, end_lr=1e-2, steps=40)
    assert result.steps == 40 and len(result.losses) == len(result.smoothed) == 40
    assert result.diverged_at is None and result.stop_reason.startswith("completed")
    assert math.isclose(result.lrs[0], 1e-5) and math.isclose(result.lrs[-1], 1e-2, rel_tol=1e-6)
    ratios = [b / a for a, b in zip(result.lrs, result.lrs[1:], strict=False)]
    assert max(ratios) - min(ratios) < 1e-9  # exponential
    assert result.smoothed[0] == pytest.approx(result.losses[0])  # bias correction: no pull towards 0
    assert result.smoothed[-1] < result.smoothed[0]  # it learnt
    assert result.to_dict()["method"] == "valley"


def test_it_stops_early_on_divergence() -> None:
    sgd = OptimConfig(optimizer="sgd")
    result = lr_find(_model(), _problem(), None, binary=False, end_lr=1e4, steps=200, optim=sgd)
    assert result.diverged_at is not None and result.steps < 200
    assert result.smoothed[-1] > 4.0 * min(result.smoothed[:-1]) or not math.isfinite(result.losses[-1])


def test_the_suggestion_lies_between_start_and_the_divergence() -> None:
    result = lr_find(_model(), _problem(), None, binary=False, start_lr=1e-6, end_lr=1e4, steps=120)
    assert result.diverged_at is not None
    assert 1e-6 < result.suggestion < result.diverged_at < 1e4
    assert 1e-6 / 10 <= result.min_lr_over_10 < result.diverged_at


def test_the_callers_model_is_untouched() -> None:
    model = _model()
    model.eval()
    model[0].weight.requires_grad_(False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    lr_find(model, _problem(), None, binary=False, end_lr=1.0, steps=30)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not model.training and not model[0].weight.requires_grad and model[2].weight.requires_grad
    assert torch.equal(torch.get_rng_state(), rng)


def test_valley_is_half_way_down_the_longest_fall() -> None:
    losses = [2.0] * 10 + [2.0 - 0.1 * i for i in range(1, 13)] + [1.0, 3.0, 9.0]
    index = valley_index(losses)
    assert 13 <= index <= 17  # the fall runs from index 9 to 21; fastai lands just before its middle


def test_cli_find_lr_writes_the_figure_and_the_curve(tmp_path: Path, capsys, monkeypatch) -> None:
    out = tmp_path / "lr"
    args = ["train", "--data", "mnist-sample", "--set", "data.limit_train=600", "--batch-size", "64"]
    code, text, _ = run_cli([*args, "--find-lr", "--out", str(out)], capsys, monkeypatch)
    assert code == 0, text
    assert (out / "lr_find.png").stat().st_size > 10_000
    curve = json.loads((out / "lr_find.json").read_text())
    assert curve["method"] == "valley" and len(curve["lrs"]) == len(curve["losses"]) == curve["steps"]
    assert 1e-7 < curve["suggestion"] < 10
    assert not (out / "model.json").exists() and not (out / "weights.pt").exists()
    assert "suggested learning rate" in text and "--lr " in text and str(out / "lr_find.png") in text
    assert "--find-lr" not in text.split("train with it:")[1].splitlines()[0]
    code, _, err = run_cli([*args, "--find-lr", "--out", str(out)], capsys, monkeypatch)
    assert code != 0 and "--overwrite" in err  # an existing folder is refused
    code, _, _ = run_cli([*args, "--find-lr", "--out", str(out), "--overwrite"], capsys, monkeypatch)
    assert code == 0
