"""Architectures compared by measurement: LeNet-5, AlexNet and VGG (000 Q3, 002 Q5), and what a
residual connection does to the gradients of a deep network (000 Q5)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab import bundle
from cnnlab.config import Config
from cnnlab.data.loader import TensorBatches
from cnnlab.data.preprocess import stats_tensors
from cnnlab.data.sources import load_source
from cnnlab.engine.callbacks import Callback, TrainingState
from cnnlab.evaluation.figures import plot_curves_compared
from cnnlab.evaluation.report import Figure, Section, Table
from cnnlab.explain.summary import Field, layer_table
from cnnlab.figures import plt, save_figure
from cnnlab.models import create_model, get_spec
from cnnlab.models.residual import cifar_resnet
from cnnlab.recipebook.core import Answer, Context, history_table, pct, recipe, train_recipe
from cnnlab.recipebook.kernels import stack_comparison
from cnnlab.recipebook.remedies import run_summary
from cnnlab.recipebook.training import epochs_text
from cnnlab.tasks.train import prepare_for, train

# ------------------------------------------------------------------ 000 Q3 / 002 Q5: LeNet, AlexNet, VGG

NATIVE = {"lenet5": ((1, 32, 32), 10), "alexnet": ((3, 224, 224), 1000), "vgg16": ((3, 224, 224), 1000)}
"""Each network at the input and head it was published with (LeNet-5: digits; the others: ImageNet)."""
TWINS = {"lenet5": "LeNet-5", "alexnet": "AlexNet", "vgg_mini": "VGG-style mini"}
"""What trains on the same small task: LeNet-5 and AlexNet as published, VGG16's principle at CIFAR scale."""
SMALL_TASK = {"data.source": "cifar10", "data.input_size": 64, "data.limit_train": 6000, "data.limit_eval": 1000,
              "train.epochs": 8, "train.batch_size": 128, "optim.optimizer": "adam", "optim.lr": 3e-4}  # fmt: skip
"""AlexNet's smallest input is 63 px, so every network sees CIFAR-10 upsampled to 64 px."""


ARCH_HEADER = ["network", "input", "conv + dense layers", "filter sizes", "filters per conv", "parameters",
               "in dense layers", "multiply-adds", "in convs", "last conv's receptive field",
               "activation, pooling"]  # fmt: skip
STACK_HEADER = ["", "parameters (formula)", "parameters (nn.Conv2d)", "multiply-adds", "receptive field",
                "non-linearities"]  # fmt: skip
PERF_HEADER = ["network", "parameters (10 classes, 64 px)", "test accuracy", "best val accuracy", "training time",
               "images / s"]  # fmt: skip


def _network_row(name: str) -> dict[str, Any]:
    shape, classes = NATIVE[name]
    model = create_model(name, classes, shape[0], shape[1])
    table = layer_table(model, shape)
    convs = [r for r in table.rows if "Conv2d" in r.type]  # MaskedConv2d, WholeInputConv2d, timm's Conv2dSame
    dense = [r for r in table.rows if r.type == "Linear"]
    last = convs[-1]
    kinds = {type(m).__name__ for m in model.modules()}
    return {
        "input": list(shape),
        "classes": classes,
        "conv_layers": len(convs),
        "dense_layers": len(dense),
        "kernels": sorted({r.kernel for r in convs}, key=lambda k: -int(k.split("x")[0])),
        "filters": [r.output[0] for r in convs],
        "parameters": table.parameters,
        "dense_share": sum(r.parameters for r in dense) / table.parameters,
        "macs": table.macs,
        "conv_mac_share": sum(r.macs for r in convs) / table.macs,
        "first_stride": convs[0].stride,
        "last_conv": last.name,
        "last_conv_field": last.field.size[0] if isinstance(last.field, Field) else None,
        "activation": "ReLU" if "ReLU" in kinds else "tanh" if "Tanh" in kinds else "-",
        "pooling": "max" if "MaxPool2d" in kinds else "average" if "AvgPool2d" in kinds else "-",
        "dropout": "Dropout" in kinds,
        "lrn": "LocalResponseNorm" in kinds,
    }


def _arch_figures(ctx: Context, nets: dict[str, dict[str, Any]], runs: dict[str, Path]) -> tuple[Path, Path]:
    cost = ctx.path("parameters-macs.png")
    fig, ax = plt.subplots(figsize=(7, 3.8))
    names = list(nets)
    ax.bar([i - 0.2 for i in range(len(names))], [nets[n]["parameters"] for n in names], 0.4, label="parameters")
    ax.bar([i + 0.2 for i in range(len(names))], [nets[n]["macs"] for n in names], 0.4, label="multiply-adds / image")
    ax.set(yscale="log", title="cost at the published input size (log scale)")
    ax.set_xticks(range(len(names)), [f"{n}\n{'x'.join(map(str, nets[n]['input']))}" for n in names])
    ax.legend()
    save_figure(fig, cost)
    speed = ctx.path("accuracy-vs-time.png")
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, run in runs.items():
        rows = bundle.read_history(run / bundle.HISTORY)
        elapsed = [float(sum(float(r["train_seconds"]) for r in rows[: i + 1])) for i in range(len(rows))]
        ax.plot(elapsed, [float(r["val_acc"]) for r in rows], "o-", ms=3, label=TWINS[name])
    ax.set(xlabel="training time (s, cumulative)", ylabel="validation accuracy", title="same data and settings")
    ax.grid(alpha=0.3)
    ax.legend()
    save_figure(fig, speed)
    return cost, speed


@recipe(
    "alexnet-vs-vgg",
    "000 Q3 / 002 Q5",
    "LeNet-5, AlexNet and VGG compared: depth, filters, parameters, cost and accuracy",
    "Compare and contrast AlexNet and VGGNet in terms of design principles, number of parameters, and "
    "performance; highlight key innovations and limitations (002 Q5: LeNet, AlexNet and VGG in terms of depth, "
    "filter sizes, and performance).",
    data="cifar10",
)
def alexnet_vs_vgg(ctx: Context) -> Answer:
    nets = {name: _network_row(name) for name in NATIVE}
    channels, side = 256, 56  # VGG16's third block
    stack = stack_comparison(channels, side)
    runs, trained = {}, {}
    quick = {"data.limit_train": 128, "data.limit_eval": 100, "train.epochs": 1}
    for name in TWINS:
        cfg = ctx.config(None, quick, **{**SMALL_TASK, "name": f"{name}-small-task", "model.name": name})
        runs[name] = train_recipe(ctx, cfg, name)
        card, found = bundle.read_card(runs[name]), run_summary(runs[name])
        splits, epochs = card.data["splits"], card.training["epochs_run"]
        trained[name] = {**found, "parameters": card.parameters, "epochs": epochs, "splits": splits,
                         "images_per_second": splits["train"] * epochs / found["train_seconds"]}  # fmt: skip
    cost_png, speed_png = _arch_figures(ctx, nets, runs)
    side_small = SMALL_TASK["data.input_size"]
    vgg64, mini64 = (layer_table(create_model(n, 10, 3, side_small), (3, side_small, side_small))
                     for n in ("vgg16", "vgg_mini"))  # fmt: skip
    mini_convs = sum("Conv2d" in r.type for r in mini64.rows)
    lenet, alex, vgg = nets["lenet5"], nets["alexnet"], nets["vgg16"]
    arch_rows = [
        [
            name,
            "x".join(map(str, n["input"])),
            f"{n['conv_layers']} + {n['dense_layers']}",
            ", ".join(n["kernels"]),
            "-".join(map(str, n["filters"])),
            f"{n['parameters']:,}",
            f"{n['dense_share']:.0%}",
            f"{n['macs'] / 1e6:,.1f} M",
            f"{n['conv_mac_share']:.0%}",
            f"{n['last_conv_field']} px ({n['last_conv']})",
            f"{n['activation']}, {n['pooling']} pool" + (", dropout" if n["dropout"] else ""),
        ]
        for name, n in nets.items()
    ]
    arch = [
        Table(ARCH_HEADER, arch_rows),
        Figure(cost_png, "parameters and multiply-adds per image of each network at its published input (log)"),
        f"Depth: LeNet-5 has {lenet['conv_layers'] + lenet['dense_layers']} weight layers, AlexNet "
        f"{alex['conv_layers'] + alex['dense_layers']}, VGG16 {vgg['conv_layers'] + vgg['dense_layers']}. "
        f"Filter sizes: LeNet-5 uses {', '.join(lenet['kernels'])}; AlexNet starts with {alex['kernels'][0]} "
        f"(stride {alex['first_stride']}) and shrinks to {alex['kernels'][-1]}; VGG16 uses only "
        f"{', '.join(vgg['kernels'])}.",
        f"Parameters: AlexNet {alex['parameters'] / 1e6:.1f} M, VGG16 {vgg['parameters'] / 1e6:.1f} M "
        f"({vgg['parameters'] / alex['parameters']:.1f}x), LeNet-5 {lenet['parameters']:,}. Most of them sit in the "
        f"dense layers ({alex['dense_share']:.0%} of AlexNet's, {vgg['dense_share']:.0%} of VGG16's), while the "
        f"work is in the convolutions ({alex['conv_mac_share']:.0%} and {vgg['conv_mac_share']:.0%} of the "
        f"multiply-adds): VGG16 costs {vgg['macs'] / 1e9:.1f} G multiply-adds per image, "
        f"{vgg['macs'] / alex['macs']:.0f}x AlexNet's {alex['macs'] / 1e9:.2f} G.",
        f"Innovations, read from the modules: AlexNet uses {alex['activation']} (LeNet-5: {lenet['activation']}), "
        f"{alex['pooling']} pooling (LeNet-5: {lenet['pooling']})"
        + (" and dropout" if alex["dropout"] else "")
        + "; this build (torchvision's single-GPU AlexNet) has "
        + (
            "local response normalisation"
            if alex["lrn"]
            else "no local response normalisation, which later work dropped"
        )
        + f". VGG's innovation is uniformity: only {', '.join(vgg['kernels'])} convolutions between poolings, "
        "depth as the lever.",
    ]
    seven, three = stack["one 7x7"], stack["three 3x3"]
    agree = all(s["parameters"] == s["formula_parameters"] and s["macs"] == s["formula_macs"] for s in stack.values())
    stack_rows = [[k, f"{s['formula_parameters']:,}", f"{s['parameters']:,}", f"{s['macs']:,}", f"{s['field']} px",
                   str(s["nonlinearities"])] for k, s in stack.items()]  # fmt: skip
    why = [
        Table(STACK_HEADER, stack_rows),
        f"For {channels} channels in and out at {side}x{side} (VGG16's third block), three stacked 3x3 "
        f"convolutions see the same {three['field']} px field as one 7x7 (traced: {seven['field']} px) with "
        f"{three['parameters'] / seven['parameters']:.0%} of its parameters and multiply-adds "
        f"({three['parameters']:,} against {seven['parameters']:,}; 27C² against 49C² weights) and "
        f"{three['nonlinearities']} ReLUs instead of {seven['nonlinearities']}: a more expressive function for less. "
        f"The formula {'matches' if agree else 'does NOT match'} the real layers' counts.",
    ]
    perf_rows = [
        [TWINS[n], f"{t['parameters']:,}", pct(t["test_accuracy"]), pct(t["val_accuracy"]),
         f"{t['train_seconds']:.1f} s", f"{t['images_per_second']:,.0f}"]
        for n, t in trained.items()
    ]  # fmt: skip
    best = max(trained, key=lambda n: trained[n]["test_accuracy"])
    fastest = max(trained, key=lambda n: trained[n]["images_per_second"])
    t0 = next(iter(trained.values()))
    perf = [
        f"The same small task for all three: {t0['splits']['train']:,} CIFAR-10 training images upsampled from 32 to "
        f"64 px (AlexNet's smallest input is 63 px), {epochs_text(t0['epochs'])} of Adam at "
        f"{SMALL_TASK['optim.lr']:g}, batch {SMALL_TASK['train.batch_size']}, tested on {t0['splits']['test']:,} "
        "images. LeNet-5 and AlexNet are the published networks (with 10 "
        f"outputs). VGG16 itself at 64 px costs {vgg64.macs / 1e6:,.0f} M multiply-adds per image, "
        f"{vgg64.macs / mini64.macs:.0f}x the VGG-style mini network's {mini64.macs / 1e6:,.0f} M, too much for "
        "this machine's budget, so the VGG entry is the course's mini network: VGG's principle (stacks of 3x3 "
        "convolutions, "
        f"then pooling; {nets['vgg16']['conv_layers']} of them in VGG16, {mini_convs} here) at CIFAR scale.",
        Table(PERF_HEADER, perf_rows),
        Figure(speed_png, "validation accuracy after each epoch against cumulative training time"),
        f"Best test accuracy: {TWINS[best]} ({pct(trained[best]['test_accuracy'])}); fastest to train: "
        f"{TWINS[fastest]} ({trained[fastest]['images_per_second']:,.0f} images/s). "
        + (
            "The 3x3-stack network beats AlexNet here, as VGG beat AlexNet on ImageNet."
            if trained["vgg_mini"]["test_accuracy"] > trained["alexnet"]["test_accuracy"]
            else "AlexNet matched or beat the 3x3-stack network on this small budget."
        ),
        f"Limitations, measured above: AlexNet's dense layers hold {alex['dense_share']:.0%} of its parameters and "
        f"its {alex['kernels'][0]} stride-{alex['first_stride']} first layer discards detail early; VGG16's "
        "3x3 stacks at full resolution cost "
        f"{vgg['macs'] / alex['macs']:.0f}x AlexNet's multiply-adds, and its dense layers still hold "
        f"{vgg['dense_share']:.0%} of its weights (later networks replace them with global pooling).",
    ]
    summary = (
        f"AlexNet {alex['parameters'] / 1e6:.1f} M parameters and {alex['macs'] / 1e9:.2f} G multiply-adds per "
        f"image, VGG16 {vgg['parameters'] / 1e6:.1f} M and {vgg['macs'] / 1e9:.1f} G, LeNet-5 "
        f"{lenet['parameters']:,}; on the same small CIFAR-10 task: "
        + ", ".join(f"{TWINS[n]} {pct(t['test_accuracy'])}" for n, t in trained.items())
        + "."
    )
    sections = [
        Section("The three networks, measured", arch),
        Section("Why stacks of 3x3 convolutions", why),
        Section("Performance on the same task", perf),
        *[Section(f"{TWINS[n]}: history", [history_table(runs[n])]) for n in runs],
    ]
    return Answer(summary, sections, {"networks": nets, "stack": stack, "stack_agrees": agree, "trained": trained})


# ------------------------------------------------------------------ 000 Q5: residual connections

TWINS_CIFAR = {"plain20": (20, False), "plain56": (56, False), "resnet20": (20, True), "resnet56": (56, True)}
SETTINGS = {
    "default": ("no BatchNorm, PyTorch's default initialisation", {"batchnorm": False, "init": "default"}),
    "he": ("no BatchNorm, He initialisation", {"batchnorm": False, "init": "kaiming"}),
    "paper": ("BatchNorm and He initialisation (the paper's networks)", {"batchnorm": True, "init": "kaiming"}),
}
"""Where the gradients are measured at initialisation: the vanishing gradient the question describes
lives in the first; He et al.'s networks (the last) have both of its cures."""
CIFAR_TRAINING = {"data.source": "cifar10", "data.limit_train": 8000, "data.limit_eval": 1000, "train.epochs": 8,
                  "train.batch_size": 64, "train.precision": "bf16", "optim.optimizer": "sgd", "optim.lr": 0.05,
                  "optim.weight_decay": 1e-4, "optim.schedule": "cosine", "optim.warmup_epochs": 1.0}  # fmt: skip
"""He et al.'s SGD (momentum 0.9, weight decay 1e-4; 0.1 at batch 128, here 0.05 at batch 64 for twice the
steps), warmed up over the first epoch (at the full rate, resnet56's training loss rose in a trial), on the
8,000 CIFAR-10 training photos: four networks, two of 56 layers, in about ten minutes on two cores."""


def layer_gradient_norms(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, dtype: torch.dtype = torch.float32
) -> list[float]:
    """The L2 norm of the loss gradient on each weight layer (input side first) for one batch, in training
    mode, on a copy: the model's own gradients and BatchNorm statistics stay untouched."""
    probe = copy.deepcopy(model).to(dtype).train()
    F.cross_entropy(probe(x.to(dtype)), y).backward()
    return [float(m.weight.grad.norm()) if m.weight.grad is not None else 0.0 for _, m in probe.weight_layers()]


class GradientProbe(Callback):
    """Each layer's gradient norm on a fixed batch before training and after every epoch."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y
        self.records: dict[int, list[float]] = {}

    def on_fit_start(self, state: TrainingState) -> None:
        self.records[0] = layer_gradient_norms(state.model, self.x, self.y)

    def on_epoch_end(self, state: TrainingState, row: dict[str, Any]) -> None:
        self.records[state.epoch] = layer_gradient_norms(state.model, self.x, self.y)


def _probe_batch(cfg: Config, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`size` training images normalised exactly as training will normalise them."""
    data = load_source(cfg.data, 32)
    prep, splits = prepare_for(cfg, get_spec(cfg.model.name), data, 32)
    return next(iter(TensorBatches(*splits["train"], size, *stats_tensors(prep.mean, prep.std))))


def ratio(norms: list[float]) -> float:
    """First convolution's gradient norm over the last convolution's (the dense head excluded)."""
    return norms[0] / norms[-2] if norms[-2] else float("inf")


def _init_gradients(ctx: Context, x: torch.Tensor, y: torch.Tensor) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for key, (_, options) in SETTINGS.items():
        found[key] = {}
        for name, (depth, residual) in TWINS_CIFAR.items():
            ctx.step(f"gradients at initialisation: {name}, {key}")
            torch.manual_seed(ctx.seed)
            model = cifar_resnet(depth, residual=residual, **options)
            fp32 = layer_gradient_norms(model, x, y)
            zeros = sum(v == 0 for v in fp32)
            # float32 (what training computes) rounds a vanished gradient to exactly zero, which a log
            # scale cannot show: float64 measures how small it really is
            exact = layer_gradient_norms(model, x, y, torch.float64) if zeros else fp32
            found[key][name] = {"norms": exact, "ratio": ratio(exact), "zero_layers_fp32": zeros}
    return found


COLOURS = {"plain20": "#ff9896", "plain56": "#d62728", "resnet20": "#aec7e8", "resnet56": "#1f77b4"}


def _plot_norms(ctx: Context, panels: dict[str, dict[str, list[float]]], file: str, title: str) -> Path:
    """Gradient norm against layer index (log), one panel per entry, one line per network or epoch."""
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4.4), squeeze=False)
    for ax, (panel, lines) in zip(axes[0], panels.items(), strict=True):
        for i, (label, norms) in enumerate(lines.items()):
            colour = COLOURS.get(label, plt.cm.viridis(i / max(len(lines) - 1, 1)))
            ax.plot(range(1, len(norms) + 1), norms, ".-", ms=3, lw=1, color=colour, label=label)
        ax.set(yscale="log", xlabel="weight layer (1 = first convolution, input side)", title=panel)
        ax.title.set_fontsize(9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("gradient norm of the layer's weights (log)")
    fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, ctx.path(file))
    return ctx.path(file)


@recipe(
    "residual-connections",
    "000 Q5",
    "Residual connections: gradients layer by layer, and the degradation of deep plain networks",
    "Describe the role of residual connections in ResNet architecture. How do they address the vanishing "
    "gradient problem in deep CNNs? (measured on the CIFAR ResNets of He et al. 2016 and their plain twins)",
    data="cifar10",
)
def residual_connections(ctx: Context) -> Answer:
    quick = {"data.limit_train": 64, "data.limit_eval": 50, "train.epochs": 1, "optim.warmup_epochs": 0.0}
    configs = {
        name: ctx.config(None, quick, **{**CIFAR_TRAINING, "name": f"{name}-cifar10", "model.name": f"{name}_cifar"})
        for name in TWINS_CIFAR
    }
    x, y = _probe_batch(configs["resnet56"], 16 if ctx.quick else 64)
    init = _init_gradients(ctx, x, y)
    panels = {label: {n: f["norms"] for n, f in init[key].items()} for key, (label, _) in SETTINGS.items()}
    title = "per-layer gradient norms at initialisation, one batch of CIFAR-10"
    init_png = _plot_norms(ctx, panels, "gradients-at-init.png", title)
    probes, runs = {}, {}
    for name, cfg in configs.items():
        ctx.step(f"training {name}")
        probes[name] = GradientProbe(x, y)
        runs[name] = ctx.out / name
        train(cfg, runs[name], overwrite=True, console=ctx.console, callbacks=[probes[name]])
    histories = {name: bundle.read_history(run / bundle.HISTORY) for name, run in runs.items()}
    curves_png = ctx.path("training-curves.png")
    plot_curves_compared(histories, curves_png, "plain and residual networks, 20 and 56 layers, CIFAR-10")
    epochs = {n: {f"after epoch {e}" if e else "initialisation": v for e, v in probes[n].records.items()}
              for n in ("plain56", "resnet56")}  # fmt: skip
    title = "per-layer gradient norms on a fixed batch during training (BatchNorm, He init)"
    during_png = _plot_norms(ctx, epochs, "gradients-during-training.png", title)
    trained = {name: {**run_summary(run), "final_train_loss": histories[name][-1]["train_loss"],
                      "parameters": bundle.read_card(run).parameters,
                      "gradient_ratio": {e: ratio(norms) for e, norms in probes[name].records.items()}}
               for name, run in runs.items()}  # fmt: skip
    return _residual_answer(init, trained, bundle.read_card(runs["resnet56"]), (init_png, curves_png, during_png))


def _residual_answer(init: dict[str, Any], trained: dict[str, Any], card: bundle.ModelCard, pngs: tuple) -> Answer:
    init_png, curves_png, during_png = pngs
    d, p = init["default"], init["paper"]
    plain, res = d["plain56"], d["resnet56"]
    convs = len(plain["norms"]) - 1
    init_rows = [
        [SETTINGS[key][0], name, f"{f['ratio']:.2e}", f"{min(f['norms'][:-1]):.2e}", str(f["zero_layers_fp32"])]
        for key, nets in init.items()
        for name, f in nets.items()
    ]
    vanished = plain["ratio"] < 1e-2 <= res["ratio"]
    gradients = [
        Figure(init_png, "gradient norm of every weight layer at initialisation, plain and residual, 20 and 56 layers"),
        f"Without BatchNorm and with PyTorch's default initialisation, plain56's first convolution receives "
        f"{plain['ratio']:.1e} times the gradient norm of its last convolution (plain20: {d['plain20']['ratio']:.1e}); "
        f"in float32, as training computes it, {plain['zero_layers_fp32']} of its {convs} convolutions receive "
        f"exactly zero. resnet56, the same layers with the skips, keeps a ratio of {res['ratio']:.2f}. "
        + (
            "That is the vanishing gradient: each plain layer multiplies the backward signal by a factor below one, "
            "so it shrinks geometrically with depth, while y = F(x) + x gives every block the gradient of its "
            "output plus whatever F passes on (dy/dx = dF/dx + I): the identity term cannot vanish."
            if vanished
            else "In this run the plain network's gradient did not vanish by the 1e-2 threshold."
        ),
        f"He initialisation alone (no BatchNorm) brings plain56's ratio to {init['he']['plain56']['ratio']:.2g} and "
        f"with BatchNorm as well (the paper's networks) it is {p['plain56']['ratio']:.2g} (resnet56: "
        f"{p['resnet56']['ratio']:.2g}): "
        + (
            "BatchNorm does not let the gradient vanish; in the deep plain network it grows toward the input "
            "instead, an unevenness the residual twin largely avoids. "
            if p["plain56"]["ratio"] >= 1
            else "BatchNorm keeps the gradient from vanishing. "
        )
        + "He et al. made the same observation: their plain networks had BatchNorm and healthy gradients, and still "
        "trained worse when deeper. That is the second thing residual connections fix, measured next.",
        Table(
            ["setting", "network", "first / last conv gradient", "smallest conv gradient", "zero in float32"], init_rows
        ),
    ]
    if min(init["he"]["resnet56"]["norms"][:-1]) > 100 * max(init["he"]["plain56"]["norms"][:-1]):
        gradients.append(
            f"With He initialisation and no normalisation the skips overshoot instead: resnet56's smallest gradient "
            f"is {min(init['he']['resnet56']['norms'][:-1]):.2g}, because every block adds its output's variance to "
            "the signal, which grows with depth; He et al. put BatchNorm in every block."
        )
    t = trained
    degraded = t["plain56"]["final_train_loss"] > t["plain20"]["final_train_loss"]
    deeper_ok = t["resnet56"]["final_train_loss"] <= t["plain56"]["final_train_loss"]
    epochs = len(t["plain56"]["gradient_ratio"]) - 1
    train_rows = [
        [name, f"{r['parameters']:,}", f"{r['final_train_loss']:.3f}", pct(r["final_train_accuracy"]),
         pct(r["val_accuracy"]), pct(r["test_accuracy"]), f"{r['train_seconds']:.1f} s"]
        for name, r in t.items()
    ]  # fmt: skip
    training = [
        f"The four BatchNorm networks trained the same way: {card.data['splits']['train']:,} CIFAR-10 training "
        f"images at 32 px (a subset, to fit two CPU cores), {epochs_text(epochs)} of SGD, validated on "
        f"{card.data['splits']['val']:,} and tested on {card.data['splits']['test']:,}. plain56 and resnet56 have "
        f"the same {t['resnet56']['parameters']:,} parameters: the option-A shortcut has no weights.",
        Table(
            [
                "network",
                "parameters",
                "final train loss",
                "final train accuracy",
                "best val accuracy",
                "test accuracy",
                "training time",
            ],
            train_rows,
        ),
        Figure(curves_png, "training (dashed) and validation (solid) loss and accuracy per epoch"),
        (
            f"The degradation problem: plain56 ends with a higher training loss than plain20 "
            f"({t['plain56']['final_train_loss']:.3f} against {t['plain20']['final_train_loss']:.3f}), although it "
            "could copy plain20 and set its extra layers to the identity: the optimiser does not find that."
            if degraded
            else f"In this run plain56 did not train worse than plain20 (final training loss "
            f"{t['plain56']['final_train_loss']:.3f} against {t['plain20']['final_train_loss']:.3f})."
        )
        + f" resnet56 reaches {t['resnet56']['final_train_loss']:.3f} (resnet20: "
        f"{t['resnet20']['final_train_loss']:.3f})"
        + (
            ": with the skips, the extra depth is no longer a handicap, because a block that should do nothing "
            "only has to drive F(x) to zero."
            if deeper_ok
            else ", no better than plain56 on this budget."
        ),
    ]
    ratios = "; ".join(
        f"{name}: " + ", ".join(f"{r:.2g}" for r in t[name]["gradient_ratio"].values())
        for name in ("plain56", "resnet56")
    )
    during = [
        Figure(during_png, "gradient norm per layer on the same batch, at initialisation and after each epoch"),
        f"First / last convolution gradient ratio at initialisation and after each epoch: {ratios}.",
    ]
    summary = (
        f"Without BatchNorm (PyTorch's default init) plain56's first-layer gradient is {plain['ratio']:.1e} of its "
        f"last layer's, resnet56's {res['ratio']:.2f}; with BatchNorm, trained on CIFAR-10: final training loss "
        f"plain20 {t['plain20']['final_train_loss']:.3f}, plain56 {t['plain56']['final_train_loss']:.3f}, "
        f"resnet56 {t['resnet56']['final_train_loss']:.3f}."
    )
    results = {"init": init, "trained": t, "vanished": vanished, "degraded": degraded}
    return Answer(
        summary,
        [
            Section("Gradients at initialisation: where the vanishing gradient is", gradients),
            Section("Training: the degradation of deep plain networks", training),
            Section("Gradients during training", during),
        ],
        results,
    )
