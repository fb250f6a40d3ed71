"""Extra class folders joined to a data set's training split (`data.extra`, `cnnlab train
--extra-data DIR`), and the record of every data set a run used (the model card's `data.datasets`).

An extra folder (typically `cnnlab feedback export`'s clinician-corrected images) only ever adds
training images: its own `split` column is ignored, so validation and test stay the source's and
a run's figures stay comparable with runs without it. An image of a patient who is in the
source's validation or test split is left out (it would leak that patient into training), counted
and reported; a label outside the source's classes is an error, raised before anything is decoded.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.markup import escape

from cnnlab.choices import SPLITS
from cnnlab.config import DataConfig
from cnnlab.data.cache import ManifestStore, decoded_images
from cnnlab.data.folder import Entry, Manifest, bad_share_problem, no_files_problem, scan_folder
from cnnlab.data.patients import PATIENT_KEY_ENV, environment_key, keyed_patient_id, looks_keyed
from cnnlab.data.sources import FOLDER_PREFIX, ArrayDataset
from cnnlab.errors import DataError
from cnnlab.progress import progress_bar

MAIN_ROLE = "main"
EXTRA_ROLE = "extra (training only)"
PATIENT_LEAK = "patient in the validation or test split"


def content_sha256(entries: Iterable[Entry]) -> str:
    """sha256 of the sorted lines `path<TAB>label<TAB>sha256 of the file's bytes` of the readable
    files, joined by newlines: the data set's content, wherever its folder lies. The file digests are
    the verified manifest's (cached by size and mtime), so no file is read again for this."""
    lines = sorted(f"{e.path}\t{e.label}\t{e.sha256}" for e in entries if e.status == "ok")
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def main_record(data: ArrayDataset) -> dict[str, Any]:
    """The card's entry for the data set a run was loaded from (before any extra folder joined)."""
    if data.manifest is not None:
        digest, over = content_sha256(data.manifest.entries), "files"
    else:  # a packaged or binary source has no files per image: its decoded pixels and labels
        digest, over = data.digest(), "pixels"
    return {"name": data.source, "role": MAIN_ROLE, "images": data.sizes(), "sha256": digest, "sha256_over": over}


@dataclass
class _Extra:
    root: Path
    manifest: Manifest
    kept: list[Entry]
    left_out: dict[str, int]


def join_extra_data(
    data: ArrayDataset, cfg: DataConfig, console: Console | None = None
) -> tuple[ArrayDataset, list[dict[str, Any]]]:
    """`data` with every readable image of each `cfg.extra` folder added to its training split,
    and the record of every data set used, `data`'s first. Every folder is checked before any is
    decoded, so a bad one costs no time and leaves nothing behind."""
    records = [main_record(data)]
    if not cfg.extra:
        return data, records
    extras = [_scan(Path(folder), data, cfg, console) for folder in _distinct(cfg.extra, data)]
    held = _held_out_patients(data)
    key = environment_key()
    if key is not None:  # a feedback export names patients by their keyed hash: hash ours alike
        held |= {keyed_patient_id(key, patient) for patient in held}
    for extra in extras:
        if key is None and console is not None and any(e.group and looks_keyed(e.group) for e in extra.kept):
            console.print(
                f"[yellow]extra data {escape(str(extra.root))}: its patient ids are keyed hashes (a feedback export); "
                f"without {PATIENT_KEY_ENV} (the service's key) a patient of the validation or test split "
                "cannot be recognised among them[/yellow]"
            )
        leaked = [e for e in extra.kept if e.group and e.group in held]
        if leaked:
            extra.kept = [e for e in extra.kept if not (e.group and e.group in held)]
            extra.left_out[PATIENT_LEAK] = len(leaked)
            if console is not None:
                console.print(
                    f"[yellow]extra data {escape(str(extra.root))}: {len(leaked)} images left out, their patient "
                    f"is in {escape(data.source)}'s validation or test split (training on them would leak it)[/yellow]"
                )
    side, other = data.image_size
    if side != other:  # pragma: no cover - every loader returns square images
        raise DataError(f"{data.source}: images of {side}x{other} px cannot take extra folders (square only)")
    crop = data.fitted_crop if data.fitted_crop is not None else cfg.fit == "crop"
    x, y = data.splits["train"]
    kept = [e for extra in extras for e in extra.kept]
    groups = sources = None
    if data.groups is not None or any(e.group for e in kept):  # keep patients countable downstream
        groups = _attribute(data.groups, data, lambda name, i: f"{data.source}:{name}:{i}")
    if data.sources is not None or any(e.source for e in kept):
        sources = _attribute(data.sources, data, lambda name, i: "")
    for extra in extras:
        records.append(_extra_record(extra))
        if not extra.kept:
            continue
        with progress_bar(console, f"decoding {extra.root.name} to {side} px", len(extra.kept)) as advance:
            images = decoded_images(extra.manifest, extra.kept, data.channels, side, crop, advance, cfg.cache)
        labels = torch.tensor([data.classes.index(e.label) for e in extra.kept], dtype=torch.int64)
        x, y = torch.cat([x, images]), torch.cat([y, labels])
        if groups is not None:
            ids = [e.group or f"{FOLDER_PREFIX}{extra.root}/{e.path}" for e in extra.kept]
            groups["train"] = np.concatenate([groups["train"], np.array(ids, dtype=str)])
        if sources is not None:
            origins = np.array([e.source or "" for e in extra.kept], dtype=str)
            sources["train"] = np.concatenate([sources["train"], origins])
        if console is not None:
            console.print(f"extra data {escape(str(extra.root))}: {len(extra.kept):,} images join the training split")
    merged = replace(data, splits={**data.splits, "train": (x, y)}, groups=groups, sources=sources)
    return merged, records


def _distinct(folders: Sequence[str], data: ArrayDataset) -> list[Path]:
    roots: list[Path] = []
    for folder in folders:
        root = Path(folder).expanduser().resolve()
        if not root.is_dir():
            raise DataError(f"extra data {folder}: no such folder")
        if root in roots:
            raise DataError(f"extra data {root}: given twice (its images would count double)")
        if data.manifest is not None and root == data.manifest.root:
            raise DataError(f"extra data {root}: is {data.source} itself (its validation and test images would train)")
        roots.append(root)
    return roots


def _scan(root: Path, data: ArrayDataset, cfg: DataConfig, console: Console | None) -> _Extra:
    """The extra folder's readable images, checked: some, few unreadable, every label known."""
    files = sum(1 for _ in root.rglob("*"))
    with progress_bar(console, f"checking {root.name}", files, "file") as advance:
        manifest = scan_folder(root, cfg.max_bad_fraction, advance, store=ManifestStore(root), check=False)
    if problem := no_files_problem(manifest):
        raise DataError(f"extra data {problem}")
    if problem := bad_share_problem(manifest, cfg.max_bad_fraction):
        raise DataError(f"extra data {root}: {problem}")
    kept = manifest.ok
    if not kept:
        raise DataError(f"extra data {root}: no readable images")
    unknown = sorted({e.label for e in kept} - set(data.classes))
    if unknown:
        names = ", ".join(f"'{label}'" for label in unknown)
        raise DataError(f"extra data {root}: label {names} is not a class of {data.source} ({', '.join(data.classes)})")
    left_out = {"unreadable": len(manifest.bad)} if manifest.bad else {}
    return _Extra(root, manifest, kept, left_out)


def _held_out_patients(data: ArrayDataset) -> set[str]:
    if data.groups is None:
        return set()
    return {g for name in SPLITS if name != "train" for g in data.groups[name].tolist()}


def _attribute(
    values: dict[str, np.ndarray] | None, data: ArrayDataset, default: Callable[[str, int], str]
) -> dict[str, np.ndarray]:
    """A copy of a per-image attribute of `data` (groups, sources), or one made of `default(split, i)`."""
    if values is not None:
        return {name: array.copy() for name, array in values.items()}
    return {name: np.array([default(name, i) for i in range(n)]) for name, n in data.sizes().items()}


def _extra_record(extra: _Extra) -> dict[str, Any]:
    return {
        "name": f"{FOLDER_PREFIX}{extra.root}",
        "role": EXTRA_ROLE,
        "images": {"train": len(extra.kept), "val": 0, "test": 0},
        "sha256": content_sha256(extra.manifest.entries),
        "sha256_over": "files",
        "left_out": extra.left_out,
    }
