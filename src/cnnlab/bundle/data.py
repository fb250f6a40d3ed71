"""The data a bundle was trained on, as its model sees it, and the model's outputs on a split:
what evaluation, calibration, cross-validation and export's parity check all start from."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from cnnlab.bundle.card import ModelCard
from cnnlab.bundle.classifier import Classifier
from cnnlab.bundle.layout import CONFIG
from cnnlab.choices import SPLITS
from cnnlab.config import DataConfig, load_config
from cnnlab.data.cache import ManifestStore, decoded_images
from cnnlab.data.folder import Manifest, bad_share_problem, nfc, no_files_problem, scan_folder
from cnnlab.data.sources import FOLDER_PREFIX, ArrayDataset, assign_splits, get_source, load_source
from cnnlab.errors import DataError

ALL = "all"
"""The split of an external folder without splits: every image."""


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
    data = load_source(data_cfg, clf.preprocessing.pad_to[0])
    if data.classes != clf.classes:  # labels are class indices: another class list would misread them all
        raise DataError(
            f"{data.origin} holds the classes {', '.join(data.classes)}, not the model's ({', '.join(clf.classes)}); "
            "`cnnlab evaluate RUN --data-dir FOLDER` scores a folder with some of the model's classes"
        )
    return data


def seen_in_training(clf: Classifier, data: ArrayDataset) -> int | None:
    """How many images of external `data` are byte-identical to one in the folder the bundle was
    trained from (any split), when that folder is still where the card says; else None."""
    location = clf.card.data.get("location")
    if data.manifest is None or not location or not Path(location).is_dir():
        return None
    root = Path(location).resolve()
    if root == data.manifest.root:
        return None
    trained = {e.sha256 for e in scan_folder(root, 1.0, store=ManifestStore(root), check=False).ok}
    return sum(e.sha256 in trained for e in data.manifest.ok)


def data_matches_card(data: ArrayDataset, card: ModelCard) -> bool:
    """Is `data` exactly what the card recorded (False for data without train/val/test)?"""
    return all(name in data.splits for name in SPLITS) and data.digest() == card.data.get("sha256")


def evaluation_data(
    run_dir: Path, clf: Classifier, data_dir: str | None = None, split: str | None = None
) -> tuple[ArrayDataset, str, bool]:
    """(the data, the split to score, whether the data is external). Without `data_dir`, or when
    `data_dir` holds the bundle's own data moved elsewhere (the same files: the manifest the card
    recorded, or the named source's files), the bundle's data and `split` (default test);
    else any class folder (`external_data`)."""
    if data_dir is None:
        return bundle_data(run_dir, clf), split or "test", False
    cfg = _bundle_data_config(clf)
    folder = Path(data_dir).expanduser()
    recorded = clf.card.data.get("manifest_sha256")
    own = not folder.is_dir()  # the usual search explains what is missing
    manifest = None
    if not own and recorded is None and not cfg.source.startswith(FOLDER_PREFIX):
        own = get_source(cfg.source).find(folder)  # IDX files, CIFAR batches: not a class folder
    if not own:
        manifest = _scan(folder, cfg)
        own = manifest.digest() == recorded
    if own:
        return bundle_data(run_dir, clf, data_dir), split or "test", False
    assert manifest is not None
    data = _external(clf, manifest, cfg, split)
    return data, next(iter(data.splits)), True


def external_data(clf: Classifier, folder: str | Path, split: str | None = None) -> ArrayDataset:
    """Any class folder (FOLDER/CLASS/*, optionally under train/val/test, optionally with a
    metadata.csv) as the bundle's model sees it: labels mapped to the bundle's classes by name,
    images decoded at its channels and input size, with patient groups and sources when
    metadata.csv gives them. The splits hold one split: `split` of the folder's own splits
    (default test), or `all` (every image; the default when the folder has no splits); a
    folder without splits asked for train/val/test is carved as training carves one."""
    cfg = _bundle_data_config(clf)
    return _external(clf, _scan(Path(folder).expanduser(), cfg), cfg, split)


def _bundle_data_config(clf: Classifier) -> DataConfig:
    path = clf.run_dir / CONFIG if clf.run_dir is not None else None
    return load_config(str(path)).data if path is not None and path.is_file() else DataConfig()


def _scan(folder: Path, cfg: DataConfig) -> Manifest:
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder")
    root = folder.resolve()
    manifest = scan_folder(root, cfg.max_bad_fraction, store=ManifestStore(root), check=False)
    for problem in (no_files_problem(manifest), bad_share_problem(manifest, cfg.max_bad_fraction)):
        if problem:
            raise DataError(problem if problem.startswith(str(root)) else f"{root}: {problem}")
    return manifest


def _external(clf: Classifier, manifest: Manifest, cfg: DataConfig, split: str | None) -> ArrayDataset:
    root, entries = manifest.root, manifest.ok
    index = {nfc(name): i for i, name in enumerate(clf.classes)}
    unknown = [name for name in manifest.classes if name not in index]
    if unknown:
        raise DataError(
            f"{root}: class{'es' if len(unknown) > 1 else ''} {', '.join(repr(n) for n in unknown)} "
            f"{'are' if len(unknown) > 1 else 'is'} not among the model's classes ({', '.join(clf.classes)})"
        )
    labels = np.array([index[e.label] for e in entries], dtype=np.int64)
    groups = np.array([e.group or f"file:{e.path}" for e in entries]) if manifest.has_groups else None
    origins = np.array([e.source or "" for e in entries]) if manifest.has_sources else None
    marks = np.array([e.split or "" for e in entries])
    split = split or ("test" if (marks != "").any() else ALL)
    if split not in (*SPLITS, ALL):
        raise DataError(f"no '{split}' split; choose one of {', '.join((*SPLITS, ALL))}")
    if split == ALL:
        chosen = np.arange(len(entries))
    elif (marks == "").all():
        chosen = assign_splits([None] * len(entries), labels, groups, cfg)[split]
    else:
        chosen = np.flatnonzero(marks == split)
        if not len(chosen):
            have = ", ".join(name for name in SPLITS if (marks == name).any())
            raise DataError(f"{root} has no {split} images; it has {have} (or choose {ALL})")
    prep = clf.preprocessing
    picked = [entries[i] for i in chosen]
    fitted = None  # decoded at resize_to; split_outputs pads them to the input as the card says
    if prep.resize_to[0] == prep.resize_to[1]:
        images = decoded_images(manifest, picked, prep.channels, prep.resize_to[0], prep.crop, use_cache=cfg.cache)
    else:  # decoded_images makes squares; the serving path makes anything
        images, fitted = clf.preprocess([root / e.path for e in picked]), prep.crop
    return ArrayDataset(
        source=f"{FOLDER_PREFIX}{root}",
        classes=list(clf.classes),
        splits={split: (images, torch.from_numpy(labels[chosen]))},
        origin=f"external data: {root}",
        groups={split: groups[chosen]} if groups is not None else None,
        sources={split: origins[chosen]} if origins is not None else None,
        fitted_crop=fitted,
        manifest=manifest,
        location=str(root),
    )


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


def network_pixels(clf: Classifier, data: ArrayDataset, images: torch.Tensor) -> torch.Tensor:
    """Images of `data` as the network's uint8 input (the loader may have fitted them already)."""
    return clf.fit_pixels(images, already_fitted=data.fitted_crop is not None)


def split_outputs(clf: Classifier, data: ArrayDataset, split: str) -> SplitOutputs:
    x, y = data.splits[split]
    pixels = network_pixels(clf, data, x)
    start = time.perf_counter()
    logits = clf.logits_from_pixels(pixels)
    seconds = time.perf_counter() - start
    groups = data.groups[split] if data.groups is not None else None
    sources = data.sources[split] if data.sources is not None else None
    return SplitOutputs(pixels, y.numpy(), logits, groups, seconds, sources)
