"""What kernel size, stride and channels cost in parameters and multiply-adds, each figure
checked against a real layer (002 Q4)."""

from __future__ import annotations

import itertools
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from cnnlab.evaluation.report import Figure, Section, Table
from cnnlab.explain.calc import layer_calc
from cnnlab.explain.summary import Field, layer_table
from cnnlab.figures import plt, save_figure
from cnnlab.recipebook.core import Answer, Context, recipe

# ------------------------------------------------------------------ 002 Q4: kernel size and stride


KERNELS = (1, 3, 5, 7, 11)
STRIDES = (1, 2, 4)
CHANNELS = ((3, 64), (64, 128), (256, 256))
"""A first layer on RGB, a middle layer, a deep layer."""
SIDE = 224


def measure_conv(in_chans: int, out_chans: int, kernel: int, stride: int, side: int) -> dict[str, int]:
    """Parameters, output side and multiply-adds of a real nn.Conv2d (padding kernel // 2), measured
    on the meta device: PyTorch's own shapes and FLOP count, without computing a single product."""
    conv = nn.Conv2d(in_chans, out_chans, kernel, stride, kernel // 2, device="meta")
    counter = FlopCounterMode(display=False)
    with counter:
        out = conv(torch.zeros(1, in_chans, side, side, device="meta"))
    return {
        "parameters": sum(p.numel() for p in conv.parameters()),
        "output": int(out.shape[-1]),
        "macs": counter.get_total_flops() // 2,
        "macs_from_shape": int(out.shape[-1] * out.shape[-2] * out_chans * in_chans * kernel * kernel),
    }


def conv_grid(side: int = SIDE) -> list[dict[str, Any]]:
    """Every kernel, stride and channel pair: the formula (explain.calc) beside the real layer."""
    rows = []
    for (cin, cout), k, s in itertools.product(CHANNELS, KERNELS, STRIDES):
        formula = layer_calc("conv", side, k, s, k // 2, in_channels=cin, out_channels=cout)
        real = measure_conv(cin, cout, k, s, side)
        rows.append(
            {
                "in": cin,
                "out": cout,
                "kernel": k,
                "stride": s,
                "parameters": formula.parameters,
                "output": formula.output,
                "macs": formula.macs,
                "real": real,
                "agree": (formula.parameters, formula.output, formula.macs, formula.macs)
                == (real["parameters"], real["output"], real["macs"], real["macs_from_shape"]),
            }
        )
    return rows


def stack_comparison(channels: int, side: int) -> dict[str, dict[str, Any]]:
    """One 7x7 convolution against three stacked 3x3 ones (VGG's argument: same channels, output and
    receptive field), each with its ReLU: parameters and multiply-adds by formula and traced from the
    real layers, the field, the output shape and the non-linearities."""
    single = nn.Sequential(nn.Conv2d(channels, channels, 7, padding=3), nn.ReLU())
    stack = nn.Sequential(*(m for _ in range(3) for m in (nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU())))
    found = {}
    for label, model, kernel, repeat in (("one 7x7", single, 7, 1), ("three 3x3", stack, 3, 3)):
        formula = layer_calc("conv", side, kernel, 1, kernel // 2, in_channels=channels, out_channels=channels)
        table = layer_table(model, (channels, side, side))
        last = [r for r in table.rows if isinstance(r.field, Field)][-1]
        found[label] = {
            "parameters": table.parameters,
            "formula_parameters": repeat * formula.parameters,
            "macs": table.macs,
            "formula_macs": repeat * formula.macs,
            "field": last.field.size[0],
            "output": list(table.rows[-1].output),
            "nonlinearities": sum(isinstance(m, nn.ReLU) for m in model),
        }
    return found


@recipe(
    "filter-size-and-stride",
    "002 Q4",
    "How kernel size and stride change parameters, output size and multiply-adds",
    "Discuss how filter size and stride influence the number of parameters in a CNN. (kernels 1-11, strides "
    "1-4, three channel widths: the formula checked against real layers; one 7x7 against three 3x3)",
)
def filter_size_and_stride(ctx: Context) -> Answer:
    ctx.step("measuring convolutions")
    grid = conv_grid()
    agree = sum(r["agree"] for r in grid)
    stack_channels, stack_side = 64, 56
    stack = stack_comparison(stack_channels, stack_side)

    fig, (ax_p, ax_o, ax_m) = plt.subplots(1, 3, figsize=(14, 4.2))
    colours = ["#1f77b4", "#d62728", "#2ca02c"]
    for (cin, cout), colour in zip(CHANNELS, colours, strict=True):
        for s, marker in zip(STRIDES, "os^", strict=True):
            rs = [r for r in grid if (r["in"], r["out"], r["stride"]) == (cin, cout, s)]
            ax_p.plot(
                [r["kernel"] for r in rs], [r["real"]["parameters"] for r in rs], marker=marker, ms=4 + 2 * s,
                mfc="none", color=colour, label=f"{cin}->{cout}" if s == STRIDES[0] else None,
            )  # fmt: skip
        base = next(r for r in grid if (r["in"], r["out"], r["kernel"], r["stride"]) == (cin, cout, 3, 1))
        ax_p.plot(KERNELS, [base["parameters"] * (k / 3) ** 2 for k in KERNELS], ":", color="grey", lw=1)
    ax_p.set_yscale("log")
    ax_p.set_xlabel("kernel size K")
    ax_p.set_ylabel("parameters (log)")
    ax_p.set_title("parameters (o s ^: stride 1, 2, 4 coincide;\ndotted: K^2 from the 3x3 layer)", fontsize=10)
    ax_p.legend(fontsize=8, title="channels", title_fontsize=8)
    for k in KERNELS:
        rs = [r for r in grid if r["kernel"] == k and (r["in"], r["out"]) == CHANNELS[1]]
        ax_o.plot([r["stride"] for r in rs], [r["real"]["output"] for r in rs], marker="o", label=f"K={k}")
        ax_m.plot([r["stride"] for r in rs], [r["real"]["macs"] for r in rs], marker="o", label=f"K={k}")
    ax_o.set_title(f"output side of a {SIDE} px input\n(padding K//2: the same for every K)", fontsize=10)
    ax_m.set_title(f"multiply-adds per image\n({CHANNELS[1][0]}->{CHANNELS[1][1]} channels)", fontsize=10)
    ax_m.set_yscale("log")
    for ax in (ax_o, ax_m):
        ax.set_xlabel("stride")
        ax.set_xticks(STRIDES)
        ax.legend(fontsize=7)
    ax_o.set_ylabel("output side (px)")
    ax_m.set_ylabel("multiply-adds per image (log)")
    fig.tight_layout()
    figure = ctx.path("kernel-stride.png")
    save_figure(fig, figure)

    def pick(cin: int, cout: int, k: int, s: int) -> dict[str, Any]:
        return next(r for r in grid if (r["in"], r["out"], r["kernel"], r["stride"]) == (cin, cout, k, s))

    mid_in, mid_out = CHANNELS[1]
    k3, k5, k11 = (pick(mid_in, mid_out, k, 1) for k in (3, 5, 11))
    stride_params = {pick(mid_in, mid_out, 3, s)["parameters"] for s in STRIDES}
    s1, s2, s4 = (pick(mid_in, mid_out, 3, s) for s in STRIDES)
    wide = pick(*CHANNELS[2], 3, 1)
    one, three = stack["one 7x7"], stack["three 3x3"]
    same_field = three["field"] == one["field"]
    table_rows = [
        [f"{r['in']}->{r['out']}", str(r["kernel"]), str(r["stride"]), f"{r['parameters']:,}",
         f"{r['real']['parameters']:,}", str(r["output"]), str(r["real"]["output"]), f"{r['macs']:,}",
         f"{r['real']['macs']:,}", "yes" if r["agree"] else "NO"]
        for r in grid
    ]  # fmt: skip
    text = [
        "A convolution with K x K kernels, C_in input and C_out output channels has C_out x (C_in x K x K) "
        "weights and C_out biases. Its output side is floor((n + 2p - K) / s) + 1 and it computes "
        "out_h x out_w x C_out x C_in x K x K multiply-adds per image. Below, every combination of "
        f"K in {KERNELS}, stride in {STRIDES} and channels {', '.join(f'{a}->{b}' for a, b in CHANNELS)} on a "
        f"{SIDE}x{SIDE} input (padding K//2), by the formula and by a real nn.Conv2d (its parameters, its output "
        "shape and PyTorch's FLOP counter).",
        f"{agree} of {len(grid)} settings agree on all three numbers.",
        Figure(figure, "parameters against kernel size (left), output side and multiply-adds against stride"),
        f"Kernel size: parameters grow with K^2. For {mid_in}->{mid_out} channels a 3x3 layer has "
        f"{k3['parameters']:,} parameters, 5x5 {k5['parameters']:,} ({k5['parameters'] / k3['parameters']:.2f}x) "
        f"and 11x11 {k11['parameters']:,} ({k11['parameters'] / k3['parameters']:.2f}x), against "
        f"{25 / 9:.2f}x and {121 / 9:.2f}x for the weights alone: the biases do not grow with K.",
        f"Channels: parameters grow with C_in x C_out: a 3x3 layer with {CHANNELS[2][0]}->{CHANNELS[2][1]} "
        f"channels has {wide['parameters']:,}, {wide['parameters'] / k3['parameters']:.1f}x the "
        f"{mid_in}->{mid_out} one.",
        f"Stride: the parameters do not change ({mid_in}->{mid_out}, 3x3: "
        f"{' = '.join(f'{p:,}' for p in sorted(stride_params))} at strides {', '.join(map(str, STRIDES))}): the "
        f"same filters are applied at fewer positions. The output does change: {s1['output']} -> "
        f"{s2['output']} -> {s4['output']} px, and with it the multiply-adds, {s1['macs']:,} -> {s2['macs']:,} -> "
        f"{s4['macs']:,} ({s1['macs'] / s4['macs']:.0f}x fewer at stride 4), and the memory for activations. "
        "Stride is a cost lever that keeps the model's size; kernel size and channels set the size.",
        f"Stacking small kernels: on a {stack_channels}-channel {stack_side}x{stack_side} map, one 7x7 layer has "
        f"{one['parameters']:,} parameters and {one['macs']:,} multiply-adds; three 3x3 layers reach a "
        f"{three['field']}x{three['field']} receptive field ({'the same as' if same_field else 'against'} the 7x7 "
        f"layer's {one['field']}x{one['field']}) with "
        f"{three['parameters']:,} parameters and {three['macs']:,} multiply-adds "
        f"({three['parameters'] / one['parameters']:.0%} of the parameters, {three['macs'] / one['macs']:.0%} of the "
        f"multiply-adds) and {three['nonlinearities']} non-linearities "
        "instead of one: the VGG argument.",
        Table(
            ["layer", "one 7x7", "three 3x3"],
            [
                ["parameters", f"{one['parameters']:,}", f"{three['parameters']:,}"],
                ["multiply-adds", f"{one['macs']:,}", f"{three['macs']:,}"],
                ["receptive field", f"{one['field']} px", f"{three['field']} px"],
                ["output", "x".join(map(str, one["output"])), "x".join(map(str, three["output"]))],
            ],
        ),
    ]
    grid_section = Section(
        "Every setting, formula against the real layer",
        [
            Table(
                ["channels", "K", "stride", "parameters", "real", "output", "real", "multiply-adds", "real", "agree"],
                table_rows,
            )
        ],
    )
    summary = (
        f"For {mid_in}->{mid_out} channels, parameters go from {k3['parameters']:,} (3x3) to "
        f"{k11['parameters']:,} (11x11) and do not change with stride; stride 4 cuts the output from "
        f"{s1['output']} to {s4['output']} px and the multiply-adds {s1['macs'] / s4['macs']:.0f}x. The formula "
        f"matched real layers in {agree} of {len(grid)} settings."
    )
    results = {
        "side": SIDE,
        "settings": len(grid),
        "agree": agree,
        "grid": [{k: v for k, v in r.items() if k != "real"} | {"measured": r["real"]} for r in grid],
        "stack": stack,
    }
    return Answer(summary, [Section("Kernel size, stride and channels", text), grid_section], results)
