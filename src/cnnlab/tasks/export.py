"""`cnnlab export`: a bundle as ONNX (or TorchScript / torch.export) in its `export/` folder,
proven against the bundle's own model on real images of its test split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from cnnlab.bundle.backends import EXPORT_DIR
from cnnlab.bundle.classifier import Classifier, load
from cnnlab.bundle.data import bundle_data, network_pixels
from cnnlab.choices import EXPORT_FILENAMES
from cnnlab.errors import DataError
from cnnlab.export.onnx import Format, Parity, export_classifier


def export_model(
    run_dir: str | Path,
    fmt: Format = "onnx",
    *,
    opset: int = 18,
    dynamic_batch: bool = True,
    embed_preprocessing: bool = False,
    samples: int = 256,
    data_dir: str | None = None,
    device: str | None = None,
) -> tuple[Path, Parity]:
    """`samples` test images prove the export; `samples=0` needs no data at all: the proof then
    runs on seeded random pixels (the graph's numbers, not its answers on real images). The
    reference side of the proof runs on `device` (default auto); the file is written from a CPU
    copy, so it runs anywhere."""
    if fmt not in EXPORT_FILENAMES:
        raise DataError(f"--format must be one of {', '.join(EXPORT_FILENAMES)}, not '{fmt}'")
    if samples < 0:
        raise DataError(f"--samples must be 0 or more, not {samples}")
    run_dir = Path(run_dir)
    clf = load(run_dir, device=device)
    inputs = f"{samples} images of the test split" if samples else f"{RANDOM_SAMPLES} random images"
    pixels = parity_pixels(run_dir, clf, samples, data_dir) if samples else random_pixels(clf, RANDOM_SAMPLES)
    return export_classifier(
        clf,
        pixels,
        run_dir / EXPORT_DIR,
        fmt,
        opset=opset,
        dynamic_batch=dynamic_batch,
        embed_preprocessing=embed_preprocessing,
        inputs=inputs,
    )


RANDOM_SAMPLES = 32


def random_pixels(clf: Classifier, n: int) -> torch.Tensor:
    prep = clf.preprocessing
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (n, prep.channels, *prep.pad_to), dtype=torch.uint8, generator=generator)


def parity_pixels(run_dir: Path, clf: Classifier, samples: int, data_dir: str | None) -> torch.Tensor:
    """Up to `samples` images of the run's test split, as the network's uint8 input."""
    data = bundle_data(run_dir, clf, data_dir)
    x = data.splits["test"][0]
    idx = np.linspace(0, len(x) - 1, min(samples, len(x))).round().astype(int)
    return network_pixels(clf, data, x[torch.from_numpy(idx)])
