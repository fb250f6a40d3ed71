"""`cnnlab predict`: classify files and folders with a bundle; an unreadable file gets its
reason and the others still run. With `explain`, a Grad-CAM overlay per predicted file."""

from __future__ import annotations

import glob
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from cnnlab.bundle.classifier import Classifier, Prediction, load, prediction_from_row
from cnnlab.data.decode import decode_image
from cnnlab.data.preprocess import image_to_input
from cnnlab.errors import DataError
from cnnlab.evaluation.operating import positive_score
from cnnlab.explain.cam import overlay
from cnnlab.explain.folder import save_png
from cnnlab.progress import progress_bar


@dataclass
class FileResult:
    path: str
    prediction: Prediction | None
    error: str = ""
    positive_score: float | None = None
    """With an operating point in the card: P(positive), the sum over its positive classes, that
    its threshold decides on (`prediction.decision`)."""


@dataclass
class PredictTiming:
    decode_seconds: float = 0.0
    model_seconds: float = 0.0
    total_seconds: float = 0.0


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm", ".dicom"}


def expand_inputs(items: Iterable[str]) -> list[Path]:
    """Files as given, folders searched for image files (recursively, hidden ones skipped), globs."""
    paths: list[Path] = []
    for item in items:
        matches = sorted(glob.glob(item, recursive=True)) if any(c in item for c in "*?[") else [item]
        for match in matches:
            p = Path(match)
            if p.is_dir():
                paths += sorted(
                    f
                    for f in p.rglob("*")
                    if f.is_file()
                    and f.suffix.lower() in IMAGE_SUFFIXES
                    and not any(part.startswith(".") for part in f.relative_to(p).parts)
                )
            else:
                paths.append(p)
    return paths


def predict_files(
    clf: Classifier, paths: list[Path], batch_size: int = 64, advance: Any = None
) -> tuple[list[FileResult], PredictTiming]:
    """Predict every file; an unreadable one gets its reason and the others still run."""
    timing = PredictTiming()
    results: list[FileResult] = []
    prep = clf.preprocessing
    start_all = time.perf_counter()
    for start in range(0, len(paths), batch_size):
        chunk = paths[start : start + batch_size]
        t0 = time.perf_counter()
        good: list[tuple[int, torch.Tensor]] = []
        row: list[FileResult] = []
        for i, path in enumerate(chunk):
            try:
                good.append((i, image_to_input(path, prep.channels, prep.resize_to, prep.pad_to, prep.crop)))
                row.append(FileResult(str(path), None))
            except DataError as exc:
                row.append(FileResult(str(path), None, str(exc).removeprefix(f"{path}: ")))
        t1 = time.perf_counter()
        if good:
            proba = clf.proba_from_pixels(torch.stack([t for _, t in good]))
            point = clf.card.threshold
            for (i, _), p in zip(good, proba, strict=True):
                row[i].prediction = prediction_from_row(clf.classes, p, point)
                if point:
                    row[i].positive_score = float(positive_score(p[None], clf.classes, point["positive"])[0])
        t2 = time.perf_counter()
        timing.decode_seconds += t1 - t0
        timing.model_seconds += t2 - t1
        results += row
        if advance is not None:
            advance(len(chunk))
    timing.total_seconds = time.perf_counter() - start_all
    return results, timing


@dataclass
class PredictRun:
    """What `predict` did: one result per file, in order, its timing, and the overlays it wrote."""

    classes: list[str]
    results: list[FileResult]
    timing: PredictTiming
    overlay_dir: Path | None = None
    overlays: int = 0
    operating_point: dict[str, Any] | None = None
    """The card's `{"positive": [class, ...], "value": t}` that made each file's decision."""

    @property
    def failed(self) -> int:
        return sum(1 for r in self.results if r.error)


def predict(
    run_dir: str | Path,
    items: Iterable[str],
    backend: str = "torch",
    explain: bool = False,
    out: Path | None = None,
    console: Console | None = None,
    *,
    device: str | None = None,
) -> PredictRun:
    """Predict files, folders and globs with the bundle at `run_dir` on `backend`; with `explain`,
    write a Grad-CAM overlay of each predicted file's class in `out` (default RUN/explain/predict).
    A torch backend runs on `device` (default auto); ONNX Runtime on the CPU."""
    items = list(items)
    clf = load(run_dir, backend, device=device)
    files = expand_inputs(items)
    if not files:
        raise DataError("no image files found in " + ", ".join(items))
    with progress_bar(console, "predicting", len(files)) as advance:
        results, timing = predict_files(clf, files, advance=advance)
    report = PredictRun(clf.classes, results, timing, operating_point=clf.card.threshold)
    if explain:
        report.overlay_dir = out or Path(run_dir) / "explain" / "predict"
        report.overlays = write_overlays(clf, results, report.overlay_dir)
    return report


def write_overlays(clf: Classifier, results: list[FileResult], folder: Path) -> int:
    """A Grad-CAM overlay (FILE.LABEL.png) of the predicted class for every predicted file; returns
    how many it wrote."""
    folder.mkdir(parents=True, exist_ok=True)
    written = 0
    for r in results:
        if r.prediction is None:
            continue
        image = decode_image(r.path, 3)
        heat = clf.explain(r.path, class_index=r.prediction.index)
        save_png(overlay(image, heat), folder / f"{Path(r.path).stem}.{r.prediction.label}.png")
        written += 1
    return written
