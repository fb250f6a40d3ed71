"""`cnnlab gate CANDIDATE --against ACTIVE --data FOLDER`: may a candidate bundle replace the active
one? Both score every readable image of one labelled class folder with their calibrated
probabilities, as served, and `cnnlab.evaluation.gate` compares them by a paired bootstrap (by
patient when metadata.csv has patient ids) under non-inferiority margins.

`gate_classifiers` works on loaded Classifiers (the service holds its bundles loaded); `gate` loads
two bundle directories first."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console

from cnnlab.bundle.classifier import Classifier, load
from cnnlab.bundle.data import ALL, external_data, network_pixels
from cnnlab.data.sources import FOLDER_PREFIX, ArrayDataset
from cnnlab.errors import BundleError, CnnlabError, DataError
from cnnlab.evaluation.gate import GateResult, Margins, check_resamples, paired_gate
from cnnlab.evaluation.metrics import clean
from cnnlab.fileio import atomic_write_json
from cnnlab.progress import progress as show_progress

BATCH = 64


@dataclass(frozen=True)
class GateReport:
    result: GateResult
    candidate: dict[str, Any]
    """name, run_dir, architecture, weights_sha256 of the candidate bundle."""
    active: dict[str, Any]
    folder: str
    images: int
    """Readable images scored (every one in the folder, whatever its split)."""
    unreadable: int
    class_counts: dict[str, int]
    out: Path | None = None
    """Where the JSON report was written (None: not written)."""

    @property
    def passed(self) -> bool:
        return self.result.passed

    def to_dict(self) -> dict[str, Any]:
        return clean(
            {
                "passed": self.passed,
                "reasons": self.result.reasons,
                "candidate": self.candidate,
                "active": self.active,
                "data": {
                    "folder": self.folder,
                    "images": self.images,
                    "unreadable": self.unreadable,
                    "classes": self.class_counts,
                },
                "gate": self.result.to_dict(),
            }
        )


def gate_classifiers(
    candidate: Classifier,
    active: Classifier,
    folder: str | Path,
    margins: Margins = Margins(),
    resamples: int = 1000,
    seed: int = 0,
    progress: bool = True,
    console: Console | None = None,
) -> GateReport:
    """Score every readable image of `folder` (a class folder, `folder:PATH` or a plain path, with
    or without metadata.csv) with both classifiers and gate the candidate against the active one.
    Nothing is written. With `progress`, the scoring shows its progress on `console` (default
    standard error); the service passes False."""
    check_resamples(resamples)  # before minutes of scoring, not after
    console = (console or Console(stderr=True)) if progress else None
    if candidate.classes != active.classes:
        raise BundleError(
            f"the bundles have different classes: candidate {', '.join(candidate.classes)}; "
            f"active {', '.join(active.classes)}"
        )
    text = str(folder)
    path = Path(text[len(FOLDER_PREFIX) :] if text.startswith(FOLDER_PREFIX) else text).expanduser()
    # Each model decodes the images at its own channels and input size; the files and their order are the same.
    data = {"candidate": external_data(candidate, path, ALL), "active": external_data(active, path, ALL)}
    clfs = {"candidate": candidate, "active": active}
    probas = {side: _calibrated(clf, data[side], side, console) for side, clf in clfs.items()}
    y = data["active"].splits[ALL][1].numpy()
    if not np.array_equal(y, data["candidate"].splits[ALL][1].numpy()):
        raise DataError(f"{path}: the folder changed while it was read; run the gate again")
    groups = data["active"].groups[ALL] if data["active"].groups is not None else None
    result = paired_gate(
        y,
        probas["candidate"],
        probas["active"],
        active.classes,
        candidate_point=candidate.card.threshold,
        active_point=active.card.threshold,
        groups=groups,
        margins=margins,
        resamples=resamples,
        seed=seed,
    )
    manifest = data["active"].manifest
    counts = Counter(int(v) for v in y)
    return GateReport(
        result=result,
        candidate=_describe(candidate),
        active=_describe(active),
        folder=data["active"].location or str(path),
        images=len(y),
        unreadable=len(manifest.bad) if manifest is not None else 0,
        class_counts={name: counts.get(i, 0) for i, name in enumerate(active.classes)},
    )


def gate(
    candidate_dir: str | Path,
    active_dir: str | Path,
    data: str | Path,
    margins: Margins = Margins(),
    resamples: int = 1000,
    seed: int = 0,
    out: Path | None = None,
    progress: bool = True,
    console: Console | None = None,
    *,
    device: str | None = None,
) -> GateReport:
    """Load both bundles (on `device`, default auto) and `gate_classifiers` them on the class folder
    `data`; with `out`, write the report there as JSON (atomically), also when the gate refuses.
    Bad input raises before anything is written."""
    if out is not None and Path(out).is_dir():
        raise CnnlabError(f"--out {out} is a folder; name the JSON file, such as {Path(out) / 'gate.json'}")
    candidate = load(candidate_dir, device=device)
    active = load(active_dir, device=device)
    report = gate_classifiers(candidate, active, data, margins, resamples, seed, progress, console)
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out, report.to_dict())
        report = replace(report, out=out)
    return report


def _calibrated(clf: Classifier, data: ArrayDataset, side: str, console: Console | None) -> np.ndarray:
    """The probabilities the classifier serves for every image of `data`, in order."""
    x, _ = data.splits[ALL]
    logits = []
    with show_progress(console, f"scoring ({side})", len(x)) as advance:
        for start in range(0, len(x), BATCH):
            logits.append(clf.logits_from_pixels(network_pixels(clf, data, x[start : start + BATCH])))
            advance(len(logits[-1]))
    return clf.calibrated(torch.cat(logits)).numpy().astype(np.float64)


def _describe(clf: Classifier) -> dict[str, Any]:
    card = clf.card
    return {
        "name": card.name,
        "run_dir": str(clf.run_dir) if clf.run_dir is not None else None,
        "architecture": card.architecture,
        "weights_sha256": card.weights_sha256,
        "calibrated": card.calibrated,
        "operating_point": card.threshold,
    }
