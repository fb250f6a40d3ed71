"""The engines a `Classifier` runs on: torch eager, `torch.compile`, or ONNX Runtime on the
bundle's own `cnnlab export` output. Each is a function from the network's input to logits;
`make_runner` also runs the exported files for export's parity check."""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cnnlab.bundle.card import ModelCard
from cnnlab.choices import BACKENDS
from cnnlab.errors import BundleError, DataError

EXPORT_DIR = "export"
Runner = Callable[[torch.Tensor], torch.Tensor]


def backend_runner(backend: str, model: nn.Module, run_dir: Path | None, card: ModelCard) -> tuple[Runner, bool]:
    """The runner for `backend`, and whether it takes raw uint8 pixels (normalisation in its graph)."""
    if backend not in BACKENDS:
        raise DataError(f"backend must be one of {', '.join(BACKENDS)}, not '{backend}'")
    if backend == "compile":
        return torch.compile(model), False
    if backend == "onnx":
        return _onnx_runner(run_dir, card)
    return model, False


def _onnx_runner(run_dir: Path | None, card: ModelCard) -> tuple[Runner, bool]:
    folder = (run_dir or Path(".")) / EXPORT_DIR
    try:
        contract = json.loads((folder / "preprocess.json").read_text())
        parity = json.loads((folder / "parity.json").read_text())
    except (OSError, ValueError):
        raise BundleError(f"no ONNX export in {folder}; run `cnnlab export {run_dir}` first") from None
    if contract.get("format") != "onnx" or not parity.get("passed"):
        raise BundleError(f"{folder} holds no ONNX export that passed its parity check; run `cnnlab export {run_dir}`")
    if contract.get("weights_sha256") != card.weights_sha256:
        raise BundleError(f"{folder}/model.onnx was exported from other weights; run `cnnlab export {run_dir}` again")
    embedded = bool(contract["input"]["normalised_in_graph"])
    return make_runner(folder / contract["file"], "onnx", embedded), embedded


def make_runner(path: Path, fmt: str, embedded: bool, threads: int | None = None) -> Runner:
    """A function from an exported model's input tensor to logits."""
    if fmt == "onnx":
        import onnxruntime as ort  # only a process that serves or checks an ONNX file pays for it

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or os.cpu_count() or 1
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        dtype = np.uint8 if embedded else np.float32

        def run_onnx(x: torch.Tensor) -> torch.Tensor:
            return torch.from_numpy(session.run(None, {"input": x.numpy().astype(dtype, copy=False)})[0])

        return run_onnx
    if fmt == "torchscript":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            module = torch.jit.load(str(path), map_location="cpu").eval()
    else:
        module = torch.export.load(str(path)).module()

    def run_torch(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return module(x).float()

    return run_torch
