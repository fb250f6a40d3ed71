"""The theory questions, answered by measuring real models: parameters against a dense network,
receptive fields layer by layer, and output sizes for padding and stride checked against PyTorch."""

from __future__ import annotations

import itertools

import numpy as np
import torch
from torch import nn

from cnnlab.evaluation.report import Figure, Section, Table
from cnnlab.explain.calc import dense_parameters, output_size
from cnnlab.explain.summary import Field, dense_widths, layer_table
from cnnlab.figures import plt, save_figure
from cnnlab.models import create_model
from cnnlab.recipebook.core import Answer, Context, recipe

MODELS = {"lenet5": (1, 32, 32), "alexnet": (3, 224, 224), "vgg16": (3, 224, 224), "resnet50": (3, 224, 224)}
"""The networks the documents discuss, at their own input sizes."""


def _table(name: str, shape: tuple[int, int, int]):
    return layer_table(create_model(name, 10, shape[0], shape[1]).eval(), shape)


@recipe(
    "cnn-vs-dense",
    "000 Q1 / 002 Q4",
    "A CNN against a fully connected network: parameters",
    "How does a CNN differ from a fully connected network in architecture and on image data? (weight sharing, "
    "local connectivity, parameter count)",
)
def cnn_vs_dense(ctx: Context) -> Answer:
    rows, results = [], {}
    for name, shape in MODELS.items():
        if ctx.quick and name in ("vgg16", "resnet50"):
            continue
        ctx.step(f"measuring {name}")
        tab = _table(name, shape)
        widths = dense_widths(tab)
        dense = dense_parameters(widths)
        results[name] = {
            "input": list(shape),
            "parameters": tab.parameters,
            "dense_parameters": dense,
            "ratio": dense / tab.parameters,
            "widths": widths,
        }
        rows.append(
            [name, "x".join(map(str, shape)), f"{tab.parameters:,}", f"{dense:,}", f"{dense / tab.parameters:,.0f}x"]
        )
    lenet = results["lenet5"]
    first = _table("lenet5", MODELS["lenet5"]).rows[0]
    conv_params = first.parameters
    dense_first = lenet["widths"][0] * lenet["widths"][1] + lenet["widths"][1]
    fig, ax = plt.subplots(figsize=(7, 3.6))
    names = list(results)
    ax.bar([i - 0.2 for i in range(len(names))], [results[n]["parameters"] for n in names], 0.4, label="CNN")
    ax.bar(
        [i + 0.2 for i in range(len(names))],
        [results[n]["dense_parameters"] for n in names],
        0.4,
        label="dense network, same layer widths",
    )
    ax.set_yscale("log")
    ax.set_xticks(range(len(names)), names)
    ax.set_ylabel("parameters (log scale)")
    ax.legend()
    figure = ctx.path("parameters.png")
    save_figure(fig, figure)
    text = [
        f"LeNet-5 has {lenet['parameters']:,} parameters. A fully connected network whose layers are as wide as "
        f"LeNet-5's activations ({' -> '.join(f'{w:,}' for w in lenet['widths'])}) needs "
        f"{lenet['dense_parameters']:,}: {lenet['ratio']:,.0f} times as many.",
        f"The difference is weight sharing and local connectivity. LeNet-5's first layer ({first.name}, "
        f"{first.kernel} kernels) produces {lenet['widths'][1]:,} activations from {lenet['widths'][0]:,} "
        f"pixels with {conv_params:,} weights, because every position reuses the same six 5x5 filters; a dense "
        f"layer producing the same activations needs {dense_first:,}.",
        "Sharing also makes the features translation-equivariant (a shifted digit gives shifted maps), which "
        "is why CNNs need far fewer examples on images than dense networks of similar capacity.",
        Table(["network", "input", "CNN parameters", "dense parameters", "ratio"], rows),
        Figure(figure, "parameters of each CNN against a dense network with the same widths (log scale)"),
    ]
    summary = (
        f"LeNet-5: {lenet['parameters']:,} parameters against {lenet['dense_parameters']:,} for the dense network."
    )
    return Answer(summary, [Section("Parameters", text)], {"models": results})


def _field_sizes(name: str, shape: tuple[int, int, int]) -> list[tuple[str, int, int]]:
    """(layer, receptive field, jump) of every layer with a defined field, in graph order."""
    out = []
    for r in _table(name, shape).rows:
        if isinstance(r.field, Field):
            out.append((r.name, r.field.size[0], r.field.jump[0]))
    return out


@recipe(
    "receptive-field",
    "002 Q3",
    "The receptive field of every layer of LeNet-5, AlexNet, VGG16 and ResNet50",
    "Define the receptive field in CNNs. Why is it important for deep architectures? (measured for every layer of "
    "LeNet-5, AlexNet, VGG16 and ResNet50)",
)
def receptive_field(ctx: Context) -> Answer:
    fields, rows = {}, []
    models = {k: v for k, v in MODELS.items() if not (ctx.quick and k == "resnet50")}
    for name, shape in models.items():
        ctx.step(f"tracing {name}")
        sizes = _field_sizes(name, shape)
        fields[name] = sizes
        layer, rf, jump = sizes[-1]
        covers = next((i for i, (_, size, _) in enumerate(sizes) if size >= shape[1]), None)
        rows.append(
            [
                name,
                "x".join(map(str, shape)),
                str(len(sizes)),
                layer,
                f"{rf} px",
                f"{jump} px",
                "never" if covers is None else f"{sizes[covers][0]} (layer {covers + 1})",
            ]
        )
    fig, ax = plt.subplots(figsize=(8, 4.2))
    for name, sizes in fields.items():
        ax.plot(range(1, len(sizes) + 1), [s for _, s, _ in sizes], marker=".", label=name)
        ax.axhline(models[name][1], ls=":", lw=0.8, color=ax.lines[-1].get_color())
    ax.set_yscale("log")
    ax.set_xlabel("layer (graph order, layers with a spatial field)")
    ax.set_ylabel("receptive field, input pixels (log)")
    ax.set_title("receptive field by depth (dotted: input side)")
    ax.legend()
    figure = ctx.path("receptive-field.png")
    save_figure(fig, figure)
    tables = [
        Section(
            f"{name}, layer by layer",
            [Table(["layer", "receptive field (px)", "jump (px)"], [[n, str(s), str(j)] for n, s, j in sizes])],
        )
        for name, sizes in fields.items()
    ]
    vgg = fields.get("vgg16")
    text = [
        Table(
            [
                "network",
                "input",
                "layers",
                "last spatial layer",
                "its field",
                "its jump",
                "first layer seeing the whole input",
            ],
            rows,
        ),
        Figure(figure, "receptive field against depth"),
        "A k x k convolution adds (k - 1) x jump pixels to the field; a stride or pooling multiplies the jump, so "
        "every later layer grows the field faster. That is why AlexNet's large early kernels and strides and "
        "VGG's stacks of 3x3 convolutions between poolings both reach most of the image by the last block.",
    ]
    if vgg:
        last = {n: s for n, s, _ in vgg}
        if "features.28" in last:
            text.append(
                f"VGG16's last convolution (features.28, conv5_3) sees {last['features.28']} px of the "
                "224 px input: two stacked 3x3 convolutions see 5x5 and three see 7x7, with fewer "
                "parameters and more non-linearities than one large kernel."
            )
    results = {
        name: {"last_layer": s[-1][0], "field": s[-1][1], "jump": s[-1][2], "layers": len(s)}
        for name, s in fields.items()
    }
    summary = "; ".join(f"{n}: {r['field']} px at {r['last_layer']}" for n, r in results.items())
    return Answer(
        f"Receptive field of the last spatial layer: {summary}.",
        [Section("Fields", text), *tables],
        {"models": results},
    )


@recipe(
    "padding-stride",
    "002 Q2",
    "Output sizes for padding and stride, checked against PyTorch",
    "Explain padding and stride. How do they affect the output dimensions of feature maps? (the formula for a "
    "grid of settings, each checked against a real layer)",
)
def padding_stride(ctx: Context) -> Answer:
    size = 32
    kernels, strides, paddings = (1, 3, 5, 7), (1, 2, 3), (0, 1, 2, 3, "same")
    rows, agree, total = [], 0, 0
    grid = np.zeros((len(kernels) * len(strides), len(paddings)))
    x = torch.zeros(1, 1, size, size)
    for (ki, k), (si, s) in itertools.product(enumerate(kernels), enumerate(strides)):
        for pi, p in enumerate(paddings):
            formula = output_size(size, k, s, p)
            try:  # PyTorch itself refuses padding='same' with a stride above 1
                actual = int(nn.Conv2d(1, 1, k, s, p)(x).shape[-1])
            except (RuntimeError, ValueError):
                actual = None
            if actual is None:
                continue
            total += 1
            agree += formula == actual
            grid[ki * len(strides) + si, pi] = actual
            rows.append([str(k), str(s), str(p), str(formula), str(actual), "yes" if formula == actual else "NO"])
    fig, ax = plt.subplots(figsize=(6, 6))
    ax.imshow(grid, cmap="viridis")
    for (i, j), v in np.ndenumerate(grid):
        ax.text(j, i, f"{int(v)}" if v else "-", ha="center", va="center", color="w", fontsize=8)
    ax.set_xticks(range(len(paddings)), [str(p) for p in paddings])
    ax.set_yticks(range(grid.shape[0]), [f"k{k} s{s}" for k, s in itertools.product(kernels, strides)])
    ax.set_xlabel("padding")
    ax.set_title(f"output side for a {size}x{size} input")
    figure = ctx.path("output-sizes.png")
    save_figure(fig, figure)
    text = [
        f"Output side = floor((n + 2p - k) / s) + 1 for an n = {size} input; `same` pads so that the output is "
        "ceil(n / s) (PyTorch allows it only at stride 1).",
        f"{agree} of {total} settings give the same size from the formula as from an actual nn.Conv2d.",
        Figure(figure, "output side for each kernel, stride and padding"),
        Table(["kernel", "stride", "padding", "formula", "PyTorch", "agree"], rows),
    ]
    return Answer(
        f"The formula matched PyTorch in {agree} of {total} settings.",
        [Section("Output sizes", text)],
        {"settings": total, "agree": agree},
    )
