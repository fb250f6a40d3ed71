"""The theory questions, answered by measuring real models: a CNN against a dense network
(parameters, then both trained: accuracy, speed, shifted digits), receptive fields layer by layer,
and output sizes for padding and stride checked against PyTorch."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from cnnlab.bundle.classifier import Classifier
from cnnlab.bundle.classifier import load as load_classifier
from cnnlab.bundle.data import bundle_data, network_pixels
from cnnlab.evaluation.report import Figure, Section, Table
from cnnlab.explain.calc import dense_parameters, output_size
from cnnlab.explain.summary import Field, dense_widths, layer_table
from cnnlab.figures import plt, save_figure
from cnnlab.models import create_model
from cnnlab.recipebook.anatomy import digits_config, run_figures
from cnnlab.recipebook.core import Answer, Context, pct, recipe, train_recipe

MODELS = {"lenet5": (1, 32, 32), "alexnet": (3, 224, 224), "vgg16": (3, 224, 224), "resnet50": (3, 224, 224)}
"""The networks the documents discuss, at their own input sizes."""


def _table(name: str, shape: tuple[int, int, int]):
    return layer_table(create_model(name, 10, shape[0], shape[1]).eval(), shape)


SHIFTS = (0, 1, 2, 3, 4)
DIRECTIONS = ((0, 1), (0, -1), (1, 0), (-1, 0))
"""Right, left, down, up: accuracy at a shift is the mean over the four."""


def shift_pixels(pixels: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Images moved by (dy, dx) pixels, the uncovered border black (MNIST's background), what
    leaves the frame dropped: a digit written a little off-centre, not wrapped around."""
    out = torch.zeros_like(pixels)
    h, w = pixels.shape[-2:]
    out[..., max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = pixels[
        ..., max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
    ]
    return out


def shift_accuracy(clf: Classifier, pixels: torch.Tensor, labels: torch.Tensor) -> list[float]:
    """Test accuracy at each of SHIFTS pixels, averaged over the four directions."""
    found = []
    for k in SHIFTS:
        moves = [(0, 0)] if k == 0 else [(k * dy, k * dx) for dy, dx in DIRECTIONS]
        hits = [
            (clf.logits_from_pixels(shift_pixels(pixels, dy, dx)).argmax(1) == labels).float().mean().item()
            for dy, dx in moves
        ]
        found.append(float(np.mean(hits)))
    return found


def images_per_second(clf: Classifier, pixels: torch.Tensor, repeats: int = 3) -> float:
    """Inference throughput on `pixels` (batches of 256), the best of `repeats` after a warm-up."""
    clf.logits_from_pixels(pixels[:256])
    best = min(_timed(lambda: clf.logits_from_pixels(pixels)) for _ in range(repeats))
    return len(pixels) / best


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def first_layer_shift(
    model: nn.Module, pixels: torch.Tensor, normalize: Callable[[torch.Tensor], torch.Tensor], shift: int
) -> dict[str, float]:
    """How much the first weight layer's output (biases left out: they do not move) changes when the
    images move `shift` px down, relative to its size; for an unpadded convolution also what is left
    of the change once its maps are moved back up: translation equivariance makes that zero."""
    x, moved = normalize(pixels), normalize(shift_pixels(pixels, shift, 0))
    first = next(m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear))
    with torch.no_grad():
        if isinstance(first, nn.Conv2d):
            a, b = first._conv_forward(moved, first.weight, None), first._conv_forward(x, first.weight, None)
            undone = _relative(a[..., shift:, :], b[..., : b.shape[-2] - shift, :])
            return {"change": _relative(a, b), "after_undoing": undone}
        a, b = F.linear(moved.flatten(1), first.weight), F.linear(x.flatten(1), first.weight)
    return {"change": _relative(a, b)}


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b))


def _residue(value: float) -> str:
    if value == 0:
        return "nothing (an exact match)"
    return f"{value:.1e} of it" + (" (float rounding)" if value < 1e-5 else "")


def _parameter_section(ctx: Context) -> tuple[Section, dict[str, Any]]:
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
        Table(["network", "input", "CNN parameters", "dense parameters", "ratio"], rows),
        Figure(figure, "parameters of each CNN against a dense network with the same widths (log scale)"),
    ]
    return Section("Parameters", text), results


@recipe(
    "cnn-vs-dense",
    "000 Q1",
    "A CNN against a fully connected network: parameters, accuracy, speed and shifted inputs",
    "What is a CNN, and how does it differ from a fully connected network in architecture and performance on "
    "image data? (parameters of four CNNs against dense networks of their widths; LeNet-5 and a 300-100 dense "
    "network trained on the same digits, timed, and tested on digits shifted by 0-4 pixels)",
    data="mnist (or mnist-sample)",
)
def cnn_vs_dense(ctx: Context) -> Answer:
    parameters, models = _parameter_section(ctx)
    lenet = models["lenet5"]
    labels = {"lenet5": "LeNet-5 (CNN)", "mlp": "300-100 dense network"}
    trained: dict[str, dict[str, Any]] = {}
    pixels = targets = None
    for name in labels:
        run_dir = train_recipe(ctx, digits_config(ctx, name, ctx.seed, **{"data.input_size": 32}), name)
        found = run_figures(run_dir)
        clf = load_classifier(run_dir)
        if pixels is None:  # both read the same test images, fitted to the same 32x32 input
            data = bundle_data(run_dir, clf)
            x, y = data.splits["test"]
            pixels, targets = network_pixels(clf, data, x), y
        ctx.step(f"shifting the test digits for {name}")
        found["shift_accuracy"] = shift_accuracy(clf, pixels, targets)
        found["images_per_second"] = images_per_second(clf, pixels)
        found["first_layer_shift"] = first_layer_shift(clf.model, pixels[:256], clf.normalized, 2)
        table = layer_table(clf.model, (1, 32, 32))
        found["parameters"], found["macs"] = table.parameters, table.macs
        found.pop("history")
        trained[name] = found
    cnn, mlp = trained["lenet5"], trained["mlp"]
    first = cnn
    largest = max(models, key=lambda n: models[n]["dense_parameters"])
    cnn_shift, mlp_shift = cnn["first_layer_shift"], mlp["first_layer_shift"]
    cnn_rate, mlp_rate = (t["macs"] * t["images_per_second"] / 1e9 for t in (cnn, mlp))
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for name, label in labels.items():
        ax.plot(SHIFTS, [100 * a for a in trained[name]["shift_accuracy"]], marker="o", label=label)
    ax.set_xticks(SHIFTS)
    ax.set_xlabel("shift of the test digits (px, mean of right, left, down, up)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("accuracy on shifted test digits (trained on centred ones)")
    ax.grid(alpha=0.3)
    ax.legend()
    shift_figure = ctx.path("shift-accuracy.png")
    save_figure(fig, shift_figure)
    fig, axes = plt.subplots(1, len(SHIFTS), figsize=(2 * len(SHIFTS), 2.3))
    for ax, k in zip(axes, SHIFTS, strict=True):
        ax.imshow(shift_pixels(pixels[:1], k, k)[0, 0].numpy(), cmap="gray")
        ax.set_title(f"{k} px right and down", fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    example_figure = ctx.path("shift-example.png")
    save_figure(fig, example_figure)

    drop = {n: trained[n]["shift_accuracy"][0] - trained[n]["shift_accuracy"][-1] for n in trained}
    at = {n: trained[n]["shift_accuracy"] for n in trained}
    rows = [
        [
            labels[n],
            f"{t['parameters']:,}",
            f"{t['macs']:,}",
            pct(t["test_accuracy"]),
            *[pct(a) for a in t["shift_accuracy"][1:]],
            f"{t['seconds_per_epoch']:.2f} s",
            f"{t['images_per_second']:,.0f}",
        ]
        for n, t in trained.items()
    ]
    faster_train = "the dense network" if mlp["seconds_per_epoch"] < cnn["seconds_per_epoch"] else "LeNet-5"
    faster_infer = "the dense network" if mlp["images_per_second"] > cnn["images_per_second"] else "LeNet-5"
    better = "LeNet-5" if cnn["test_accuracy"] > mlp["test_accuracy"] else "the dense network"
    robust = "LeNet-5" if drop["lenet5"] < drop["mlp"] else "the dense network"
    splits = first["splits"]
    measured = [
        f"Both networks trained on the same {splits.get('train', 0):,} {first['source']} training images (padded "
        f"to 32x32) with the same settings (Adam 1e-3, batch 128, {first['epochs']} epochs, seed {ctx.seed}) and "
        f"were tested on the same {splits.get('test', 0):,} test images, then on those images shifted by 1-4 "
        "pixels. The dense network is LeCun et al.'s 300-100 baseline (ReLU).",
        Table(
            [
                "network",
                "parameters",
                "multiply-adds",
                "test accuracy",
                *[f"shifted {k} px" for k in SHIFTS[1:]],
                "training per epoch",
                "inference images/s",
            ],
            rows,
        ),
        Figure(shift_figure, "test accuracy against the shift of the test digits"),
        Figure(example_figure, "one test digit as the networks see it, shifted"),
        f"Accuracy: {better} is more accurate on centred digits ({pct(cnn['test_accuracy'])} for LeNet-5 with "
        f"{cnn['parameters']:,} parameters, {pct(mlp['test_accuracy'])} for the dense network with "
        f"{mlp['parameters']:,}, {mlp['parameters'] / cnn['parameters']:.1f}x as many).",
        f"Shifted inputs: {SHIFTS[-1]} px off-centre, LeNet-5 keeps {pct(at['lenet5'][-1])} "
        f"({100 * drop['lenet5']:.1f} points lost) and the dense network {pct(at['mlp'][-1])} "
        f"({100 * drop['mlp']:.1f} points lost); at 2 px: {pct(at['lenet5'][2])} against {pct(at['mlp'][2])}. "
        f"{robust[:1].upper()}{robust[1:]} degrades less.",
        f"Why: a convolution applies the same filters at every position (weight sharing) to small neighbourhoods "
        f"(local connectivity), so its maps are translation-equivariant. Measured on these digits moved 2 px down: "
        f"LeNet-5's C1 output changes by {100 * cnn_shift['change']:.0f}% of its size, and moving its maps back up "
        f"leaves {_residue(cnn_shift['after_undoing'])}: the change is a shift of the same features. Averaging "
        "(S2, S4) then makes small shifts matter less, though not every shift: C5 reads the 5x5 maps of S4 whole, "
        "each of whose units stands for 4 input pixels, so a 4 px shift moves the features by a whole unit. The "
        f"dense network's first layer changes by {100 * mlp_shift['change']:.0f}%, and it has no map to move "
        "back: its units hold one weight per pixel, so a stroke at a new position meets weights that never "
        "learned it, and every position has to be learned from examples.",
        f"Speed: {faster_train} trained faster per epoch ({cnn['seconds_per_epoch']:.2f} s for LeNet-5, "
        f"{mlp['seconds_per_epoch']:.2f} s for the dense network) and {faster_infer} classifies more images per "
        f"second ({cnn['images_per_second']:,.0f} against {mlp['images_per_second']:,.0f}). Neither follows the "
        f"parameter count: the dense network has {mlp['parameters'] / cnn['parameters']:.1f}x LeNet-5's "
        f"parameters but {mlp['macs'] / cnn['macs']:.2f}x its multiply-adds per image, and at inference this CPU "
        f"ran them at {cnn_rate:.2f} billion per second for LeNet-5 and {mlp_rate:.2f} for the dense network "
        "(a dense layer is one large matrix product; LeNet-5's convolutions are small, with few channels). On "
        "32x32 digits a dense network is affordable. What does not scale is its size: the dense network of "
        f"{largest}'s widths at {'x'.join(map(str, models[largest]['input'][1:]))} needs "
        f"{models[largest]['dense_parameters']:,} parameters (table above).",
    ]
    summary = (
        f"LeNet-5: {lenet['parameters']:,} parameters against {lenet['dense_parameters']:,} for the dense network "
        f"of its widths. Trained on the same digits, LeNet-5 reached {pct(cnn['test_accuracy'])} and a 300-100 "
        f"dense network with {mlp['parameters']:,} parameters {pct(mlp['test_accuracy'])}; "
        f"{SHIFTS[-1]} px off-centre: {pct(at['lenet5'][-1])} against {pct(at['mlp'][-1])}."
    )
    results = {"models": models, "trained": trained, "shifts": list(SHIFTS)}
    return Answer(summary, [parameters, Section("Trained on the same images", measured)], results)


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
