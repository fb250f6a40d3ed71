"""What the Keras peer scripts need to run here and to report: nothing in it touches the model.

Runs inside the peers' own virtualenv (tensorflow-cpu), never inside cnnlab's: it imports
neither torch nor cnnlab.

- `load_data()` replaces `tf.keras.datasets.*.load_data()` (which downloads): it reads the same
  Fashion-MNIST IDX files cnnlab reads (Debian's `dataset-fashion-mnist`) and returns the same
  `((x_train, y_train), (x_test, y_test))` uint8 arrays Keras would.
- `EpochTimer` is a Keras callback that only reads the clock at epoch and validation boundaries.
- `setup()` parses `--data-dir` and `--epochs` and moves into a temporary directory, so the
  seed's `model.save(...)` and history files never land in the repository.
"""

from __future__ import annotations

import argparse
import atexit
import gzip
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DEFAULT_DATA = "/usr/share/datasets/fashion-mnist"
_FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
_data_dir = Path(DEFAULT_DATA)


def setup(default_epochs: int) -> int:
    """The epochs to train (the seed's unless --epochs says otherwise); enters a temp dir."""
    global _data_dir
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", default=DEFAULT_DATA)
    parser.add_argument("--epochs", type=int, default=default_epochs)
    args = parser.parse_args()
    _data_dir = Path(args.data_dir).resolve()
    workdir = tempfile.mkdtemp(prefix="cnnlab-peer-")
    atexit.register(shutil.rmtree, workdir, True)
    os.chdir(workdir)
    return args.epochs


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as fh:
        raw = fh.read()
    if raw[:2] != b"\0\0" or raw[2] != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load_data() -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Fashion-MNIST as `tf.keras.datasets.fashion_mnist.load_data()` returns it, from local files."""
    arrays = {key: _read_idx(_data_dir / name) for key, name in _FILES.items()}
    return (arrays["train_images"], arrays["train_labels"]), (arrays["test_images"], arrays["test_labels"])


def epoch_timer():  # a factory: keras is imported only once the seed's code has imported it
    import keras

    class EpochTimer(keras.callbacks.Callback):
        """Per epoch: seconds training (until validation starts) and seconds in all (with validation)."""

        def __init__(self) -> None:
            super().__init__()
            self.train: list[float] = []
            self.total: list[float] = []
            self._start = self._val = 0.0

        def on_epoch_begin(self, epoch, logs=None):
            self._start = self._val = time.perf_counter()

        def on_test_begin(self, logs=None):
            if len(self.train) == len(self.total):  # the validation pass inside fit, not evaluate()
                self._val = time.perf_counter()
                self.train.append(self._val - self._start)

        def on_epoch_end(self, epoch, logs=None):
            now = time.perf_counter()
            if len(self.train) == len(self.total):  # no validation this epoch
                self.train.append(now - self._start)
            self.total.append(now - self._start)

    return EpochTimer()


def report(peer: str, timer, train_time: float, test_acc: float, train_images: int) -> None:
    """One JSON line on stdout (the last line the script prints), read by bench/train_vs_peers.py."""
    import tensorflow as tf

    steady = slice(1, None) if len(timer.total) > 1 else slice(None)  # epoch 1 also traces the graph
    result = {
        "peer": peer,
        "epochs": len(timer.total),
        "train_images": train_images,
        "epoch_train_seconds": timer.train,
        "epoch_seconds": timer.total,
        "train_seconds_per_epoch": float(np.mean(timer.train[steady])),
        "seconds_per_epoch": float(np.mean(timer.total[steady])),
        "first_epoch_seconds": timer.total[0],
        "train_time": train_time,
        "test_accuracy": float(test_acc),
        "tensorflow": tf.__version__,
        "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
        "python": sys.version.split()[0],
    }
    print(json.dumps(result), flush=True)
