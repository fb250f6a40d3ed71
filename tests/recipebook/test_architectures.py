"""The measurements behind alexnet-vs-vgg and residual-connections."""

from __future__ import annotations

import torch
from torch import nn

from cnnlab.engine.callbacks import TrainingState
from cnnlab.models.residual import cifar_resnet
from cnnlab.recipebook.architectures import (
    GradientProbe,
    _network_row,
    layer_gradient_norms,
    ratio,
)
from cnnlab.recipebook.kernels import stack_comparison


def test_three_3x3_against_one_7x7_matches_real_layers() -> None:
    c = 32
    found = stack_comparison(c, 20)
    seven, three = found["one 7x7"], found["three 3x3"]
    assert seven["parameters"] == seven["formula_parameters"] == 49 * c * c + c
    assert three["parameters"] == three["formula_parameters"] == 3 * (9 * c * c + c)
    assert seven["macs"] == seven["formula_macs"] == 20 * 20 * c * c * 49
    assert three["macs"] == three["formula_macs"] == 3 * 20 * 20 * c * c * 9
    assert seven["field"] == three["field"] == 7
    assert (seven["nonlinearities"], three["nonlinearities"]) == (1, 3)


def test_network_rows_are_the_published_networks() -> None:
    lenet = _network_row("lenet5")
    assert (lenet["parameters"], lenet["conv_layers"], lenet["dense_layers"]) == (61_706, 3, 2)
    assert lenet["kernels"] == ["5x5"] and lenet["last_conv_field"] == 32
    assert (lenet["activation"], lenet["pooling"], lenet["dropout"]) == ("tanh", "average", False)
    alex = _network_row("alexnet")
    assert (alex["parameters"], alex["conv_layers"], alex["dense_layers"]) == (61_100_840, 5, 3)
    assert alex["kernels"] == ["11x11", "5x5", "3x3"] and alex["first_stride"] == "4"
    assert alex["filters"] == [64, 192, 384, 256, 256] and 0.9 < alex["dense_share"] < 1


def test_gradient_norms_are_per_layer_and_leave_the_model_alone() -> None:
    torch.manual_seed(0)
    model = cifar_resnet(20)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    norms = layer_gradient_norms(model, x, y)
    assert len(norms) == 20 and all(n > 0 for n in norms)
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # BN statistics too


def test_plain_gradients_vanish_where_residual_ones_do_not() -> None:
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    found = {}
    for residual in (False, True):
        torch.manual_seed(0)
        found[residual] = ratio(layer_gradient_norms(cifar_resnet(20, residual=residual, batchnorm=False,
                                                                  init="default"), x, y))  # fmt: skip
    assert found[False] < 1e-4 and found[True] > 1e-2


def test_the_probe_records_before_training_and_after_every_epoch() -> None:
    model = cifar_resnet(20)
    probe = GradientProbe(torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,)))
    state = TrainingState(total_epochs=2, model=model)
    probe.on_fit_start(state)
    for epoch in (1, 2):
        state.epoch = epoch
        probe.on_epoch_end(state, {})
    assert list(probe.records) == [0, 1, 2] and all(len(v) == 20 for v in probe.records.values())
    assert isinstance(model.classifier, nn.Linear)
