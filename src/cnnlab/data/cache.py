"""Caches that make the second run fast: verified manifests and decoded, resized pixels.

- Manifest cache: per data folder, each file's verification (hash, size, mode, status) keyed
  by its size and mtime, so an unchanged file is not read again.
- Decoded cache: the uint8 (N, C, S, S) tensor of a manifest's readable images at one size,
  keyed by the manifest digest, the size, channels and fit rule; augmentation runs on it.
Both live under `$CNNLAB_CACHE` (default `~/.cache/cnnlab`), written atomically.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from cnnlab.data.decode import decode_image, read_image_file
from cnnlab.data.folder import Entry, Manifest, apply_metadata, check_classes, check_usable, list_files, verify
from cnnlab.data.preprocess import fit_to_input
from cnnlab.fileio import atomic_write_bytes, atomic_write_text

DECODE_VERSION = 1
_VERIFIED_FIELDS = ("sha256", "format", "width", "height", "mode", "channels", "status", "reason")


def cache_root() -> Path:
    return Path(os.environ.get("CNNLAB_CACHE") or Path.home() / ".cache" / "cnnlab").expanduser()


def _writable(path: Path) -> bool:
    try:
        path.mkdir(parents=True, exist_ok=True)
        return os.access(path, os.W_OK)
    except OSError:
        return False


def scan_folder_cached(
    root: str | Path, max_bad_fraction: float = 0.01, progress: Callable[[int], None] | None = None
) -> Manifest:
    """`folder.scan_folder`, re-reading only files whose size or mtime changed since last time."""
    root = Path(root).expanduser().resolve()
    entries, ignored = list_files(root)
    notes: list[str] = []
    entries = apply_metadata(root, entries, notes)
    store = cache_root() / "manifests" / f"{hashlib.sha256(str(root).encode()).hexdigest()[:32]}.json"
    try:
        known = json.loads(store.read_text()) if store.is_file() else {}
    except (OSError, json.JSONDecodeError):
        known = {}
    todo: list[Entry] = []
    stats: dict[str, list[int]] = {}
    for e in entries:
        if e.status != "ok":
            continue
        try:
            st = (root / e.path).stat()
        except OSError:
            todo.append(e)
            continue
        stats[e.path] = [st.st_size, st.st_mtime_ns]
        hit = known.get(e.path)
        if hit and hit["stat"] == stats[e.path]:
            for name in _VERIFIED_FIELDS:
                setattr(e, name, hit[name])
        else:
            todo.append(e)
    if progress is not None:
        progress(len(entries) - len(todo))
    verify(root, todo, progress)
    if todo and _writable(store.parent):
        record = {
            e.path: {"stat": stats[e.path], **{k: asdict(e)[k] for k in _VERIFIED_FIELDS}}
            for e in entries
            if e.path in stats
        }
        atomic_write_text(store, json.dumps(record))
    manifest = Manifest(root, check_classes(entries), entries, ignored, notes)
    check_usable(manifest, max_bad_fraction)
    return manifest


def decoded_images(
    manifest: Manifest,
    entries: list[Entry],
    channels: int,
    size: int,
    crop: bool,
    progress: Callable[[int], None] | None = None,
    use_cache: bool = True,
) -> torch.Tensor:
    """uint8 (N, C, size, size) pixels of `entries`, decoded and fitted exactly as at serving time."""
    key = hashlib.sha256(
        json.dumps([DECODE_VERSION, manifest.digest(), [e.path for e in entries], channels, size, crop]).encode()
    ).hexdigest()[:40]
    path = cache_root() / "decoded" / f"{key}.safetensors"
    if use_cache and path.is_file():
        try:
            images = load_file(path)["images"]
            if tuple(images.shape) == (len(entries), channels, size, size):
                if progress is not None:
                    progress(len(entries))
                return images
        except (SafetensorError, OSError, KeyError):
            pass  # a damaged cache file is rebuilt below

    def one(entry: Entry) -> torch.Tensor:
        pixels = decode_image(read_image_file(manifest.root / entry.path), channels)
        tensor = torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)))[None]
        return fit_to_input(tensor, (size, size), (size, size), crop=crop)[0]

    out = torch.empty(len(entries), channels, size, size, dtype=torch.uint8)
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        for i, tensor in enumerate(pool.map(one, entries)):
            out[i] = tensor
            if progress is not None:
                progress(1)
    if use_cache and _writable(path.parent):
        atomic_write_bytes(path, save({"images": out}))
    return out
