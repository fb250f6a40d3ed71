"""train.monitor: the kept epoch is the best by the monitored validation figure."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from cnnlab.bundle import read_card
from cnnlab.bundle.layout import HISTORY, read_history
from cnnlab.engine.loop import EpochStats
from cnnlab.engine.monitor import macro_auc, selection_key
from cnnlab.tasks.train import train
from tests.conftest import tiny_config


def test_macro_auc_matches_scikit_learn_and_skips_classes_without_negatives() -> None:
    rng = np.random.default_rng(0)
    logits = torch.from_numpy(rng.normal(size=(60, 3))).float()
    labels = torch.from_numpy(rng.integers(0, 3, 60))
    proba = torch.softmax(logits, 1).numpy()
    expected = np.mean([roc_auc_score(labels.numpy() == k, proba[:, k]) for k in range(3)])
    assert macro_auc(logits, labels, binary=False) == pytest.approx(expected)
    assert math.isnan(macro_auc(logits, torch.zeros(60, dtype=torch.long), binary=False))


def test_selection_key_prefers_higher_auc_then_lower_loss() -> None:
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0], [1.0, 0.0], [0.0, 1.0]])
    labels = torch.tensor([0, 1, 0, 1])
    perfect = EpochStats(0.5, 1.0, 4, 1.0, logits, labels)
    worse_loss = EpochStats(0.9, 1.0, 4, 1.0, logits, labels)
    swapped = EpochStats(0.1, 0.0, 4, 1.0, -logits, labels)

    def key(monitor: str, stats: EpochStats) -> tuple[float, float]:
        assert stats.logits is not None and stats.labels is not None
        return selection_key(monitor, stats, macro_auc(stats.logits, stats.labels, binary=False))

    assert key("val_auc", perfect) < key("val_auc", worse_loss)
    assert key("val_auc", perfect) < key("val_auc", swapped)
    assert key("val_loss", swapped) < key("val_loss", perfect)
    assert key("val_acc", perfect) < key("val_acc", swapped)


def test_a_val_auc_run_keeps_the_epoch_with_the_best_validation_auc(tmp_path: Path) -> None:
    out = tmp_path / "run"
    train(tiny_config(**{"train.epochs": 3, "train.monitor": "val_auc", "optim.lr": 0.05}), out)
    history = read_history(out / HISTORY)
    card = read_card(out)
    keys = [(-row["val_auc"], row["val_loss"]) for row in history]
    assert card.metrics["best_epoch"] == 1 + keys.index(min(keys))
    assert card.metrics["monitor"] == "val_auc"
    assert all(0.5 <= row["val_auc"] <= 1.0 for row in history)


def test_a_checkpoint_from_before_train_monitor_resumes_and_a_changed_monitor_is_refused(tmp_path: Path) -> None:
    from cnnlab.engine.checkpoint import load_checkpoint, save_checkpoint
    from cnnlab.errors import BundleError
    from tests.conftest import train_killed_after

    cfg = tiny_config(**{"train.epochs": 3})
    out = tmp_path / "cut"
    train_killed_after(cfg, out, 1)
    last = out / "checkpoints" / "last.pt"
    old = load_checkpoint(last)  # rewrite it as the previous release wrote it
    old["best_val_loss"] = old.pop("best_key")[0]
    old["history"] = [{k: v for k, v in row.items() if k != "val_auc"} for row in old["history"]]
    del old["config"]["train"]["monitor"], old["config"]["data"]["holdout_source"]
    del old["config"]["data"]["folds_exclude_test"]
    save_checkpoint(last, old)
    with pytest.raises(BundleError, match=r"train\.monitor changed"):
        train(tiny_config(**{"train.epochs": 3, "train.monitor": "val_auc"}), out, resume=True)
    train(cfg, out, resume=True)
    history = read_history(out / HISTORY)
    assert len(history) == 3 and math.isnan(history[0]["val_auc"]) and history[2]["val_auc"] > 0.5
