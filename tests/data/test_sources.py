from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from cnnlab.config import DataConfig
from cnnlab.data.decode import read_idx
from cnnlab.data.sources import load_source, locate
from cnnlab.errors import DataError


def write_idx(path: Path, array: np.ndarray, compress: bool = True) -> None:
    header = b"\x00\x00\x08" + bytes([array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if compress else data)


def make_idx_set(folder: Path, n_train: int = 200, n_test: int = 50, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)


def test_mnist_sample_split_is_deterministic_stratified_and_disjoint() -> None:
    cfg = DataConfig(source="mnist-sample")
    a, b = load_source(cfg), load_source(cfg)
    assert a.sizes() == {"train": 3600, "val": 400, "test": 1000}
    assert a.digest() == b.digest()
    for _, labels in a.splits.values():
        assert np.bincount(labels.numpy(), minlength=10).min() == len(labels) // 10
    images = {name: {x.numpy().tobytes() for x in split[0]} for name, split in a.splits.items()}
    assert not images["train"] & images["test"] and not images["val"] & images["test"]
    assert a.splits["train"][0].dtype.is_floating_point is False
    assert load_source(DataConfig(source="mnist-sample", split_seed=1)).digest() != a.digest()


def test_limit_train_takes_a_seeded_subset() -> None:
    data = load_source(DataConfig(source="mnist-sample", limit_train=100))
    assert data.sizes()["train"] == 100 and data.sizes()["test"] == 1000


def test_limit_eval_caps_validation_and_test_the_same_way_each_time() -> None:
    cfg = DataConfig(source="mnist-sample", limit_eval=50)
    first, second = load_source(cfg), load_source(cfg)
    assert first.sizes() == {"train": 3600, "val": 50, "test": 50}
    assert all(first.splits[s][1].tolist() == second.splits[s][1].tolist() for s in ("val", "test"))


def test_idx_folder_source(tmp_path: Path) -> None:
    make_idx_set(tmp_path / "raw")  # torchvision's layout
    data = load_source(DataConfig(source="mnist", data_dir=str(tmp_path), val_fraction=0.1))
    assert data.sizes() == {"train": 180, "val": 20, "test": 50}
    assert data.splits["train"][0].shape[1:] == (1, 28, 28)
    assert data.classes == [str(d) for d in range(10)]


def test_missing_source_says_what_to_place_where(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        load_source(DataConfig(source="mnist", data_dir=str(tmp_path / "nowhere")))
    message = str(info.value)
    assert "train-images-idx3-ubyte.gz" in message and str(tmp_path / "nowhere") in message
    assert "--download" in message


def test_unknown_source() -> None:
    with pytest.raises(DataError, match="unknown data source 'imagenet'"):
        load_source(DataConfig(source="imagenet"))


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda b: b"\x01\x02" + b[2:], "bad magic"),
        (lambda b: b[:-10], "declares 200 values but the file holds 190"),
        (lambda b: b[:2] + b"\x0d" + b[3:], "unsupported IDX type 0x0d"),
        (lambda b: b[:4] + struct.pack(">I", 2**32 - 1) + b[8:], "over the limit"),
    ],
)
def test_damaged_idx_files_are_refused(tmp_path: Path, mutate, message: str) -> None:
    good = tmp_path / "good"
    write_idx(good, np.arange(200) % 10, compress=False)
    assert read_idx(good).shape == (200,)
    bad = tmp_path / "bad"
    bad.write_bytes(mutate(good.read_bytes()))
    with pytest.raises(DataError, match=message):
        read_idx(bad)


def test_idx_labels_out_of_range_are_refused(tmp_path: Path) -> None:
    make_idx_set(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.full(200, 12))
    with pytest.raises(DataError, match="labels go up to 12"):
        load_source(DataConfig(source="mnist", data_dir=str(tmp_path)))


def test_fashion_mnist_from_debian_package() -> None:
    folder, _ = locate("fashion-mnist")
    assert folder is not None, "make test installs Debian's dataset-fashion-mnist"
    data = load_source(DataConfig(source="fashion-mnist", limit_train=1000))
    assert data.sizes() == {"train": 1000, "val": 6000, "test": 10000}
    assert data.classes[0] == "T-shirt/top"


def test_cifar10_class_folders(tmp_path: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("test", 2)):
        for cls in ("cat", "dog"):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(
                    tmp_path / split / cls / f"{i}.png"
                )
    (tmp_path / "train" / "cat" / ".DS_Store").write_bytes(b"junk")
    data = load_source(DataConfig(source="cifar10", data_dir=str(tmp_path), val_fraction=0.25))
    assert data.classes == ["cat", "dog"]
    assert data.sizes() == {"train": 8, "val": 4, "test": 4}
    assert data.channels == 3
