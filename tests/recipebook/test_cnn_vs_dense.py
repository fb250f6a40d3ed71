"""000 Q1: a CNN against a dense network. The shift, the equivariance measurement and the dense
baseline's size, checked on known inputs; then the recipe's answer against its own results."""

from __future__ import annotations

import pytest
import torch

from cnnlab.explain.calc import dense_parameters
from cnnlab.models import create_model
from cnnlab.recipebook import REGISTRY, read_results
from cnnlab.recipebook.core import pct
from cnnlab.recipebook.theory import SHIFTS, first_layer_shift, images_per_second, shift_accuracy, shift_pixels


def test_shift_moves_pixels_and_fills_with_background() -> None:
    image = torch.zeros(1, 1, 8, 8, dtype=torch.uint8)
    image[0, 0, 3, 4] = 200
    moved = shift_pixels(image, 2, -1)
    assert moved[0, 0, 5, 3] == 200 and int(moved.sum()) == 200
    assert torch.equal(shift_pixels(image, 0, 0), image)
    assert int(shift_pixels(image, 5, 0).sum()) == 0  # moved out of the frame: gone, not wrapped


class _CentrePixel:
    """Says 1 when the centre pixel is lit: right only for an unshifted one-pixel image."""

    def logits_from_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        lit = (pixels[:, 0, 16, 16] > 0).float()
        return torch.stack([1 - lit, lit], dim=1)


def test_shift_accuracy_averages_the_four_directions() -> None:
    pixels = torch.zeros(4, 1, 32, 32, dtype=torch.uint8)
    pixels[:, 0, 16, 16] = 255
    found = shift_accuracy(_CentrePixel(), pixels, torch.ones(4, dtype=torch.long))
    assert found == [1.0] + [0.0] * (len(SHIFTS) - 1)
    assert images_per_second(_CentrePixel(), pixels) > 0


def test_a_convolution_is_equivariant_and_a_dense_layer_is_not() -> None:
    torch.manual_seed(0)
    pixels = torch.randint(0, 256, (16, 1, 32, 32), dtype=torch.uint8)

    def normalize(p: torch.Tensor) -> torch.Tensor:
        return p.float() / 255

    cnn = first_layer_shift(create_model("lenet5", 10, 1, 32), pixels, normalize, 2)
    assert cnn["after_undoing"] < 1e-5 and cnn["change"] > 0.1
    dense = first_layer_shift(create_model("mlp", 10, 1, 32), pixels, normalize, 2)
    assert "after_undoing" not in dense and dense["change"] > 0.1


def test_the_dense_baseline_is_the_papers_300_100_network() -> None:
    for side in (28, 32):
        model = create_model("mlp", 10, 1, side)
        assert sum(p.numel() for p in model.parameters()) == dense_parameters([side * side, 300, 100, 10])
    assert sum(p.numel() for p in create_model("mlp").parameters()) == 266_610


def test_seed_label_is_000_q1() -> None:
    assert REGISTRY["cnn-vs-dense"].seed == "000 Q1"
    assert REGISTRY["filter-size-and-stride"].seed == "002 Q4"


@pytest.mark.slow
def test_recipe_reports_shifted_accuracy_and_speed(quick_answer) -> None:
    out = quick_answer("cnn-vs-dense")
    results, readme = read_results(out), (out / "README.md").read_text()
    assert results["shifts"] == list(SHIFTS)
    for name in ("lenet5", "mlp"):
        trained = results["trained"][name]
        assert len(trained["shift_accuracy"]) == len(SHIFTS)
        assert all(0.0 <= a <= 1.0 for a in trained["shift_accuracy"])
        assert trained["shift_accuracy"][0] == pytest.approx(
            trained["test_accuracy"], abs=0.002
        )  # the same images and weights
        assert trained["images_per_second"] > 0 and trained["seconds_per_epoch"] > 0
        assert pct(trained["shift_accuracy"][-1]) in readme
    assert results["trained"]["lenet5"]["first_layer_shift"]["after_undoing"] < 1e-5
    assert results["trained"]["mlp"]["parameters"] == 338_610  # 32x32 input, as LeNet-5 sees it
    assert (out / "shift-accuracy.png").is_file()
