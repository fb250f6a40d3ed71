"""The out-of-fold logits a k-fold run leaves beside its fold bundles (`cnnlab crossval`): every
pooled image's raw logits from a model that never saw its patient, with its label, fold, patient
and source, in safetensors and a CSV (no pickle). `cnnlab calibrate` fits an ensemble's
calibration and operating point on them."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save as save_safetensors

from cnnlab.bundle.card import ModelCard
from cnnlab.errors import DataError
from cnnlab.fileio import atomic_write_bytes, write_csv

OOF_LOGITS = "oof_logits.safetensors"
"""Raw out-of-fold logits (before any calibration) with labels, pooled index and fold."""
OOF_GROUPS = "oof_groups.csv"
"""The patient group and source of each out-of-fold row, in the order of OOF_LOGITS."""
ENSEMBLE_OOF_LOGITS = "ensemble_oof_logits.safetensors"
ENSEMBLE_OOF_GROUPS = "ensemble_oof_groups.csv"
"""With `--ensemble-oof`: each pooled image's logits from an ensemble of K-1 models none of which
saw it (the mean over the models that leave its fold and one other out), in OOF_LOGITS' format."""


@dataclass
class OutOfFold:
    """Every pooled image's raw logits from the fold model that did not train on it: what a
    calibration of the ensemble can be fitted on (`cnnlab.tasks.calibrate.FitSet(logits, labels,
    groups, name)` takes the first four fields)."""

    logits: torch.Tensor
    """(N, num_classes) float32, or (N, 1) for a binary model; before any calibration."""
    labels: np.ndarray
    groups: np.ndarray | None
    name: str
    folds: np.ndarray
    """The fold (1..K) whose model gave each row."""
    index: np.ndarray
    """Each row's position in the pooled data the folds were cut from (oof_predictions.csv's index)."""
    classes: list[str]
    sources: np.ndarray | None = None
    """Each row's source (metadata.csv's `source`), when the data names them."""


def write_out_of_fold(
    out: Path,
    raw: list[tuple[np.ndarray, int, torch.Tensor]],
    y: np.ndarray,
    groups: np.ndarray | None,
    card: ModelCard,
    names: tuple[str, str] = (OOF_LOGITS, OOF_GROUPS),
    sources: np.ndarray | None = None,
) -> None:
    """`names`: OOF_LOGITS (safetensors: logits, labels, index, fold; classes in its metadata) and
    OOF_GROUPS (index, fold, group, source), rows in pooled-index order. No pickle anywhere."""
    index = np.concatenate([idx for idx, _, _ in raw])
    fold = np.concatenate([np.full(len(idx), k) for idx, k, _ in raw])
    logits = torch.cat([lg for _, _, lg in raw]).float()
    order = np.argsort(index, kind="stable")
    index, fold, logits = index[order], fold[order], logits[torch.from_numpy(order)]
    tensors = {
        "logits": logits.contiguous(),
        "labels": torch.from_numpy(y[index].astype(np.int64)),
        "index": torch.from_numpy(index.astype(np.int64)),
        "fold": torch.from_numpy(fold.astype(np.int64)),
    }
    meta = {
        "classes": json.dumps(card.classes),
        "binary": json.dumps(card.binary),
        "grouped": json.dumps(groups is not None),
    }
    atomic_write_bytes(out / names[0], save_safetensors(tensors, metadata=meta))

    def of(values: np.ndarray | None, i: int) -> str:
        return "" if values is None else str(values[i])

    rows = [{"index": int(i), "fold": int(f), "group": of(groups, int(i)), "source": of(sources, int(i))}
            for i, f in zip(index, fold, strict=True)]  # fmt: skip
    write_csv(out / names[1], rows, ["index", "fold", "group", "source"])


def _folder_of(path: Path, name: str) -> Path:
    """The cross-validation folder of `path`: `path` itself, or the parent of an ensemble bundle."""
    return path if (path / name).is_file() else path.parent


def has_ensemble_out_of_fold(path: str | Path) -> bool:
    """Whether the cross-validation in `path` (or the one the ensemble bundle at `path` was built
    from) wrote the ensemble's own out-of-fold logits (`--ensemble-oof`)."""
    return (_folder_of(Path(path), ENSEMBLE_OOF_LOGITS) / ENSEMBLE_OOF_LOGITS).is_file()


def load_out_of_fold(path: str | Path, ensemble: bool = False) -> OutOfFold:
    """The raw out-of-fold logits of the cross-validation in `path`, or of the one an ensemble
    bundle at `path` was built from (its parent folder): the single fold models', or with
    `ensemble` the ensemble's own (`--ensemble-oof`)."""
    path = Path(path)
    logits_name, groups_name = (ENSEMBLE_OOF_LOGITS, ENSEMBLE_OOF_GROUPS) if ensemble else (OOF_LOGITS, OOF_GROUPS)
    folder = _folder_of(path, logits_name)
    if not (folder / logits_name).is_file() or not (folder / groups_name).is_file():
        again = "cnnlab crossval --ensemble --ensemble-oof" if ensemble else "cnnlab crossval"
        raise DataError(f"no out-of-fold logits ({logits_name}, {groups_name}) in {path}; run `{again}` again")
    with safe_open(str(folder / logits_name), framework="pt") as fh:
        meta = fh.metadata() or {}
        tensors = {key: fh.get_tensor(key) for key in fh.keys()}  # noqa: SIM118 (safe_open is no dict)
    with open(folder / groups_name, newline="", encoding="utf-8") as fh:
        table = list(csv.DictReader(fh))
    index = tensors["index"].numpy()
    if [int(r["index"]) for r in table] != index.tolist():
        raise DataError(f"{folder / groups_name} does not list the rows of {logits_name}; run `cnnlab crossval` again")
    groups = np.array([r["group"] for r in table]) if json.loads(meta.get("grouped", "false")) else None
    # Written before sources were: no column. A data set without sources: every cell empty.
    sources = np.array([r.get("source") or "" for r in table])
    folds = tensors["fold"].numpy()
    return OutOfFold(
        logits=tensors["logits"],
        labels=tensors["labels"].numpy(),
        groups=groups,
        name="ensemble out-of-fold" if ensemble else "out-of-fold",
        folds=folds,
        index=index,
        classes=json.loads(meta.get("classes", "[]")),
        sources=sources if any(sources.tolist()) else None,
    )
