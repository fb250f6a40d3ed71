"""Layer arithmetic and the layer table: known values and PyTorch's own shapes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from cnnlab.explain.calc import CalcError, dense_parameters, layer_calc, output_size, same_padding
from cnnlab.explain.summary import WHOLE_INPUT, Field, dense_widths, layer_table, measure
from cnnlab.models import create_model


@settings(max_examples=60, deadline=None)
@given(
    size=st.integers(5, 40),
    kernel=st.integers(1, 5),
    stride=st.integers(1, 2),
    dilation=st.integers(1, 2),
    padding=st.sampled_from(["same", "valid", 0, 1, 2]),
)
def test_output_size_matches_pytorch(size: int, kernel: int, stride: int, dilation: int, padding: object) -> None:
    effective = dilation * (kernel - 1) + 1
    if padding not in ("same", "valid") and (size + 2 * int(padding)) < effective:  # type: ignore[call-overload]
        return
    if padding == "valid" and size < effective:
        return
    x = torch.zeros(1, 2, size, size)
    if padding == "same":
        before, after = same_padding(size, kernel, stride, dilation)
        x = F.pad(x, (before, after, before, after))
        pad = 0
    else:
        pad = 0 if padding == "valid" else int(padding)  # type: ignore[call-overload]
    conv = nn.Conv2d(2, 3, kernel, stride=stride, padding=pad, dilation=dilation)
    expected = conv(x).shape[-1]
    calc = layer_calc("conv", size, kernel, stride, padding, dilation, in_channels=2, out_channels=3)  # type: ignore[arg-type]
    assert calc.output == expected
    assert calc.parameters == sum(p.numel() for p in conv.parameters())
    assert calc.macs == expected * expected * 3 * 2 * kernel * kernel
    if padding == "same":
        assert calc.output == -(-size // stride)  # TensorFlow's rule
    if pad <= kernel // 2 and padding != "same":
        pool = nn.MaxPool2d(kernel, stride=stride, padding=pad, dilation=dilation)
        assert layer_calc("pool", size, kernel, stride, padding, dilation).output == pool(x).shape[-1]  # type: ignore[arg-type]


def test_calc_writes_the_formula_and_rejects_impossible_layers() -> None:
    c = layer_calc("conv", 32, 5, 1, 0, 1, in_channels=1, out_channels=6)
    assert c.output == 28 and c.parameters == 156 and c.macs == 28 * 28 * 6 * 25
    assert "floor((32 + 2x0 - 5) / 1) + 1" in c.formula and c.formula.endswith("= 28")
    assert output_size(224, 11, 4, 2) == 55  # AlexNet's first layer
    with pytest.raises(CalcError, match="larger than the padded input"):
        layer_calc("conv", 3, 5)
    with pytest.raises(CalcError, match="padding"):
        layer_calc("conv", 8, 3, padding="half")
    assert dense_parameters([4, 3, 2]) == 4 * 3 + 3 + 3 * 2 + 2


def test_lenet5_table_counts_61706_parameters() -> None:
    model = create_model("lenet5")
    table = layer_table(model, (1, 32, 32))
    assert table.parameters == 61_706 == sum(r.parameters for r in table.rows)
    assert table.macs == measure(model, (1, 32, 32)).macs  # per-layer MACs add up to torch's counter
    c5 = table.row("features.c5")
    assert c5.output == (120, 1, 1) and c5.receptive_field == "32" and c5.jump == "4"
    assert table.row("classifier").receptive_field == WHOLE_INPUT


def test_vgg16_receptive_field_of_conv5_3_and_pool5() -> None:
    table = layer_table(create_model("vgg16"), (3, 224, 224))
    conv5_3, pool5 = table.row("net.features.28"), table.row("net.features.30")
    assert (conv5_3.receptive_field, conv5_3.jump) == ("196", "16")
    assert (pool5.receptive_field, pool5.jump, pool5.output) == ("212", "32", (512, 7, 7))
    assert conv5_3.kernel == "3x3" and conv5_3.padding == "1" and conv5_3.parameters == 512 * 512 * 9 + 512


@pytest.mark.parametrize("name,size,layer,field", [("resnet50", 224, "net.layer4.2.relu (3)", "427")])
def test_resnet_field_goes_through_the_graph(name: str, size: int, layer: str, field: str) -> None:
    # 1 + 6 (conv1) + 2x2 (maxpool) + 3x2x4 + 2x4 + 3x2x8 + 2x8 + 5x2x16 + 2x16 + 2x2x32 = 427
    table = layer_table(create_model(name), (3, size, size))
    assert table.row(layer).receptive_field == field
    assert any(r.type == "add" for r in table.rows)  # the skips are rows of their own


class Branchy(nn.Module):
    """Inception-style branches (1x1, 3x3, 1x7 then 5x5 dilated), a strided residual add, concat."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, stride=2, padding=1)
        self.b1 = nn.Conv2d(4, 2, 1)
        self.b3 = nn.Conv2d(4, 2, 3, padding=1)
        self.b7 = nn.Sequential(nn.Conv2d(4, 2, (1, 7), padding=(0, 3)), nn.Conv2d(2, 2, 5, padding=4, dilation=2))
        self.down = nn.Conv2d(6, 6, 3, stride=2, padding=1)
        self.skip = nn.Conv2d(6, 6, 1, stride=2)
        self.pool = nn.AvgPool2d(3, stride=1, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = torch.cat([self.b1(x), self.b3(x), self.b7(x)], dim=1)
        return self.pool(self.down(x) + self.skip(x))


def test_branched_receptive_field_matches_the_gradient_footprint() -> None:
    """With positive weights and linear layers, the input pixels that reach the centre output unit
    are exactly its receptive field: the table (from the traced graph) must give the same size."""
    model = Branchy()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.abs() + 0.01)
    size = 96
    table = layer_table(model, (1, size, size))
    last = table.rows[-1]
    assert isinstance(last.field, Field)
    x = torch.zeros(1, 1, size, size, requires_grad=True)
    out = model(x)
    cy, cx = out.shape[2] // 2, out.shape[3] // 2
    out[0, 0, cy, cx].backward()
    rows, cols = torch.nonzero(x.grad[0, 0].abs() > 0, as_tuple=True)
    footprint = (int(rows.max() - rows.min()) + 1, int(cols.max() - cols.min()) + 1)
    assert footprint == last.field.size
    assert last.field.size[0] != last.field.size[1]  # the 1x7 branch makes it wider than tall
    centre = (last.field.start[0] + cy * last.field.jump[0], last.field.start[1] + cx * last.field.jump[1])
    assert centre == ((rows.max() + rows.min()).item() / 2, (cols.max() + cols.min()).item() / 2)


def test_inception_unused_auxiliary_head_and_dense_comparison() -> None:
    model = create_model("inception_v3", num_classes=10)
    table = layer_table(model, (3, 299, 299))
    aux = sum(p.numel() for p in model.net.AuxLogits.parameters())
    assert table.unused_parameters == aux > 0
    assert any(r.type == "cat" for r in table.rows)
    lenet = layer_table(create_model("lenet5"), (1, 32, 32))
    widths = dense_widths(lenet)
    assert widths[:2] == [1024, 6 * 28 * 28] and widths[-1] == 10
    assert dense_parameters(widths) > 100 * lenet.parameters


def test_undefined_field_is_said_so() -> None:
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Upsample(scale_factor=2), nn.Conv2d(2, 2, 3))
    table = layer_table(model, (1, 16, 16))
    assert table.rows[0].receptive_field == "3"
    assert table.rows[1].receptive_field.startswith("not defined")
    assert table.rows[2].receptive_field.startswith("not defined")
