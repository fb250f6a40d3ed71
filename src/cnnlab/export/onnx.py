"""Export a bundle for fast inference, with its preprocessing and a parity proof.

`export_classifier` writes `export/model.onnx` (or a TorchScript / torch.export archive),
`export/preprocess.json` (the card's contract: sizes, channels, mean/std, classes, temperature,
threshold) and `export/parity.json`: the exported model against the bundle's own torch model on
real images of the run's test split. A model that disagrees (probabilities further apart than
1e-4, or any different top-1) is not put in place: the export fails with the figures.
"""

from __future__ import annotations

import copy
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import onnx
import torch
from torch import nn

from cnnlab.bundle.backends import Runner, make_runner
from cnnlab.bundle.classifier import Classifier
from cnnlab.choices import EXPORT_FILENAMES
from cnnlab.engine.device import full_precision, module_device
from cnnlab.errors import CnnlabError
from cnnlab.fileio import atomic_write_json

Format = Literal["onnx", "torchscript", "exported-program"]
FILENAMES = EXPORT_FILENAMES
PARITY_TOLERANCE = 1e-4


class ExportError(CnnlabError):
    """An export that could not be made or does not match the model it came from."""


class WithPreprocessing(nn.Module):
    """uint8 (N, C, H, W) pixels in, logits out: normalisation baked into the graph."""

    def __init__(self, model: nn.Module, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1) * 255.0)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1) * 255.0)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model((pixels.float() - self.mean) / self.std)


@dataclass
class Parity:
    samples: int
    max_abs_diff: float
    top1_agreement: float
    tolerance: float
    passed: bool
    seconds_exported: float
    seconds_reference: float


def export_classifier(
    clf: Classifier,
    pixels: torch.Tensor,
    out_dir: Path,
    fmt: Format = "onnx",
    *,
    opset: int = 18,
    dynamic_batch: bool = True,
    embed_preprocessing: bool = False,
    inputs: str = "",
) -> tuple[Path, Parity]:
    """Write `clf` in `fmt` to `out_dir`, checked against its own torch model on `pixels` (uint8
    network input; `inputs` says what they are, for parity.json); put in place only when parity holds."""
    out_dir.mkdir(exist_ok=True)
    target = out_dir / FILENAMES[fmt]
    staging = target.with_name(target.name + ".tmp")
    net: nn.Module = clf.model.eval()
    if module_device(net).type != "cpu":  # the file must run anywhere: trace it on the CPU
        net = copy.deepcopy(net).cpu().eval()
    if embed_preprocessing:
        net = WithPreprocessing(net, clf.preprocessing.mean, clf.preprocessing.std).eval()
    example = pixels[:2] if embed_preprocessing else clf.normalized(pixels[:2])
    try:
        _write(net, example, staging, fmt, opset, dynamic_batch)
    except ExportError:
        raise
    except Exception as exc:  # exporters raise many types for unsupported operations
        staging.unlink(missing_ok=True)
        raise ExportError(
            f"{clf.card.architecture} cannot be exported as {fmt}: {str(exc).splitlines()[0][:300]}"
        ) from None
    runner = make_runner(staging, fmt, embed_preprocessing)
    parity = check_parity(clf, runner, pixels, embed_preprocessing)
    atomic_write_json(out_dir / "parity.json", {"format": fmt, "file": target.name, "inputs": inputs, **asdict(parity)})
    if not parity.passed:
        staging.replace(target.with_name(target.name + ".rejected"))
        raise ExportError(
            f"parity failed: the exported model differs from the bundle (max |dp| {parity.max_abs_diff:.2e} > "
            f"{parity.tolerance:.0e} or top-1 agreement {parity.top1_agreement:.2%} < 100%); kept as "
            f"{target.name}.rejected for inspection"
        )
    staging.replace(target)
    atomic_write_json(out_dir / "preprocess.json", contract(clf, fmt, target.name, embed_preprocessing))
    return target, parity


def contract(clf: Classifier, fmt: str, filename: str, embedded: bool) -> dict[str, Any]:
    """What a consumer of the exported file must do to an image, from the model card."""
    prep = clf.preprocessing
    return {
        "format": fmt,
        "file": filename,
        "input": {
            "name": "input",
            "dtype": "uint8" if embedded else "float32",
            "layout": "NCHW",
            "channels": prep.channels,
            "size": list(prep.pad_to),
            "normalised_in_graph": embedded,
        },
        "preprocessing": {
            "decode": "grey (ITU-R 601 luma) or RGB, alpha composited on black, EXIF orientation applied",
            "crop_to_aspect": prep.crop,
            "resize_to": list(prep.resize_to),
            "resize": "bilinear, antialiased",
            "pad_to": list(prep.pad_to),
            "mean": list(prep.mean),
            "std": list(prep.std),
            "scale": "pixels / 255 before mean and std",
        },
        "output": {"name": "logits", "binary": clf.binary, "activation": "sigmoid" if clf.binary else "softmax"},
        "classes": clf.classes,
        "temperature": clf.temperature,
        "vector_scaling": {"scale": clf.scale, "bias": clf.bias} if clf.scale is not None else None,
        "threshold": clf.card.threshold,
        "architecture": clf.card.architecture,
        "weights_sha256": clf.card.weights_sha256,
    }


def _write(net: nn.Module, example: torch.Tensor, path: Path, fmt: str, opset: int, dynamic_batch: bool) -> None:
    if fmt == "onnx" and opset < 18:
        raise ExportError(f"opset {opset} is older than the exporter writes (18 or later)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.export's progress chatter and TorchScript's tracer notes
        if fmt == "onnx":
            # torch.export's exporter (dynamo): the TorchScript one is deprecated and refuses graphs
            # this one handles (adaptive pooling to a size that does not divide its input: AlexNet,
            # VGG at small inputs); parity held for every registered model. It costs seconds more.
            batch = torch.export.Dim("batch", min=1) if dynamic_batch else None
            program = torch.onnx.export(
                net,
                (example,),
                dynamo=True,
                input_names=["input"],
                output_names=["logits"],
                dynamic_shapes=({0: batch},) if batch is not None else None,
                opset_version=opset,
                verbose=False,
            )
            program.save(str(path))
            try:
                onnx.checker.check_model(str(path), full_check=True)
            except onnx.checker.ValidationError as exc:
                raise ExportError(f"onnx.checker rejected the graph: {str(exc).splitlines()[0]}") from None
        elif fmt == "torchscript":
            torch.jit.save(torch.jit.trace(net, example), str(path))
        elif fmt == "exported-program":
            batch = torch.export.Dim("batch", min=1) if dynamic_batch else None
            shapes = ({0: batch},) if batch is not None else None
            torch.export.save(torch.export.export(net, (example,), dynamic_shapes=shapes), str(path))
        else:
            raise ExportError(f"unknown format '{fmt}': onnx, torchscript or exported-program")


def check_parity(clf: Classifier, runner: Runner, pixels: torch.Tensor, embedded: bool, batch: int = 64) -> Parity:
    """The exported file (on the CPU) against the bundle's model on its own device, in true fp32."""
    start = time.perf_counter()
    with full_precision():
        reference = torch.from_numpy(clf.proba_from_pixels(pixels))
    t_ref = time.perf_counter() - start
    start = time.perf_counter()
    logits = torch.cat(
        [
            runner(pixels[i : i + batch] if embedded else clf.normalized(pixels[i : i + batch]))
            for i in range(0, len(pixels), batch)
        ]
    )
    t_exp = time.perf_counter() - start
    exported = clf.calibrated(logits)
    diff = float((exported - reference).abs().max()) if len(pixels) else 0.0
    agree = float((exported.argmax(1) == reference.argmax(1)).float().mean()) if len(pixels) else 1.0
    return Parity(len(pixels), diff, agree, PARITY_TOLERANCE, diff <= PARITY_TOLERANCE and agree == 1.0, t_exp, t_ref)
