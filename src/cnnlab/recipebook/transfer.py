"""000 Question 4: what transfer learning buys, measured. EfficientNet-Lite0 on flowers from random
weights, as frozen ImageNet features under a new head, and fine-tuned from ImageNet, each on a quarter,
a half and all of the training images, with the same validation and test images: test accuracy and
training time of all nine runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from cnnlab import bundle
from cnnlab.evaluation.report import Figure, Section, Table
from cnnlab.figures import plt, save_figure
from cnnlab.recipebook.core import Answer, Context, pct, recipe, train_recipe

FRACTIONS = (0.25, 0.5, 1.0)
"""Shares of the training split. Each smaller set is a prefix of the same seeded permutation, so the
quarter is inside the half: more data only adds images."""
SIZE = 160
"""Input side: 0.5x the multiply-adds of Lite0's 224 px, so nine runs fit in about ten minutes on 2 CPU
cores (ImageNet features still transfer at 160 px)."""
EPOCHS = 6
"""The same epoch budget for every method: from scratch is judged at the cost the others pay."""
TOP_BLOCKS = 6
"""Fine-tuning unfreezes the last six of Lite0's 20 trunk blocks (lite0-flowers' setting)."""
METHODS = ("from scratch", "frozen features", "fine-tuning")
COLOURS = {"from scratch": "#c0392b", "frozen features": "#2980b9", "fine-tuning": "#27ae60"}


def method_values(method: str, epochs: int) -> dict[str, Any]:
    """The config of one method: random weights trained end to end, a new head on the frozen
    ImageNet trunk (its features computed once), or that head first and then the top blocks at
    lower, discriminative learning rates, as the seed's two stages."""
    if method == "from scratch":
        return {
            "model.weights": "none",
            "train.epochs": epochs,
            "optim.lr": 2e-3,
            "optim.schedule": "cosine",
            "data.augment": "light",
        }
    head = {"name": "head", "trainable": "head", "epochs": epochs, "lr": 1e-3}
    if method == "frozen features":
        return {"model.weights": "imagenet", "train.stages": [head]}
    warm = max(1, epochs // 2)
    tune = {
        "name": "finetune",
        "trainable": f"top:{TOP_BLOCKS}",
        "epochs": max(1, epochs - warm),
        "lr": 3e-4,
        "lr_decay": 0.7,
        "schedule": "cosine",
        "augment": "light",
    }
    return {"model.weights": "imagenet", "train.stages": [{**head, "epochs": warm}, tune]}


def _train(ctx: Context, method: str, fraction: float, limit: int | None, epochs: int) -> dict[str, Any]:
    values = {
        "name": "transfer-learning",
        "data.source": "flowers",
        "data.input_size": SIZE,
        "model.name": "efficientnet_lite0",
        "train.batch_size": 32,
        "optim.optimizer": "adam",
        **method_values(method, epochs),
    }
    if limit is not None:
        values["data.limit_train"] = limit
    quick = {"data.input_size": 64, "data.limit_eval": 20, "train.batch_size": 64}  # one step per epoch
    folder = f"{method.replace(' ', '-')}-{round(100 * fraction)}"
    run_dir = train_recipe(ctx, ctx.config(None, quick, **values), folder)
    card = bundle.read_card(run_dir)
    return {
        "method": method,
        "fraction": fraction,
        "folder": folder,
        "train_images": card.data["splits"]["train"],
        "val_images": card.data["splits"]["val"],
        "test_images": card.data["splits"]["test"],
        "test_accuracy": card.metrics["test_accuracy"],
        "train_seconds": card.training["train_seconds"],
        "epochs": card.training["epochs_run"],
        "stages": [{k: s[k] for k in ("name", "epochs", "train_seconds")} for s in card.training["stages"]],
        "verdict": card.training["fit"]["verdict"],
    }


def _figures(ctx: Context, runs: list[dict[str, Any]]) -> tuple[Path, Path]:
    sizes = sorted({r["train_images"] for r in runs})
    acc_path, time_path = ctx.path("accuracy-vs-data.png"), ctx.path("training-time.png")
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for method in METHODS:
        mine = sorted((r for r in runs if r["method"] == method), key=lambda r: r["train_images"])
        xs, ys = [r["train_images"] for r in mine], [100 * r["test_accuracy"] for r in mine]
        ax.plot(xs, ys, "o-", color=COLOURS[method], label=method)
        for x, y in zip(xs, ys, strict=True):
            ax.annotate(f"{y:.0f}%", (x, y), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=8)
    ax.axhline(100 / 5, color="grey", ls=":", lw=1, label="chance (5 classes)")
    ax.set_xticks(sizes)
    ax.set_xlabel("training images")
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 105)
    ax.set_title(f"EfficientNet-Lite0 on flowers, {runs[0]['test_images']} test images, {SIZE} px", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, acc_path)

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    width = 0.8 / len(METHODS)
    for k, method in enumerate(METHODS):
        mine = {r["train_images"]: r["train_seconds"] for r in runs if r["method"] == method}
        xs = np.arange(len(sizes)) + (k - 1) * width
        bars = ax.bar(xs, [mine[s] for s in sizes], width, color=COLOURS[method], label=method)
        ax.bar_label(bars, fmt="%.0f s", fontsize=7)
    ax.set_xticks(np.arange(len(sizes)), [f"{s} images" for s in sizes])
    ax.set_ylabel("training time (s)")
    ax.set_title("Training time of each run (the same epoch budget)", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, time_path)
    return acc_path, time_path


@recipe(
    "transfer-learning",
    "000 Q4",
    "Transfer learning, measured: from scratch, frozen features and fine-tuning on a quarter, half and all of the data",
    "What is transfer learning in the context of image classification? Explain how it helps in reducing "
    "computational costs and improving model performance with limited data.",
    data="flowers (ImageNet EfficientNet-Lite0)",
)
def transfer_learning(ctx: Context) -> Answer:
    epochs = 1 if ctx.quick else EPOCHS
    runs: list[dict[str, Any]] = []
    # The cheapest run on all the data first: its card says how many training images "all" is.
    runs.append(_train(ctx, "frozen features", 1.0, 40 if ctx.quick else None, epochs))
    total = runs[0]["train_images"]
    for fraction in FRACTIONS:
        for method in METHODS:
            if (method, fraction) != ("frozen features", 1.0):
                runs.append(_train(ctx, method, fraction, round(fraction * total), epochs))
    runs.sort(key=lambda r: (METHODS.index(r["method"]), r["fraction"]))
    acc_path, time_path = _figures(ctx, runs)
    at = {(r["method"], r["fraction"]): r for r in runs}
    small, full = FRACTIONS[0], FRACTIONS[-1]
    scratch, frozen, tuned = (at[(m, full)] for m in METHODS)
    few = {m: at[(m, small)] for m in METHODS}

    table = Table(
        ["method", "training images", "epochs", "test accuracy", "training time"],
        [
            [
                r["method"],
                f"{r['train_images']:,}",
                str(r["epochs"]),
                pct(r["test_accuracy"]),
                f"{r['train_seconds']:.1f} s",
            ]
            for r in runs
        ],
    )
    what = [
        "Transfer learning reuses a network trained on a large source task (here EfficientNet-Lite0 trained on "
        "ImageNet's 1.28 million photos of 1,000 classes) as the starting point for a new, smaller one: its "
        "convolutional layers already detect edges, colours, textures and object parts, and only the mapping from "
        f"those features to the new classes ({total:,} training photos of 5 flower species here) has to be learned.",
        "Two ways to reuse it. Feature extraction: freeze the pretrained trunk and train only a new classifier "
        "head on its output (here the trunk runs once per image and the head trains on the stored features). "
        f"Fine-tuning: after the head, also unfreeze the top {TOP_BLOCKS} trunk blocks and train them jointly with "
        "it at a smaller learning rate (each block further down at 0.7x the rate of the one above), so the most "
        "task-specific features adapt while the general early ones stay.",
        f"Measured: the same network trained three ways, each with {_epochs(epochs)} on {_sizes(runs)} training "
        f"images (nested subsets), validated on the same {runs[0]['val_images']} validation and tested on the same "
        f"{runs[0]['test_images']} test photos at {SIZE if not ctx.quick else 64} px.",
        table,
    ]
    data_text = [_limited_data(few, small, total), _scaling(runs)]
    compute_text = [_compute(scratch, frozen, tuned)]
    when_text = [_when_fine_tune(at)]
    summary = (
        f"On {total:,} flower photos with {_epochs(epochs)}: from scratch {pct(scratch['test_accuracy'])} "
        f"({scratch['train_seconds']:.1f} s), frozen ImageNet features {pct(frozen['test_accuracy'])} "
        f"({frozen['train_seconds']:.1f} s), fine-tuned {pct(tuned['test_accuracy'])} "
        f"({tuned['train_seconds']:.1f} s); on a quarter of the data ({few['from scratch']['train_images']:,} "
        f"images): {pct(few['from scratch']['test_accuracy'])}, {pct(few['frozen features']['test_accuracy'])} "
        f"and {pct(few['fine-tuning']['test_accuracy'])}."
    )
    budget = (
        f"Settings: {SIZE} px instead of Lite0's 224 (half the multiply-adds) and {EPOCHS} epochs per run, so the "
        "nine runs fit in about ten minutes on 2 CPU cores; from scratch gets the same epoch budget as the others, "
        "the fair comparison at equal cost (with hundreds of epochs it would close part of the gap, at hundreds "
        "of times the compute). Light augmentation (flips, small crops) wherever the trunk trains; frozen features "
        "are computed once, without augmentation. Adam: from scratch 2e-3 with a cosine decay, the head 1e-3, "
        "fine-tuning 3e-4 with a cosine decay."
    )
    if ctx.quick:
        budget = (
            "A quick run: 64 px, one epoch per stage, 40 training images at most; the numbers say little. " + budget
        )
    sections = [
        Section("What transfer learning is, and the runs", [*what, budget]),
        Section(
            "Better models with limited data",
            [*data_text, Figure(acc_path, "test accuracy against the number of training images")],
        ),
        Section(
            "Less computation",
            [*compute_text, Figure(time_path, "training time of each run")],
        ),
        Section("When fine-tuning pays over frozen features", when_text),
    ]
    results = {"runs": runs, "train_images": total, "epochs": epochs, "input_size": SIZE if not ctx.quick else 64}
    return Answer(summary, sections, results)


def _epochs(n: int) -> str:
    return f"{n} epoch" + ("" if n == 1 else "s")


def _sizes(runs: list[dict[str, Any]]) -> str:
    sizes = sorted({r["train_images"] for r in runs})
    return ", ".join(f"{s:,}" for s in sizes[:-1]) + f" and {sizes[-1]:,}"


def _limited_data(few: dict[str, dict[str, Any]], fraction: float, total: int) -> str:
    scratch, frozen, tuned = (few[m] for m in METHODS)
    best = max((frozen, tuned), key=lambda r: r["test_accuracy"])
    text = (
        f"With {fraction:.0%} of the data ({scratch['train_images']:,} images, about "
        f"{scratch['train_images'] // 5} per class), from scratch reached {pct(scratch['test_accuracy'])} test "
        "accuracy "
        f"(chance: 20%); frozen ImageNet features {pct(frozen['test_accuracy'])}, fine-tuning "
        f"{pct(tuned['test_accuracy'])}. "
    )
    gap = best["test_accuracy"] - scratch["test_accuracy"]
    if gap > 0:
        return text + (
            f"The pretrained start wins by {100 * gap:.1f} points: the features that separate flowers were learned "
            "from ImageNet's million photos, so these few images only have to teach which features mean which "
            "species. From random weights the same images must also teach what an edge, a petal or a texture is, "
            "which they are far too few for."
        )
    return text + (
        "Here the pretrained start did not win: this run is too short or too small to show the usual gap "
        "(the quick run's single epoch on tens of images says little)."
    )


def _scaling(runs: list[dict[str, Any]]) -> str:
    parts = []
    for method in METHODS:
        mine = sorted((r for r in runs if r["method"] == method), key=lambda r: r["train_images"])
        parts.append(f"{method} " + " -> ".join(pct(r["test_accuracy"]) for r in mine))
    text = "Accuracy as the training set grows from a quarter to all of it: " + "; ".join(parts) + ". "
    rise = {
        m: at[-1]["test_accuracy"] - at[0]["test_accuracy"]
        for m in METHODS
        if (at := sorted((r for r in runs if r["method"] == m), key=lambda r: r["train_images"]))
    }
    frozen_start = min(r["test_accuracy"] for r in runs if r["method"] == "frozen features")
    scratch_best = max(r["test_accuracy"] for r in runs if r["method"] == "from scratch")
    if frozen_start > scratch_best:
        return text + (
            f"Frozen features on the smallest set ({pct(frozen_start)}) already beat from scratch on all the data "
            f"({pct(scratch_best)}): the pretrained network needs a quarter of the images to do better. "
            f"Four times the data moved frozen features by {100 * rise['frozen features']:+.1f} points and from "
            f"scratch by {100 * rise['from scratch']:+.1f}."
        )
    return text + (
        f"Four times the data moved frozen features by {100 * rise['frozen features']:+.1f} points, fine-tuning by "
        f"{100 * rise['fine-tuning']:+.1f} and from scratch by {100 * rise['from scratch']:+.1f}."
    )


def _compute(scratch: dict[str, Any], frozen: dict[str, Any], tuned: dict[str, Any]) -> str:
    n = scratch["train_images"]
    head = next(s for s in tuned["stages"] if s["name"] == "head")
    tune = next((s for s in tuned["stages"] if s["name"] == "finetune"), None)
    text = (
        f"On all {n:,} images: from scratch took {scratch['train_seconds']:.1f} s, frozen features "
        f"{frozen['train_seconds']:.1f} s ({_times(scratch['train_seconds'], frozen['train_seconds'])}) and "
        f"fine-tuning {tuned['train_seconds']:.1f} s ({_times(scratch['train_seconds'], tuned['train_seconds'])}; "
        f"its head stage {head['train_seconds']:.1f} s"
        + (f", the top blocks {tune['train_seconds']:.1f} s" if tune else "")
        + "). "
    )
    text += (
        "Frozen features are cheap because the trunk runs forward once per image and never backward: every epoch "
        "after that trains a single dense layer on stored vectors. Fine-tuning backpropagates only through the top "
        f"{TOP_BLOCKS} blocks, where the maps are smallest. From scratch backpropagates through all of the network "
        "every step. "
    )
    best = max((frozen, tuned), key=lambda r: r["test_accuracy"])
    if best["test_accuracy"] > scratch["test_accuracy"]:
        return text + (
            f"And the cheaper runs are also the better ones ({pct(best['test_accuracy'])} against "
            f"{pct(scratch['test_accuracy'])}): from scratch would need many more epochs to catch up, while the "
            "pretraining was paid for once, on ImageNet, by someone else."
        )
    return text + "In this run the pretrained start was cheaper but not more accurate."


def _times(reference: float, value: float) -> str:
    if value <= 0:
        return "no time"
    ratio = reference / value
    return f"{ratio:.1f}x faster" if ratio >= 1 else f"{1 / ratio:.1f}x slower"


def _when_fine_tune(at: dict[tuple[str, float], dict[str, Any]]) -> str:
    gains = {
        f: at[("fine-tuning", f)]["test_accuracy"] - at[("frozen features", f)]["test_accuracy"] for f in FRACTIONS
    }
    listed = "; ".join(
        f"{at[('frozen features', f)]['train_images']:,} images {100 * g:+.1f} points" for f, g in gains.items()
    )
    small, full = gains[FRACTIONS[0]], gains[FRACTIONS[-1]]
    text = f"Fine-tuning minus frozen features, test accuracy: {listed}. "
    if full > 0 and full >= small:
        return text + (
            "Fine-tuning pays more as the data grows: with enough images the top blocks can adapt to flowers "
            "(petal shapes, colours ImageNet does not separate) without overfitting, while on the smallest set "
            "there is too little to adapt them safely. Use frozen features when data or compute is scarce or the "
            "new images resemble the source ones; fine-tune when there are more images, or the task differs from "
            "the source (X-rays rather than photos), and the extra compute is affordable."
        )
    if full > 0:
        return text + (
            "Fine-tuning helped, most on the smaller sets here: adapting the top blocks corrected what ImageNet "
            "features miss. Its cost is backpropagation through those blocks; frozen features remain the cheap "
            "first step, and fine-tuning the one to try when accuracy matters more than compute."
        )
    return text + (
        "Fine-tuning did not beat frozen features in this run: with these few images and epochs the pretrained "
        "features already separate the classes and adapting them adds variance, not accuracy. Fine-tuning pays "
        "with more data, more epochs, or a target far from ImageNet (X-rays rather than photos)."
    )
