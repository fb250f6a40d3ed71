"""Run bundles: the directory a training run leaves, and everything later steps read.

    model.safetensors  model.json  config.yaml  history.csv  curves.png  checkpoints/

`model.json` (the model card) is written last: a directory without it is an unfinished run,
never a bundle. Weights are safetensors and their sha256 is in the card.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn

from cnnlab.errors import BundleError
from cnnlab.fileio import atomic_write_bytes, atomic_write_json, atomic_write_text

CARD = "model.json"
WEIGHTS = "model.safetensors"
CONFIG = "config.yaml"
HISTORY = "history.csv"
CURVES = "curves.png"
CHECKPOINTS = "checkpoints"
CARD_FORMAT = "cnnlab-bundle/1"
_OWNED = (CARD, WEIGHTS, CONFIG, HISTORY, CURVES, CHECKPOINTS, "reference.safetensors", "eval", "explain", "export")


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


def save_weights(state_dict: dict[str, torch.Tensor], path: Path) -> str:
    """Write safetensors weights atomically; returns their sha256."""
    data = save_safetensors({k: v.detach().contiguous() for k, v in state_dict.items()})
    atomic_write_bytes(path, data)
    return hashlib.sha256(data).hexdigest()


def write_config(out: Path, yaml_text: str) -> None:
    atomic_write_text(out / CONFIG, yaml_text)


def write_history(path: Path, rows: Sequence[dict[str, Any]], fields: Sequence[str]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(fields), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _fmt(row[k]) for k in fields})
    atomic_write_text(path, buf.getvalue())


def _fmt(value: Any) -> Any:
    return f"{value:.6g}" if isinstance(value, float) else value


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


def write_card(out: Path, card: dict[str, Any]) -> None:
    atomic_write_json(out / CARD, card)


def read_card(run_dir: Path) -> dict[str, Any]:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise BundleError(f"no run directory at {run_dir}")
    path = run_dir / CARD
    if not path.is_file():
        if (run_dir / CHECKPOINTS).is_dir():
            raise BundleError(f"{run_dir} is an unfinished run (no {CARD}); finish it with `cnnlab train ... --resume`")
        raise BundleError(f"{run_dir} is not a cnnlab bundle (no {CARD})")
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(card, dict) or card.get("format") != CARD_FORMAT:
        raise BundleError(f"{path}: not a {CARD_FORMAT} model card")
    return card


def load_state(run_dir: Path, card: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The bundle's weights, after checking them against the sha256 in the card."""
    path = Path(run_dir) / WEIGHTS
    if not path.is_file():
        raise BundleError(f"{run_dir}: {WEIGHTS} is missing")
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != card.get("weights_sha256"):
        raise BundleError(f"{path}: sha256 differs from the model card; the weights were changed or damaged")
    return load_safetensors(data)


def load_model(run_dir: Path, card: dict[str, Any]) -> nn.Module:
    from cnnlab.models import create_model

    model = create_model(card["architecture"], card["num_classes"], card["in_chans"], card["input_size"][0])
    state = load_state(run_dir, card)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise BundleError(
            f"{run_dir}: weights do not fit {card['architecture']} "
            f"(missing: {sorted(missing)[:5]}, unexpected: {sorted(unexpected)[:5]})"
        )
    return model.eval()
