"""The training engine: reproducibility, resume, guards, early stopping, precision options."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from cnnlab import bundle
from cnnlab.engine import fit as fit_module
from cnnlab.engine.callbacks import Callback
from cnnlab.engine.loop import NonFiniteLoss, train_one_epoch
from cnnlab.engine.losses import make_loss
from cnnlab.errors import BundleError, CnnlabError
from cnnlab.models.outputs import probabilities
from cnnlab.tasks.train import train
from tests.conftest import tiny_config, train_killed_after


def test_same_seed_same_run(tmp_path: Path) -> None:
    a = train(tiny_config(), tmp_path / "a")
    b = train(tiny_config(), tmp_path / "b")
    wa, wb = load_file(tmp_path / "a" / bundle.WEIGHTS), load_file(tmp_path / "b" / bundle.WEIGHTS)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert a.test_accuracy == b.test_accuracy
    c = train(tiny_config(**{"train.seed": 1}), tmp_path / "c")
    wc = load_file(tmp_path / "c" / bundle.WEIGHTS)
    assert not all(torch.equal(wa[k], wc[k]) for k in wa)
    assert c.run_dir == tmp_path / "c"


def test_interrupted_run_resumes_to_the_same_result(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tiny_config(**{"train.epochs": 3})
    straight = train(cfg, tmp_path / "straight")

    train_killed_after(cfg, tmp_path / "cut", 2)  # killed after epoch 2 was saved
    assert not (tmp_path / "cut" / bundle.CARD).exists()
    with pytest.raises(BundleError, match="unfinished run"):
        bundle.read_card(tmp_path / "cut")
    with pytest.raises(BundleError, match="--resume"):
        train(cfg, tmp_path / "cut")

    resumed = train(cfg, tmp_path / "cut", resume=True)
    assert resumed.epochs == 3
    history = bundle.read_history(tmp_path / "cut" / bundle.HISTORY)
    assert [r["epoch"] for r in history] == [1, 2, 3]
    assert resumed.test_accuracy == straight.test_accuracy
    wa = load_file(tmp_path / "straight" / bundle.WEIGHTS)
    wb = load_file(tmp_path / "cut" / bundle.WEIGHTS)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_resume_refuses_a_different_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tiny_config(**{"train.epochs": 2})
    train_killed_after(cfg, tmp_path / "run", 1)
    with pytest.raises(BundleError, match="different 'model' section"):
        train(tiny_config(**{"model.name": "simple_cnn"}), tmp_path / "run", resume=True)
    with pytest.raises(BundleError, match="no checkpoint"):
        train(cfg, tmp_path / "other", resume=True)


class DivergeInEpoch(Callback):
    """A loss that turns non-finite in epoch `epoch` (1-based), injected where the epoch starts."""

    def __init__(self, epoch: int, value: float) -> None:
        self.epoch, self.value = epoch, value

    def on_epoch_start(self, state) -> None:
        if state.epoch + 1 == self.epoch:
            raise NonFiniteLoss(step=3, value=self.value)


def test_non_finite_loss_stops_and_keeps_the_last_good_weights(tmp_path: Path) -> None:
    summary = train(tiny_config(**{"train.epochs": 4}), tmp_path / "run", callbacks=[DivergeInEpoch(2, math.nan)])
    assert summary.epochs == 1 and summary.best_epoch == 1
    assert "non-finite loss in epoch 2" in summary.stop_reason
    assert summary.test_accuracy > 0.5  # the epoch-1 weights, not NaNs
    card = bundle.read_card(tmp_path / "run")
    assert "non-finite" in card.training["stop_reason"]


def test_divergence_before_any_epoch_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CnnlabError, match=r"training diverged.*lower the learning rate"):
        train(tiny_config(), tmp_path / "run", callbacks=[DivergeInEpoch(1, math.inf)])
    assert not (tmp_path / "run").exists()  # nothing resumable: no half-written run left


def test_train_one_epoch_refuses_nan_before_the_update() -> None:
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    before = [p.detach().clone() for p in model.parameters()]
    x = torch.full((2, 1, 2, 2), float("nan"))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(NonFiniteLoss):
        train_one_epoch(model, [(x, torch.tensor([0, 1]))], opt, make_loss(False), binary=False)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_early_stopping(tmp_path: Path) -> None:
    # lr 0: the validation loss never improves after epoch 1, so patience 2 stops at epoch 3.
    summary = train(tiny_config(**{"train.epochs": 10, "train.early_stopping": 2, "optim.lr": 0.0}), tmp_path / "r")
    assert summary.epochs == 3 and summary.best_epoch == 1
    assert summary.stop_reason.startswith("early stopping")


def test_history_and_timing_columns(tmp_path: Path) -> None:
    train(tiny_config(**{"optim.schedule": "cosine", "optim.warmup_epochs": 0.5}), tmp_path / "r")
    rows = bundle.read_history(tmp_path / "r" / bundle.HISTORY)
    assert list(rows[0]) == list(fit_module.HISTORY_FIELDS)
    assert all(r["train_seconds"] > 0 and r["eval_seconds"] > 0 and r["images_per_second"] > 0 for r in rows)
    assert rows[1]["lr"] < rows[0]["lr"]


@pytest.mark.parametrize("override", [{"train.precision": "bf16"}, {"train.channels_last": False}])
def test_speed_options_cost_little_accuracy(tmp_path: Path, override: dict) -> None:
    # The reference is plain fp32 (precision auto is bf16 on a CPU with native BF16 units).
    values = {"train.epochs": 3, "data.limit_train": 1500, "train.precision": "fp32"}
    reference = train(tiny_config(**values), tmp_path / "ref")
    variant = train(tiny_config(**{**values, **override}), tmp_path / "var")
    assert reference.test_accuracy > 0.85
    assert abs(variant.test_accuracy - reference.test_accuracy) < 0.03


def test_binary_head_loss_and_probabilities() -> None:
    logits = torch.tensor([[2.0], [-1.0]])
    probs = probabilities(logits, binary=True)
    assert probs.shape == (2, 2) and torch.allclose(probs.sum(1), torch.ones(2))
    assert probs[0, 1] == pytest.approx(torch.sigmoid(torch.tensor(2.0)).item())
    loss = make_loss(True)(logits, torch.tensor([1, 0]))
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits.squeeze(1), torch.tensor([1.0, 0.0]))
    assert loss.item() == pytest.approx(expected.item())
    assert torch.allclose(probabilities(logits, True, temperature=2.0)[:, 1], torch.sigmoid(logits.squeeze(1) / 2))


def test_a_user_callback_sees_every_epoch_after_it_is_saved(tmp_path: Path) -> None:
    class Logger(Callback):
        def __init__(self) -> None:
            self.events: list[tuple[str, int]] = []

        def on_fit_start(self, state) -> None:
            self.events.append(("start", state.total_epochs))

        def on_epoch_end(self, state, row) -> None:
            assert (tmp_path / "run" / bundle.CHECKPOINTS / "last.pt").is_file()  # saved before user hooks
            assert state.history[-1] is row and row["epoch"] == state.epoch
            self.events.append(("epoch", row["epoch"]))

        def on_fit_end(self, state) -> None:
            self.events.append(("end", state.best_epoch))

    logger = Logger()
    summary = train(tiny_config(**{"train.epochs": 2}), tmp_path / "run", callbacks=[logger])
    assert logger.events == [("start", 2), ("epoch", 1), ("epoch", 2), ("end", summary.best_epoch)]
