"""The transfer-learning recipe's three methods are the configurations they claim to be."""

from __future__ import annotations

import pytest

from cnnlab.config import load_config
from cnnlab.engine.transfer import plan_stage
from cnnlab.models import create_model
from cnnlab.recipebook.transfer import EPOCHS, METHODS, TOP_BLOCKS, method_values


def _config(method: str):
    return load_config(None, values={"model.name": "efficientnet_lite0", **method_values(method, EPOCHS)})


@pytest.mark.parametrize("method", METHODS)
def test_every_method_gets_the_same_epoch_budget(method: str) -> None:
    stages = _config(method).train.resolved_stages()
    assert sum(s.epochs for s in stages) == EPOCHS


def test_the_three_methods_train_what_they_say() -> None:
    scratch, frozen, tuned = (_config(m) for m in METHODS)
    assert scratch.model.weights == "none" and frozen.model.weights == tuned.model.weights == "imagenet"
    assert [s.trainable for s in scratch.train.resolved_stages()] == ["all"]
    assert [s.trainable for s in frozen.train.resolved_stages()] == ["head"]
    assert [s.trainable for s in tuned.train.resolved_stages()] == ["head", f"top:{TOP_BLOCKS}"]
    head, tune = tuned.train.resolved_stages()
    assert tune.lr < head.lr  # fine-tuning at a smaller learning rate, as the seed says
    assert frozen.train.resolved_stages()[0].augment is None and frozen.data.augment == "none"  # cached features


def test_fine_tuning_trains_more_than_the_head_and_less_than_everything() -> None:
    model = create_model("efficientnet_lite0", 5, 3, 64)
    total = sum(p.numel() for p in model.parameters())
    head = plan_stage(model, "head", 1e-3).trainable_params
    top = plan_stage(model, f"top:{TOP_BLOCKS}", 3e-4, 0.7).trainable_params
    assert head == model.classifier.weight.numel() + model.classifier.bias.numel()
    assert head < top < total
