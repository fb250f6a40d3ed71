"""000 Q2 (LeNet-5 with the paper's sparse C3) and 002 Q4 (kernel size and stride): the counts the
answers print, checked against real modules."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from cnnlab.explain.summary import layer_table
from cnnlab.models import create_model
from cnnlab.models.classic import LENET5_C3_CONNECTIONS, MaskedConv2d, effective_parameters
from cnnlab.recipebook import read_results, run_recipe
from cnnlab.recipebook.anatomy import lenet_rows
from cnnlab.recipebook.kernels import conv_grid, measure_conv, stack_comparison


def _contiguous(inputs: tuple[int, ...]) -> bool:
    """Neighbouring S2 maps, counted round the circle of six (the paper's Table I wraps: 4, 5, 0)."""
    return any(set(inputs) == {(start + i) % 6 for i in range(len(inputs))} for start in range(6))


def test_c3_map_is_table_one_of_the_paper() -> None:
    sizes = [len(c) for c in LENET5_C3_CONNECTIONS]
    assert sizes == [3] * 6 + [4] * 6 + [4] * 3 + [6]
    assert sum(sizes) == 60
    assert all(_contiguous(c) for c in LENET5_C3_CONNECTIONS[:12])
    assert not any(_contiguous(c) for c in LENET5_C3_CONNECTIONS[12:15])
    assert len(set(LENET5_C3_CONNECTIONS)) == 16  # no two maps read the same inputs


def test_sparse_lenet_counts_only_its_connections() -> None:
    model = create_model("lenet5_sparse", 10, 1, 32)
    dense = create_model("lenet5", 10, 1, 32)
    c3 = model.features.c3
    assert isinstance(c3, MaskedConv2d) and c3.connections == 60
    assert c3.effective_parameters() == 60 * 25 + 16 == 1_516
    numel = sum(p.numel() for p in model.parameters())
    assert numel == sum(p.numel() for p in dense.parameters()) == 61_706  # the dense weight shape is kept
    assert effective_parameters(model) == numel - (96 - 60) * 25 == 60_806
    assert effective_parameters(dense) == numel
    rows = {r["layer"]: r for r in lenet_rows(model, layer_table(model, (1, 32, 32)))}
    assert rows["c3"]["parameters"] == 1_516 and rows["c3"]["dense_parameters"] == 2_416
    assert rows["c3"]["macs"] == 60 * 25 * 10 * 10 and rows["c3"]["dense_macs"] == 96 * 25 * 10 * 10
    assert sum(r["parameters"] for r in rows.values()) == 60_806
    assert rows["c5"]["field"] == "32" and rows["s4"]["jump"] == "4"


def test_unconnected_weights_get_no_gradient_and_stay_zero() -> None:
    torch.manual_seed(0)
    model = create_model("lenet5_sparse", 10, 1, 32)
    c3 = model.features.c3
    off = (c3.mask == 0).expand_as(c3.weight)
    assert off.sum() == 36 * 25 and torch.all(c3.weight[off] == 0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    for _ in range(3):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(torch.randn(8, 1, 32, 32)), torch.randint(0, 10, (8,))).backward()
        assert torch.all(c3.weight.grad[off] == 0)
        assert c3.weight.grad[~off].abs().sum() > 0
        optimizer.step()
    assert torch.all(c3.weight[off] == 0)
    # the mask travels with the weights: a state dict rebuilds the same network
    copy = create_model("lenet5_sparse", 10, 1, 32)
    copy.load_state_dict(model.state_dict())
    x = torch.randn(2, 1, 32, 32)
    assert torch.equal(copy(x), model(x))


def test_formula_matches_real_layers_in_every_setting() -> None:
    grid = conv_grid(side=40)
    assert len(grid) == 5 * 3 * 3 and all(r["agree"] for r in grid)
    for r in grid:
        assert r["parameters"] == r["out"] * (r["in"] * r["kernel"] ** 2 + 1)
    by_stride = {}
    for r in grid:
        by_stride.setdefault((r["in"], r["out"], r["kernel"]), set()).add(r["parameters"])
    assert all(len(params) == 1 for params in by_stride.values())  # stride never changes parameters


def test_meta_measurement_agrees_with_a_computed_layer() -> None:
    found = measure_conv(3, 8, 5, 2, 33)
    conv = nn.Conv2d(3, 8, 5, 2, 2)
    out = conv(torch.zeros(1, 3, 33, 33))
    assert found["parameters"] == sum(p.numel() for p in conv.parameters())
    assert found["output"] == out.shape[-1] == 17
    assert found["macs"] == 17 * 17 * 8 * 3 * 25


def test_three_3x3_against_one_7x7() -> None:
    found = stack_comparison(16, 20)
    one, three = found["one 7x7"], found["three 3x3"]
    assert one["parameters"] == 49 * 16 * 16 + 16 and three["parameters"] == 3 * (9 * 16 * 16 + 16)
    assert one["field"] == three["field"] == 7 and one["output"] == three["output"] == [16, 20, 20]
    assert three["macs"] * 49 == one["macs"] * 27


def test_filter_size_recipe_answers_from_its_measurements(tmp_path: Path) -> None:
    out = tmp_path / "q4"
    run_recipe("filter-size-and-stride", out, quick=True)
    results, readme = read_results(out), (out / "README.md").read_text()
    assert results["agree"] == results["settings"] == 45
    assert "45 of 45 settings agree" in readme and "002 Q4" in readme
    row = next(r for r in results["grid"] if (r["in"], r["out"], r["kernel"], r["stride"]) == (64, 128, 11, 1))
    assert f"{row['parameters']:,}" in readme
    assert f"{results['stack']['three 3x3']['parameters']:,}" in readme


@pytest.mark.slow
def test_anatomy_recipe_reports_the_effective_count(quick_answer) -> None:
    out = quick_answer("lenet5-anatomy")
    results, readme = read_results(out), (out / "README.md").read_text()
    assert results["c3"]["parameters"] == 1_516 and results["parameters"]["lenet5_sparse"] == 60_806
    assert "1,516" in readme and "60 of the 96" in readme and "doi:10.1109/5.726791" in readme
    assert results["masked_weight_max_after_training"] == 0.0
    for model in ("lenet5", "lenet5_sparse"):
        assert 0.0 < results["trained"][model]["test_accuracy"] <= 1.0
    assert (out / "c3-connections.png").is_file() and (out / "curves.png").is_file()
