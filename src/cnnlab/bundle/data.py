"""The data a bundle was trained on, as its model sees it, and the model's outputs on a split:
what evaluation, calibration, cross-validation and export's parity check all start from."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from cnnlab.bundle.classifier import Classifier
from cnnlab.bundle.layout import CONFIG
from cnnlab.config import load_config
from cnnlab.data.sources import FOLDER_PREFIX, ArrayDataset, load_source


def bundle_data(run_dir: Path, clf: Classifier, data_dir: str | None = None) -> ArrayDataset:
    """The data a bundle was trained on, as the model saw it (its channels and input size): from
    `data_dir` when given (another folder for folder sources), else from the folder the card
    recorded when it still exists (so a bundle works from any directory), else the usual search."""
    cfg = load_config(str(run_dir / CONFIG))
    data_cfg = replace(cfg.data, channels=clf.preprocessing.channels)
    recorded = clf.card.data.get("location")
    if data_dir is None and recorded and Path(recorded).is_dir() and not data_cfg.source.startswith(FOLDER_PREFIX):
        data_dir = recorded
    if data_dir is not None:
        if data_cfg.source.startswith(FOLDER_PREFIX):
            data_cfg = replace(data_cfg, source=f"{FOLDER_PREFIX}{Path(data_dir).expanduser().resolve()}")
        else:
            data_cfg = replace(data_cfg, data_dir=data_dir)
    return load_source(data_cfg, clf.preprocessing.pad_to[0])


@dataclass
class SplitOutputs:
    pixels: torch.Tensor
    """uint8 (N, C, H, W) network input before normalisation."""
    labels: np.ndarray
    logits: torch.Tensor
    groups: np.ndarray | None
    seconds: float
    sources: np.ndarray | None = None
    """Where each image came from (metadata.csv's `source`), when the data says."""


def split_outputs(clf: Classifier, data: ArrayDataset, split: str) -> SplitOutputs:
    x, y = data.splits[split]
    pixels = clf.fit_pixels(x, already_fitted=data.fitted_crop is not None)
    start = time.perf_counter()
    logits = clf.logits_from_pixels(pixels)
    seconds = time.perf_counter() - start
    groups = data.groups[split] if data.groups is not None else None
    sources = data.sources[split] if data.sources is not None else None
    return SplitOutputs(pixels, y.numpy(), logits, groups, seconds, sources)
