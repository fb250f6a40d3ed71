"""`Classifier`: a bundle's model with the preprocessing and calibration its card describes.

`load(run_dir)` builds one from the card alone, so the preprocessing every later step and the
service apply is, by construction, the one training used. `load(run_dir, device=...)` puts the
model on any device (weights are device-free safetensors); inputs go to it and answers come back
to the CPU, so callers never see the device.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from cnnlab.bundle.backends import backend_runner
from cnnlab.bundle.card import ModelCard, read_card
from cnnlab.bundle.views import network_of
from cnnlab.bundle.weights import load_model
from cnnlab.data.decode import decode_image
from cnnlab.data.preprocess import Preprocessing, fit_all, image_to_input, normalize, stats_tensors
from cnnlab.engine.device import device_name, module_device, resolve_device, to_device
from cnnlab.errors import DataError
from cnnlab.evaluation.operating import operating_decision
from cnnlab.explain.cam import METHODS, CamExplainer, heat_on_image, resolve_cam_layer
from cnnlab.models.outputs import pooled_embedding, probabilities


@dataclass(frozen=True)
class Prediction:
    label: str
    index: int
    confidence: float
    probs: dict[str, float]
    decision: str | None = None
    """With an operating point in the card: `positive` when the probability of its positive
    classes reaches its threshold, else `negative`."""


class Classifier:
    """A bundle's model behind one interface, run by torch eager, `torch.compile` or ONNX Runtime.

    Every backend gets the same pixels and applies the card's calibration the same way. The model
    runs on `device` (default: where it already is); ONNX Runtime runs on the CPU."""

    def __init__(
        self,
        model: torch.nn.Module,
        card: ModelCard,
        run_dir: Path | None = None,
        backend: str = "torch",
        device: torch.device | str | None = None,
    ) -> None:
        self.device = resolve_device(device) if device is not None else module_device(model)
        self.model = model.to(self.device).eval()
        self.card = card
        self.run_dir = run_dir
        self.classes: list[str] = list(card.classes)
        self.binary = card.binary
        self.temperature = float(card.temperature or 1.0)
        vector = card.calibration or {}  # vector scaling, when `cnnlab calibrate --method vector` chose it
        self.scale, self.bias = vector.get("scale"), vector.get("bias")
        self.preprocessing = Preprocessing.from_dict(card.preprocessing)
        self._mean, self._std = stats_tensors(self.preprocessing.mean, self.preprocessing.std)
        self.backend = backend
        self._run, self._embedded = backend_runner(backend, self.model, run_dir, card)
        self._input_device = torch.device("cpu") if backend == "onnx" else self.device

    @property
    def network(self) -> torch.nn.Module:
        """The network (or ensemble) itself, without the card's test-time views: what Grad-CAM,
        filters and feature maps read, on the image as given (`cnnlab.bundle.views`)."""
        return network_of(self.model)

    @property
    def device_name(self) -> str:
        """`cpu` or `cuda:0 (NVIDIA H200)`: where this classifier's network runs."""
        return "cpu (ONNX Runtime)" if self.backend == "onnx" else device_name(self.device)

    def normalized(self, pixels: torch.Tensor) -> torch.Tensor:
        return normalize(pixels, self._mean, self._std)

    def fit_pixels(self, images: torch.Tensor, already_fitted: bool = False) -> torch.Tensor:
        """uint8 (N, C, H, W) data-set images fitted to the network input as the card says."""
        if already_fitted:
            return images
        prep = self.preprocessing
        return fit_all(images, prep.resize_to, prep.pad_to, prep.crop)

    def preprocess(self, images: Any) -> torch.Tensor:
        """uint8 (N, C, H, W) network-ready pixels (before normalisation) for any accepted input."""
        prep = self.preprocessing
        tensors = [image_to_input(im, prep.channels, prep.resize_to, prep.pad_to, prep.crop) for im in _as_list(images)]
        if not tensors:
            return torch.empty(0, prep.channels, *prep.pad_to, dtype=torch.uint8)
        return torch.stack(tensors)

    @torch.inference_mode()
    def logits_from_pixels(self, pixels: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        outs = [self._logits(pixels[i : i + batch_size]) for i in range(0, len(pixels), batch_size)]
        width = 1 if self.binary else len(self.classes)
        return torch.cat(outs) if outs else torch.empty(0, width)

    def _logits(self, pixels: torch.Tensor) -> torch.Tensor:
        x = pixels if self._embedded else self.normalized(pixels)
        return self._run(to_device(x, self._input_device)).float().cpu()

    def calibrated(self, logits: torch.Tensor) -> torch.Tensor:
        """Probabilities from raw logits with the card's calibration (temperature or vector scaling)."""
        return probabilities(logits, self.binary, self.temperature, self.scale, self.bias)

    def proba_from_pixels(self, pixels: torch.Tensor) -> np.ndarray:
        return self.calibrated(self.logits_from_pixels(pixels)).numpy()

    @torch.inference_mode()
    def proba_and_embedding(self, pixels: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Calibrated probabilities and the penultimate-layer embedding (the trunk's output, averaged
        over space) of uint8 network-ready pixels, from one forward pass (eager torch model)."""
        features = self.model.forward_features(to_device(self.normalized(pixels), self.device))
        logits = self.model.forward_head(features).float().cpu()
        return self.calibrated(logits).numpy(), pooled_embedding(features.cpu())

    def predict_proba(self, images: Any) -> np.ndarray:
        """(N, num_classes) probabilities, calibrated when the card holds a calibration."""
        return self.proba_from_pixels(self.preprocess(images))

    def predict(self, images: Any) -> list[Prediction]:
        return [prediction_from_row(self.classes, row, self.card.threshold) for row in self.predict_proba(images)]

    def explain(
        self, image: Any, method: str = "gradcam", class_index: int | None = None, layer: str | None = None
    ) -> np.ndarray:
        """Heat map in [0, 1] with the decoded image's height and width, for the predicted class
        unless `class_index` is given. `method`: gradcam, gradcam++, scorecam, eigencam or layercam;
        `layer`: the card's CAM layer unless given."""
        if method not in METHODS:
            raise DataError(f"explain method '{method}' is not available; use one of {', '.join(METHODS)}")
        if class_index is not None and not 0 <= class_index < len(self.classes):
            raise DataError(f"class index {class_index} is out of range for {len(self.classes)} classes")
        prep = self.preprocessing
        decoded = decode_image(image, prep.channels)
        pixels = image_to_input(decoded, prep.channels, prep.resize_to, prep.pad_to, prep.crop)[None]
        with CamExplainer(self.network, layer or self.cam_layer(), method, binary=self.binary) as cam:
            heat, _ = cam.explain(self.normalized(pixels), None if class_index is None else [class_index])
        return heat_on_image(heat[0], decoded.shape[:2], prep)

    def cam_layer(self) -> str:
        """The card's CAM layer, checked once to yield a spatial map and a gradient (else a better one)."""
        if getattr(self, "_checked_cam_layer", None) is None:
            prep = self.preprocessing
            shape = (prep.channels, *prep.pad_to)
            self._checked_cam_layer = resolve_cam_layer(self.network, self.card.cam_layer or None, shape)
        return self._checked_cam_layer


def prediction_from_row(classes: list[str], row: np.ndarray, threshold: dict[str, Any] | None = None) -> Prediction:
    index = int(row.argmax())
    probs = {c: float(p) for c, p in zip(classes, row, strict=True)}
    return Prediction(classes[index], index, float(row[index]), probs, operating_decision(threshold, classes, row))


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


def load(run_dir: str | Path, backend: str = "torch", device: torch.device | str | None = "auto") -> Classifier:
    """The bundle at `run_dir` as a Classifier, built from its model card alone.

    `backend`: torch (eager), compile (`torch.compile`), or onnx (ONNX Runtime on the bundle's
    `cnnlab export` output, refused unless its parity check passed for these exact weights).
    `device`: auto (a CUDA GPU if there is one, else the CPU), cpu, cuda or cuda:N; weights saved
    on any device load on any other."""
    run_dir = Path(run_dir)
    where = resolve_device(device)  # a GPU that is not there fails before the weights are read
    card = read_card(run_dir)
    return Classifier(load_model(run_dir, card), card, run_dir, backend, where)
