"""002 Question 1: what filters and feature maps are, shown on a trained network: the ImageNet
EfficientNet-Lite0's stem filters, its feature maps at four depths on one flower photo with the
receptive field of each, and which test images drive a deep channel hardest."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cnnlab.data.sources import locate
from cnnlab.errors import DataError
from cnnlab.evaluation.report import Figure, Section, Table
from cnnlab.explain.activations import feature_maps, plot_feature_maps, recording
from cnnlab.explain.filters import conv_layer, plot_filters
from cnnlab.explain.summary import Field, LayerTable, layer_table
from cnnlab.explain.target import Target, input_pixels
from cnnlab.figures import plot_labelled_images
from cnnlab.models import create_model
from cnnlab.recipebook.core import Answer, Context, recipe
from cnnlab.recipebook.training import neighbour_correlation

MODEL = "efficientnet_lite0"
INPUT = (3, 224, 224)
DEPTHS = {
    "stem": "bn1",
    "early block": "blocks.1.1.bn2",
    "middle block": "blocks.3.2.bn2",
    "last layer": "bn2",
}
"""Each depth's drawn output: the activation (BatchNorm + ReLU6) after the stem convolution, after the
depthwise convolution of stage 2's last block and of stage 4's last block, and after the final 1x1
convolution whose maps global pooling averages for the classifier. Post-activation maps, like the
ReLU maps of a classic CNN: zero where a filter found nothing."""
STRONGEST = 8
"""Maps drawn per depth: the channels with the largest mean activation on the image."""
TOP_IMAGES = 6
"""Test images shown for a deep channel: the ones that drive it hardest."""


def flower_images(ctx: Context) -> list[Path]:
    root, searched = locate("flowers", ctx.data_dir)
    if root is None:
        raise DataError(f"flowers not found; looked in {', '.join(map(str, searched))}")
    return sorted((root / "test").glob("*/*.jpg"))


def depth_rows(table: LayerTable, maps: dict[str, torch.Tensor]) -> list[dict[str, Any]]:
    """What each depth's maps measure on one image: size, receptive field, and how many of their
    values are zero (a ReLU6 output is exactly 0 where the filter's response was negative)."""
    rows = []
    for depth, layer in DEPTHS.items():
        fmap = maps[layer]
        flat = fmap.flatten(1)
        field = table.row(layer).field
        assert isinstance(field, Field)  # every drawn depth is before global pooling
        rows.append(
            {
                "depth": depth,
                "layer": layer,
                "shape": list(fmap.shape),
                "field": field.size[0],
                "jump": field.jump[0],
                "zero_fraction": float((fmap <= 0).float().mean()),
                "silent_maps": int((flat.max(1)[0] <= 0).sum()),
                "mean_activation": float(fmap.mean()),
            }
        )
    return rows


def strongest(fmap: torch.Tensor, k: int) -> list[int]:
    """The k channels with the largest mean activation, strongest first."""
    return [int(i) for i in fmap.flatten(1).mean(1).argsort(descending=True)[:k]]


def top_activating(
    model: nn.Module, target: Target, images: list[Path], layer: str, channel: int
) -> list[tuple[Path, float, tuple[int, int], np.ndarray]]:
    """The TOP_IMAGES images whose strongest unit of `channel` at `layer` is largest, with that
    value, the unit's (row, column) and the network-input pixels."""
    found = []
    for start in range(0, len(images), 32):
        batch = [input_pixels(target, p) for p in images[start : start + 32]]
        x = torch.cat([b[1] for b in batch])
        with recording(model, [layer]) as saved, torch.no_grad():
            model(x)
        maps = saved[layer][:, channel]
        for path, (pixels, _), m in zip(images[start : start + 32], batch, maps, strict=True):
            at = int(m.argmax())
            found.append((path, float(m.max()), divmod(at, m.shape[1]), pixels))
    return sorted(found, key=lambda f: -f[1])[:TOP_IMAGES]


def field_crop(pixels: np.ndarray, field: Field, unit: tuple[int, int]) -> np.ndarray:
    """The input pixels one unit sees: its receptive field around the unit's centre, cut at the border."""
    cy = field.start[0] + unit[0] * field.jump[0]
    cx = field.start[1] + unit[1] * field.jump[1]
    half_h, half_w = field.size[0] // 2, field.size[1] // 2
    top, left = max(0, round(cy - half_h)), max(0, round(cx - half_w))
    return pixels[top : round(cy + half_h) + 1, left : round(cx + half_w) + 1]


@recipe(
    "filters-and-feature-maps",
    "002 Q1",
    "Filters and feature maps of a trained network, from the first layer to the last",
    "Explain the concept of filters (kernels) and feature maps in CNNs: what a filter is, how it produces a "
    "feature map, and what the maps of early and deep layers capture.",
    data="flowers (one photo; the test split for the deep channels) + ImageNet EfficientNet-Lite0",
)
def filters_and_feature_maps(ctx: Context) -> Answer:
    model = create_model(MODEL, 1000, INPUT[0], INPUT[1], "imagenet").eval()
    target = Target(model, MODEL, INPUT, False)
    images = flower_images(ctx)
    image = images[0]
    ctx.step("stem filters and the layer table")
    stem, conv = conv_layer(model, None)
    grid = plot_filters(model, ctx.path("stem-filters.png"), stem, "EfficientNet-Lite0 (ImageNet)")
    table = layer_table(model, INPUT)
    stem_row = table.row(stem)
    smooth = neighbour_correlation(conv.weight)

    ctx.step("feature maps at four depths")
    pixels, x = input_pixels(target, image)
    maps = feature_maps(model, list(DEPTHS.values()), x)
    rows = depth_rows(table, maps)
    shown: dict[str, torch.Tensor] = {}
    picked: dict[str, list[int]] = {}
    for row in rows:
        fmap = maps[row["layer"]]
        picked[row["depth"]] = strongest(fmap, STRONGEST)
        channels = ", ".join(map(str, picked[row["depth"]]))
        label = f"{row['depth']}: {row['layer']}, field {row['field']} px, top of {fmap.shape[0]}: ch {channels};"
        shown[label] = fmap[picked[row["depth"]]]
    plot_feature_maps(
        pixels,
        shown,
        ctx.path("feature-maps.png"),
        f"EfficientNet-Lite0 (ImageNet) on {image.parent.name}/{image.name}: the {STRONGEST} strongest maps per depth",
        max_maps=STRONGEST,
    )

    ctx.step("the test images that drive deep channels hardest")
    # --quick: 24 photos spread over the classes (the list is sorted by class)
    pool = images[:: max(1, len(images) // 24)][:24] if ctx.quick else images
    drivers: dict[str, dict[str, Any]] = {}
    driver_figures = []
    for depth in ("middle block", "last layer"):
        layer, channel = DEPTHS[depth], picked[depth][0]
        field = table.row(layer).field
        assert isinstance(field, Field)
        top = top_activating(model, target, pool, layer, channel)
        whole = field.size[0] >= INPUT[1]
        crops = [p if whole else field_crop(p, field, unit) for _, _, unit, p in top]
        captions = [f"{path.parent.name}\nmax {value:.2f}" for path, value, _, _ in top]
        slug = depth.replace(" ", "-")
        what = (
            "whole images (the field covers them)" if whole else f"the {field.size[0]} px field of the strongest unit"
        )
        plot_labelled_images(
            crops,
            captions,
            ctx.path(f"drivers-{slug}.png"),
            f"{layer} channel {channel}: the {len(top)} of {len(pool)} test images that drive it hardest ({what})",
        )
        classes = [path.parent.name for path, _, _, _ in top]
        drivers[depth] = {"layer": layer, "channel": channel, "images": len(pool), "classes": classes}
        driver_figures.append(Figure(ctx.out / f"drivers-{slug}.png", f"{depth} ({layer}) channel {channel}: {what}"))

    first, last = rows[0], rows[-1]
    concept = [
        f"A filter (kernel) is a small array of learned weights. EfficientNet-Lite0's first layer, `{stem}`, has "
        f"{grid.shape[0]} of them, each {grid.shape[2]}x{grid.shape[3]} over the 3 colour channels "
        f"({stem_row.parameters:,} weights in all), slid over the {INPUT[1]}x{INPUT[2]} input with stride "
        f"{stem_row.stride}.",
        f"At every position a filter takes the weighted sum of the pixels under it; the grid of those sums, after "
        f"BatchNorm and ReLU6, is its feature map: {first['shape'][0]} filters give {first['shape'][0]} maps of "
        f"{first['shape'][1]}x{first['shape'][2]}. A map is bright where the image has what the filter matches "
        "and zero where it does not; the next layer's filters read all the maps below them at once, so each depth "
        "detects combinations of what the previous one found.",
        f"The stem filters are trained (ImageNet): adjacent weights inside a filter correlate {smooth:+.3f} "
        "(about 0 for random weights), i.e. they are smooth colour-opponent blobs and oriented edge detectors, "
        "not noise.",
    ]
    depth_text = [
        f"Going deeper, the maps shrink from {first['shape'][1]}x{first['shape'][2]} to "
        f"{last['shape'][1]}x{last['shape'][2]} while their number grows from {first['shape'][0]} to "
        f"{last['shape'][0]}, and each unit sees more of the image: its receptive field grows from "
        f"{first['field']}x{first['field']} px at the stem to {last['field']}x{last['field']} px at the last layer "
        f"(wider than the {INPUT[1]} px input: padding included), with {last['jump']} input pixels between "
        "neighbouring units instead of "
        f"{first['jump']}.",
        "Early maps are the photo filtered for one colour or one edge direction, sharp and full-size; middle maps "
        "light up blotches where a texture or a part is; the last maps are a few coarse cells marking where "
        "something the network learned to recognise is: more abstract and less local with every stage, because "
        "each unit combines the maps below it over a larger field.",
        _sparsity_text(rows),
    ]
    mid, late = drivers["middle block"], drivers["last layer"]
    driver_text = [
        f"What a deep channel responds to, measured over {mid['images']} test photos: middle-block channel "
        f"{mid['channel']} (the strongest on the example image) fires hardest on the patches shown (each is the "
        f"receptive field of its strongest unit), from {_classes(mid['classes'])}; last-layer channel "
        f"{late['channel']} on whole photos of {_classes(late['classes'])}.",
    ]
    stats = Table(
        [
            "depth",
            "layer",
            "maps (C x H x W)",
            "receptive field",
            "jump (px)",
            "zero values",
            "all-zero maps",
        ],
        [
            [
                r["depth"],
                f"`{r['layer']}`",
                " x ".join(map(str, r["shape"])),
                f"{r['field']}x{r['field']} px",
                str(r["jump"]),
                f"{r['zero_fraction']:.1%}",
                f"{r['silent_maps']} / {r['shape'][0]}",
            ]
            for r in rows
        ],
    )
    summary = (
        f"EfficientNet-Lite0 (ImageNet) on one flower photo: {grid.shape[0]} trained {grid.shape[2]}x{grid.shape[3]} "
        f"stem filters (adjacent-weight correlation {smooth:+.3f}) and its feature maps at four depths, from "
        f"{first['shape'][0]} maps of {first['shape'][1]}x{first['shape'][2]} seeing {first['field']} px each to "
        f"{last['shape'][0]} maps of {last['shape'][1]}x{last['shape'][2]} seeing {last['field']} px; zero "
        f"activations from {first['zero_fraction']:.0%} (stem) to {last['zero_fraction']:.0%} (last layer)."
    )
    sections = [
        Section(
            "Filters",
            [
                *concept,
                Figure(ctx.out / "stem-filters.png", f"the {grid.shape[0]} trained stem filters, in colour"),
            ],
        ),
        Section(
            "Feature maps at four depths",
            [
                *depth_text,
                stats,
                Figure(ctx.out / "feature-maps.png", f"the {STRONGEST} strongest maps at each depth on {image.name}"),
            ],
        ),
        Section("What a deep channel looks for", [*driver_text, *driver_figures]),
    ]
    results = {
        "image": f"{image.parent.name}/{image.name}",
        "stem_filters": list(grid.shape),
        "stem_neighbour_correlation": smooth,
        "depths": rows,
        "strongest": picked,
        "drivers": drivers,
    }
    return Answer(summary, sections, results)


def _classes(names: list[str]) -> str:
    counts = {n: names.count(n) for n in dict.fromkeys(names)}
    return ", ".join(f"{n} x{c}" if c > 1 else n for n, c in counts.items())


def _sparsity_text(rows: list[dict[str, Any]]) -> str:
    zeros = ", ".join(f"{r['depth']} {r['zero_fraction']:.0%}" for r in rows)
    silent = ", ".join(f"{r['depth']} {r['silent_maps']} of {r['shape'][0]}" for r in rows)
    text = (
        f"Share of zero activations (sparsity) per depth: {zeros}; maps entirely zero on this image: {silent}. "
        "A zero means the filter found nothing it matches there. "
    )
    fractions = [r["zero_fraction"] for r in rows]
    if all(a <= b for a, b in itertools.pairwise(fractions)):
        return text + (
            "Sparsity rises with depth: an early filter (a colour, an edge) responds almost everywhere, a deep "
            "one only where its part or object is, so most deep maps are silent on any one photo."
        )
    peak = max(rows, key=lambda r: r["zero_fraction"])
    return text + (
        f"Sparsity does not rise steadily here (highest at the {peak['depth']}): it depends on the image and "
        "the layer's normalisation as well as on how specific its filters are."
    )
