"""Filter grids and feature maps: per-filter normalisation, stage detection, hooks always removed."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cnnlab.errors import ModelError
from cnnlab.explain.activations import feature_maps, plot_feature_maps, recording, stage_layers
from cnnlab.explain.filters import normalise_filters, plot_filters
from cnnlab.models import create_model


def test_filters_are_normalised_one_by_one() -> None:
    w = torch.stack([torch.full((3, 2, 2), 5.0), torch.arange(12.0).view(3, 2, 2) * 100])
    tiles = normalise_filters(w)
    assert (tiles[0] == 0.5).all()  # a constant filter is mid-grey, not a division by zero
    assert tiles[1].min() == 0 and tiles[1].max() == 1


def test_filter_grids_for_grey_rgb_and_deeper_layers(tmp_path: Path) -> None:
    lenet = create_model("lenet5")
    grid = plot_filters(lenet, tmp_path / "c1.png", untrained=True)
    assert grid.layer == "features.c1" and grid.shape == (6, 1, 5, 5) and not grid.colour
    assert (tmp_path / "c1.png").stat().st_size > 1000
    deep = plot_filters(lenet, tmp_path / "c3.png", layer="features.c3")
    assert deep.shape == (16, 6, 5, 5) and deep.shown_channels == 6
    rgb = plot_filters(create_model("alexnet_small", input_size=67), tmp_path / "a.png")
    assert rgb.colour and rgb.shape == (96, 3, 11, 11) and rgb.shown_filters == 96
    with pytest.raises(ModelError, match=r"features\.c1, features\.c3, features\.c5"):
        plot_filters(lenet, tmp_path / "x.png", layer="features.c9")
    with pytest.raises(ModelError, match="not a convolution"):
        plot_filters(lenet, tmp_path / "x.png", layer="features.s2")


def test_feature_maps_and_stages(tmp_path: Path) -> None:
    model = create_model("lenet5")
    stages = stage_layers(model, (1, 32, 32))
    assert stages == ["features.act1", "features.s2", "features.act3", "features.s4"]
    maps = feature_maps(model, ["features.c1", "features.act3"], torch.randn(1, 1, 32, 32))
    assert maps["features.c1"].shape == (6, 28, 28) and maps["features.act3"].shape == (16, 10, 10)
    image = (torch.rand(32, 32, 1) * 255).byte().numpy()
    plot_feature_maps(image, maps, tmp_path / "maps.png", "lenet5")
    assert (tmp_path / "maps.png").stat().st_size > 1000


def test_recording_removes_hooks_whatever_happens() -> None:
    model = create_model("lenet5")
    with pytest.raises(ValueError), recording(model, ["features.c1"]) as saved:
        model(torch.randn(1, 1, 32, 32))
        assert saved["features.c1"].shape == (1, 6, 28, 28)
        raise ValueError
    assert all(not m._forward_hooks for m in model.modules())
    with pytest.raises(ModelError, match=r"features\.c1"), recording(model, ["features.c1", "nowhere"]):
        pass
    assert all(not m._forward_hooks for m in model.modules())
