"""The filters-and-feature-maps recipe's measurements, checked against the network itself."""

from __future__ import annotations

import numpy as np
import torch

from cnnlab.explain.activations import feature_maps
from cnnlab.explain.summary import Field, layer_table
from cnnlab.models import create_model
from cnnlab.recipebook.features import DEPTHS, INPUT, MODEL, depth_rows, field_crop, strongest


def test_depth_rows_match_the_maps_and_the_layer_table() -> None:
    model = create_model(MODEL, 1000, INPUT[0], INPUT[1]).eval()
    torch.manual_seed(0)
    maps = feature_maps(model, list(DEPTHS.values()), torch.randn(1, *INPUT))
    rows = depth_rows(layer_table(model, INPUT), maps)
    assert [r["layer"] for r in rows] == list(DEPTHS.values())
    for row in rows:
        fmap = maps[row["layer"]]
        assert row["shape"] == list(fmap.shape)
        assert row["zero_fraction"] == float((fmap <= 0).float().mean())
        assert 0 <= row["silent_maps"] <= fmap.shape[0]
    # the stem is a 3x3 stride-2 convolution: each unit sees 3 px, neighbours 2 px apart
    assert (rows[0]["field"], rows[0]["jump"]) == (3, 2)
    fields = [r["field"] for r in rows]
    assert fields == sorted(fields) and fields[-1] > INPUT[1]
    sizes = [r["shape"][1] for r in rows]
    assert sizes == sorted(sizes, reverse=True)


def test_strongest_channels_are_ranked_by_mean_activation() -> None:
    fmap = torch.zeros(5, 4, 4)
    fmap[3] = 2.0
    fmap[1] = 1.0
    fmap[4, 0, 0] = 100.0  # one hot unit: mean 6.25, the strongest
    assert strongest(fmap, 3) == [4, 3, 1]


def test_field_crop_is_the_units_receptive_field_cut_at_the_border() -> None:
    pixels = np.arange(224 * 224 * 3).reshape(224, 224, 3)
    field = Field(size=(11, 11), jump=(4, 4), start=(5.0, 5.0))
    centre = field_crop(pixels, field, (10, 20))  # centre at (45, 85)
    assert centre.shape[:2] == (11, 11)
    assert (centre[5, 5] == pixels[45, 85]).all()
    corner = field_crop(pixels, field, (0, 0))  # centre at (5, 5): the whole field fits
    assert corner.shape[:2] == (11, 11)
    edge = field_crop(pixels, Field(size=(21, 21), jump=(4, 4), start=(0.0, 0.0)), (0, 0))
    assert edge.shape[:2] == (11, 11)  # half of it lies outside the image


def test_neighbour_correlation_tells_smooth_filters_from_noise() -> None:
    from cnnlab.recipebook.training import neighbour_correlation

    torch.manual_seed(0)
    noise = torch.randn(96, 3, 11, 11)
    ramp = torch.linspace(-1, 1, 11).expand(96, 3, 11, 11)  # a vertical edge in every filter
    assert abs(neighbour_correlation(noise)) < 0.05
    assert neighbour_correlation(ramp + 0.1 * noise) > 0.9
