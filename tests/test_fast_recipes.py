"""The fast Fashion-MNIST recipes: the seeds' networks unchanged, only the way they are trained.

Their speed and accuracy against the seeds' Keras fits are measured by bench/train_vs_peers.py
(a benchmark, not a test: the machines are shared). Here: they train the very architecture the
seed-faithful recipe trains, with a schedule that warms up then decays, and run end to end."""

from __future__ import annotations

from pathlib import Path

import pytest

from cnnlab import bundle
from cnnlab.config import load_config
from cnnlab.models import create_model
from cnnlab.tasks.train import train

FAST = {"lenet5-fashion-mnist-fast": "lenet5-fashion-mnist", "simple-cnn-fashion-mnist-fast": "simple-cnn-mnist"}
"""Each fast recipe and the seed-faithful recipe whose network it must keep."""


def _parameters(name: str) -> int:
    return sum(p.numel() for p in create_model(name, 10, 1).parameters())


@pytest.mark.parametrize("fast", sorted(FAST))
def test_fast_recipe_keeps_the_seed_network_and_trains_fewer_epochs(fast: str) -> None:
    cfg, seed = load_config(fast), load_config(FAST[fast])
    assert cfg.model == seed.model and cfg.data.source == "fashion-mnist"
    assert _parameters(cfg.model.name) == _parameters(seed.model.name)
    assert cfg.train.epochs < seed.train.epochs and cfg.train.batch_size >= seed.train.batch_size
    assert cfg.optim.schedule == "cosine" and 0 < cfg.optim.warmup_epochs < 1


def test_fast_recipe_trains_end_to_end_with_warm_up_then_decay(tmp_path: Path) -> None:
    cfg = load_config(
        "lenet5-fashion-mnist-fast",
        overrides=["data.limit_train=1024", "data.limit_eval=256", "train.epochs=2", "train.threads=1"],
    )
    summary = train(cfg, tmp_path / "run")
    rows = bundle.read_history(summary.run_dir / bundle.HISTORY)
    assert len(rows) == 2 and 0.0 <= summary.test_accuracy <= 1.0
    lrs = [float(r["lr"]) for r in rows]  # the rate at each epoch's end: past the peak, decaying
    assert lrs[0] < cfg.optim.lr and lrs[1] < lrs[0]
    assert bundle.read_card(summary.run_dir).architecture == "lenet5"
