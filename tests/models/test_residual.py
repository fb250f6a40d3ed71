"""The CIFAR ResNets of He et al. 2016 and their plain twins."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cnnlab.models import create_model
from cnnlab.models.residual import cifar_resnet


@pytest.mark.parametrize(("depth", "parameters"), [(20, 269_722), (56, 853_018)])
def test_depth_and_parameters_match_the_paper(depth: int, parameters: int) -> None:
    # Table 6 of He et al. 2016: ResNet-20 0.27M, ResNet-56 0.85M parameters.
    for residual in (True, False):
        model = cifar_resnet(depth, residual=residual)
        assert len(model.weight_layers()) == depth
        assert sum(p.numel() for p in model.parameters()) == parameters
        assert all(m.kernel_size == (3, 3) for m in model.modules() if isinstance(m, nn.Conv2d))


def test_registered_names_build_the_twins() -> None:
    plain, res = create_model("plain56_cifar"), create_model("resnet56_cifar")
    assert not plain.residual and res.residual
    res.load_state_dict(plain.state_dict())  # identical weights: only the skips differ
    x = torch.randn(2, 3, 32, 32)
    assert res.forward_features(x).shape == (2, 64, 8, 8)
    res.eval(), plain.eval()
    assert not torch.allclose(res(x), plain(x))


def test_the_skip_is_an_identity_when_the_branch_is_zero() -> None:
    model = cifar_resnet(20, batchnorm=False).eval()
    block = model.layer1[0]
    for conv in (block.conv1, block.conv2):
        nn.init.zeros_(conv.weight)
        nn.init.zeros_(conv.bias)
    x = torch.rand(1, 16, 32, 32)  # non-negative: the final ReLU keeps it
    assert torch.equal(block(x), x)
    down = model.layer2[0]  # option A: subsample, zero channels on both sides
    for conv in (down.conv1, down.conv2):
        nn.init.zeros_(conv.weight)
        nn.init.zeros_(conv.bias)
    out = down(x)
    assert out.shape == (1, 32, 16, 16)
    assert torch.equal(out[:, 8:24], x[:, :, ::2, ::2]) and out[:, :8].abs().sum() == 0


def test_variants_without_batchnorm_and_with_default_init() -> None:
    model = cifar_resnet(20, batchnorm=False, init="default")
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert all(m.bias is not None for m in model.modules() if isinstance(m, nn.Conv2d))
    with pytest.raises(ValueError, match="6n"):
        cifar_resnet(21)
    with pytest.raises(ValueError, match="init"):
        cifar_resnet(20, init="xavier")
