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

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from cnnlab.data.decode import read_image_file
from cnnlab.data.folder import Entry, Manifest, scan_folder
from cnnlab.data.preprocess import image_to_input
from cnnlab.fileio import atomic_write_bytes, atomic_write_text

DECODE_VERSION = 1
_VERIFIED_FIELDS = ("sha256", "format", "width", "height", "mode", "channels")


def cache_root() -> Path:
    return Path(os.environ.get("CNNLAB_CACHE") or Path.home() / ".cache" / "cnnlab").expanduser()


def _writable(path: Path) -> bool:
    try:
        path.mkdir(parents=True, exist_ok=True)
        return os.access(path, os.W_OK)
    except OSError:
        return False


class ManifestStore:
    """Verification results of one data folder, keyed by each file's size, times and inode.

    Only readable files are remembered (a bad file is looked at again next time: it may have been
    fixed, or a decoder installed), and the store is void when the decoders change version.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.path = cache_root() / "manifests" / f"{hashlib.sha256(str(root).encode()).hexdigest()[:32]}.json"
        self.stats: dict[str, list[int]] = {}

    def _fingerprint(self) -> str:
        import PIL
        import pydicom

        return f"{DECODE_VERSION}/{PIL.__version__}/{pydicom.__version__}"

    def recall(self, entries: list[Entry]) -> list[Entry]:
        try:
            known = json.loads(self.path.read_text()) if self.path.is_file() else {}
        except (OSError, json.JSONDecodeError):
            known = {}
        files = known.get("files", {}) if known.get("fingerprint") == self._fingerprint() else {}
        todo = []
        for e in entries:
            if e.status != "ok":
                continue
            try:
                st = (self.root / e.path).stat()
            except OSError:
                todo.append(e)
                continue
            self.stats[e.path] = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
            hit = files.get(e.path)
            if hit and hit["stat"] == self.stats[e.path]:
                for name in _VERIFIED_FIELDS:
                    setattr(e, name, hit[name])
            else:
                todo.append(e)
        return todo

    def remember(self, entries: list[Entry]) -> None:
        if not _writable(self.path.parent):
            return
        files = {
            e.path: {"stat": self.stats[e.path], **{k: asdict(e)[k] for k in _VERIFIED_FIELDS}}
            for e in entries
            if e.status == "ok" and e.path in self.stats
        }
        atomic_write_text(self.path, json.dumps({"fingerprint": self._fingerprint(), "files": files}))


def scan_folder_cached(
    root: str | Path, max_bad_fraction: float = 0.01, progress: Callable[[int], None] | None = None
) -> Manifest:
    """`folder.scan_folder` with this cache's `ManifestStore`."""
    root = Path(root).expanduser().resolve()
    return scan_folder(root, max_bad_fraction, progress, store=ManifestStore(root))


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
        data = read_image_file(manifest.root / entry.path)
        return image_to_input(data, channels, (size, size), (size, size), crop)

    out = torch.empty(len(entries), channels, size, size, dtype=torch.uint8)
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        for i, tensor in enumerate(pool.map(one, entries)):
            out[i] = tensor
            if progress is not None:
                progress(1)
    if use_cache and _writable(path.parent):
        atomic_write_bytes(path, save({"images": out}))
    return out
