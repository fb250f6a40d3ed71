"""LeNet-5's C5 is computed as a matrix product when its kernel covers its whole input: the
result and the gradients must be the convolution's, in either memory layout, and any other input
size must still be an ordinary convolution."""

import pytest
import torch
from torch import nn

from cnnlab.models import create_model
from cnnlab.models.classic import WholeInputConv2d


def _pair(seed: int = 0) -> tuple[WholeInputConv2d, nn.Conv2d]:
    torch.manual_seed(seed)
    ref = nn.Conv2d(16, 120, 5)
    fast = WholeInputConv2d(16, 120, 5)
    fast.load_state_dict(ref.state_dict())
    return fast, ref


@pytest.mark.parametrize("channels_last", [False, True])
def test_whole_input_matches_the_convolution_forward_and_backward(channels_last: bool) -> None:
    fast, ref = _pair()
    x = torch.randn(8, 16, 5, 5)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    ya, yb = fast(xa), ref(xb)
    assert ya.shape == yb.shape == (8, 120, 1, 1)
    torch.testing.assert_close(ya, yb, rtol=1e-5, atol=1e-5)
    grad = torch.randn_like(ya)
    ya.backward(grad)
    yb.backward(grad)
    torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fast.weight.grad, ref.weight.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(fast.bias.grad, ref.bias.grad, rtol=1e-4, atol=1e-4)


def test_a_larger_input_is_an_ordinary_convolution() -> None:
    fast, ref = _pair(1)
    x = torch.randn(2, 16, 9, 9)
    out = fast(x)
    assert out.shape == (2, 120, 5, 5)
    torch.testing.assert_close(out, ref(x))


def test_lenet5_keeps_its_parameters_and_a_conv_c5() -> None:
    model = create_model("lenet5", num_classes=10)
    c5 = model.features.c5
    assert isinstance(c5, nn.Conv2d) and c5.weight.shape == (120, 16, 5, 5)
    assert sum(p.numel() for p in model.parameters()) == 61_706
    assert model(torch.zeros(3, 1, 32, 32)).shape == (3, 10)
