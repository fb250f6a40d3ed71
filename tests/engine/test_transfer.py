"""Transfer-learning stages: what trains, at which rates, frozen BatchNorm, cached features."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cnnlab import bundle
from cnnlab.config import load_config
from cnnlab.engine.transfer import plan_stage, trunk_blocks
from cnnlab.errors import ConfigError
from cnnlab.models import create_model
from cnnlab.tasks.train import train


def trainable(model) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def test_head_top_and_all() -> None:
    model = create_model("resnet18", 3, 3, 64)
    blocks = trunk_blocks(model)
    assert len(blocks) == 9  # stem + 8 basic blocks
    plan = plan_stage(model, "head", 1e-3)
    assert trainable(model) == {"net.fc.weight", "net.fc.bias"} and plan.head_only
    plan = plan_stage(model, "top:2", 1e-3, lr_decay=0.5)
    names = trainable(model)
    assert all(n.startswith(("net.fc", "net.layer4")) for n in names) and any("layer4.0" in n for n in names)
    assert [g["base_lr"] for g in plan.groups] == pytest.approx([1e-3, 5e-4, 2.5e-4])
    plan_stage(model, "all", 1e-3)
    assert trainable(model) == {n for n, _ in model.named_parameters()}
    with pytest.raises(ConfigError, match="trunk has 9 blocks"):
        plan_stage(model, "top:12", 1e-3)
    with pytest.raises(ConfigError, match="head, top:N or all"):
        plan_stage(model, "bottom", 1e-3)


def test_frozen_batchnorm_keeps_its_statistics(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cnnlab.config import OptimConfig
    from cnnlab.data.loader import TensorBatches
    from cnnlab.data.preprocess import stats_tensors
    from cnnlab.engine.loop import train_one_epoch
    from cnnlab.engine.losses import make_loss
    from cnnlab.engine.schedule import make_optimizer

    model = create_model("resnet18", 2, 3, 32)
    plan = plan_stage(model, "top:1", 1e-2)
    before = model.net.bn1.running_mean.clone()
    top_bn = model.net.layer4[1].bn2.running_mean.clone()
    x = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    m, s = stats_tensors((0.5,) * 3, (0.25,) * 3)
    batches = TensorBatches(x, torch.arange(16) % 2, 8, m, s)
    opt = make_optimizer(plan.groups, OptimConfig(lr=1e-2))
    train_one_epoch(model, batches, opt, make_loss(False), binary=False, frozen=plan.frozen_norms)
    assert torch.equal(model.net.bn1.running_mean, before)  # frozen: eval mode
    assert torch.equal(model.net.layer4[1].bn2.running_mean, top_bn)  # partial fine-tuning: eval mode too
    assert model.net.layer4[1].bn2.weight.grad is not None  # ... while its affine parameters train
    plan = plan_stage(model, "all", 1e-2)
    assert plan.frozen_norms == []


def test_two_stage_run_with_cached_features(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / "cache"))
    from tests.data.folders import make_folder

    root = make_folder(tmp_path / "d", {"a": 12, "b": 12})
    values = {
        "data.source": f"folder:{root}",
        "data.input_size": 32,
        "model.name": "efficientnet_lite0",
        "model.weights": "imagenet",
        "train.batch_size": 8,
        "train.stages": [
            {"name": "head", "trainable": "head", "epochs": 2, "lr": 1e-3},
            {"name": "finetune", "trainable": "top:2", "epochs": 1, "lr": 1e-4},
        ],
    }
    cfg = load_config(None, values=values)
    summary = train(cfg, tmp_path / "run")
    assert [s["name"] for s in summary.stages] == ["head", "finetune"]
    assert [s["epochs"] for s in summary.stages] == [2, 1]
    rows = bundle.read_history(tmp_path / "run" / bundle.HISTORY)
    assert [r["stage"] for r in rows] == ["head", "head", "finetune"]
    card = bundle.read_card(tmp_path / "run")
    assert card.weights == "imagenet" and card.preprocessing["mean"] == [0.5, 0.5, 0.5]
    assert [s["name"] for s in card.training["stages"]] == ["head", "finetune"]
    # The trunk below the top two blocks never changed.
    pretrained = create_model("efficientnet_lite0", 2, 3, 32, weights="imagenet").state_dict()
    from safetensors.torch import load_file

    trained = load_file(tmp_path / "run" / bundle.WEIGHTS)
    assert torch.equal(trained["conv_stem.weight"], pretrained["conv_stem.weight"])
    assert torch.equal(trained["blocks.0.0.bn1.running_mean"], pretrained["blocks.0.0.bn1.running_mean"])
    assert not torch.equal(trained["classifier.weight"], pretrained["classifier.weight"])


def test_resume_between_stages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.conftest import tiny_config, train_killed_after

    stages = [
        {"name": "head", "trainable": "head", "epochs": 1, "lr": 1e-3},
        {"name": "all", "trainable": "all", "epochs": 2, "lr": 1e-3},
    ]
    cfg = tiny_config(**{"train.stages": stages})
    straight = train(cfg, tmp_path / "a")
    train_killed_after(cfg, tmp_path / "b", 2)  # killed after epoch 2 was saved
    resumed = train(cfg, tmp_path / "b", resume=True)
    assert resumed.test_accuracy == straight.test_accuracy
    assert [s["epochs"] for s in resumed.stages] == [1, 2]


def test_auto_weights_fall_back_to_training_everything(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rich.console import Console

    from cnnlab.models import weights as weights_module
    from cnnlab.tasks.train import resolve_auto_weights

    def download(name):
        raise AssertionError(f"'auto' tried to fetch {name}: it must only look at what is on disk")

    monkeypatch.setattr(weights_module, "_torchvision_state", download)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))  # an empty hub cache
    stages = [{"name": "head", "trainable": "head", "epochs": 1}]
    cfg = load_config(None, values={"model.name": "resnet18", "model.weights": "auto", "train.stages": stages})
    console = Console(record=True, width=200)
    resolved = resolve_auto_weights(cfg, console)
    assert resolved.model.weights == "none" and resolved.train.stages[0].trainable == "all"
    assert "no ImageNet weights for resnet18" in console.export_text()
    lite = load_config(
        None, values={"model.name": "efficientnet_lite0", "model.weights": "auto", "train.stages": stages}
    )
    assert resolve_auto_weights(lite, console).model.weights == "imagenet"


def test_stage_augmentation_and_yaml_stage_override(tmp_path: Path) -> None:
    cfg = load_config(
        None,
        overrides=["train.stages=[{name: a, trainable: all, epochs: 1, augment: light}]", "train.stages.0.epochs=2"],
    )
    assert cfg.train.stages[0].augment == "light" and cfg.train.stages[0].epochs == 2
