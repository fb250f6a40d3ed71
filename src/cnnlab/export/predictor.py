"""`Classifier`: a bundle's model with the preprocessing and calibration its card describes."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from cnnlab import bundle
from cnnlab.data.preprocess import Preprocessing, image_to_input, normalize, stats_tensors
from cnnlab.engine.losses import probabilities
from cnnlab.errors import DataError


@dataclass(frozen=True)
class Prediction:
    label: str
    index: int
    confidence: float
    probs: dict[str, float]


class Classifier:
    def __init__(self, model: torch.nn.Module, card: dict[str, Any], run_dir: Path | None = None) -> None:
        self.model = model.eval()
        self.card = card
        self.run_dir = run_dir
        self.classes: list[str] = list(card["classes"])
        self.binary = bool(card["binary"])
        self.temperature = float(card.get("temperature") or 1.0)
        self.preprocessing = Preprocessing.from_dict(card["preprocessing"])
        self._mean, self._std = stats_tensors(self.preprocessing.mean, self.preprocessing.std)

    def preprocess(self, images: Any) -> torch.Tensor:
        """uint8 (N, C, H, W) network-ready pixels (before normalisation) for any accepted input."""
        prep = self.preprocessing
        tensors = [image_to_input(im, prep.channels, prep.resize_to, prep.pad_to, prep.crop) for im in _as_list(images)]
        if not tensors:
            return torch.empty(0, prep.channels, *prep.pad_to, dtype=torch.uint8)
        return torch.stack(tensors)

    @torch.inference_mode()
    def logits_from_pixels(self, pixels: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        outs = [
            self.model(normalize(pixels[i : i + batch_size], self._mean, self._std)).float()
            for i in range(0, len(pixels), batch_size)
        ]
        width = 1 if self.binary else len(self.classes)
        return torch.cat(outs) if outs else torch.empty(0, width)

    def proba_from_pixels(self, pixels: torch.Tensor) -> np.ndarray:
        return probabilities(self.logits_from_pixels(pixels), self.binary, self.temperature).numpy()

    def predict_proba(self, images: Any) -> np.ndarray:
        """(N, num_classes) probabilities, calibrated when the card holds a temperature."""
        return self.proba_from_pixels(self.preprocess(images))

    def predict(self, images: Any) -> list[Prediction]:
        results = []
        for row in self.predict_proba(images):
            index = int(row.argmax())
            results.append(
                Prediction(
                    label=self.classes[index],
                    index=index,
                    confidence=float(row[index]),
                    probs={c: float(p) for c, p in zip(self.classes, row, strict=True)},
                )
            )
        return results


def _as_list(images: Any) -> list[Any]:
    """One image or many: a path, bytes, PIL image or HxW[xC] array is one; an (N, H, W[, C])
    array or any other iterable is many."""
    if isinstance(images, str | Path | Image.Image | bytes | bytearray | memoryview):
        return [images]
    if isinstance(images, np.ndarray):
        if images.ndim == 3 and images.shape[0] in (1, 3, 4) and images.shape[2] not in (1, 3, 4):
            raise DataError(f"array of shape {images.shape} looks channels-first; pass H x W x C images")
        if images.ndim == 2 or (images.ndim == 3 and images.shape[2] in (1, 3, 4)):
            return [images]
        return list(images)
    if isinstance(images, Iterable):
        return list(images)
    return [images]


def load(run_dir: str | Path) -> Classifier:
    """The bundle at `run_dir` as a Classifier, built from its model card alone."""
    run_dir = Path(run_dir)
    card = bundle.read_card(run_dir)
    return Classifier(bundle.load_model(run_dir, card), card, run_dir)
