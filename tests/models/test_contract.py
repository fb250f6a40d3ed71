"""The model contract, for every registered name."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cnnlab.errors import ModelError
from cnnlab.models import create_model, get_spec, list_models, register_model
from cnnlab.models.factory import find_cam_layer


def _small_size(name: str) -> int:
    return max(get_spec(name).min_input_size, 32)


TIMM_SAMPLES = ["timm:resnet10t", "timm:mobilenetv3_small_050"]


@pytest.mark.parametrize("name", list_models() + TIMM_SAMPLES)
@pytest.mark.parametrize(("in_chans", "num_classes"), [(1, 2), (3, 7)])
def test_contract(name: str, in_chans: int, num_classes: int) -> None:
    spec = get_spec(name)
    if spec.binary:
        num_classes = 2
    size = _small_size(name) + 4  # not the default: nothing may assume a fixed flatten width
    torch.manual_seed(0)
    model = create_model(name, num_classes, in_chans, size)
    for module in model.modules():  # undo zero-init residual gammas (timm), which block gradients at init
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.weight is not None:
            nn.init.ones_(module.weight)
    x = torch.randn(3, in_chans, size, size)
    features = model.forward_features(x)
    assert features.ndim == 4 and features.shape[0] == 3
    out = model.forward_head(features)
    width = 1 if spec.binary else num_classes
    assert out.shape == (3, width)
    assert torch.isfinite(out).all()
    model.eval()  # dropout off: the two paths must then agree exactly
    assert torch.equal(model.forward_head(model.forward_features(x)), model(x))
    model.train()
    out.sum().backward()
    for pname, param in model.named_parameters():
        if "AuxLogits" in pname:
            continue  # Inception's auxiliary head only runs at 299 px (tested below)
        assert param.grad is not None and torch.isfinite(param.grad).all(), pname
        assert param.grad.abs().sum() > 0, f"{pname} receives no gradient"
    layer = spec.cam_layer or find_cam_layer(model, in_chans, size)
    shapes = []
    hook = model.get_submodule(layer).register_forward_hook(lambda m, i, o: shapes.append(o.shape))
    model.eval()
    model(x)
    hook.remove()
    assert len(shapes[0]) == 4 and shapes[0][-1] * shapes[0][-2] >= 1, f"CAM layer {layer} is not spatial"
    assert len(model.trunk_blocks()) >= 2
    if not spec.binary:
        model.reset_classifier(num_classes + 3)
        assert model(x).shape == (3, num_classes + 3)


def test_lenet5_is_the_paper_network() -> None:
    model = create_model("lenet5", 10, 1, 32)
    assert sum(p.numel() for p in model.parameters()) == 61_706
    assert model.forward_features(torch.zeros(1, 1, 32, 32)).shape == (1, 120, 1, 1)
    assert any(isinstance(m, nn.AvgPool2d) for m in model.modules())
    assert any(isinstance(m, nn.Tanh) for m in model.modules())


def test_seed_pytorch_simplecnn_trains_at_28px() -> None:
    # The printed model crashes with "mat1 and mat2 shapes cannot be multiplied (128x12544 and 3136x128)".
    model = create_model("simple_cnn_torch", 10, 1, 28)
    assert model(torch.randn(128, 1, 28, 28)).shape == (128, 10)
    assert model.neck.fc1.in_features == 64 * 14 * 14


def test_binary_cnn_has_one_sigmoid_output() -> None:
    model = create_model("binary_cnn")
    assert model(torch.randn(2, 3, 150, 150)).shape == (2, 1)
    with pytest.raises(ModelError, match="needs 2 classes"):
        create_model("binary_cnn", 3)


def test_registry_rules() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_model("lenet5", input_size=32, in_chans=1, mean=(), std=(), cam_layer="x", description="x")(
            lambda **_: nn.Identity()
        )
    with pytest.raises(ValueError, match=r"\[a-z0-9_\]"):
        register_model("LeNet-5", input_size=32, in_chans=1, mean=(), std=(), cam_layer="x", description="x")
    with pytest.raises(ModelError, match="did you mean 'lenet5'"):
        create_model("lenet")
    with pytest.raises(ModelError, match="at least 32 px"):
        create_model("lenet5", 10, 1, 28)
