"""Class imbalance: class weights, focal loss and the balanced sampler, on an imbalanced folder."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from cnnlab.config import load_config
from cnnlab.data.loader import TensorBatches
from cnnlab.data.preprocess import stats_tensors
from cnnlab.engine.losses import balanced_class_weights, make_loss
from cnnlab.tasks.train import train
from tests.data.folders import make_folder


@pytest.fixture
def imbalanced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / "cache"))
    return make_folder(tmp_path / "imbalanced", {"common": 90, "rare": 10}, mode="L")


def test_auto_class_weights_are_inverse_frequency() -> None:
    labels = torch.tensor([0] * 90 + [1] * 10)
    assert torch.allclose(balanced_class_weights(labels, 2), torch.tensor([100 / 180, 100 / 20]))


def test_weighted_loss_matches_torch() -> None:
    logits, target = torch.randn(16, 3), torch.randint(0, 3, (16,))
    w = torch.tensor([0.5, 1.0, 3.0])
    ours = make_loss(False, class_weights=w)(logits, target)
    per_sample = F.cross_entropy(logits, target, weight=w, reduction="none")
    assert ours.item() == pytest.approx(per_sample.mean().item(), rel=1e-6)
    assert make_loss(False)(logits, target).item() == pytest.approx(F.cross_entropy(logits, target).item(), rel=1e-6)


def test_focal_loss_down_weights_easy_examples() -> None:
    logits, target = torch.randn(32, 4) * 3, torch.randint(0, 4, (32,))
    ce = make_loss(False)(logits, target)
    assert make_loss(False, kind="focal", gamma=0.0)(logits, target).item() == pytest.approx(ce.item(), rel=1e-6)
    assert make_loss(False, kind="focal", gamma=2.0)(logits, target) < ce
    easy = torch.tensor([[3.0, -3.0]])
    hard = torch.tensor([[0.0, 0.0]])
    focal = make_loss(False, kind="focal", gamma=2.0)
    ratio_focal = focal(easy, torch.tensor([0])) / focal(hard, torch.tensor([0]))
    ratio_ce = make_loss(False)(easy, torch.tensor([0])) / make_loss(False)(hard, torch.tensor([0]))
    assert ratio_focal < ratio_ce


def test_balanced_sampler_draws_classes_equally() -> None:
    labels = torch.tensor([0] * 900 + [1] * 100)
    images = torch.zeros(1000, 1, 2, 2, dtype=torch.uint8)
    m, s = stats_tensors((0.0,), (1.0,))
    batches = TensorBatches(images, labels, 100, m, s, balanced=True, seed=3)
    drawn = torch.cat([y for _, y in batches])
    assert len(drawn) == 1000
    assert 0.4 < drawn.float().mean().item() < 0.6


@pytest.mark.parametrize(
    "overrides",
    [
        {"optim.class_weights": "auto"},
        {"optim.loss": "focal", "optim.focal_gamma": 2.0},
        {"data.sampler": "balanced"},
        {"data.augment": "light", "data.mix": "mixup"},
    ],
)
def test_each_option_trains_on_the_imbalanced_folder(imbalanced: Path, tmp_path: Path, overrides: dict) -> None:
    values = {
        "data.source": f"folder:{imbalanced}",
        "data.input_size": 28,
        "model.name": "simple_cnn",
        "train.epochs": 2,
        "train.batch_size": 16,
        **overrides,
    }
    summary = train(load_config(None, values=values), tmp_path / "run")
    assert summary.epochs == 2 and 0.0 <= summary.test_accuracy <= 1.0
