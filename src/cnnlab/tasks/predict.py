"""`cnnlab predict`: classify files and folders with a bundle; an unreadable file gets its
reason and the others still run."""

from __future__ import annotations

import glob
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cnnlab.bundle.classifier import Classifier, Prediction, prediction_from_row
from cnnlab.data.preprocess import image_to_input
from cnnlab.errors import DataError


@dataclass
class FileResult:
    path: str
    prediction: Prediction | None
    error: str = ""


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
            for (i, _), p in zip(good, proba, strict=True):
                row[i].prediction = prediction_from_row(clf.classes, p, clf.card.threshold)
        t2 = time.perf_counter()
        timing.decode_seconds += t1 - t0
        timing.model_seconds += t2 - t1
        results += row
        if advance is not None:
            advance(len(chunk))
    timing.total_seconds = time.perf_counter() - start_all
    return results, timing
