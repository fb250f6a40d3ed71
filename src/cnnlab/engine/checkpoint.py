"""Training-state checkpoints for --resume: written atomically, read without unpickling code."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from cnnlab.errors import BundleError
from cnnlab.fileio import TORCH_LOAD_ERRORS, atomic_write


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda fh: torch.save(state, fh))


def load_checkpoint(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise BundleError(f"no checkpoint at {path}")
    try:
        # weights_only: tensors and plain containers only; a crafted file cannot run code.
        return torch.load(path, map_location="cpu", weights_only=True)
    except TORCH_LOAD_ERRORS as exc:
        raise BundleError(f"{path}: not a readable cnnlab checkpoint ({str(exc).splitlines()[0]})") from None
