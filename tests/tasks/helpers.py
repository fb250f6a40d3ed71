"""What the command-line tests of issue 17 share: running `cnnlab` in-process, and small image folders."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from tests.test_cli import run_cli  # noqa: F401  (re-exported for the task tests)


def digit_files(folder: Path, n: int, seed: int = 0) -> list[Path]:
    """`n` random 28 x 28 grey PNGs (a LeNet bundle's input)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        path = folder / f"d{i:02d}.png"
        Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def private_copy(bundle: Path, into: Path, threshold: dict | None = None) -> Path:
    """A copy of a bundle the test may change (the session's bundle stays as it is); with
    `threshold`, an operating point in its card as `cnnlab calibrate --positive` writes it."""
    run = into / "run"
    shutil.copytree(bundle, run, ignore=shutil.ignore_patterns("checkpoints", "eval", "explain", "export"))
    if threshold is not None:
        card = json.loads((run / "model.json").read_text())
        card["threshold"] = threshold
        (run / "model.json").write_text(json.dumps(card))
    return run
