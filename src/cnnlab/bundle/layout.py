"""The run directory's layout: its file names, the checks before a run writes into it, and the
small files beside the weights (config, history).

    model.safetensors  model.json  config.yaml  history.csv  curves.png  checkpoints/

`model.json` (the model card, `card.py`) is written last: a directory without it is an unfinished
run, never a bundle. Weights are safetensors and their sha256 is in the card (`weights.py`).
"""

from __future__ import annotations

import csv
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cnnlab.errors import BundleError
from cnnlab.fileio import atomic_write_text, write_csv

CARD = "model.json"
WEIGHTS = "model.safetensors"
CONFIG = "config.yaml"
HISTORY = "history.csv"
CURVES = "curves.png"
CHECKPOINTS = "checkpoints"
# What --overwrite may remove: the files of a bundle and what later commands wrote into it.
_OWNED = (
    CARD,
    WEIGHTS,
    CONFIG,
    HISTORY,
    CURVES,
    CHECKPOINTS,
    "reference.safetensors",
    "eval",
    "explain",
    "export",
    "examples",
    "shortcuts",
)


def check_run_dir(out: Path, *, overwrite: bool, resume: bool) -> None:
    """Raise before any work if `out` cannot receive this run."""
    if resume:
        if not (out / CHECKPOINTS / "last.pt").is_file():
            raise BundleError(f"cannot resume: no checkpoint at {out / CHECKPOINTS / 'last.pt'}")
        if (out / CARD).exists() and not overwrite:
            raise BundleError(f"{out} is already a finished bundle; nothing to resume")
    elif out.exists() and not out.is_dir():
        raise BundleError(f"cannot write to {out}: it is a file, not a directory")
    elif out.exists() and not overwrite:
        if (out / CARD).exists():
            raise BundleError(f"{out} already holds a bundle; choose another --out or pass --overwrite")
        if (out / CHECKPOINTS).exists():
            raise BundleError(f"{out} holds an unfinished run; continue it with --resume or pass --overwrite")
        if any(out.iterdir()):
            raise BundleError(f"{out} exists and is not empty; choose another --out or pass --overwrite")
    # Find the nearest existing ancestor and check it can take a new entry.
    probe = out
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise BundleError(f"cannot write to {out}: {probe} is not a directory")
    try:
        with open(_probe_file(probe), "wb"):
            pass
    except OSError as exc:
        raise BundleError(f"cannot write to {out}: {exc.strerror or exc}") from None
    finally:
        _probe_file(probe).unlink(missing_ok=True)


def _probe_file(folder: Path) -> Path:
    return folder / ".cnnlab-write-test"


def prepare_run_dir(out: Path, *, overwrite: bool, resume: bool) -> bool:
    """Create `out` (returns whether it was new); --overwrite removes only bundle files."""
    created = not out.exists()
    if overwrite and not resume and out.exists():
        for name in _OWNED:
            target = out / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    out.mkdir(parents=True, exist_ok=True)
    return created


def write_config(out: Path, yaml_text: str) -> None:
    atomic_write_text(out / CONFIG, yaml_text)


def write_history(path: Path, rows: Sequence[dict[str, Any]], fields: Sequence[str]) -> None:
    write_csv(path, [{k: row[k] for k in fields} for row in rows], fields)


def read_history(path: Path) -> list[dict[str, Any]]:
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    out = []
    for row in rows:
        parsed: dict[str, Any] = {}
        for key, value in row.items():
            try:
                parsed[key] = int(value) if key == "epoch" else float(value)
            except ValueError:
                parsed[key] = value
        out.append(parsed)
    return out
